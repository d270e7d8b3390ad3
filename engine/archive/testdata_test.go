package archive

import (
	"fmt"
	"math/rand/v2"
)

// words is the vocabulary of the generated text.
var words = []string{
	"INSERT", "INTO", "public.orders", "VALUES", "customer", "shipped",
	"pending", "invoice", "Berlin", "Paris", "London", "quantity", "price",
	"the", "quick", "brown", "fox", "jumps", "over", "lazy", "dog", "NULL",
}

// mixedData returns n bytes of deterministic mixed data: mostly SQL-like
// text with numbers, interleaved with incompressible random blocks.
func mixedData(n int, seed uint64) []byte {
	r := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	b := make([]byte, 0, n+4096)
	for len(b) < n {
		if r.IntN(200) == 0 {
			blk := make([]byte, 1024+r.IntN(4096))
			for i := range blk {
				blk[i] = byte(r.Uint32())
			}
			b = append(b, blk...)
			continue
		}
		for range 20 {
			b = append(b, words[r.IntN(len(words))]...)
			b = append(b, ' ')
			b = fmt.Appendf(b, "%d, ", r.IntN(1000000))
		}
		b = append(b, '\n')
	}
	return b[:n]
}

package changeset

import (
	"bytes"
	"io"
	"os"
	"testing"
)

// FuzzReader feeds arbitrary bytes to the reader, the change decoder and
// the SQL renderer; none of them may panic or allocate without bound.
func FuzzReader(f *testing.F) {
	for _, torn := range []bool{false, true} {
		data, err := os.ReadFile(goldenSegment(f, torn))
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data)
		f.Add(data[:len(data)/2])
	}
	f.Add([]byte(Magic + "\x00\x01"))
	f.Fuzz(func(t *testing.T, data []byte) {
		r, err := NewReader(bytes.NewReader(data))
		if err != nil {
			return
		}
		for i := 0; i < 10000; i++ {
			rec, err := r.Next()
			if err != nil {
				break
			}
			if c, ok := rec.(*Change); ok {
				c.Decode()
				DecodeChange(nil, c.Raw, !c.Streamed)
			}
		}
		if r, err = NewReader(bytes.NewReader(data)); err == nil {
			RenderSQL(io.Discard, r)
		}
	})
}

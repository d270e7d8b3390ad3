package crypt

import (
	"io"
	"testing"
)

// BenchmarkEncrypt measures age encryption throughput to one X25519
// recipient (the cost an encrypted archive adds per byte written).
func BenchmarkEncrypt(b *testing.B) {
	pub, _, err := TestKeys(b.TempDir(), "b")
	if err != nil {
		b.Fatal(err)
	}
	rec, err := ReadRecipients(pub)
	if err != nil {
		b.Fatal(err)
	}
	buf := make([]byte, 1<<20)
	b.SetBytes(int64(len(buf)) * 64)
	for i := 0; i < b.N; i++ {
		w, _ := rec.Encrypt(io.Discard)
		for j := 0; j < 64; j++ {
			w.Write(buf)
		}
		w.Close()
	}
}

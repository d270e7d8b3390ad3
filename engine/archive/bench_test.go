package archive

import (
	"io"
	"runtime"
	"testing"
)

// BenchmarkXZWrite measures the parallel xz compressor on 64 MiB of mixed
// data using runtime.NumCPU() workers.
func BenchmarkXZWrite(b *testing.B) {
	data := mixedData(64<<20, 1)
	b.SetBytes(int64(len(data)))
	b.ResetTimer()
	for b.Loop() {
		z, err := newCompressor(io.Discard, CodecXZ, DefaultLevel, runtime.NumCPU())
		if err != nil {
			b.Fatal(err)
		}
		if _, err := z.Write(data); err != nil {
			b.Fatal(err)
		}
		if err := z.Close(); err != nil {
			b.Fatal(err)
		}
	}
}

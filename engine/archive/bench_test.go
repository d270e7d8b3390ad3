package archive

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"path/filepath"
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

// BenchmarkXZWriteStored measures a 64 MiB precompressed member, which the
// xz codec stores without LZMA work: "compressor" is the parallel xz
// compressor alone in store mode, in the steady state of a long archive
// (one compressor for all iterations, so chunk buffers are reused);
// "archive" is the whole Writer path for a new archive (tar, SHA-256 of
// the member and of the archive, temporary file, fsync).
func BenchmarkXZWriteStored(b *testing.B) {
	data := randomBytes(64<<20, 1)
	b.Run("compressor", func(b *testing.B) {
		z, err := newParallelXZ(io.Discard, DefaultLevel, runtime.NumCPU())
		if err != nil {
			b.Fatal(err)
		}
		if err := z.setStore(true); err != nil {
			b.Fatal(err)
		}
		b.SetBytes(int64(len(data)))
		for b.Loop() {
			if _, err := z.Write(data); err != nil {
				b.Fatal(err)
			}
		}
		if err := z.Close(); err != nil {
			b.Fatal(err)
		}
	})
	b.Run("archive", func(b *testing.B) {
		dir := b.TempDir()
		b.SetBytes(int64(len(data)))
		i := 0
		for b.Loop() {
			i++
			path := filepath.Join(dir, fmt.Sprintf("b%d.tar.xz", i))
			w, err := Create(path, WriterOptions{})
			if err != nil {
				b.Fatal(err)
			}
			if err := w.AddReader("database/app/3001.dat.gz", int64(len(data)), bytes.NewReader(data)); err != nil {
				b.Fatal(err)
			}
			if err := w.Commit(nil); err != nil {
				b.Fatal(err)
			}
			b.StopTimer()
			_ = os.Remove(path)
			_ = os.Remove(SidecarPath(path))
			b.StartTimer()
		}
	})
}

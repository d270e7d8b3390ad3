package archive

import (
	"bufio"
	"fmt"
	"io"

	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"
	"github.com/ulikunitz/xz"
)

// DefaultLevel is the compression level used when WriterOptions.Level is 0.
const DefaultLevel = 6

// nopWriteCloser adds a no-op Close to an io.Writer.
type nopWriteCloser struct{ io.Writer }

// Close does nothing.
func (nopWriteCloser) Close() error { return nil }

// newCompressor returns a WriteCloser compressing into w with codec c.
// Closing it flushes the compressed stream but does not close w.
func newCompressor(w io.Writer, c Codec, level, workers int) (io.WriteCloser, error) {
	if level < 1 || level > 9 {
		return nil, fmt.Errorf("compression level %d out of range: use 1 (fastest) to 9 (smallest)", level)
	}
	switch c {
	case CodecXZ:
		return newParallelXZ(w, level, workers)
	case CodecZstd:
		zl := zstd.SpeedDefault
		switch {
		case level <= 3:
			zl = zstd.SpeedFastest
		case level <= 6:
			zl = zstd.SpeedDefault
		case level <= 8:
			zl = zstd.SpeedBetterCompression
		default:
			zl = zstd.SpeedBestCompression
		}
		enc, err := zstd.NewWriter(w, zstd.WithEncoderLevel(zl), zstd.WithEncoderConcurrency(workers))
		if err != nil {
			return nil, fmt.Errorf("create zstd encoder: %w", err)
		}
		return enc, nil
	case CodecGzip:
		gw, err := gzip.NewWriterLevel(w, level)
		if err != nil {
			return nil, fmt.Errorf("create gzip encoder: %w", err)
		}
		return gw, nil
	case CodecNone:
		return nopWriteCloser{w}, nil
	}
	return nil, fmt.Errorf("unknown compression %q: use one of xz, zstd, gzip or none", c)
}

// NewDecompressor returns a reader yielding the tar stream contained in the
// compressed stream r. Multi-stream xz and gzip files are supported.
// Closing the returned reader releases decoder resources but does not
// close r.
func NewDecompressor(r io.Reader, c Codec) (io.ReadCloser, error) {
	switch c {
	case CodecXZ:
		xr, err := xz.NewReader(bufio.NewReaderSize(r, 1<<20))
		if err != nil {
			return nil, fmt.Errorf("open xz stream: %w", err)
		}
		return io.NopCloser(xr), nil
	case CodecZstd:
		d, err := zstd.NewReader(r, zstd.WithDecoderConcurrency(2), zstd.WithDecoderLowmem(false))
		if err != nil {
			return nil, fmt.Errorf("open zstd stream: %w", err)
		}
		return d.IOReadCloser(), nil
	case CodecGzip:
		gr, err := gzip.NewReader(r)
		if err != nil {
			return nil, fmt.Errorf("open gzip stream: %w", err)
		}
		return gr, nil
	case CodecNone:
		return io.NopCloser(r), nil
	}
	return nil, fmt.Errorf("unknown compression %q: use one of xz, zstd, gzip or none", c)
}

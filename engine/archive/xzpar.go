package archive

import (
	"bytes"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"sync"

	"github.com/ulikunitz/xz"
	"github.com/ulikunitz/xz/lzma"
)

// xzChunkSize is the amount of uncompressed data compressed into one
// independent xz stream (a variable so tests can use small chunks).
var xzChunkSize = 8 << 20

// xzLZMAChunkSize is the smaller chunk size of LZMA-compressed chunks: the
// pure-Go encoder compresses about 5-10 MB/s per core, so the few megabytes
// of LZMA-compressed members of a typical archive (table of contents, small
// tables, metadata) are spread over all cores. Stored chunks keep
// xzChunkSize. The dictionary (1 MiB at the default level) is no larger, so
// the compression ratio barely changes.
var xzLZMAChunkSize = 2 << 20

// chunkLimit is the size at which the chunk being filled is dispatched.
func (z *parallelXZ) chunkLimit() int {
	if z.store {
		return xzChunkSize
	}
	return min(xzChunkSize, max(xzLZMAChunkSize, z.cfg.DictCap))
}

// xzConfig returns the xz writer configuration for a compression level 1-9.
// Up to level 6 the dictionary is 64 KiB: with the pure-Go encoder's
// HashTable4 matcher a larger dictionary made it three times slower on
// pg_dump output without compressing it smaller (docs/benchmarks.md).
func xzConfig(level int) xz.WriterConfig {
	dict := 64 << 10
	switch {
	case level >= 9:
		dict = 8 << 20
	case level >= 7:
		dict = 4 << 20
	}
	return xz.WriterConfig{
		DictCap:  dict,
		BufSize:  64 << 10,
		CheckSum: xz.CRC64,
		Matcher:  lzma.HashTable4,
	}
}

// xzJob is one chunk being compressed, or stored.
type xzJob struct {
	in    []byte
	store bool         // write in as a stored (uncompressed) xz stream
	crc   uint32       // CRC32 of in, for stored chunks
	out   bytes.Buffer // the compressed xz stream, for LZMA chunks
	err   error
	done  chan struct{}
}

// parallelXZ is an io.WriteCloser that splits its input into xzChunkSize
// chunks, compresses each chunk as an independent xz stream on up to
// workers goroutines and writes the streams to out in input order. The
// concatenation is a valid multi-stream .xz file. At most 2*workers chunks
// are in flight, bounding memory use.
//
// In store mode (see setStore) chunks are written as stored xz streams
// whose data is not compressed, which only costs a CRC32; this is meant
// for data that is already compressed.
type parallelXZ struct {
	out     io.Writer
	cfg     xz.WriterConfig
	sem     chan struct{}
	queue   []*xzJob
	maxJobs int
	buf     []byte
	pool    *sync.Pool
	written bool
	store   bool // mode of the chunk being filled
	err     error
	closed  bool
}

// newParallelXZ returns a parallel xz compressor writing to out.
func newParallelXZ(out io.Writer, level, workers int) (*parallelXZ, error) {
	cfg := xzConfig(level)
	if err := cfg.Verify(); err != nil {
		return nil, fmt.Errorf("xz configuration for level %d: %w", level, err)
	}
	return &parallelXZ{
		out:     out,
		cfg:     cfg,
		sem:     make(chan struct{}, workers),
		maxJobs: 2 * workers,
		pool:    &sync.Pool{New: func() any { return make([]byte, 0, xzChunkSize) }},
	}, nil
}

// Write buffers p and dispatches full chunks for compression.
func (z *parallelXZ) Write(p []byte) (int, error) {
	if z.err != nil {
		return 0, z.err
	}
	if z.closed {
		return 0, errors.New("xz: write after close")
	}
	n := 0
	for len(p) > 0 {
		if z.buf == nil {
			z.buf = z.pool.Get().([]byte)[:0]
		}
		limit := z.chunkLimit()
		k := min(len(p), limit-len(z.buf))
		z.buf = append(z.buf, p[:k]...)
		p = p[k:]
		n += k
		if len(z.buf) >= limit {
			if err := z.dispatch(); err != nil {
				return n, err
			}
		}
	}
	return n, nil
}

// setStore switches between store mode (on: data written from now on is
// stored uncompressed) and LZMA compression. Switching ends the current
// chunk, so that every chunk is entirely stored or entirely compressed;
// setting the current mode again does nothing.
func (z *parallelXZ) setStore(on bool) error {
	if z.err != nil {
		return z.err
	}
	if z.closed {
		return errors.New("xz: mode switch after close")
	}
	if on == z.store {
		return nil
	}
	if len(z.buf) > 0 {
		if err := z.dispatch(); err != nil {
			return err
		}
	}
	z.store = on
	return nil
}

// dispatch starts compressing the current buffer and writes out finished
// chunks, blocking while too many chunks are in flight.
func (z *parallelXZ) dispatch() error {
	j := &xzJob{in: z.buf, store: z.store, done: make(chan struct{})}
	z.buf = nil
	z.written = true
	z.queue = append(z.queue, j)
	z.sem <- struct{}{}
	go func() {
		defer func() { <-z.sem; close(j.done) }()
		if j.store {
			j.crc = crc32.ChecksumIEEE(j.in)
			return
		}
		j.out.Grow(len(j.in)/3 + 4096)
		w, err := z.cfg.NewWriter(&j.out)
		if err == nil {
			_, err = w.Write(j.in)
		}
		if err == nil {
			err = w.Close()
		}
		j.err = err
	}()
	for len(z.queue) > 0 {
		head := z.queue[0]
		if len(z.queue) < z.maxJobs {
			select {
			case <-head.done:
			default:
				return nil
			}
		}
		if err := z.flushHead(); err != nil {
			return err
		}
	}
	return nil
}

// flushHead waits for the oldest chunk and writes its compressed or
// stored form.
func (z *parallelXZ) flushHead() error {
	j := z.queue[0]
	<-j.done
	z.queue = z.queue[1:]
	defer func() {
		z.pool.Put(j.in[:0])
		j.in = nil
	}()
	if j.err != nil {
		z.err = fmt.Errorf("xz compression: %w", j.err)
		return z.err
	}
	var err error
	if j.store {
		err = writeStoredXZCRC(z.out, j.in, j.crc)
	} else {
		_, err = z.out.Write(j.out.Bytes())
	}
	if err != nil {
		z.err = err
		return err
	}
	return nil
}

// Close compresses buffered data, writes all outstanding chunks and
// returns the first error met. An empty input produces one empty xz stream.
func (z *parallelXZ) Close() error {
	if z.closed {
		return z.err
	}
	z.closed = true
	if z.err != nil {
		z.wait()
		return z.err
	}
	if len(z.buf) > 0 || !z.written {
		if z.buf == nil {
			z.buf = z.pool.Get().([]byte)[:0]
		}
		if err := z.dispatch(); err != nil {
			z.wait()
			return err
		}
	}
	for len(z.queue) > 0 {
		if err := z.flushHead(); err != nil {
			z.wait()
			return err
		}
	}
	return nil
}

// wait blocks until every compressing goroutine has finished, discarding
// their output. It is used on error paths so no goroutine outlives Close.
func (z *parallelXZ) wait() {
	for _, j := range z.queue {
		<-j.done
	}
	z.queue = nil
}

// abort stops the compressor without writing buffered data and waits for
// running goroutines.
func (z *parallelXZ) abort() {
	z.closed = true
	if z.err == nil {
		z.err = errors.New("xz: compressor aborted")
	}
	z.wait()
}

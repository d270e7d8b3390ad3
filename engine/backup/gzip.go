package backup

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/klauspost/compress/gzip"
)

// gzipChunk is the uncompressed size of each independently compressed gzip
// member. pg_restore reads table data through zlib's gzread, which continues
// across concatenated members, so a file of members is an ordinary .dat.gz.
const gzipChunk = 4 << 20

// Table-data files (<id>.dat, blob_<oid>.dat) below smallDataMax bytes stay
// uncompressed in the dump directory, up to smallDataBudget bytes in all
// (smallest first): the archive LZMA-compresses them in the xz stream,
// together with their tar headers. A gzip member per small file would cost a
// stored 512-byte tar header plus padding and a gzip header each, and zlib
// compresses a few kilobytes of one table worse than LZMA compresses many
// small tables in one stream (a database with hundreds of small tables or
// large objects had an archive 19% larger than pg_dump -Fc's output).
// The budget bounds the time spent in the pure-Go LZMA encoder, which is
// several times slower than gzip (docs/benchmarks.md).
const (
	smallDataMax    = 64 << 10
	smallDataBudget = 8 << 20
)

// compressTableData replaces the table-data files (<id>.dat, blob_<oid>.dat)
// of the pg_dump directories below root by <file>.gz, compressing chunks in
// parallel on workers goroutines, except small files (smallDataMax,
// smallDataBudget), which stay as they are. pg_restore looks for <file>.gz
// when <file> is absent, so the dump stays restorable as it is. The archive
// then stores the .gz members without recompressing them.
func compressTableData(ctx context.Context, root string, level, workers int) error {
	type dataFile struct {
		path string
		size int64
	}
	var files []dataFile
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.Type().IsRegular() && strings.HasSuffix(p, ".dat") && d.Name() != "toc.dat" {
			info, err := d.Info()
			if err != nil {
				return err
			}
			files = append(files, dataFile{p, info.Size()})
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("list dump files: %w", err)
	}
	sort.SliceStable(files, func(i, j int) bool { return files[i].size < files[j].size })
	var small int64
	for _, f := range files {
		if err := ctx.Err(); err != nil {
			return err
		}
		if f.size < smallDataMax && small+f.size <= smallDataBudget {
			small += f.size
			continue
		}
		fast, retry := tableGzipLevel(level)
		if err := gzipFile(f.path, fast, retry, workers); err != nil {
			return err
		}
	}
	return nil
}

type gzJob struct {
	in   []byte
	out  bytes.Buffer
	err  error
	done chan struct{}
}

// gzipFile compresses path into path.gz and removes path.
// Each chunk is compressed at level; when retry is set (non-zero) and the
// result is between retryAbove and retryBelow of the input (compressible,
// but poorly so at level), the chunk is compressed again at retry and the
// smaller result kept.
func gzipFile(path string, level, retry, workers int) error {
	src, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("compress table data: %w", err)
	}
	defer src.Close()
	dst, err := os.OpenFile(path+".gz", os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return fmt.Errorf("compress table data: %w", err)
	}
	defer dst.Close()
	if workers < 1 {
		workers = 1
	}
	queue := make(chan *gzJob, workers)
	writeErr := make(chan error, 1)
	go func() {
		var first error
		for j := range queue {
			<-j.done
			if first == nil && j.err != nil {
				first = j.err
			}
			if first == nil {
				if _, err := dst.Write(j.out.Bytes()); err != nil {
					first = fmt.Errorf("write %s.gz: %w", filepath.Base(path), err)
				}
			}
		}
		writeErr <- first
	}()
	var readErr error
	for {
		buf := make([]byte, gzipChunk)
		n, err := io.ReadFull(src, buf)
		if n > 0 {
			j := &gzJob{in: buf[:n], done: make(chan struct{})}
			queue <- j
			go func() {
				defer close(j.done)
				j.err = gzipChunkTo(&j.out, j.in, level)
				if r := float64(j.out.Len()) / float64(len(j.in)); j.err == nil && retry != 0 && r > retryAbove && r < retryBelow {
					var again bytes.Buffer
					if err := gzipChunkTo(&again, j.in, retry); err == nil && again.Len() < j.out.Len() {
						j.out = again
					}
				}
			}()
		}
		if err == io.EOF || err == io.ErrUnexpectedEOF {
			break
		}
		if err != nil {
			readErr = fmt.Errorf("read %s: %w", path, err)
			break
		}
	}
	close(queue)
	if err := <-writeErr; err != nil {
		return err
	}
	if readErr != nil {
		return readErr
	}
	if err := dst.Close(); err != nil {
		return fmt.Errorf("write %s.gz: %w", filepath.Base(path), err)
	}
	return os.Remove(path)
}

// gzipChunkTo writes data as one gzip member at level to out.
func gzipChunkTo(out *bytes.Buffer, data []byte, level int) error {
	zw, err := gzip.NewWriterLevel(out, level)
	if err == nil {
		_, err = zw.Write(data)
	}
	if err == nil {
		err = zw.Close()
	}
	return err
}

// A chunk compressed to more than retryAbove of its size (but less than
// retryBelow: not incompressible) is compressed again at the retry level.
const (
	retryAbove = 0.5
	retryBelow = 0.97
)

// tableGzipLevel maps BACKUP_COMPRESSION_LEVEL to the levels of the gzip
// encoder (github.com/klauspost/compress), whose scale differs from zlib's:
// the level each chunk is compressed at, and the level of a second try for
// chunks that compress poorly at it (0: none). Its level 3 is fast and as
// small as zlib's level 6 (what pg_dump -Fc uses) on most table data, but
// falls far behind on some (long repeats of hex strings: 50% larger than
// zlib); its level 6 is smaller than zlib's level 6 on every table
// measured but two to three times slower than level 3. The default levels
// (4-6) therefore compress at 3 and retry at 6 (docs/benchmarks.md).
func tableGzipLevel(level int) (fast, retry int) {
	switch {
	case level <= 3:
		return 1, 0
	case level <= 6:
		return 3, 6
	case level <= 8:
		return 7, 0
	default:
		return 9, 0
	}
}

package backup

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/klauspost/compress/gzip"
)

// gzipChunk is the uncompressed size of each independently compressed gzip
// member. pg_restore reads table data through zlib's gzread, which continues
// across concatenated members, so a file of members is an ordinary .dat.gz.
const gzipChunk = 4 << 20

// compressTableData replaces every table-data file (<id>.dat, blob_<oid>.dat)
// of the pg_dump directories below root by <file>.gz, compressing chunks in
// parallel on workers goroutines. pg_restore looks for <file>.gz when <file>
// is absent, so the dump stays restorable as it is. The archive then stores
// these members without recompressing them.
func compressTableData(ctx context.Context, root string, level, workers int) error {
	var files []string
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.Type().IsRegular() && strings.HasSuffix(p, ".dat") && d.Name() != "toc.dat" {
			files = append(files, p)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("list dump files: %w", err)
	}
	for _, f := range files {
		if err := ctx.Err(); err != nil {
			return err
		}
		if err := gzipFile(f, tableGzipLevel(level), workers); err != nil {
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
func gzipFile(path string, level, workers int) error {
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
				zw, err := gzip.NewWriterLevel(&j.out, level)
				if err == nil {
					_, err = zw.Write(j.in)
				}
				if err == nil {
					err = zw.Close()
				}
				j.err = err
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

// tableGzipLevel maps BACKUP_COMPRESSION_LEVEL to the level of the gzip
// encoder (github.com/klauspost/compress), whose scale differs from zlib's:
// measured on pg_dump data, its level 3 compresses smaller than zlib's
// level 6 (what pg_dump -Fc uses) at about five times the speed.
func tableGzipLevel(level int) int {
	switch {
	case level <= 3:
		return 1
	case level <= 6:
		return 3
	case level <= 8:
		return 6
	default:
		return 9
	}
}

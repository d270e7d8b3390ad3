package archive

import (
	"archive/tar"
	"bufio"
	"crypto/sha256"
	"errors"
	"fmt"
	"hash"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync/atomic"
	"time"

	"github.com/pme2go/pme2go-backup/engine/fsutil"
)

// WriterOptions configures Create.
type WriterOptions struct {
	// Codec is the compression; empty means derived from the file name
	// extension, or CodecXZ.
	Codec Codec
	// Level is the compression level from 1 (fastest) to 9 (smallest);
	// 0 means DefaultLevel.
	Level int
	// Workers is the number of compression goroutines for xz and zstd;
	// 0 means runtime.NumCPU().
	Workers int
	// Progress, if set, is called with the total number of compressed
	// bytes written so far. It may be called from another goroutine and
	// must return quickly.
	Progress func(compressedBytesWritten int64)
}

// Writer writes an archive atomically: data goes to a temporary file next
// to the final path, which is renamed into place by Commit. Call Abort
// (typically deferred) to discard an unfinished archive; it is a no-op
// after Commit. A Writer is not safe for concurrent use.
type Writer struct {
	finalPath string
	dir       string
	tmpPath   string
	codec     Codec
	f         *os.File
	sink      *fileSink
	bw        *bufio.Writer
	enc       io.WriteCloser // age encryption between bw and sink, or nil
	encInfo   *Encryption
	comp      io.WriteCloser
	tw        *tar.Writer
	modTime   time.Time
	checksums map[string]string
	sizes     map[string]int64
	files     map[string]bool // regular file members
	dirs      map[string]bool // directory members, explicit or implied
	err       error           // sticky failure; the temp file is gone
	done      bool            // committed or aborted
}

// Create starts a new archive that Commit will atomically move to
// finalPath. The parent directory is created with mode 0700 if needed;
// finalPath must not exist yet.
func Create(finalPath string, opts WriterOptions) (*Writer, error) {
	if opts.Codec == "" {
		opts.Codec = CodecXZ
		if c, ok := CodecFromName(finalPath); ok {
			opts.Codec = c
		}
	}
	if !opts.Codec.Valid() {
		return nil, fmt.Errorf("unknown compression %q: use one of xz, zstd, gzip or none", opts.Codec)
	}
	if c, ok := CodecFromName(finalPath); ok && c != opts.Codec {
		return nil, fmt.Errorf("archive name %s does not match compression %s: use the extension %s", filepath.Base(finalPath), opts.Codec, opts.Codec.Ext())
	}
	if opts.Level == 0 {
		opts.Level = DefaultLevel
	}
	if opts.Workers <= 0 {
		opts.Workers = runtime.NumCPU()
	}
	dir, base := filepath.Dir(finalPath), filepath.Base(finalPath)
	if err := fsutil.EnsurePrivateDir(dir); err != nil {
		return nil, fmt.Errorf("prepare backup directory: %w", err)
	}
	if _, err := os.Lstat(finalPath); err == nil {
		return nil, fmt.Errorf("archive %s already exists: choose another name or remove the old archive", finalPath)
	}
	f, tmp, err := fsutil.CreateTemp(dir, base)
	if err != nil {
		return nil, fmt.Errorf("create archive: %w", err)
	}
	sink := &fileSink{f: f, dir: dir, h: sha256.New(), progress: opts.Progress}
	out, enc, encInfo, err := startEncryption(finalPath, sink)
	if err != nil {
		_ = f.Close()
		_ = os.Remove(tmp)
		return nil, err
	}
	bw := bufio.NewWriterSize(out, 1<<20)
	comp, err := newCompressor(bw, opts.Codec, opts.Level, opts.Workers)
	if err != nil {
		_ = f.Close()
		_ = os.Remove(tmp)
		return nil, err
	}
	return &Writer{
		finalPath: finalPath,
		dir:       dir,
		tmpPath:   tmp,
		codec:     opts.Codec,
		f:         f,
		sink:      sink,
		bw:        bw,
		enc:       enc,
		encInfo:   encInfo,
		comp:      comp,
		tw:        tar.NewWriter(comp),
		modTime:   time.Now().Truncate(time.Second),
		checksums: map[string]string{},
		sizes:     map[string]int64{},
		files:     map[string]bool{},
		dirs:      map[string]bool{},
	}, nil
}

// fileSink writes the compressed stream to the temporary file while
// hashing and counting it.
type fileSink struct {
	f        *os.File
	dir      string
	h        hash.Hash
	n        atomic.Int64
	progress func(int64)
}

// Write writes p to the file, updating hash, count and progress.
func (s *fileSink) Write(p []byte) (int, error) {
	n, err := s.f.Write(p)
	s.h.Write(p[:n])
	total := s.n.Add(int64(n))
	if s.progress != nil && n > 0 {
		s.progress(total)
	}
	if err != nil {
		return n, writeErr(s.dir, err)
	}
	return n, nil
}

// writeErr explains write errors in the backup directory dir.
func writeErr(dir string, err error) error {
	if fsutil.IsNoSpace(err) {
		return fmt.Errorf("no space left in backup directory %s: free some space or set BACKUP_DIR to a larger file system: %w", dir, err)
	}
	return fmt.Errorf("write archive in %s: %w", dir, err)
}

// Checksums returns a copy of the "sha256:<hex>" checksum of every regular
// file member written so far.
func (w *Writer) Checksums() map[string]string {
	out := make(map[string]string, len(w.checksums))
	for k, v := range w.checksums {
		out[k] = v
	}
	return out
}

// Sizes returns a copy of the size of every regular file member written so
// far.
func (w *Writer) Sizes() map[string]int64 {
	out := make(map[string]int64, len(w.sizes))
	for k, v := range w.sizes {
		out[k] = v
	}
	return out
}

// usable reports why no more members can be written, if so.
func (w *Writer) usable() error {
	if w.err != nil {
		return w.err
	}
	if w.done {
		return errors.New("archive writer already committed or aborted: create a new one")
	}
	return nil
}

// fail records a fatal error, removes the temporary file and returns err.
func (w *Writer) fail(err error) error {
	if w.err == nil {
		w.err = err
	}
	_ = w.Abort()
	return err
}

// Abort discards the archive: it stops compression, closes and removes the
// temporary file. It is safe to call several times and after Commit, in
// which case it does nothing.
func (w *Writer) Abort() error {
	if w.done {
		return nil
	}
	w.done = true
	closeErr := w.f.Close()
	if a, ok := w.comp.(interface{ abort() }); ok {
		a.abort()
	} else {
		_ = w.comp.Close()
	}
	if err := os.Remove(w.tmpPath); err != nil && !os.IsNotExist(err) {
		return fmt.Errorf("remove temporary archive %s: %w; remove it by hand", w.tmpPath, err)
	}
	if closeErr != nil && !errors.Is(closeErr, os.ErrClosed) {
		return fmt.Errorf("close temporary archive %s: %w", w.tmpPath, closeErr)
	}
	return nil
}

// reserve validates a new member name and checks it does not clash with
// earlier members. It returns the cleaned name, and whether an identical
// directory member already exists.
func (w *Writer) reserve(name string, isDir bool) (string, bool, error) {
	n, err := CleanMemberName(name)
	if err != nil {
		return "", false, fmt.Errorf("add %q to archive: %w", name, err)
	}
	if n == ManifestName {
		return "", false, fmt.Errorf("add %q to archive: the name is reserved for the archive manifest; use another name", name)
	}
	if w.files[n] {
		return "", false, fmt.Errorf("add %q to archive: a file with this name was already added", name)
	}
	if w.dirs[n] {
		if isDir {
			return n, true, nil
		}
		return "", false, fmt.Errorf("add %q to archive: a directory with this name was already added", name)
	}
	for i := strings.IndexByte(n, '/'); i >= 0; i = nextSlash(n, i) {
		if w.files[n[:i]] {
			return "", false, fmt.Errorf("add %q to archive: parent %q was added as a file", name, n[:i])
		}
	}
	for i := strings.IndexByte(n, '/'); i >= 0; i = nextSlash(n, i) {
		w.dirs[n[:i]] = true
	}
	return n, false, nil
}

// nextSlash returns the index of the next '/' in s after i, or -1.
func nextSlash(s string, i int) int {
	j := strings.IndexByte(s[i+1:], '/')
	if j < 0 {
		return -1
	}
	return i + 1 + j
}

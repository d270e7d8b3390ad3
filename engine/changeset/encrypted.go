package changeset

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/pme2go/pme2go-backup/engine/crypt"
)

// segFile is where a Writer's buffer goes: the segment file itself, or an
// engine/crypt ChunkWriter that encrypts what is synced as one chunk.
type segFile interface {
	io.Writer
	Sync() error
	Close() error
}

// createFile creates a new segment file: encrypted as chunks (engine/crypt)
// when encryption is configured, plain otherwise. Either way the bytes the
// Writer produces are the segment format; only their storage differs.
func createFile(path string) (segFile, error) {
	if crypt.Enabled() {
		return crypt.CreateChunked(path)
	}
	return os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
}

// isEncrypted reports whether the open file f is kept as encrypted chunks.
func isEncrypted(f *os.File) bool {
	head := make([]byte, len(crypt.ChunkMagic))
	n, _ := f.ReadAt(head, 0)
	return crypt.IsChunked(head[:n])
}

// plainReader returns a reader of the segment bytes of f: f itself, or the
// decrypted chunks of an encrypted segment (which needs the identity).
func plainReader(f *os.File, path string) (io.Reader, error) {
	if !isEncrypted(f) {
		return f, nil
	}
	return crypt.NewChunkReader(f, filepath.Base(path))
}

// OpenPlain opens the segment at path for copying its segment bytes (into an
// archive): the file itself, or its decrypted chunks. It returns the number
// of bytes the reader yields.
func OpenPlain(path string) (io.ReadCloser, int64, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, 0, fmt.Errorf("changeset: open segment: %w", err)
	}
	if !isEncrypted(f) {
		st, err := f.Stat()
		if err != nil {
			f.Close()
			return nil, 0, err
		}
		return f, st.Size(), nil
	}
	size, err := crypt.PlainSize(path)
	if err == nil {
		var cr *crypt.ChunkReader
		if cr, err = crypt.NewChunkReader(f, filepath.Base(path)); err == nil {
			return struct {
				io.Reader
				io.Closer
			}{cr, f}, size, nil
		}
	}
	f.Close()
	return nil, 0, fmt.Errorf("changeset: %s: %w", path, err)
}

// openAppendEncrypted is OpenAppend for a segment kept as encrypted chunks:
// it scans the decrypted segment, cuts it back to its last whole
// transaction (crypt.CutChunked) and appends new chunks for the current
// recipients.
func openAppendEncrypted(f *os.File, path string) (*Writer, *Recovery, error) {
	cr, err := crypt.NewChunkReader(f, filepath.Base(path))
	if err != nil {
		return nil, nil, fmt.Errorf("changeset: %s cannot be appended to: %w", path, err)
	}
	r, err := NewReader(cr)
	if err != nil {
		return nil, nil, fmt.Errorf("changeset: %s cannot be appended to (if it was never fully created, delete it and create it again): %w", path, err)
	}
	total, _ := crypt.PlainSize(path)
	rec := &Recovery{Header: r.Header(), OriginalSize: total}
	w := &Writer{path: path, hdr: r.Header()}
	if err := scanForAppend(r, w, rec, path); err != nil {
		return nil, nil, err
	}
	if err := crypt.CutChunked(path, cr.Chunks, rec.Size); err != nil {
		return nil, nil, fmt.Errorf("changeset: cut torn tail of encrypted %s at offset %d: %w", path, rec.Size, err)
	}
	cw, err := crypt.AppendChunked(path)
	if err != nil {
		return nil, nil, fmt.Errorf("changeset: %w", err)
	}
	w.f, w.w, w.off = cw, bufio.NewWriterSize(cw, writeBuffer), rec.Size
	return w, rec, nil
}

package crypt

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"path/filepath"

	"github.com/pme2go/pme2go-backup/engine/fsutil"
)

// ChunkMagic starts a file kept as encrypted chunks: a file that is appended
// to and fsynced piece by piece while it is open (the open change-set
// segment in BACKUP_DIR/state), which one age stream cannot be.
//
// Layout: the 8 magic bytes, then chunks, each
//
//	uint32 plaintext length P (big-endian)
//	uint32 ciphertext length C
//	C bytes: one complete age file (encrypted to the recipients current when
//	         the chunk was written) whose plaintext is the next P bytes
//	uint32 CRC-32C (Castagnoli) of the 8 length bytes and the C bytes
//
// The file's plaintext is the concatenation of the chunks' plaintexts. A
// chunk is written at each Sync (and when MaxChunk plaintext bytes are
// pending), so a crash can only tear the last chunk, which readers drop: the
// plaintext then ends at the previous chunk's end. Lengths are not secret
// (they are sizes); everything else is encrypted.
const ChunkMagic = "PME2CE1\n"

// MaxChunk is the most plaintext one chunk holds; it bounds the memory a
// ChunkWriter keeps.
const MaxChunk = 1 << 20

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// IsChunked reports whether head (a file's first bytes) starts a chunked
// encrypted file.
func IsChunked(head []byte) bool { return bytes.HasPrefix(head, []byte(ChunkMagic)) }

// ChunkWriter appends encrypted chunks to a file. It is the io.Writer under
// a change-set writer's buffer; Sync writes the pending plaintext as one
// chunk and fsyncs. Not safe for concurrent use.
type ChunkWriter struct {
	f       *os.File
	rec     *Recipients
	pending []byte
	ct      bytes.Buffer
}

// CreateChunked creates path (mode 0600, must not exist) as a chunked
// encrypted file for the current recipients, with its magic written (not yet
// synced).
func CreateChunked(path string) (*ChunkWriter, error) {
	rec, err := LoadRecipients()
	if err != nil {
		return nil, err
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return nil, err
	}
	if _, err := f.Write([]byte(ChunkMagic)); err != nil {
		f.Close()
		os.Remove(path)
		return nil, err
	}
	return &ChunkWriter{f: f, rec: rec}, nil
}

// AppendChunked opens the chunked file at path for appending after its last
// byte, encrypting new chunks to the current recipients.
func AppendChunked(path string) (*ChunkWriter, error) {
	rec, err := LoadRecipients()
	if err != nil {
		return nil, fmt.Errorf("append to encrypted %s: %w", filepath.Base(path), err)
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		return nil, err
	}
	return &ChunkWriter{f: f, rec: rec}, nil
}

// Write buffers p, writing full chunks of MaxChunk bytes as they fill.
func (w *ChunkWriter) Write(p []byte) (int, error) {
	n := len(p)
	for len(p) > 0 {
		room := MaxChunk - len(w.pending)
		take := min(room, len(p))
		w.pending = append(w.pending, p[:take]...)
		p = p[take:]
		if len(w.pending) == MaxChunk {
			if err := w.flush(); err != nil {
				return 0, err
			}
		}
	}
	return n, nil
}

// flush writes the pending plaintext as one chunk (not synced).
func (w *ChunkWriter) flush() error {
	if len(w.pending) == 0 {
		return nil
	}
	b, err := sealChunk(&w.ct, w.rec, w.pending)
	if err != nil {
		return err
	}
	if _, err := w.f.Write(b); err != nil {
		return err
	}
	w.pending = w.pending[:0]
	return nil
}

// sealChunk encrypts plain into one framed chunk, using buf as scratch.
func sealChunk(buf *bytes.Buffer, rec *Recipients, plain []byte) ([]byte, error) {
	buf.Reset()
	buf.Write(make([]byte, 8))
	enc, err := rec.Encrypt(buf)
	if err != nil {
		return nil, err
	}
	if _, err := enc.Write(plain); err != nil {
		return nil, fmt.Errorf("encrypt chunk: %w", err)
	}
	if err := enc.Close(); err != nil {
		return nil, fmt.Errorf("encrypt chunk: %w", err)
	}
	b := buf.Bytes()
	binary.BigEndian.PutUint32(b[0:], uint32(len(plain)))
	binary.BigEndian.PutUint32(b[4:], uint32(len(b)-8))
	var crc [4]byte
	binary.BigEndian.PutUint32(crc[:], crc32.Checksum(b, castagnoli))
	buf.Write(crc[:])
	return buf.Bytes(), nil
}

// Sync writes the pending plaintext as one chunk and fsyncs the file.
func (w *ChunkWriter) Sync() error {
	if err := w.flush(); err != nil {
		return err
	}
	return w.f.Sync()
}

// Close closes the file without writing what is pending (call Sync first).
func (w *ChunkWriter) Close() error { return w.f.Close() }

// Chunk locates one intact chunk: where it starts in the file, and where its
// plaintext starts in the file's plaintext.
type Chunk struct {
	FileOffset, FileLength, PlainOffset, PlainLength int64
}

// ChunkReader reads the plaintext of a chunked encrypted file.
type ChunkReader struct {
	r     *bufio.Reader
	ids   *Identities
	name  string
	off   int64 // file offset of the next chunk
	plain int64 // plaintext offset of the next chunk
	cur   io.Reader
	// Chunks lists the chunks read so far.
	Chunks []Chunk
	// Torn is set when the file ended inside a chunk (or with zero bytes
	// where a chunk should start): that chunk was dropped.
	Torn bool
}

// NewChunkReader reads a chunked file from r (positioned at its start) with
// the configured identities; name is used in messages.
func NewChunkReader(r io.Reader, name string) (*ChunkReader, error) {
	ids, err := LoadIdentities()
	if err != nil {
		return nil, fmt.Errorf("read encrypted %s: %w", name, err)
	}
	br := bufio.NewReaderSize(r, 64<<10)
	var magic [len(ChunkMagic)]byte
	if _, err := io.ReadFull(br, magic[:]); err != nil || string(magic[:]) != ChunkMagic {
		return nil, fmt.Errorf("%s is not a chunked encrypted file", name)
	}
	return &ChunkReader{r: br, ids: ids, name: name, off: int64(len(ChunkMagic))}, nil
}

// ErrChunkCorrupt is wrapped by errors for a damaged chunk that intact data
// follows.
var ErrChunkCorrupt = errors.New("corrupt encrypted chunk")

// Read returns plaintext; io.EOF at the end of the last intact chunk.
func (c *ChunkReader) Read(p []byte) (int, error) {
	for {
		if c.cur != nil {
			n, err := c.cur.Read(p)
			if err == io.EOF {
				c.cur = nil
				if n > 0 {
					return n, nil
				}
				continue
			}
			if err != nil {
				return n, fmt.Errorf("%s: chunk at offset %d: %w: %v", c.name, c.Chunks[len(c.Chunks)-1].FileOffset, ErrChunkCorrupt, err)
			}
			return n, nil
		}
		if err := c.next(); err != nil {
			return 0, err
		}
	}
}

// next reads and decrypts the next chunk into cur.
func (c *ChunkReader) next() error {
	var hdr [8]byte
	n, err := io.ReadFull(c.r, hdr[:])
	if err == io.EOF {
		return io.EOF
	}
	if err != nil || n < 8 {
		c.Torn = true
		return io.EOF
	}
	plen, clen := binary.BigEndian.Uint32(hdr[:]), binary.BigEndian.Uint32(hdr[4:])
	if clen == 0 || clen > maxCipher || plen > MaxChunk {
		// Zeros or garbage where a chunk should start: a torn tail only
		// when nothing intact follows.
		return c.tornOrCorrupt(hdr[:], nil)
	}
	body := make([]byte, int(clen)+4)
	if n, err := io.ReadFull(c.r, body); err != nil {
		// The file ends inside the chunk its length announces: a torn
		// write, or a damaged length in front of intact chunks.
		return c.tornOrCorrupt(hdr[:], body[:n])
	}
	h := crc32.New(castagnoli)
	h.Write(hdr[:])
	h.Write(body[:clen])
	if h.Sum32() != binary.BigEndian.Uint32(body[clen:]) {
		if _, err := c.r.Peek(1); err == io.EOF {
			c.Torn = true
			return io.EOF
		}
		return fmt.Errorf("%s: chunk at offset %d: %w (checksum mismatch)", c.name, c.off, ErrChunkCorrupt)
	}
	dec, err := c.ids.Decrypt(bytes.NewReader(body[:clen]), c.name)
	if err != nil {
		return err
	}
	plain, err := io.ReadAll(dec)
	if err != nil || int64(len(plain)) != int64(plen) {
		return fmt.Errorf("%s: chunk at offset %d: %w (%v)", c.name, c.off, ErrChunkCorrupt, err)
	}
	c.Chunks = append(c.Chunks, Chunk{FileOffset: c.off, FileLength: 8 + int64(clen) + 4, PlainOffset: c.plain, PlainLength: int64(plen)})
	c.off += 8 + int64(clen) + 4
	c.plain += int64(plen)
	c.cur = bytes.NewReader(plain)
	return nil
}

// maxCipher bounds a chunk's ciphertext length (age adds 16 bytes per 64 KiB
// and a header of a few hundred bytes per recipient to MaxChunk).
const maxCipher = 2*MaxChunk + 1<<16

// tornOrCorrupt decides about a chunk whose frame cannot be read whole
// (head is what was read of it): a crash tears only what was written
// after the last fsync, at most one chunk frame, so when more bytes follow
// than one frame holds, or an intact frame (plausible lengths and a
// matching CRC-32C) starts anywhere after the frame's first byte, the
// damage is in the middle of the file and the chunks after it must not be
// cut away as a torn tail.
func (c *ChunkReader) tornOrCorrupt(hdr, body []byte) error {
	const maxFrame = 8 + maxCipher + 4
	rest := append(append([]byte{}, hdr...), body...)
	tail, err := io.ReadAll(io.LimitReader(c.r, int64(maxFrame)))
	if err != nil {
		return fmt.Errorf("%s: read at offset %d: %w", c.name, c.off, err)
	}
	rest = append(rest, tail...)
	if len(rest) > maxFrame || intactFrameIn(rest[1:]) {
		return fmt.Errorf("%s: chunk at offset %d: %w (its length is damaged and intact data follows)", c.name, c.off, ErrChunkCorrupt)
	}
	c.Torn = true
	return io.EOF
}

// intactFrameIn reports whether a whole chunk frame with a matching
// CRC-32C starts at some offset of b.
func intactFrameIn(b []byte) bool {
	for i := 0; i+12 <= len(b); i++ {
		plen, clen := binary.BigEndian.Uint32(b[i:]), binary.BigEndian.Uint32(b[i+4:])
		if clen == 0 || clen > maxCipher || plen > MaxChunk || i+8+int(clen)+4 > len(b) {
			continue
		}
		end := i + 8 + int(clen)
		if crc32.Checksum(b[i:end], castagnoli) == binary.BigEndian.Uint32(b[end:]) {
			return true
		}
	}
	return false
}

// PlainSize returns the plaintext size of the chunked file at path from its
// chunk frames alone (no key needed), stopping at a torn chunk.
func PlainSize(path string) (int64, error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return 0, err
	}
	off, total := int64(len(ChunkMagic)), int64(0)
	var hdr [8]byte
	for {
		if _, err := f.ReadAt(hdr[:], off); err != nil {
			return total, nil
		}
		plen, clen := int64(binary.BigEndian.Uint32(hdr[:])), int64(binary.BigEndian.Uint32(hdr[4:]))
		if clen == 0 || off+8+clen+4 > st.Size() {
			return total, nil
		}
		total += plen
		off += 8 + clen + 4
	}
}

// CutChunked makes the plaintext of the chunked file at path end at plainEnd,
// a position inside or at the end of the chunks listed (as a ChunkReader
// found them). A cut at a chunk boundary truncates the file; a cut inside a
// chunk rewrites the file atomically (temporary file, fsync, rename) with
// that chunk's kept part encrypted again to the current recipients, so that a
// crash never loses what was already durable.
func CutChunked(path string, chunks []Chunk, plainEnd int64) error {
	var last *Chunk
	for i := range chunks {
		ch := &chunks[i]
		if plainEnd >= ch.PlainOffset && plainEnd < ch.PlainOffset+ch.PlainLength {
			last = ch
			break
		}
	}
	if last == nil || plainEnd == last.PlainOffset {
		cut := int64(len(ChunkMagic))
		for _, ch := range chunks {
			if ch.PlainOffset+ch.PlainLength <= plainEnd {
				cut = ch.FileOffset + ch.FileLength
			}
		}
		f, err := os.OpenFile(path, os.O_WRONLY, 0)
		if err != nil {
			return err
		}
		defer f.Close()
		if err := f.Truncate(cut); err != nil {
			return err
		}
		return f.Sync()
	}
	// Re-read the chunk holding the cut and rewrite the file.
	src, err := os.Open(path)
	if err != nil {
		return err
	}
	defer src.Close()
	if _, err := src.Seek(last.FileOffset, io.SeekStart); err != nil {
		return err
	}
	cr := &ChunkReader{r: bufio.NewReader(src), name: filepath.Base(path), off: last.FileOffset, plain: last.PlainOffset}
	if cr.ids, err = LoadIdentities(); err != nil {
		return err
	}
	plain := make([]byte, plainEnd-last.PlainOffset)
	if _, err := io.ReadFull(cr, plain); err != nil {
		return fmt.Errorf("re-read chunk of %s: %w", path, err)
	}
	rec, err := LoadRecipients()
	if err != nil {
		return err
	}
	var buf bytes.Buffer
	frame, err := sealChunk(&buf, rec, plain)
	if err != nil {
		return err
	}
	dir := filepath.Dir(path)
	tmp, tmpPath, err := fsutil.CreateTemp(dir, filepath.Base(path))
	if err != nil {
		return err
	}
	defer os.Remove(tmpPath)
	if _, err := src.Seek(0, io.SeekStart); err != nil {
		tmp.Close()
		return err
	}
	if _, err := io.CopyN(tmp, src, last.FileOffset); err != nil {
		tmp.Close()
		return err
	}
	if _, err := tmp.Write(frame); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmpPath, path); err != nil {
		return err
	}
	return fsutil.SyncDir(dir)
}

package archive

import (
	"bufio"
	"context"
	"crypto/sha256"
	"fmt"
	"hash"
	"io"
	"os"
)

// maxManifestSize bounds the size of an embedded manifest.json.
const maxManifestSize = 64 << 20

// ctxReader fails reads once its context is done.
type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

// Read reads from the underlying reader unless the context is done.
func (c ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}

// hashingReader hashes and counts everything read through it.
type hashingReader struct {
	r io.Reader
	h hash.Hash
	n int64
}

// Read reads from the underlying reader, updating hash and count.
func (h *hashingReader) Read(p []byte) (int, error) {
	n, err := h.r.Read(p)
	h.h.Write(p[:n])
	h.n += int64(n)
	return n, err
}

// rawStream is an opened archive file positioned for decompression.
type rawStream struct {
	f     *os.File
	raw   *hashingReader
	br    *bufio.Reader
	codec Codec
	known bool
	// encrypted: br reads the plaintext of an age file; stored reads the
	// file's bytes, so that drain hashes all of them.
	encrypted bool
	stored    *bufio.Reader
	damage    error // an encrypted file whose start cannot be decrypted
}

// unknownFormat explains why the file's format was not recognised.
func (s *rawStream) unknownFormat() string {
	if s.damage != nil {
		return s.damage.Error()
	}
	return "not a pme2go-backup archive: unrecognised file format"
}

// openRaw opens path, hashing every byte read, and detects its codec.
func openRaw(ctx context.Context, path string) (*rawStream, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("open archive: %w", err)
	}
	raw := &hashingReader{r: ctxReader{ctx: ctx, r: f}, h: sha256.New()}
	br := bufio.NewReaderSize(raw, 1<<20)
	stored, encrypted, err := decryptRaw(path, br)
	if err != nil {
		_ = f.Close()
		return nil, err
	}
	if encrypted {
		br = bufio.NewReaderSize(stored, 1<<20)
	}
	head, err := br.Peek(DetectHeaderSize)
	if err != nil && encrypted && err != io.EOF && err != bufio.ErrBufferFull && ctx.Err() == nil {
		// Damage in the first chunk of an age file: report it as such.
		return &rawStream{f: f, raw: raw, br: br, encrypted: true, stored: stored.(*decrypted).src,
			damage: fmt.Errorf("encrypted archive is truncated or corrupt: %w", err)}, nil
	}
	if err != nil && err != io.EOF && err != bufio.ErrBufferFull {
		_ = f.Close()
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, fmt.Errorf("read archive %s: %w", path, err)
	}
	codec, known := DetectCodec(head)
	rs := &rawStream{f: f, raw: raw, br: br, codec: codec, known: known, encrypted: encrypted}
	if encrypted {
		rs.stored = stored.(*decrypted).src
	}
	return rs, nil
}

// drain reads the rest of the file so the whole-file hash is complete.
func (s *rawStream) drain() error {
	_, err := io.Copy(io.Discard, s.br)
	if s.encrypted && err == nil {
		_, err = io.Copy(io.Discard, s.stored)
	}
	return err
}

// Close closes the file.
func (s *rawStream) Close() error { return s.f.Close() }

// memberLabel names the position of a stream error for messages.
func memberLabel(last string) string {
	if last == "" {
		return "(start of archive)"
	}
	return last
}

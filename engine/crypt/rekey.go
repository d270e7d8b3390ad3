package crypt

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"hash"
	"io"
	"slices"
)

// Digest is the SHA-256 and size of a byte stream.
type Digest struct {
	SHA256 string // "sha256:<hex>"
	Size   int64
}

// hashWriter hashes and counts what passes through it.
type hashWriter struct {
	h hash.Hash
	n int64
}

func (w *hashWriter) Write(p []byte) (int, error) {
	w.h.Write(p)
	w.n += int64(len(p))
	return len(p), nil
}

func (w *hashWriter) digest() Digest {
	return Digest{SHA256: "sha256:" + hex.EncodeToString(w.h.Sum(nil)), Size: w.n}
}

// Reencrypt reads the age file src (named name in messages), decrypts it
// with ids and writes it to dst encrypted to rec. It returns the digests of
// the source as stored, of the plaintext, and of what it wrote.
func Reencrypt(dst io.Writer, src io.Reader, name string, ids *Identities, rec *Recipients) (stored, plain, written Digest, err error) {
	sh, ph, wh := &hashWriter{h: sha256.New()}, &hashWriter{h: sha256.New()}, &hashWriter{h: sha256.New()}
	dec, err := ids.Decrypt(io.TeeReader(src, sh), name)
	if err != nil {
		return stored, plain, written, err
	}
	enc, err := rec.Encrypt(io.MultiWriter(dst, wh))
	if err != nil {
		return stored, plain, written, err
	}
	if _, err := io.Copy(io.MultiWriter(enc, ph), dec); err != nil {
		return stored, plain, written, fmt.Errorf("%s: decrypt (the archive is damaged; run verify): %w", name, err)
	}
	if err := enc.Close(); err != nil {
		return stored, plain, written, fmt.Errorf("%s: encrypt: %w", name, err)
	}
	// Hash whatever trails the age stream too: the stored digest covers the
	// whole file.
	if _, err := io.Copy(sh, src); err != nil {
		return stored, plain, written, err
	}
	return sh.digest(), ph.digest(), wh.digest(), nil
}

// PlainDigest decrypts the age file src with ids and returns the digest of
// its plaintext.
func PlainDigest(src io.Reader, name string, ids *Identities) (Digest, error) {
	dec, err := ids.Decrypt(src, name)
	if err != nil {
		return Digest{}, err
	}
	h := &hashWriter{h: sha256.New()}
	if _, err := io.Copy(h, dec); err != nil {
		return Digest{}, fmt.Errorf("%s: %w", name, err)
	}
	return h.digest(), nil
}

// FileDigest returns the digest of everything read from r.
func FileDigest(r io.Reader) (Digest, error) {
	h := &hashWriter{h: sha256.New()}
	_, err := io.Copy(h, r)
	return h.digest(), err
}

// SameKeys reports whether two recipient lists hold the same keys, in any
// order.
func SameKeys(a, b []string) bool {
	a, b = slices.Clone(a), slices.Clone(b)
	slices.Sort(a)
	slices.Sort(b)
	return slices.Equal(slices.Compact(a), slices.Compact(b))
}

package archive

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"sort"
)

// Problem is one defect found by Verify.
type Problem struct {
	// Member is the affected tar member, or "" for the archive as a whole.
	Member string
	// Message describes the defect.
	Message string
}

// String formats the problem for display.
func (p Problem) String() string {
	if p.Member == "" {
		return p.Message
	}
	return p.Member + ": " + p.Message
}

// VerifyReport is the result of Verify.
type VerifyReport struct {
	// Problems lists every defect found; empty means the archive is sound.
	Problems []Problem
	// Members is the number of tar members read, manifest.json included.
	Members int
	// Bytes is the total uncompressed size of the regular file members.
	Bytes int64
	// Manifest is the manifest embedded in the archive, or the sidecar
	// manifest if the embedded one could not be read (nil if neither).
	Manifest *Manifest
}

// OK reports whether no problem was found.
func (r *VerifyReport) OK() bool { return len(r.Problems) == 0 }

// add records a problem.
func (r *VerifyReport) add(member, format string, args ...any) {
	r.Problems = append(r.Problems, Problem{Member: member, Message: fmt.Sprintf(format, args...)})
}

// Verify checks archivePath thoroughly: the sidecar manifest and the
// whole-file checksum and size it records, full decompression, tar
// structure, member names and types, every member checksum against the
// embedded manifest, and agreement between embedded and sidecar manifests.
// Defects are reported in the VerifyReport; an error is returned only if
// the file cannot be opened or read, or ctx is cancelled.
func Verify(ctx context.Context, archivePath string) (*VerifyReport, error) {
	rep := &VerifyReport{}
	side, err := ReadSidecar(archivePath)
	switch {
	case errors.Is(err, os.ErrNotExist):
		rep.add("", "missing sidecar manifest %s: the archive will not be listed; recreate the backup or restore the sidecar", SidecarPath(archivePath))
	case err != nil:
		rep.add("", "unreadable sidecar manifest: %v", err)
		side = nil
	case side.Archive == nil:
		rep.add("", "sidecar manifest %s has no archive section", SidecarPath(archivePath))
	}
	s, err := openRaw(ctx, archivePath)
	if err != nil {
		return nil, fmt.Errorf("verify %s: %w", archivePath, err)
	}
	defer s.Close()

	inner, sums, err := verifyStream(ctx, s, rep)
	if err != nil {
		return nil, fmt.Errorf("verify %s: %w", archivePath, err)
	}
	if err := s.drain(); err != nil {
		if ctx.Err() != nil {
			return nil, fmt.Errorf("verify %s: %w", archivePath, ctx.Err())
		}
		if !s.encrypted {
			return nil, fmt.Errorf("verify %s: read archive: %w", archivePath, err)
		}
		if s.damage == nil {
			rep.add("", "encrypted archive is truncated or corrupt: %v", err)
		}
	}
	if side != nil && side.Archive != nil {
		a := side.Archive
		if a.Size != s.raw.n {
			rep.add("", "archive size %d bytes differs from %d recorded in the sidecar: the file was truncated or modified", s.raw.n, a.Size)
		}
		if got := "sha256:" + hex.EncodeToString(s.raw.h.Sum(nil)); got != a.SHA256 {
			rep.add("", "archive checksum %s differs from %s recorded in the sidecar: the file is corrupt", got, a.SHA256)
		}
		if s.known && a.Codec != s.codec {
			rep.add("", "archive is %s-compressed but the sidecar says %s", s.codec, a.Codec)
		}
	}
	if inner == nil {
		rep.Manifest = side
		return rep, nil
	}
	rep.Manifest = inner
	checkMembers(rep, inner, sums)
	if side != nil {
		sideCopy := *side
		sideCopy.Archive = nil
		a, errA := marshalManifest(inner)
		b, errB := marshalManifest(&sideCopy)
		if errA != nil || errB != nil || !bytes.Equal(a, b) {
			rep.add("", "sidecar manifest differs from the manifest inside the archive: the sidecar was modified or belongs to another archive")
		}
	}
	return rep, nil
}

// fileSum is the observed checksum and size of a regular file member.
type fileSum struct {
	sum  string
	size int64
}

// verifyStream decompresses and walks the tar stream, hashing members. It
// returns the embedded manifest (nil if absent or unreadable) and the
// observed checksums. Only context cancellation is returned as error.
func verifyStream(ctx context.Context, s *rawStream, rep *VerifyReport) (*Manifest, map[string]fileSum, error) {
	if !s.known {
		if s.damage != nil {
			rep.add("", "%s", s.unknownFormat())
			return nil, nil, nil
		}
		rep.add("", "not a pme2go-backup archive: no manifest.json (unrecognised file format)")
		return nil, nil, nil
	}
	dec, err := NewDecompressor(s.br, s.codec)
	if err != nil {
		if ctx.Err() != nil {
			return nil, nil, ctx.Err()
		}
		rep.add("", "truncated or corrupt compressed stream at member %s: %v", memberLabel(""), err)
		return nil, nil, nil
	}
	defer dec.Close()
	var (
		inner *Manifest
		last  string
		seen  = map[string]bool{}
		sums  = map[string]fileSum{}
		tr    = tar.NewReader(dec)
		buf   = make([]byte, 256<<10)
	)
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			break
		}
		if ctx.Err() != nil {
			return nil, nil, ctx.Err()
		}
		if err != nil {
			rep.add(last, "truncated or corrupt compressed stream at member %s: %v", memberLabel(last), err)
			return inner, sums, nil
		}
		rep.Members++
		last = hdr.Name
		if inner != nil {
			rep.add(hdr.Name, "unexpected member after %s", ManifestName)
		}
		name, err := CleanMemberName(hdr.Name)
		if err != nil {
			rep.add(hdr.Name, "archive is unsafe: %v", err)
			name = hdr.Name
		}
		if seen[name] {
			rep.add(hdr.Name, "duplicate member")
		}
		seen[name] = true
		switch hdr.Typeflag {
		case tar.TypeDir:
			continue
		case tar.TypeReg:
		default:
			rep.add(hdr.Name, "archive is unsafe: unsupported member type %q (links, devices and fifos are not allowed)", hdr.Typeflag)
			continue
		}
		if name == ManifestName {
			body, err := io.ReadAll(io.LimitReader(tr, maxManifestSize))
			if err != nil {
				if ctx.Err() != nil {
					return nil, nil, ctx.Err()
				}
				rep.add(hdr.Name, "truncated or corrupt compressed stream at member %s: %v", hdr.Name, err)
				return inner, sums, nil
			}
			m, err := parseManifest(body)
			if err != nil {
				rep.add(hdr.Name, "unreadable embedded manifest: %v", err)
				continue
			}
			inner = m
			continue
		}
		h := sha256.New()
		n, err := io.CopyBuffer(h, tr, buf)
		rep.Bytes += n
		if err != nil {
			if ctx.Err() != nil {
				return nil, nil, ctx.Err()
			}
			rep.add(hdr.Name, "truncated or corrupt compressed stream at member %s: %v", hdr.Name, err)
			return inner, sums, nil
		}
		sums[name] = fileSum{sum: "sha256:" + hex.EncodeToString(h.Sum(nil)), size: n}
	}
	// Read past the end of the tar stream so trailing checksums of the
	// compressed format are verified.
	if _, err := io.Copy(io.Discard, dec); err != nil {
		if ctx.Err() != nil {
			return nil, nil, ctx.Err()
		}
		rep.add("", "truncated or corrupt compressed stream at member %s (after the end of the tar stream): %v", memberLabel(last), err)
		return inner, sums, nil
	}
	if inner == nil {
		rep.add("", "not a pme2go-backup archive: no %s", ManifestName)
	}
	return inner, sums, nil
}

// checkMembers compares observed member checksums with the manifest.
func checkMembers(rep *VerifyReport, m *Manifest, sums map[string]fileSum) {
	names := make([]string, 0, len(m.Checksums))
	for name := range m.Checksums {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		got, ok := sums[name]
		switch {
		case !ok:
			rep.add(name, "listed in the manifest but missing from the archive")
		case got.sum != m.Checksums[name]:
			rep.add(name, "checksum %s differs from %s in the manifest: the member is corrupt", got.sum, m.Checksums[name])
		case m.Sizes != nil && m.Sizes[name] != got.size:
			rep.add(name, "size %d differs from %d in the manifest", got.size, m.Sizes[name])
		}
	}
	extra := make([]string, 0)
	for name := range sums {
		if _, ok := m.Checksums[name]; !ok {
			extra = append(extra, name)
		}
	}
	sort.Strings(extra)
	for _, name := range extra {
		rep.add(name, "unexpected member not listed in the manifest")
	}
}

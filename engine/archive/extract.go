package archive

import (
	"archive/tar"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"path"
	"sort"

	"github.com/pme2go/pme2go-backup/engine/fsutil"
)

// Extract unpacks archivePath into the existing directory destDir, which
// the caller should have created with mode 0700. Files are written with
// mode 0600 and directories with 0700. Absolute names, ".." components,
// links, devices and fifos are refused; all writes are confined to destDir
// (via os.Root). Each member is hashed while it is written and compared
// with the embedded manifest, which is also written to destDir. On error,
// destDir may hold a partial extraction that the caller should remove.
func Extract(ctx context.Context, archivePath, destDir string) (*Manifest, error) {
	root, err := os.OpenRoot(destDir)
	if err != nil {
		return nil, fmt.Errorf("open extraction directory: %w; create it first", err)
	}
	defer root.Close()
	s, err := openRaw(ctx, archivePath)
	if err != nil {
		return nil, fmt.Errorf("extract %s: %w", archivePath, err)
	}
	defer s.Close()
	if !s.known {
		return nil, fmt.Errorf("extract %s: %s", archivePath, s.unknownFormat())
	}
	dec, err := NewDecompressor(s.br, s.codec)
	if err != nil {
		return nil, fmt.Errorf("extract %s: %w", archivePath, err)
	}
	defer dec.Close()
	x := &extractor{ctx: ctx, root: root, archive: archivePath, dest: destDir, sums: map[string]fileSum{}}
	m, err := x.run(tar.NewReader(dec))
	if err != nil {
		return nil, err
	}
	if _, err := io.Copy(io.Discard, dec); err != nil {
		return nil, x.streamErr(x.last, err)
	}
	if err := x.check(m); err != nil {
		return nil, err
	}
	return m, nil
}

// extractor holds the state of one extraction.
type extractor struct {
	ctx     context.Context
	root    *os.Root
	archive string
	dest    string
	last    string
	sums    map[string]fileSum
	buf     []byte
	// onFile, if set, is called after each regular file member is written
	// (VerifiedExtraction compares it with the sidecar manifest at once);
	// an error stops the extraction.
	onFile func(name string, sum fileSum) error
}

// unsafe builds the error for a member that must not be extracted.
func (x *extractor) unsafe(member, why string) error {
	return fmt.Errorf("refusing to extract member %q of %s: %s; the archive is unsafe and nothing outside %s was written", member, x.archive, why, x.dest)
}

// streamErr builds the error for a read failure after member last.
func (x *extractor) streamErr(last string, err error) error {
	if x.ctx.Err() != nil {
		return fmt.Errorf("extract %s: %w", x.archive, x.ctx.Err())
	}
	return fmt.Errorf("extract %s: truncated or corrupt compressed stream at member %s: %w", x.archive, memberLabel(last), err)
}

// run extracts all members and returns the embedded manifest.
func (x *extractor) run(tr *tar.Reader) (*Manifest, error) {
	var m *Manifest
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, x.streamErr(x.last, err)
		}
		x.last = hdr.Name
		if m != nil {
			return nil, fmt.Errorf("extract %s: unexpected member %q after %s: the archive is damaged or not a pme2go-backup archive", x.archive, hdr.Name, ManifestName)
		}
		name, err := CleanMemberName(hdr.Name)
		if err != nil {
			return nil, x.unsafe(hdr.Name, err.Error())
		}
		switch hdr.Typeflag {
		case tar.TypeDir:
			if err := x.root.MkdirAll(name, 0o700); err != nil {
				return nil, fmt.Errorf("extract %s: create directory %s in %s: %w", x.archive, name, x.dest, err)
			}
			continue
		case tar.TypeReg:
		case tar.TypeSymlink, tar.TypeLink:
			return nil, x.unsafe(hdr.Name, "links are not allowed")
		case tar.TypeChar, tar.TypeBlock, tar.TypeFifo:
			return nil, x.unsafe(hdr.Name, "devices and fifos are not allowed")
		default:
			return nil, x.unsafe(hdr.Name, fmt.Sprintf("unsupported member type %q", hdr.Typeflag))
		}
		if _, dup := x.sums[name]; dup {
			return nil, fmt.Errorf("extract %s: duplicate member %q: the archive is damaged", x.archive, name)
		}
		if name == ManifestName {
			body, err := io.ReadAll(io.LimitReader(tr, maxManifestSize))
			if err != nil {
				return nil, x.streamErr(name, err)
			}
			if m, err = parseManifest(body); err != nil {
				return nil, fmt.Errorf("extract %s: embedded manifest: %w", x.archive, err)
			}
			if err := x.root.WriteFile(name, body, 0o600); err != nil {
				return nil, fmt.Errorf("extract %s: write %s in %s: %w", x.archive, name, x.dest, err)
			}
			continue
		}
		if err := x.writeFile(name, tr); err != nil {
			return nil, err
		}
		if x.onFile != nil {
			if err := x.onFile(name, x.sums[name]); err != nil {
				return nil, err
			}
		}
	}
	if m == nil {
		return nil, fmt.Errorf("extract %s: not a pme2go-backup archive: no %s", x.archive, ManifestName)
	}
	return m, nil
}

// writeFile extracts one regular file member, hashing it.
func (x *extractor) writeFile(name string, r io.Reader) error {
	if dir := path.Dir(name); dir != "." {
		if err := x.root.MkdirAll(dir, 0o700); err != nil {
			return fmt.Errorf("extract %s: create directory %s in %s: %w", x.archive, dir, x.dest, err)
		}
	}
	f, err := x.root.OpenFile(name, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		if fsutil.IsNoSpace(err) {
			return x.writeErr(name, err)
		}
		return &destError{fmt.Errorf("extract %s: create %s in %s: %w", x.archive, name, x.dest, err)}
	}
	if x.buf == nil {
		x.buf = make([]byte, 256<<10)
	}
	h := sha256.New()
	dw := &destWriter{w: f}
	n, err := io.CopyBuffer(io.MultiWriter(dw, h), r, x.buf)
	closeErr := f.Close()
	if dw.err != nil {
		return x.writeErr(name, dw.err)
	}
	if err != nil {
		return x.streamErr(name, err)
	}
	if closeErr != nil {
		return x.writeErr(name, closeErr)
	}
	x.sums[name] = fileSum{sum: "sha256:" + hex.EncodeToString(h.Sum(nil)), size: n}
	return nil
}

// destWriter remembers write errors so they can be told apart from
// read errors of the archive.
type destWriter struct {
	w   io.Writer
	err error
}

// Write writes to the destination file, recording any error.
func (d *destWriter) Write(p []byte) (int, error) {
	n, err := d.w.Write(p)
	if err != nil {
		d.err = err
	}
	return n, err
}

// writeErr builds the error for a failed write of member name.
func (x *extractor) writeErr(name string, err error) error {
	if fsutil.IsNoSpace(err) {
		return &destError{fmt.Errorf("extract %s: no space left in %s while writing %s: free some space or extract to another directory: %w", x.archive, x.dest, name, err)}
	}
	return &destError{fmt.Errorf("extract %s: write %s in %s: %w", x.archive, name, x.dest, err)}
}

// check compares the extracted files with the manifest.
func (x *extractor) check(m *Manifest) error {
	names := make([]string, 0, len(x.sums))
	for name := range x.sums {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		want, ok := m.Checksums[name]
		if !ok {
			return fmt.Errorf("extract %s: member %q is not listed in the manifest: the archive was tampered with; do not use it", x.archive, name)
		}
		if got := x.sums[name].sum; got != want {
			return fmt.Errorf("extract %s: member %q has checksum %s but the manifest says %s: the archive is corrupt; use another backup", x.archive, name, got, want)
		}
	}
	for name := range m.Checksums {
		if _, ok := x.sums[name]; !ok {
			return fmt.Errorf("extract %s: member %q listed in the manifest is missing: the archive is incomplete; use another backup", x.archive, name)
		}
	}
	return nil
}

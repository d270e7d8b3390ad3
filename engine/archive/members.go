package archive

import (
	"archive/tar"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// AddFile adds the regular file srcPath as member name. The content is
// streamed and its SHA-256 recorded. In xz archives, members whose name
// ends in .gz, .zst, .lz4, .xz or .bz2 (already compressed data, such as
// pg_dump's *.dat.gz table files) are stored without LZMA compression;
// this applies to AddReader, AddBytes and AddDir as well.
func (w *Writer) AddFile(name, srcPath string) error {
	if err := w.usable(); err != nil {
		return err
	}
	f, err := os.Open(srcPath)
	if err != nil {
		return fmt.Errorf("open %s for archiving: %w", srcPath, err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return fmt.Errorf("stat %s: %w", srcPath, err)
	}
	if !fi.Mode().IsRegular() {
		return fmt.Errorf("cannot archive %s: not a regular file (mode %v)", srcPath, fi.Mode())
	}
	return w.addStream(name, fi.Size(), f, srcPath)
}

// AddBytes adds data as the regular file member name.
func (w *Writer) AddBytes(name string, data []byte) error {
	return w.AddReader(name, int64(len(data)), bytes.NewReader(data))
}

// AddReader adds exactly size bytes read from r as the regular file member
// name. Fewer bytes than size is an error that discards the archive.
func (w *Writer) AddReader(name string, size int64, r io.Reader) error {
	if size < 0 {
		return fmt.Errorf("add %q to archive: negative size %d", name, size)
	}
	return w.addStream(name, size, r, name)
}

// addStream writes a regular file member; src names the data source in
// error messages.
func (w *Writer) addStream(name string, size int64, r io.Reader, src string) error {
	if err := w.usable(); err != nil {
		return err
	}
	n, _, err := w.reserve(name, false)
	if err != nil {
		return err
	}
	// Store already compressed content instead of compressing it again.
	// The header goes in the member's mode too: runs of precompressed
	// members (pg_dump's *.dat.gz) then form whole stored chunks instead
	// of alternating with tiny compressed chunks for the headers.
	if err := w.setStore(isPrecompressed(n)); err != nil {
		return err
	}
	hdr := &tar.Header{
		Typeflag: tar.TypeReg,
		Name:     n,
		Size:     size,
		Mode:     0o600,
		ModTime:  w.modTime,
	}
	if err := w.tw.WriteHeader(hdr); err != nil {
		return w.fail(fmt.Errorf("write archive header for %s: %w", n, err))
	}
	h := sha256.New()
	copied, err := io.Copy(io.MultiWriter(w.tw, h), io.LimitReader(r, size))
	if err != nil {
		return w.fail(fmt.Errorf("archive %s as %s: %w", src, n, err))
	}
	if copied != size {
		return w.fail(fmt.Errorf("archive %s as %s: expected %d bytes but got %d; the source changed while it was archived, retry the backup", src, n, size, copied))
	}
	w.files[n] = true
	w.checksums[n] = "sha256:" + hex.EncodeToString(h.Sum(nil))
	w.sizes[n] = size
	return nil
}

// precompressedExts are the name suffixes of members whose content is
// already compressed, such as pg_dump's gzip-compressed table data
// (*.dat.gz) in directory format.
var precompressedExts = []string{".gz", ".zst", ".lz4", ".xz", ".bz2"}

// isPrecompressed reports whether the member name denotes already
// compressed content, which is stored rather than compressed again.
func isPrecompressed(name string) bool {
	lower := strings.ToLower(name)
	for _, ext := range precompressedExts {
		if strings.HasSuffix(lower, ext) {
			return true
		}
	}
	return false
}

// storeSwitcher is implemented by compressors that can store data without
// compressing it (the parallel xz compressor).
type storeSwitcher interface {
	setStore(on bool) error
}

// setStore makes the compressor store (on) or compress the data written
// from now on, if it supports storing; other compressors always compress.
// A failure is fatal for the archive.
func (w *Writer) setStore(on bool) error {
	s, ok := w.comp.(storeSwitcher)
	if !ok {
		return nil
	}
	if err := s.setStore(on); err != nil {
		return w.fail(fmt.Errorf("%s compression: %w", w.codec, err))
	}
	return nil
}

// addDirHeader writes a directory member unless it already exists.
func (w *Writer) addDirHeader(name string) error {
	n, exists, err := w.reserve(name, true)
	if err != nil || exists {
		return err
	}
	hdr := &tar.Header{
		Typeflag: tar.TypeDir,
		Name:     n + "/",
		Mode:     0o700,
		ModTime:  w.modTime,
	}
	if err := w.tw.WriteHeader(hdr); err != nil {
		return w.fail(fmt.Errorf("write archive header for %s: %w", n, err))
	}
	w.dirs[n] = true
	return nil
}

// AddDir recursively adds the directory srcDir under the member prefix
// (which may be empty to add its content at the archive root). Only
// regular files and directories are supported; any other file type
// (symlink, device, socket, ...) makes AddDir fail before that entry is
// written.
func (w *Writer) AddDir(prefix, srcDir string) error {
	if err := w.usable(); err != nil {
		return err
	}
	if prefix != "" {
		if _, err := CleanMemberName(prefix); err != nil {
			return fmt.Errorf("add directory %s to archive: %w", srcDir, err)
		}
	}
	root, err := filepath.EvalSymlinks(srcDir)
	if err != nil {
		return fmt.Errorf("add directory %s to archive: %w", srcDir, err)
	}
	fi, err := os.Stat(root)
	if err != nil {
		return fmt.Errorf("add directory %s to archive: %w", srcDir, err)
	}
	if !fi.IsDir() {
		return fmt.Errorf("add directory %s to archive: not a directory", srcDir)
	}
	return filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return fmt.Errorf("read %s while archiving: %w", p, err)
		}
		rel, err := filepath.Rel(root, p)
		if err != nil {
			return fmt.Errorf("archive %s: %w", p, err)
		}
		member := joinMember(prefix, filepath.ToSlash(rel))
		switch {
		case d.IsDir():
			if member == "" {
				return nil
			}
			return w.addDirHeader(member)
		case d.Type().IsRegular():
			return w.AddFile(member, p)
		default:
			return fmt.Errorf("cannot archive %s: it is a %s, only regular files and directories are supported; remove it from %s", p, fileKind(d.Type()), srcDir)
		}
	})
}

// fileKind describes a non-regular file mode for error messages.
func fileKind(m fs.FileMode) string {
	switch {
	case m&fs.ModeSymlink != 0:
		return "symbolic link"
	case m&fs.ModeDevice != 0:
		return "device"
	case m&fs.ModeNamedPipe != 0:
		return "named pipe"
	case m&fs.ModeSocket != 0:
		return "socket"
	}
	return fmt.Sprintf("special file (%v)", m)
}

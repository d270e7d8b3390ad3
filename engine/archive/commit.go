package archive

import (
	"archive/tar"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"

	"github.com/pme2go/pme2go-backup/engine/fsutil"
)

// Commit finishes the archive. It merges the recorded checksums and sizes
// into m (allocating the maps if nil), sets m.FormatVersion, writes m as
// the last member manifest.json, flushes and fsyncs the file, renames it to
// the final path, fsyncs the directory and finally writes the sidecar
// manifest (m plus Archive) atomically. On success m.Archive describes the
// written file. On failure nothing is left behind.
func (w *Writer) Commit(m *Manifest) error {
	if err := w.usable(); err != nil {
		return err
	}
	if m == nil {
		m = &Manifest{}
	}
	if m.Checksums == nil {
		m.Checksums = map[string]string{}
	}
	if m.Sizes == nil {
		m.Sizes = map[string]int64{}
	}
	for k, v := range w.checksums {
		m.Checksums[k] = v
	}
	for k, v := range w.sizes {
		m.Sizes[k] = v
	}
	m.FormatVersion = FormatVersion
	inner := *m
	inner.Archive = nil
	body, err := marshalManifest(&inner)
	if err != nil {
		return w.fail(err)
	}
	if err := w.setStore(false); err != nil {
		return err
	}
	hdr := &tar.Header{
		Typeflag: tar.TypeReg,
		Name:     ManifestName,
		Size:     int64(len(body)),
		Mode:     0o600,
		ModTime:  w.modTime,
	}
	if err := w.tw.WriteHeader(hdr); err != nil {
		return w.fail(fmt.Errorf("write manifest header: %w", err))
	}
	if _, err := w.tw.Write(body); err != nil {
		return w.fail(fmt.Errorf("write manifest: %w", err))
	}
	if err := w.tw.Close(); err != nil {
		return w.fail(fmt.Errorf("finish tar stream: %w", err))
	}
	if err := w.comp.Close(); err != nil {
		return w.fail(fmt.Errorf("finish %s compression: %w", w.codec, err))
	}
	if err := w.bw.Flush(); err != nil {
		return w.fail(fmt.Errorf("flush archive: %w", err))
	}
	if w.enc != nil {
		if err := w.enc.Close(); err != nil {
			return w.fail(fmt.Errorf("finish age encryption: %w", err))
		}
	}
	if err := w.f.Sync(); err != nil {
		return w.fail(writeErr(w.dir, fmt.Errorf("fsync %s: %w", w.tmpPath, err)))
	}
	if err := w.f.Close(); err != nil {
		return w.fail(writeErr(w.dir, fmt.Errorf("close %s: %w", w.tmpPath, err)))
	}
	if err := os.Rename(w.tmpPath, w.finalPath); err != nil {
		return w.fail(fmt.Errorf("move archive into place as %s: %w", w.finalPath, err))
	}
	w.done = true
	info := &ArchiveInfo{
		Name:       filepath.Base(w.finalPath),
		Size:       w.sink.n.Load(),
		SHA256:     "sha256:" + hex.EncodeToString(w.sink.h.Sum(nil)),
		Codec:      w.codec,
		Encryption: w.encInfo,
	}
	if err := w.writeSidecar(&inner, info); err != nil {
		w.err = err
		return err
	}
	m.Archive = info
	return nil
}

// writeSidecar syncs the directory and writes the sidecar manifest. If
// that fails the renamed archive is removed again, as an archive without
// sidecar is invisible to listings.
func (w *Writer) writeSidecar(inner *Manifest, info *ArchiveInfo) error {
	side := *inner
	side.Archive = info
	body, err := marshalManifest(&side)
	if err == nil {
		err = fsutil.SyncDir(w.dir)
	}
	if err == nil {
		err = fsutil.WriteFileAtomic(SidecarPath(w.finalPath), body, 0o600)
	}
	if err != nil {
		_ = os.Remove(w.finalPath)
		_ = fsutil.SyncDir(w.dir)
		if fsutil.IsNoSpace(err) {
			return writeErr(w.dir, err)
		}
		return fmt.Errorf("write sidecar manifest for %s (archive removed): %w", w.finalPath, err)
	}
	return nil
}

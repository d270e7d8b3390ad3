// Package fsutil provides small, crash-safe file system helpers used by the
// backup engine: atomic file replacement, directory fsync, private directory
// creation and clean-up of temporary files left behind by interrupted runs.
package fsutil

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
)

// WriteFileAtomic writes data to path so that readers observe either the old
// content or the complete new content, never a partial file. The data is
// written to a temporary file in the same directory (named with TempPrefix),
// fsynced, given perm, renamed over path, and the directory is fsynced.
func WriteFileAtomic(path string, data []byte, perm os.FileMode) (err error) {
	dir, base := filepath.Split(path)
	if dir == "" {
		dir = "."
	}
	f, tmp, err := CreateTemp(dir, base)
	if err != nil {
		return err
	}
	defer func() {
		if err != nil {
			_ = f.Close()
			_ = os.Remove(tmp)
		}
	}()
	if _, err = f.Write(data); err != nil {
		return wrapWriteErr(dir, tmp, err)
	}
	if err = f.Sync(); err != nil {
		return wrapWriteErr(dir, tmp, err)
	}
	if err = f.Chmod(perm); err != nil {
		return fmt.Errorf("set permissions %v on %s: %w", perm, tmp, err)
	}
	// Renamed while still open: the open file's lock keeps another
	// process's sweep of leftovers (RemoveLeftovers) off it until it has
	// its final name.
	if err = os.Rename(tmp, path); err != nil {
		return fmt.Errorf("rename %s to %s: %w", tmp, path, err)
	}
	if err = f.Close(); err != nil {
		return wrapWriteErr(dir, path, err)
	}
	return SyncDir(dir)
}

// CreateTemp creates a new file in dir whose name starts with
// TempPrefix(base) followed by random characters. The file is opened for
// writing with mode 0600 and must not already exist. It returns the open
// file and its path. The file is locked (flock) while it is open, so that
// RemoveLeftovers in another process leaves it alone: rename it before
// closing it.
func CreateTemp(dir, base string) (*os.File, string, error) {
	for range 10 {
		var b [8]byte
		if _, err := rand.Read(b[:]); err != nil {
			return nil, "", fmt.Errorf("generate temporary file name: %w", err)
		}
		name := filepath.Join(dir, TempPrefix(base)+hex.EncodeToString(b[:]))
		f, err := os.OpenFile(name, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
		if errors.Is(err, os.ErrExist) {
			continue
		}
		if err != nil {
			return nil, "", wrapWriteErr(dir, name, err)
		}
		if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
			f.Close()
			os.Remove(name)
			return nil, "", fmt.Errorf("lock temporary file %s: %w", name, err)
		}
		return f, name, nil
	}
	return nil, "", fmt.Errorf("create temporary file for %s in %s: too many name collisions; remove stale %s* files", base, dir, TempPrefix(base))
}

// SyncDir fsyncs the directory dir so that renames and file creations inside
// it are durable.
func SyncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("open directory %s for fsync: %w", dir, err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil && !errors.Is(err, syscall.EINVAL) {
		return fmt.Errorf("fsync directory %s: %w", dir, err)
	}
	return nil
}

// EnsurePrivateDir creates dir (and missing parents) with mode 0700. If dir
// already exists with looser permissions they are tightened to 0700. It
// returns an error if dir exists but is not a directory.
func EnsurePrivateDir(dir string) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("create directory %s: %w; check the path and its permissions", dir, err)
	}
	fi, err := os.Stat(dir)
	if err != nil {
		return fmt.Errorf("stat directory %s: %w", dir, err)
	}
	if !fi.IsDir() {
		return fmt.Errorf("%s exists but is not a directory; move it away or choose another path", dir)
	}
	if fi.Mode().Perm() != 0o700 {
		if err := os.Chmod(dir, 0o700); err != nil {
			return fmt.Errorf("restrict permissions of %s to 0700: %w; fix ownership of the directory", dir, err)
		}
	}
	return nil
}

// IsNoSpace reports whether err was caused by a full file system (ENOSPC or
// EDQUOT).
func IsNoSpace(err error) bool {
	return errors.Is(err, syscall.ENOSPC) || errors.Is(err, syscall.EDQUOT)
}

// wrapWriteErr adds advice to write errors, in particular for full disks.
func wrapWriteErr(dir, name string, err error) error {
	if IsNoSpace(err) {
		return fmt.Errorf("no space left in %s while writing %s: free some space or point BACKUP_DIR to a larger file system: %w", dir, filepath.Base(name), err)
	}
	return fmt.Errorf("write %s: %w", name, err)
}

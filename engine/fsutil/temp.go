package fsutil

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
)

// tempMarker separates the base name from the random suffix of temporary
// file names.
const tempMarker = ".tmp-"

// TempPrefix returns the prefix used for temporary files that will later be
// renamed to base: ".<base>.tmp-".
func TempPrefix(base string) string {
	return "." + base + tempMarker
}

// IsTemp reports whether name (a base name, not a path) looks like a
// temporary file created with TempPrefix, i.e. matches ".*.tmp-*".
func IsTemp(name string) bool {
	if strings.Contains(name, "/") {
		return false
	}
	ok, _ := filepath.Match(".*"+tempMarker+"*", name)
	return ok
}

// MkdirTemp creates a private (0700) directory in dir named
// TempPrefix(base) followed by random characters, and locks it (flock)
// until release is called, so that RemoveLeftovers in another process (a
// backup starting while a drill or restore works in it) leaves it alone.
// The caller removes the directory, then calls release; after a crash the
// lock is gone with the process and the next sweep removes it.
func MkdirTemp(dir, base string) (path string, release func(), err error) {
	for range 10 {
		var b [8]byte
		if _, err := rand.Read(b[:]); err != nil {
			return "", nil, fmt.Errorf("generate temporary directory name: %w", err)
		}
		path = filepath.Join(dir, TempPrefix(base)+hex.EncodeToString(b[:]))
		if err = os.Mkdir(path, 0o700); errors.Is(err, os.ErrExist) {
			continue
		}
		if err != nil {
			return "", nil, wrapWriteErr(dir, path, err)
		}
		d, err := os.Open(path)
		if err == nil {
			err = syscall.Flock(int(d.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
			if err != nil {
				d.Close()
			}
		}
		if err != nil {
			os.Remove(path)
			return "", nil, fmt.Errorf("lock temporary directory %s: %w", path, err)
		}
		return path, func() { d.Close() }, nil
	}
	return "", nil, fmt.Errorf("create temporary directory for %s in %s: too many name collisions; remove stale %s* entries", base, dir, TempPrefix(base))
}

// inUse reports whether another open file description holds the lock of
// the temporary file or directory at p (CreateTemp, MkdirTemp): its
// process is alive and still working with it.
func inUse(p string) bool {
	f, err := os.OpenFile(p, os.O_RDONLY|syscall.O_NOFOLLOW|syscall.O_NONBLOCK, 0)
	if err != nil {
		return false
	}
	defer f.Close()
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		return errors.Is(err, syscall.EWOULDBLOCK)
	}
	return false
}

// RemoveLeftovers removes temporary files and directories (see IsTemp)
// located directly in dir, typically left behind by an interrupted run;
// those a live process holds (CreateTemp's files while open, MkdirTemp's
// directories until released) are left alone. It returns the paths it
// removed. A missing dir is not an error.
func RemoveLeftovers(dir string) ([]string, error) {
	entries, err := os.ReadDir(dir)
	if os.IsNotExist(err) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("list %s for leftover temporary files: %w", dir, err)
	}
	var removed []string
	for _, e := range entries {
		if !IsTemp(e.Name()) {
			continue
		}
		p := filepath.Join(dir, e.Name())
		if inUse(p) {
			continue
		}
		if err := os.RemoveAll(p); err != nil {
			return removed, fmt.Errorf("remove leftover temporary file %s: %w; remove it by hand", p, err)
		}
		removed = append(removed, p)
	}
	return removed, nil
}

package config

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/pme2go/pme2go-backup/engine/fsutil"
)

// InstallationIDFile is the file, below StateDir, that holds the
// installation identity.
const InstallationIDFile = "installation-id"

// InstallationIDPath returns BACKUP_DIR/state/installation-id.
func (c *Config) InstallationIDPath() string { return filepath.Join(c.StateDir(), InstallationIDFile) }

// InstallationID returns the identity of this installation (this
// BACKUP_DIR): 32 lowercase hexadecimal characters, drawn at random the
// first time it is asked for and kept in BACKUP_DIR/state/installation-id
// (mode 0600). Every object the program creates in a server (slots,
// publications, its schema, functions and event triggers) carries its short
// form (ShortID), so that two installations backing up the same server
// never take each other's objects for their own. Concurrent first calls
// agree on one identity (the file is created with a link that fails when it
// exists). A damaged file is an error naming it: it is never replaced
// silently, because a new identity would orphan the objects of the old one.
func InstallationID(cfg *Config) (string, error) {
	path := cfg.InstallationIDPath()
	if id, err := readInstallationID(path); err == nil || !errors.Is(err, os.ErrNotExist) {
		return id, err
	}
	if err := fsutil.EnsurePrivateDir(cfg.StateDir()); err != nil {
		return "", fmt.Errorf("installation identity: state directory: %w", err)
	}
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", fmt.Errorf("installation identity: %w", err)
	}
	id := hex.EncodeToString(b[:])
	f, tmp, err := fsutil.CreateTemp(cfg.StateDir(), InstallationIDFile)
	if err != nil {
		return "", fmt.Errorf("installation identity: %w", err)
	}
	defer os.Remove(tmp)
	_, err = f.WriteString(id + "\n")
	if err == nil {
		err = f.Chmod(0o600)
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return "", fmt.Errorf("installation identity: write %s: %w", path, err)
	}
	if err := os.Link(tmp, path); err != nil && !errors.Is(err, os.ErrExist) {
		return "", fmt.Errorf("installation identity: create %s: %w", path, err)
	}
	fsutil.SyncDir(cfg.StateDir())
	return readInstallationID(path)
}

// ShortID is the short form of an installation identity carried in the
// names of server objects: its first 8 hexadecimal characters.
func ShortID(id string) string {
	if len(id) > 8 {
		return id[:8]
	}
	return id
}

// InstallationShortID returns ShortID(InstallationID(cfg)).
func InstallationShortID(cfg *Config) (string, error) {
	id, err := InstallationID(cfg)
	return ShortID(id), err
}

func readInstallationID(path string) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return "", err
		}
		return "", fmt.Errorf("installation identity: read %s: %w", path, err)
	}
	id := strings.TrimSpace(string(b))
	if len(id) != 32 || strings.Trim(id, "0123456789abcdef") != "" {
		return "", fmt.Errorf("installation identity: %s is damaged (want 32 lowercase hex characters): restore it from a copy of BACKUP_DIR/state; if it is lost, remove it (a new identity is drawn) and drop the old identity's replication slots and publications (named pme2go_<first 8 characters>_…) by hand", path)
	}
	return id, nil
}

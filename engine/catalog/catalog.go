// Package catalog lists the backups in BACKUP_DIR from their sidecar
// manifests (never decompressing an archive) and applies the retention
// policy.
package catalog

import (
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/pme2go/pme2go-backup/engine/archive"
	"github.com/pme2go/pme2go-backup/engine/errs"
	"github.com/pme2go/pme2go-backup/engine/fsutil"
)

// Backup is one archive as `list` shows it.
type Backup struct {
	Name      string            `json:"name"`
	Path      string            `json:"path"`
	Type      archive.Kind      `json:"type"`
	Timestamp time.Time         `json:"timestamp"`
	Size      int64             `json:"size"`
	Databases []string          `json:"databases,omitempty"`
	ChainID   string            `json:"chainId,omitempty"`
	Previous  string            `json:"previous,omitempty"`
	Problem   string            `json:"problem,omitempty"` // e.g. a missing or unreadable manifest
	Manifest  *archive.Manifest `json:"-"`
}

// List returns the backups below dir (its full/ and incremental/
// subdirectories), oldest first. An archive without a readable sidecar is
// listed with a Problem; temporary files of interrupted runs are not listed.
func List(dir string) ([]Backup, error) {
	var out []Backup
	for _, sub := range []string{string(archive.KindFull), string(archive.KindIncremental)} {
		entries, err := os.ReadDir(filepath.Join(dir, sub))
		if os.IsNotExist(err) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("list %s: %w", filepath.Join(dir, sub), err)
		}
		for _, e := range entries {
			name := e.Name()
			if fsutil.IsTemp(name) || strings.HasSuffix(name, ".manifest.json") || !e.Type().IsRegular() {
				continue
			}
			if _, ok := archive.CodecFromName(name); !ok {
				continue
			}
			out = append(out, describe(filepath.Join(dir, sub, name), sub))
		}
	}
	sort.Slice(out, func(i, j int) bool {
		if !out[i].Timestamp.Equal(out[j].Timestamp) {
			return out[i].Timestamp.Before(out[j].Timestamp)
		}
		return out[i].Name < out[j].Name
	})
	return out, nil
}

func describe(path, sub string) Backup {
	b := Backup{Name: filepath.Base(path), Path: path, Type: archive.Kind(strings.TrimSuffix(sub, "/"))}
	if st, err := os.Stat(path); err == nil {
		b.Size = st.Size()
		b.Timestamp = st.ModTime().UTC()
	}
	m, err := archive.ReadSidecar(path)
	if err != nil {
		b.Problem = fmt.Sprintf("no readable manifest beside the archive (%v); run verify", err)
		return b
	}
	b.Manifest = m
	b.Type, b.Timestamp, b.Databases = m.Type, m.Timestamp, m.Databases
	b.ChainID, b.Previous = m.ChainID, m.Previous
	return b
}

// Find resolves a backup given by path or by name (with or without its
// extension) among the listed backups.
func Find(dir, ref string) (Backup, error) {
	if st, err := os.Stat(ref); err == nil && st.Mode().IsRegular() {
		abs, _ := filepath.Abs(ref)
		return describe(abs, filepath.Base(filepath.Dir(abs))), nil
	}
	all, err := List(dir)
	if err != nil {
		return Backup{}, err
	}
	for _, b := range all {
		if b.Name == ref || archive.TrimExt(b.Name) == ref || strings.TrimSuffix(b.Name, ".age") == ref {
			return b, nil
		}
	}
	return Backup{}, errs.New(errs.NotFound, fmt.Sprintf("backup %q not found (neither a file nor a name in %s)", ref, dir)).
		WithFix("", "name a backup as the list of backups shows it, or give the archive's path")
}

// Newest returns the newest backup of the given type, or false.
func Newest(all []Backup, typ archive.Kind) (Backup, bool) {
	var best Backup
	found := false
	for _, b := range all {
		if b.Type == typ && b.Problem == "" && (!found || b.Timestamp.After(best.Timestamp)) {
			best, found = b, true
		}
	}
	return best, found
}

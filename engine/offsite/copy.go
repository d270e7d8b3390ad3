package offsite

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/pme2go/pme2go-backup/engine/archive"
	"github.com/pme2go/pme2go-backup/engine/catalog"
	"github.com/pme2go/pme2go-backup/engine/config"
	"github.com/pme2go/pme2go-backup/engine/crypt"
	"github.com/pme2go/pme2go-backup/engine/errs"
	"github.com/pme2go/pme2go-backup/engine/fsutil"
)

// relOf returns the repository path of a local archive: its directory
// (full or incremental) and name.
func relOf(path string) string {
	return filepath.Base(filepath.Dir(path)) + "/" + filepath.Base(path)
}

// Uploaded is one archive copied (or found already copied) by Upload.
type Uploaded struct {
	Name   string `json:"name"`
	Key    string `json:"key"`
	Size   int64  `json:"size"`
	SHA256 string `json:"sha256"`
	Skip   bool   `json:"alreadyCopied,omitempty"`
	// Resumed counts the bytes an interrupted earlier upload had sent and
	// this one kept.
	Resumed int64   `json:"resumedBytes,omitempty"`
	Secs    float64 `json:"duration"`
}

// Upload copies the local archive at path and its sidecar manifest to the
// repository and verifies both by reading them back: the archive must have
// the SHA-256 its sidecar records (the bytes as stored, encrypted or not),
// or, for a sidecar without one, the SHA-256 of the local file. The sidecar
// is uploaded last: an archive without it in the repository is an
// unfinished upload. A verified copy is recorded in the state file. An
// archive already recorded with the same checksum is not sent again.
func (r *Repo) Upload(ctx context.Context, cfg *config.Config, path string, log *slog.Logger) (*Uploaded, error) {
	start := time.Now()
	name, rel := filepath.Base(path), relOf(path)
	side, err := os.ReadFile(archive.SidecarPath(path))
	if err != nil {
		return nil, fmt.Errorf("upload %s: its sidecar manifest is unreadable (%w); run `pme2go-backup verify %s`", name, err, name)
	}
	var m archive.Manifest
	if err := json.Unmarshal(side, &m); err != nil {
		return nil, fmt.Errorf("upload %s: sidecar manifest: %w", name, err)
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("upload %s: %w", name, err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("upload %s: %w", name, err)
	}
	want := ""
	if m.Archive != nil {
		want = m.Archive.SHA256
	}
	st, err := LoadState(cfg)
	if err != nil {
		return nil, err
	}
	if c := st.Copies[name]; c != nil && st.Repository == r.S.String() && c.Size == fi.Size() && (want == "" || c.SHA256 == want) {
		if !c.Ours {
			// Found in the repository with the bytes we hold: ours.
			if err := update(cfg, func(st *State) error {
				if c := st.Copies[name]; c != nil {
					c.Ours = true
				}
				return nil
			}); err != nil {
				return nil, err
			}
		}
		return &Uploaded{Name: name, Key: c.Key, Size: c.Size, SHA256: c.SHA256, Skip: true}, nil
	}
	if want != "" {
		// An object already there may be the only good copy of this
		// backup (the state was lost or names another repository spelling):
		// prove the local file first, so that a damaged local archive never
		// overwrites it.
		if ok, _, err := r.Exists(ctx, rel); err != nil {
			return nil, err
		} else if ok {
			d, err := crypt.FileDigest(f)
			if err != nil {
				return nil, fmt.Errorf("upload %s: %w", name, err)
			}
			if d.SHA256 != want {
				return nil, &errs.Error{Code: errs.VerifyFailed, Message: fmt.Sprintf("local archive %s does not match its sidecar checksum (%s, recorded %s); not copied off-site, the copy already there is left as it is", name, d.SHA256, want),
					Fix: &errs.Fix{Text: "run `pme2go-backup verify " + name + "`; fetch the off-site copy back or take a new backup"}}
			}
			if _, err := f.Seek(0, io.SeekStart); err != nil {
				return nil, fmt.Errorf("upload %s: %w", name, err)
			}
		}
	}
	var sent string
	var kept int64
	if fi.Size() > PartSize && want != "" {
		sent, kept, err = r.putResumable(ctx, cfg, rel, f, fi.Size(), want)
	} else {
		sent, err = r.Put(ctx, rel, f, fi.Size())
	}
	if err != nil {
		return nil, err
	}
	if want != "" && sent != want {
		// The local file no longer matches its manifest: never let a
		// damaged archive pass for a good copy.
		r.Remove(context.WithoutCancel(ctx), rel)
		return nil, &errs.Error{Code: errs.VerifyFailed, Message: fmt.Sprintf("local archive %s does not match its sidecar checksum (%s, recorded %s); not copied off-site", name, sent, want),
			Fix: &errs.Fix{Text: "run `pme2go-backup verify " + name + "` and take a new backup"}}
	}
	got, n, err := r.Hash(ctx, rel)
	if err != nil {
		return nil, err
	}
	if got != sent || n != fi.Size() {
		r.Remove(context.WithoutCancel(ctx), rel)
		return nil, &errs.Error{Code: errs.VerifyFailed, Message: fmt.Sprintf("off-site copy of %s reads back as %s (%d bytes), sent %s (%d bytes); removed it", name, got, n, sent, fi.Size()),
			Fix: &errs.Fix{Text: "check the off-site server; try OFFSITE_CHECKSUM=md5 if it rewrites checksummed uploads; run `pme2go-backup offsite sync` again"}}
	}
	sideSum, err := r.Put(ctx, rel+archive.SidecarSuffix, bytes.NewReader(side), int64(len(side)))
	if err != nil {
		return nil, err
	}
	if got, _, err := r.Hash(ctx, rel+archive.SidecarSuffix); err != nil {
		return nil, err
	} else if got != sideSum {
		r.Remove(context.WithoutCancel(ctx), rel+archive.SidecarSuffix)
		return nil, &errs.Error{Code: errs.VerifyFailed, Message: fmt.Sprintf("off-site copy of the manifest of %s reads back wrong; removed it", name)}
	}
	c := &Copy{Name: name, Type: filepath.Base(filepath.Dir(path)), Key: rel, Size: fi.Size(), SHA256: sent, Copied: time.Now().UTC(), Manifest: &m, Ours: true}
	if err := update(cfg, func(st *State) error {
		st.Repository = r.S.String()
		st.Copies[name] = c
		return nil
	}); err != nil {
		return nil, err
	}
	d := time.Since(start)
	if log != nil {
		log.Info("backup copied off-site", "backup", name, "repository", r.S.String(), "bytes", fi.Size(), "seconds", d.Seconds())
	}
	return &Uploaded{Name: name, Key: rel, Size: fi.Size(), SHA256: sent, Secs: d.Seconds(), Resumed: kept}, nil
}

// Remote is a backup found in the repository.
type Remote struct {
	catalog.Backup
	Key string // archive path below the repository root
}

// Remotes lists the backups of the repository: archives whose sidecar
// manifest is present (an archive without one is an unfinished upload).
// Sidecars already recorded in the state file are not downloaded again.
func (r *Repo) Remotes(ctx context.Context, cfg *config.Config) ([]Remote, error) {
	st, err := LoadState(cfg)
	if err != nil {
		return nil, err
	}
	var out []Remote
	for _, sub := range []string{"full/", "incremental/"} {
		objs, err := r.List(ctx, sub)
		if err != nil {
			return nil, err
		}
		size := map[string]int64{}
		for _, o := range objs {
			size[o.Rel] = o.Size
		}
		for _, o := range objs {
			rel, ok := strings.CutSuffix(o.Rel, archive.SidecarSuffix)
			if !ok {
				continue
			}
			if _, ok := size[rel]; !ok || checkRel(rel) != nil || o.Size > MaxSmallObject {
				continue // unfinished, a key no backup has (../, subdirectories), or no manifest
			}
			name := filepath.Base(rel)
			var m *archive.Manifest
			if c := st.Copies[name]; c != nil && c.Manifest != nil && c.Size == size[rel] {
				m = c.Manifest
			} else {
				b, err := r.ReadAll(ctx, o.Rel)
				if err != nil {
					return nil, err
				}
				m = &archive.Manifest{}
				if err := json.Unmarshal(b, m); err != nil {
					continue
				}
			}
			b := catalog.Backup{Name: name, Path: rel, Type: m.Type, Timestamp: m.Timestamp, Size: size[rel],
				Databases: m.Databases, ChainID: m.ChainID, Previous: m.Previous, Manifest: m}
			out = append(out, Remote{Backup: b, Key: rel})
		}
	}
	return out, nil
}

// Fetch downloads the backup at rel (archive and sidecar) into BACKUP_DIR,
// streaming, checking the archive against the SHA-256 its sidecar records
// and the size; it is written under a temporary name, fsynced and renamed,
// so a failed fetch leaves nothing that list shows. It returns the local
// path.
//
// It refuses a key that is not full/<name> or incremental/<name> (a key
// with ../ must never place a file outside BACKUP_DIR), a sidecar that
// describes another archive (an object and sidecar replaced by another
// backup's), and bytes other than those this installation recorded when
// it made the copy.
func (r *Repo) Fetch(ctx context.Context, cfg *config.Config, rel string) (string, error) {
	if err := checkRel(rel); err != nil {
		return "", err
	}
	side, err := r.ReadAll(ctx, rel+archive.SidecarSuffix)
	if err != nil {
		return "", err
	}
	var m archive.Manifest
	if err := json.Unmarshal(side, &m); err != nil {
		return "", fmt.Errorf("off-site manifest of %s: %w", rel, err)
	}
	name := filepath.Base(rel)
	if m.Archive != nil && m.Archive.Name != "" && m.Archive.Name != name {
		return "", &errs.Error{Code: errs.VerifyFailed, Message: fmt.Sprintf("off-site copy of %s is refused: its sidecar manifest describes another archive, %s (objects replaced or moved in the repository)", name, m.Archive.Name),
			Fix: &errs.Fix{Text: "do not use this copy: restore the objects from the bucket's versions, or use another backup"}}
	}
	recorded := ""
	if st, err := LoadState(cfg); err == nil && st.Repository == r.S.String() {
		if c := st.Copies[name]; c != nil {
			recorded = c.SHA256
		}
	}
	dir := filepath.Join(cfg.BackupDir, filepath.Dir(rel))
	if err := ensureDirs(cfg, dir); err != nil {
		return "", err
	}
	path := filepath.Join(dir, filepath.Base(rel))
	body, size, err := r.Get(ctx, rel)
	if err != nil {
		return "", err
	}
	defer body.Close()
	tmp, _, err := fsutil.CreateTemp(dir, filepath.Base(rel))
	if err != nil {
		return "", fmt.Errorf("fetch %s: %w", rel, err)
	}
	defer os.Remove(tmp.Name())
	defer tmp.Close()
	h := sha256.New()
	n, err := io.Copy(io.MultiWriter(tmp, h), body)
	if err != nil {
		return "", r.objectErr("download "+rel, err)
	}
	got := "sha256:" + hex.EncodeToString(h.Sum(nil))
	if n != size || (m.Archive != nil && (m.Archive.SHA256 != got || m.Archive.Size != n)) {
		want := ""
		if m.Archive != nil {
			want = m.Archive.SHA256
		}
		return "", &errs.Error{Code: errs.VerifyFailed, Message: fmt.Sprintf("off-site copy of %s is damaged: %d bytes with %s, its manifest records %s", rel, n, got, want),
			Fix: &errs.Fix{Text: "use another backup, or restore the object from the bucket's versions"}}
	}
	if recorded != "" && recorded != got {
		return "", &errs.Error{Code: errs.VerifyFailed, Message: fmt.Sprintf("off-site copy of %s is refused: it holds %s, but this installation copied %s (objects replaced in the repository)", rel, got, recorded),
			Fix: &errs.Fix{Text: "do not use this copy: restore the object and its sidecar from the bucket's versions, or use another backup"}}
	}
	if err := tmp.Sync(); err != nil {
		return "", fmt.Errorf("fetch %s: %w", rel, err)
	}
	if err := tmp.Chmod(0o600); err != nil {
		return "", err
	}
	// Renamed while open (closed by the deferred Close): a backup starting
	// meanwhile leaves a temporary file that is open alone.
	if err := writeAtomic(archive.SidecarPath(path), side); err != nil {
		return "", err
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		os.Remove(archive.SidecarPath(path))
		return "", fmt.Errorf("fetch %s: %w", rel, err)
	}
	if err := syncDir(dir); err != nil {
		return "", err
	}
	// The local copy is back: it is no longer pruned.
	_ = update(cfg, func(st *State) error {
		if c := st.Copies[filepath.Base(rel)]; c != nil {
			c.LocalPruned = nil
		}
		return nil
	})
	return path, nil
}

// checkRel accepts only the repository paths backups have:
// full/<name> and incremental/<name>, name a plain file name.
func checkRel(rel string) error {
	dir, name, ok := strings.Cut(rel, "/")
	if ok && (dir == "full" || dir == "incremental") && name != "" && name != "." && name != ".." &&
		!strings.ContainsAny(name, "/\\\x00") {
		return nil
	}
	return &errs.Error{Code: errs.VerifyFailed, Message: fmt.Sprintf("off-site object %q is not a backup of this repository (only full/<name> and incremental/<name> are); refused", rel),
		Fix: &errs.Fix{Text: "remove the object from the repository"}}
}

// ErrNoRepository wraps operations asked of an unconfigured repository.
var ErrNoRepository = errors.New("no off-site repository")

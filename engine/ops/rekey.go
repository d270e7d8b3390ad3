package ops

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"time"

	"github.com/pme2go/pme2go-backup/engine/archive"
	"github.com/pme2go/pme2go-backup/engine/backupdir"
	"github.com/pme2go/pme2go-backup/engine/catalog"
	"github.com/pme2go/pme2go-backup/engine/config"
	"github.com/pme2go/pme2go-backup/engine/crypt"
	"github.com/pme2go/pme2go-backup/engine/errs"
	"github.com/pme2go/pme2go-backup/engine/fsutil"
	"github.com/pme2go/pme2go-backup/engine/offsite"
	"github.com/pme2go/pme2go-backup/engine/progress"
)

// RekeyOptions name the archives to re-encrypt.
type RekeyOptions struct {
	// Backups are archive paths or names as List shows them; empty: every
	// encrypted backup.
	Backups []string `json:"backups,omitempty"`
	// DryRun lists what would be re-encrypted without writing anything.
	DryRun bool `json:"dryRun,omitempty"`
}

// RekeyResult has one entry per archive looked at.
type RekeyResult struct {
	// Recipients are the fingerprints of the current recipients.
	Recipients []string         `json:"recipients"`
	Archives   []RekeyedArchive `json:"archives"`
	Rekeyed    int              `json:"rekeyed"`
	// OffsiteRekeyed counts off-site copies replaced by their
	// re-encryption (uploaded and verified by SHA-256).
	OffsiteRekeyed int     `json:"offsiteRekeyed"`
	Current        int     `json:"current"`
	Plaintext      int     `json:"plaintext"`
	Duration       float64 `json:"duration"`
}

// RekeyedArchive is what rekey did with one archive. Action is "rekeyed",
// "resumed" (an interrupted replacement finished), "current" (already
// encrypted to exactly the current recipients), "plaintext" (not
// encrypted; left as it is) or, with DryRun, "would-rekey".
type RekeyedArchive struct {
	Name   string `json:"name"`
	Path   string `json:"path"`
	Action string `json:"action"`
	// Location is where the backup was: "local", "both" or "offsite"
	// (only off-site: fetched, re-encrypted, uploaded, and its local
	// copy removed again).
	Location string `json:"location,omitempty"`
	// Offsite is what happened to the off-site copy: "rekeyed" (replaced
	// by the re-encrypted archive, verified by SHA-256 of the stored
	// bytes), "would-rekey" (DryRun), or empty (no off-site copy, or it
	// already held these bytes).
	Offsite string `json:"offsite,omitempty"`
	// Before lists the fingerprints the archive was encrypted to.
	Before   []string `json:"before,omitempty"`
	Size     int64    `json:"size,omitempty"`
	Duration float64  `json:"duration,omitempty"`
}

// rekeyJournal records a replacement between the rename of the new archive
// and the rewrite of its sidecar (state/rekey/<name>.json), so that a rekey
// killed in between finishes it on the next run.
type rekeyJournal struct {
	Archive    string   `json:"archive"`
	OldSHA256  string   `json:"oldSha256"`
	NewSHA256  string   `json:"newSha256"`
	NewSize    int64    `json:"newSize"`
	Recipients []string `json:"recipients"`
}

// rekeyKillAt names a step at which a test makes the process kill itself
// (PME2GO_TEST_REKEY_KILL=after-rename or before-offsite-upload), to prove
// resumption.
func rekeyKillAt(step string) {
	if os.Getenv("PME2GO_TEST_REKEY_KILL") == step {
		_ = syscall.Kill(os.Getpid(), syscall.SIGKILL)
		time.Sleep(time.Minute)
	}
}

// Rekey re-encrypts encrypted archives to the current recipients
// (BACKUP_ENCRYPTION_RECIPIENTS), so that a retired key can be destroyed.
// Each archive is decrypted with the identity (BACKUP_ENCRYPTION_IDENTITY_FILE
// or the credential), encrypted again into a temporary file in the same
// directory, fsynced, verified (decrypted again with the identity — which
// must therefore also hold a key of one of the new recipients — and its
// plaintext checksum compared with the original's), renamed over the archive,
// and its sidecar manifest rewritten with the new size, checksum and
// recipients. It holds the backup directory lock throughout. Killed at any
// point, it leaves each archive either old or new with a matching sidecar,
// or a journal the next run completes; run it again to continue. Archives
// already encrypted to exactly the current recipients are skipped, so a
// rerun resumes where the last one stopped. Plaintext archives are left as
// they are (their names are referred to by their chain).
//
// With OFFSITE_URL, off-site copies are re-encrypted too: an archive with
// an off-site copy is uploaded again once re-encrypted locally (the upload
// is verified by reading it back and comparing its SHA-256 with the new
// sidecar's; only then is the new sidecar uploaded); an archive only
// off-site (its local copy pruned) is fetched and checked, re-encrypted
// and verified locally, uploaded and verified, and only then is its local
// copy removed again. At every moment either the local or the off-site
// copy is complete and matches its sidecar. An archive that is already
// current locally but whose off-site copy still holds other bytes (a rekey
// killed before the upload) is uploaded again, so a rerun resumes that too.
// The repository must be readable: otherwise nothing is re-encrypted.
//
// Errors: CONFIG without recipients, KEY_ERR without an identity or when
// it opens an archive but not what was written (add the new private key to
// the identity file), VERIFY_FAILED for an archive that does not match its
// sidecar (nothing is replaced), NOT_FOUND for an unknown backup, BUSY when
// a backup or restore holds the lock.
func Rekey(ctx context.Context, cfg *config.Config, opts RekeyOptions, p Progress) (*RekeyResult, error) {
	start := time.Now()
	rec, err := crypt.LoadRecipients()
	if err != nil {
		return nil, err
	}
	res := &RekeyResult{Recipients: rec.Fingerprints(), Archives: []RekeyedArchive{}}
	var ids *crypt.Identities
	if !opts.DryRun {
		if ids, err = crypt.LoadIdentities(); err != nil {
			return nil, err
		}
		unlock, err := backupdir.Prepare(cfg, cfg.FullDir())
		if err != nil {
			return nil, err
		}
		defer unlock()
		if err := resumeRekeys(ctx, cfg, ids, res); err != nil {
			return res, err
		}
	}
	repo, remotes, err := rekeyRemotes(ctx, cfg)
	if err != nil {
		return res, err
	}
	list, err := rekeyTargets(cfg, opts.Backups, remotes)
	if err != nil {
		return res, err
	}
	for i, t := range list {
		b := t.b
		if err := ctx.Err(); err != nil {
			return res, errs.Wrap(errs.Canceled, "rekey interrupted; run it again to continue", err)
		}
		p.Report(progress.Event{Phase: "rekey", Object: b.Name, Done: int64(i), Total: int64(len(list)), Unit: progress.Archives})
		a := RekeyedArchive{Name: b.Name, Path: b.Path, Location: t.location()}
		switch {
		case !archive.IsEncryptedName(b.Name):
			a.Action = "plaintext"
			res.Plaintext++
		case b.Manifest == nil || b.Manifest.Archive == nil:
			return res, errs.New(errs.VerifyFailed, fmt.Sprintf("%s has no readable sidecar manifest (%s); rekey needs it to check the archive", b.Name, b.Problem)).
				WithFix("", "run verify on it; restore the sidecar or remove the backup; nothing was replaced")
		default:
			var before []string
			if e := b.Manifest.Archive.Encryption; e != nil {
				before = e.Recipients
			}
			for _, k := range before {
				a.Before = append(a.Before, crypt.Fingerprint(k))
			}
			switch {
			case crypt.SameKeys(before, rec.Keys):
				a.Action = "current"
				res.Current++
				if t.remote != nil && t.local && t.remote.Manifest.Archive != nil && t.remote.Manifest.Archive.SHA256 != b.Manifest.Archive.SHA256 {
					// Re-encrypted locally by an earlier run, not yet off-site.
					if opts.DryRun {
						a.Offsite = "would-rekey"
						break
					}
					if err := rekeyUpload(ctx, cfg, repo, b.Path, &a, res); err != nil {
						return res, err
					}
				}
			case opts.DryRun:
				a.Action = "would-rekey"
				if t.remote != nil {
					a.Offsite = "would-rekey"
				}
			default:
				t0 := time.Now()
				if !t.local {
					// Only off-site: bring it back (checked against its
					// sidecar), re-encrypt it here, send it back.
					path, err := repo.Fetch(ctx, cfg, t.remote.Key)
					if err != nil {
						return res, fmt.Errorf("rekey %s: fetch the off-site copy (nothing was replaced): %w", b.Name, err)
					}
					if b, err = catalog.Find(cfg.BackupDir, path); err != nil {
						return res, err
					}
					a.Path = b.Path
				}
				size, err := rekeyOne(cfg, b, ids, rec)
				if err != nil {
					return res, err
				}
				a.Action, a.Size = "rekeyed", size
				res.Rekeyed++
				if t.remote != nil {
					if err := rekeyUpload(ctx, cfg, repo, b.Path, &a, res); err != nil {
						return res, err
					}
				}
				if !t.local {
					nb, err := catalog.Find(cfg.BackupDir, b.Path)
					if err == nil {
						err = repo.PruneCopy(cfg, nb)
					}
					if err != nil {
						return res, fmt.Errorf("rekey %s: re-encrypted local and off-site; its local copy (fetched for this) was not removed again: %w", b.Name, err)
					}
					a.Path = "offsite:" + t.remote.Key
				}
				a.Duration = time.Since(t0).Seconds()
			}
		}
		res.Archives = append(res.Archives, a)
	}
	p.Report(progress.Event{Phase: "done", Done: int64(len(list)), Total: int64(len(list)), Unit: progress.Archives})
	res.Duration = time.Since(start).Seconds()
	return res, nil
}

// rekeyTarget is one backup rekey looks at: local (b from BACKUP_DIR),
// off-site (remote), or both.
type rekeyTarget struct {
	b      catalog.Backup
	local  bool
	remote *offsite.Remote
}

func (t rekeyTarget) location() string {
	switch {
	case t.local && t.remote != nil:
		return "both"
	case t.local:
		return "local"
	}
	return "offsite"
}

// rekeyRemotes opens the off-site repository, when one is configured, and
// lists its backups by name. An unreadable repository is an error: rekey
// must not leave off-site copies to a retired key unnoticed.
func rekeyRemotes(ctx context.Context, cfg *config.Config) (*offsite.Repo, map[string]*offsite.Remote, error) {
	if !offsite.Configured(cfg) {
		return nil, nil, nil
	}
	r, err := openOffsite(cfg)
	if err == nil {
		err = r.Check(ctx)
	}
	var list []offsite.Remote
	if err == nil {
		list, err = r.Remotes(ctx, cfg)
	}
	if err != nil {
		return nil, nil, &errs.Error{Code: errs.CodeOf(err), Message: "rekey re-encrypts the off-site copies too, and the off-site repository cannot be read; nothing was re-encrypted", Err: err,
			Fix: &errs.Fix{Text: "make the repository reachable (OFFSITE_URL, OFFSITE_ENDPOINT, credentials), then run rekey again"}}
	}
	out := map[string]*offsite.Remote{}
	for i := range list {
		out[list[i].Name] = &list[i]
	}
	return r, out, nil
}

// rekeyTargets lists what rekey looks at: the named backups (local, or
// else off-site), or every local backup and every backup only off-site
// that this installation copied (another installation's backups in the
// same bucket are left alone unless named).
func rekeyTargets(cfg *config.Config, refs []string, remotes map[string]*offsite.Remote) ([]rekeyTarget, error) {
	var out []rekeyTarget
	if len(refs) == 0 {
		local, err := catalog.List(cfg.BackupDir)
		if err != nil {
			return nil, err
		}
		seen := map[string]bool{}
		for _, b := range local {
			seen[b.Name] = true
			out = append(out, rekeyTarget{b: b, local: true, remote: remotes[b.Name]})
		}
		ours := map[string]bool{}
		if copies, err := offsite.Copies(cfg); err == nil {
			for _, c := range copies {
				ours[c.Name] = c.Ours
			}
		}
		var names []string
		for n := range remotes {
			if !seen[n] && ours[n] {
				names = append(names, n)
			}
		}
		sort.Strings(names)
		for _, n := range names {
			out = append(out, rekeyTarget{b: remotes[n].Backup, remote: remotes[n]})
		}
		return out, nil
	}
	for _, ref := range refs {
		b, err := catalog.Find(cfg.BackupDir, ref)
		if err == nil {
			out = append(out, rekeyTarget{b: b, local: true, remote: remotes[b.Name]})
			continue
		}
		var found *offsite.Remote
		for n, r := range remotes {
			if n == ref || archive.TrimExt(n) == ref || strings.TrimSuffix(n, ".age") == ref || r.Key == ref {
				found = r
				break
			}
		}
		if found == nil {
			return nil, err
		}
		out = append(out, rekeyTarget{b: found.Backup, remote: found})
	}
	return out, nil
}

// rekeyUpload replaces the off-site copy of the archive at path by the
// local (re-encrypted) one: Upload sends it, reads it back and compares
// its SHA-256 with the sidecar's before it sends the new sidecar.
func rekeyUpload(ctx context.Context, cfg *config.Config, repo *offsite.Repo, path string, a *RekeyedArchive, res *RekeyResult) error {
	rekeyKillAt("before-offsite-upload")
	if _, err := repo.Upload(ctx, cfg, path, nil); err != nil {
		return fmt.Errorf("rekey %s: re-encrypted locally, but its off-site copy was not replaced (run rekey again): %w", a.Name, err)
	}
	a.Offsite = "rekeyed"
	res.OffsiteRekeyed++
	return nil
}

// journalDir is where rekey journals live.
func journalDir(cfg *config.Config) string { return filepath.Join(cfg.StateDir(), "rekey") }

// rekeyOne replaces one archive by its re-encryption; it returns the new size.
func rekeyOne(cfg *config.Config, b catalog.Backup, ids *crypt.Identities, rec *crypt.Recipients) (int64, error) {
	side := b.Manifest
	dir := filepath.Dir(b.Path)
	src, err := os.Open(b.Path)
	if err != nil {
		return 0, fmt.Errorf("rekey %s: %w", b.Name, err)
	}
	defer src.Close()
	tmp, tmpPath, err := fsutil.CreateTemp(dir, b.Name)
	if err != nil {
		return 0, fmt.Errorf("rekey %s: %w", b.Name, err)
	}
	defer os.Remove(tmpPath)
	stored, plain, written, err := crypt.Reencrypt(tmp, src, b.Name, ids, rec)
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		if errs.CodeOf(err) == errs.KeyErr {
			return 0, fmt.Errorf("rekey: %w", err)
		}
		return 0, fmt.Errorf("rekey %s (nothing was replaced): %w", b.Name, err)
	}
	if stored.SHA256 != side.Archive.SHA256 || stored.Size != side.Archive.Size {
		return 0, errs.New(errs.VerifyFailed, fmt.Sprintf("rekey %s: the archive (%s, %d bytes) does not match its sidecar (%s, %d bytes); nothing was replaced",
			b.Name, stored.SHA256, stored.Size, side.Archive.SHA256, side.Archive.Size)).
			WithFix("", "run verify on it; re-encrypting a damaged archive would hide the damage")
	}
	// Verify what was written: decrypt it again and compare the plaintext.
	f, err := os.Open(tmpPath)
	if err != nil {
		return 0, fmt.Errorf("rekey %s: %w", b.Name, err)
	}
	got, err := crypt.PlainDigest(f, b.Name+" (re-encrypted)", ids)
	f.Close()
	if err != nil {
		if errs.CodeOf(err) == errs.KeyErr {
			return 0, errs.Wrap(errs.KeyErr, fmt.Sprintf("rekey %s: the identity cannot open the re-encrypted archive, so it cannot be verified; nothing was replaced", b.Name), err).
				WithFix(errs.ActConfig, "add the private key of one of the new recipients to the identity file (an age identity file may hold several keys), then run rekey again")
		}
		return 0, fmt.Errorf("rekey %s: verification of the re-encrypted file failed; nothing was replaced: %w", b.Name, err)
	}
	if got != plain {
		return 0, fmt.Errorf("rekey %s: the re-encrypted file decrypts to other content (%s) than the original (%s); nothing was replaced", b.Name, got.SHA256, plain.SHA256)
	}
	j := rekeyJournal{Archive: b.Path, OldSHA256: stored.SHA256, NewSHA256: written.SHA256, NewSize: written.Size, Recipients: rec.Keys}
	jpath, err := writeJournal(cfg, b.Name, j)
	if err != nil {
		return 0, err
	}
	if err := os.Rename(tmpPath, b.Path); err != nil {
		os.Remove(jpath)
		return 0, fmt.Errorf("rekey %s: replace the archive: %w", b.Name, err)
	}
	if err := fsutil.SyncDir(dir); err != nil {
		return 0, fmt.Errorf("rekey %s: %w", b.Name, err)
	}
	rekeyKillAt("after-rename")
	if err := finishRekey(j, jpath); err != nil {
		return 0, err
	}
	return written.Size, nil
}

// writeJournal writes the journal of one replacement atomically.
func writeJournal(cfg *config.Config, name string, j rekeyJournal) (string, error) {
	if err := fsutil.EnsurePrivateDir(journalDir(cfg)); err != nil {
		return "", err
	}
	body, _ := json.MarshalIndent(j, "", "  ")
	p := filepath.Join(journalDir(cfg), name+".json")
	if err := fsutil.WriteFileAtomic(p, body, 0o600); err != nil {
		return "", fmt.Errorf("rekey %s: write journal: %w", name, err)
	}
	return p, nil
}

// finishRekey rewrites the sidecar for the replaced archive and drops the
// journal.
func finishRekey(j rekeyJournal, jpath string) error {
	m, err := archive.ReadSidecar(j.Archive)
	if err != nil {
		return fmt.Errorf("rekey %s: %w", filepath.Base(j.Archive), err)
	}
	m.Archive.SHA256, m.Archive.Size = j.NewSHA256, j.NewSize
	m.Archive.Encryption = &archive.Encryption{Format: "age", Recipients: j.Recipients}
	if err := archive.WriteSidecar(j.Archive, m); err != nil {
		return fmt.Errorf("rekey %s: rewrite the sidecar manifest: %w", filepath.Base(j.Archive), err)
	}
	if err := os.Remove(jpath); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	return fsutil.SyncDir(filepath.Dir(jpath))
}

// resumeRekeys completes replacements a killed rekey left half done: an
// archive that is already the new file gets its new sidecar; one that is
// still the old file keeps its sidecar (and is re-encrypted again).
func resumeRekeys(ctx context.Context, cfg *config.Config, ids *crypt.Identities, res *RekeyResult) error {
	entries, err := os.ReadDir(journalDir(cfg))
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	for _, e := range entries {
		if !strings.HasSuffix(e.Name(), ".json") || fsutil.IsTemp(e.Name()) {
			continue
		}
		jpath := filepath.Join(journalDir(cfg), e.Name())
		b, err := os.ReadFile(jpath)
		if err != nil {
			return err
		}
		var j rekeyJournal
		if err := json.Unmarshal(b, &j); err != nil {
			return fmt.Errorf("rekey journal %s is damaged (remove it and run verify): %w", jpath, err)
		}
		f, err := os.Open(j.Archive)
		if errors.Is(err, os.ErrNotExist) {
			os.Remove(jpath) // the backup was removed meanwhile
			continue
		}
		if err != nil {
			return err
		}
		d, err := crypt.FileDigest(f)
		f.Close()
		if err != nil {
			return err
		}
		switch d.SHA256 {
		case j.NewSHA256:
			if err := finishRekey(j, jpath); err != nil {
				return err
			}
			res.Rekeyed++
			res.Archives = append(res.Archives, RekeyedArchive{Name: filepath.Base(j.Archive), Path: j.Archive, Action: "resumed", Size: j.NewSize})
		case j.OldSHA256:
			if err := os.Remove(jpath); err != nil {
				return err
			}
		default:
			return errs.New(errs.VerifyFailed, fmt.Sprintf("rekey journal %s: %s is neither the archive before (%s) nor after (%s) re-encryption", jpath, j.Archive, j.OldSHA256, j.NewSHA256)).
				WithFix("", "run verify on the archive; remove the journal once it is dealt with")
		}
	}
	_ = ctx
	return nil
}

package offsite

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"time"

	"github.com/pme2go/pme2go-backup/engine/archive"
	"github.com/pme2go/pme2go-backup/engine/catalog"
	"github.com/pme2go/pme2go-backup/engine/config"
	"github.com/pme2go/pme2go-backup/engine/errs"
)

// TriggerStream is the manifest trigger of an incremental archive rebuilt
// from the change set streaming sent off-site (see FetchStreams); such an
// archive is never copied back to the repository.
const TriggerStream = "offsite-stream"

// SyncResult says what one Sync did.
type SyncResult struct {
	Repository string     `json:"repository"`
	Uploaded   []Uploaded `json:"uploaded"`
	// Failed names the archives whose copy failed, with the error.
	Failed []Failure `json:"failed"`
	// Pruned lists local copies removed under LOCAL_RETENTION_DAYS.
	Pruned []string `json:"pruned"`
	// Adopted lists backups found in the repository and recorded.
	Adopted []string `json:"adopted"`
	// AbortedUploads counts multipart uploads of interrupted runs aborted.
	AbortedUploads int `json:"abortedUploads"`
	// StreamsRemoved counts streamed change-set objects removed because an
	// uploaded incremental archive now holds them.
	StreamsRemoved int `json:"streamsRemoved"`
}

// Failure is one archive whose copy failed.
type Failure struct {
	Name  string `json:"name"`
	Error string `json:"error"`
}

// Sync copies every local backup not yet verified in the repository,
// records the repository's backups unknown to the state file, aborts the
// multipart uploads interrupted runs left, removes streamed change sets an
// uploaded incremental holds, and prunes local copies older than
// LOCAL_RETENTION_DAYS that have a verified copy. A failed copy does not
// stop the others; the joined error names each.
func (r *Repo) Sync(ctx context.Context, cfg *config.Config, now time.Time, log *slog.Logger) (*SyncResult, error) {
	res := &SyncResult{Repository: r.S.String(), Uploaded: []Uploaded{}, Failed: []Failure{}, Pruned: []string{}, Adopted: []string{}}
	if err := r.Check(ctx); err != nil {
		r.NoteRun(cfg, err)
		return res, err
	}
	var errList []error
	if n, err := r.AbortIncomplete(ctx, cfg); err != nil {
		errList = append(errList, err)
	} else {
		res.AbortedUploads = n
	}
	local, err := catalog.List(cfg.BackupDir)
	if err != nil {
		return res, err
	}
	for _, b := range local {
		if b.Problem != "" || isStreamArchive(b.Manifest) {
			continue
		}
		u, err := r.Upload(ctx, cfg, b.Path, log)
		if err != nil {
			res.Failed = append(res.Failed, Failure{Name: b.Name, Error: err.Error()})
			errList = append(errList, err)
			if ctx.Err() != nil {
				break
			}
			continue
		}
		if !u.Skip {
			res.Uploaded = append(res.Uploaded, *u)
		}
	}
	if remotes, err := r.Remotes(ctx, cfg); err != nil {
		errList = append(errList, err)
	} else {
		res.Adopted, err = r.adopt(cfg, remotes)
		if err != nil {
			errList = append(errList, err)
		}
		n, err := r.dropStreamsCovered(ctx, remotes)
		res.StreamsRemoved = n
		if err != nil {
			errList = append(errList, err)
		}
	}
	pruned, err := r.PruneLocal(ctx, cfg, now, log)
	res.Pruned = append(res.Pruned, pruned...)
	if err != nil {
		errList = append(errList, err)
	}
	err = errors.Join(errList...)
	r.NoteRun(cfg, err)
	return res, err
}

// Pending returns the paths of the local backups without a verified copy
// in the repository (recorded with the same size and checksum), oldest
// first: what Sync would upload. Streamed change sets rebuilt from the
// repository and damaged backups are left out.
func (r *Repo) Pending(cfg *config.Config) []string {
	local, err := catalog.List(cfg.BackupDir)
	if err != nil {
		return nil
	}
	st, err := LoadState(cfg)
	if err != nil {
		return nil
	}
	var out []string
	for _, b := range local {
		if b.Problem != "" || isStreamArchive(b.Manifest) {
			continue
		}
		c := st.Copies[b.Name]
		if st.Repository == r.S.String() && c != nil && c.Size == b.Size && (b.Manifest == nil || b.Manifest.Archive == nil || c.SHA256 == b.Manifest.Archive.SHA256) {
			continue
		}
		out = append(out, b.Path)
	}
	return out
}

// NoteRun records when the last copy run ended and its error (nil: it
// succeeded), for status and metrics.
func (r *Repo) NoteRun(cfg *config.Config, err error) {
	_ = update(cfg, func(st *State) error {
		now := time.Now().UTC()
		st.LastSync, st.LastError = &now, ""
		if err != nil {
			st.LastError = err.Error()
		} else {
			st.LastSuccess = &now
		}
		return nil
	})
}

func isStreamArchive(m *archive.Manifest) bool {
	return m != nil && m.Trigger() == TriggerStream
}

// adopt records the repository's backups the state file does not know
// (copied by another installation, or before the state was lost), and
// forgets recorded copies the repository no longer holds.
func (r *Repo) adopt(cfg *config.Config, remotes []Remote) ([]string, error) {
	var added []string
	err := update(cfg, func(st *State) error {
		if st.Repository != r.S.String() {
			st.Repository, st.Copies = r.S.String(), map[string]*Copy{}
		}
		seen := map[string]bool{}
		for _, rb := range remotes {
			seen[rb.Name] = true
			if c := st.Copies[rb.Name]; c != nil && c.Size == rb.Size {
				continue
			}
			sum := ""
			if rb.Manifest.Archive != nil {
				sum = rb.Manifest.Archive.SHA256
			}
			st.Copies[rb.Name] = &Copy{Name: rb.Name, Type: filepath.Dir(rb.Key), Key: rb.Key, Size: rb.Size, SHA256: sum,
				Copied: rb.Timestamp, Manifest: rb.Manifest}
			if _, err := os.Stat(filepath.Join(cfg.BackupDir, rb.Key)); err != nil {
				t := time.Now().UTC()
				st.Copies[rb.Name].LocalPruned = &t
			}
			added = append(added, rb.Name)
		}
		for name := range st.Copies {
			if !seen[name] {
				delete(st.Copies, name)
			}
		}
		return nil
	})
	sort.Strings(added)
	return added, err
}

// PruneLocal removes local copies older than LOCAL_RETENTION_DAYS whose
// off-site copy is verified: recorded with the size and SHA-256 the local
// sidecar records (a local archive rewritten since its copy, as rekey
// does, waits for the next sync to copy it), and read back from the
// repository right before the removal with that SHA-256 (a copy changed or
// damaged in the bucket is never the reason the good local copy goes; its
// record is dropped, so the next sync uploads it again). Unset
// LOCAL_RETENTION_DAYS prunes nothing.
func (r *Repo) PruneLocal(ctx context.Context, cfg *config.Config, now time.Time, log *slog.Logger) ([]string, error) {
	days := r.S.LocalRetentionDays
	if days < 0 {
		return nil, nil
	}
	local, err := catalog.List(cfg.BackupDir)
	if err != nil {
		return nil, err
	}
	st, err := LoadState(cfg)
	if err != nil {
		return nil, err
	}
	if st.Repository != r.S.String() {
		return nil, nil
	}
	cutoff := now.Add(-time.Duration(days) * 24 * time.Hour)
	var pruned, damaged []string
	var errList []error
	for _, b := range local {
		c := st.Copies[b.Name]
		if c == nil || c.Size != b.Size || b.Timestamp.After(cutoff) || isStreamArchive(b.Manifest) {
			continue
		}
		if b.Manifest == nil || b.Manifest.Archive == nil || b.Manifest.Archive.SHA256 != c.SHA256 {
			continue // not the bytes that were copied
		}
		if got, n, err := r.Hash(ctx, c.Key); err != nil {
			errList = append(errList, err)
			continue
		} else if got != c.SHA256 || n != c.Size {
			damaged = append(damaged, b.Name)
			errList = append(errList, &errs.Error{Code: errs.VerifyFailed,
				Message: fmt.Sprintf("off-site copy of %s reads back as %s (%d bytes), copied as %s (%d bytes): the local copy is kept", b.Name, got, n, c.SHA256, c.Size),
				Fix:     &errs.Fix{Text: "the object was changed or damaged in the repository; the next `pme2go-backup offsite sync` uploads it again"}})
			continue
		}
		if err := catalog.Remove(b); err != nil {
			errList = append(errList, err)
			continue
		}
		pruned = append(pruned, b.Name)
		if log != nil {
			log.Info("local copy pruned; the backup stays off-site", "backup", b.Name, "repository", r.S.String())
		}
	}
	if len(pruned)+len(damaged) > 0 {
		if err := update(cfg, func(st *State) error {
			t := now.UTC()
			for _, n := range pruned {
				if c := st.Copies[n]; c != nil {
					c.LocalPruned = &t
				}
			}
			for _, n := range damaged {
				delete(st.Copies, n)
			}
			return nil
		}); err != nil {
			errList = append(errList, err)
		}
	}
	return pruned, errors.Join(errList...)
}

// PruneCopy removes the local copy of b, whose copy in the repository
// must be recorded with the same size and checksum, and records it as
// pruned (rekey puts back a backup that was only off-site this way).
func (r *Repo) PruneCopy(cfg *config.Config, b catalog.Backup) error {
	st, err := LoadState(cfg)
	if err != nil {
		return err
	}
	c := st.Copies[b.Name]
	if st.Repository != r.S.String() || c == nil || c.Size != b.Size || (b.Manifest != nil && b.Manifest.Archive != nil && c.SHA256 != b.Manifest.Archive.SHA256) {
		return fmt.Errorf("local copy of %s not removed: its off-site copy is not verified", b.Name)
	}
	if err := catalog.Remove(b); err != nil {
		return err
	}
	return update(cfg, func(st *State) error {
		if c := st.Copies[b.Name]; c != nil {
			t := time.Now().UTC()
			c.LocalPruned = &t
		}
		return nil
	})
}

// Retention applies OFFSITE_RETENTION_DAYS to this installation's copies
// in the repository (Copy.Ours) with the same rules as local retention
// (catalog.Plan: the newest full backup and whatever a kept backup needs,
// its chain's full backup and earlier incrementals, are kept). Backups
// another installation copied to the same bucket and prefix are neither
// removed nor counted. The sidecar is removed before the archive, so a
// backup disappears from listings first. It returns the decisions.
func (r *Repo) Retention(ctx context.Context, cfg *config.Config, now time.Time, dryRun bool, log *slog.Logger) ([]catalog.Decision, error) {
	remotes, err := r.Remotes(ctx, cfg)
	if err != nil {
		return nil, err
	}
	st, err := LoadState(cfg)
	if err != nil {
		return nil, err
	}
	all := []catalog.Backup{}
	for _, rb := range remotes {
		if c := st.Copies[rb.Name]; st.Repository == r.S.String() && c != nil && c.Ours && c.Size == rb.Size {
			all = append(all, rb.Backup)
		}
	}
	plan := catalog.Plan(all, r.S.RetentionDays, now)
	// A copy that is the only one left (its local copy pruned under
	// LOCAL_RETENTION_DAYS) stays as long as BACKUP_RETENTION_DAYS keeps
	// backups: a shorter OFFSITE_RETENTION_DAYS must not end a backup the
	// installation's retention still promises.
	local := catalog.Plan(all, cfg.RetentionDays, now)
	for i := range plan {
		if plan[i].Keep || !local[i].Keep {
			continue
		}
		if _, err := os.Stat(filepath.Join(cfg.BackupDir, filepath.FromSlash(plan[i].Backup.Path))); err == nil {
			continue
		}
		plan[i].Keep, plan[i].Reason = true, "only copy (local copy pruned); BACKUP_RETENTION_DAYS keeps it: "+local[i].Reason
	}
	var errList []error
	var removed []string
	for _, d := range plan {
		if d.Keep || dryRun {
			continue
		}
		rel := d.Backup.Path
		if err := r.Remove(ctx, rel+archive.SidecarSuffix); err != nil {
			errList = append(errList, err)
			continue
		}
		if err := r.Remove(ctx, rel); err != nil {
			errList = append(errList, err)
			continue
		}
		removed = append(removed, d.Backup.Name)
		if log != nil {
			log.Info("off-site backup removed by retention", "backup", d.Backup.Name, "reason", d.Reason, "repository", r.S.String())
		}
	}
	if len(removed) > 0 {
		if err := update(cfg, func(st *State) error {
			for _, n := range removed {
				delete(st.Copies, n)
			}
			return nil
		}); err != nil {
			errList = append(errList, err)
		}
	}
	if err := errors.Join(errList...); err != nil {
		return plan, fmt.Errorf("off-site retention: %w", err)
	}
	return plan, nil
}

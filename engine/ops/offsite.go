package ops

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/pme2go/pme2go-backup/engine/archive"
	"github.com/pme2go/pme2go-backup/engine/catalog"
	"github.com/pme2go/pme2go-backup/engine/config"
	"github.com/pme2go/pme2go-backup/engine/errs"
	"github.com/pme2go/pme2go-backup/engine/offsite"
	"github.com/pme2go/pme2go-backup/engine/progress"
)

// OffsiteCopy is the off-site copy of one archive made after a backup.
type OffsiteCopy struct {
	Name   string `json:"name"`
	Copied bool   `json:"copied"`
	Key    string `json:"key,omitempty"`
	SHA256 string `json:"sha256,omitempty"`
	Error  string `json:"error,omitempty"`
	// Duration of upload and read-back check, seconds.
	Duration float64 `json:"duration"`
}

// copyOffsite uploads and verifies the archives at paths when a
// repository is configured, then retries the local backups an earlier copy
// left behind (they are listed as not copied until then). A failure leaves
// the local archives as they are: the backup itself succeeded, so the
// failure is returned as the *errs.Error to report beside the result
// (OffsiteError), recorded in the state file (status shows it), and the
// next backup or `offsite sync` copies what is missing.
func copyOffsite(ctx context.Context, cfg *config.Config, paths []string, log *slog.Logger, p Progress) ([]OffsiteCopy, *ErrorJSON) {
	if !offsite.Configured(cfg) || len(paths) == 0 {
		return nil, nil
	}
	out := []OffsiteCopy{}
	r, err := offsite.Open(cfg)
	if err != nil {
		return out, offsiteFailed(cfg, nil, paths, err, log)
	}
	for _, w := range r.S.Warnings {
		log.Warn(w)
	}
	var errList []error
	for i, path := range paths {
		p.Report(progress.Event{Phase: "offsite", Object: baseName(path), Done: int64(i), Total: int64(len(paths)), Unit: progress.Archives})
		u, err := r.Upload(ctx, cfg, path, log)
		if err != nil {
			out = append(out, OffsiteCopy{Name: baseName(path), Error: err.Error()})
			errList = append(errList, err)
			continue
		}
		out = append(out, OffsiteCopy{Name: u.Name, Copied: true, Key: u.Key, SHA256: u.SHA256, Duration: u.Secs})
	}
	if len(errList) == 0 && ctx.Err() == nil {
		// The repository answers: retry what earlier copies left behind.
		for _, path := range r.Pending(cfg) {
			if slices.Contains(paths, path) {
				continue
			}
			u, err := r.Upload(ctx, cfg, path, log)
			if err != nil {
				out = append(out, OffsiteCopy{Name: baseName(path), Error: err.Error()})
				errList = append(errList, err)
				break
			}
			if !u.Skip {
				out = append(out, OffsiteCopy{Name: u.Name, Copied: true, Key: u.Key, SHA256: u.SHA256, Duration: u.Secs})
			}
		}
	}
	if err := errors.Join(errList...); err != nil {
		return out, offsiteFailed(cfg, r, paths, err, log)
	}
	r.NoteRun(cfg, nil)
	return out, nil
}

// offsiteFailed records and describes a failed off-site copy of a backup
// that is safe locally.
func offsiteFailed(cfg *config.Config, r *offsite.Repo, paths []string, err error, log *slog.Logger) *ErrorJSON {
	e := &errs.Error{Code: errs.CodeOf(err), Message: fmt.Sprintf("backup written locally (%s), but not copied off-site", baseName(paths[0])), Err: err,
		Fix: &errs.Fix{Text: "the local archive is intact; the next backup or `pme2go-backup offsite sync` copies it once the repository is reachable"}}
	if r != nil {
		r.NoteRun(cfg, e)
	}
	log.Error("off-site copy failed; the backup is kept locally and copied by the next backup or off-site sync", "backup", baseName(paths[0]), "error", err)
	body := errs.ToJSON(e).Error
	return &body
}

// OffsiteSyncOptions tune OffsiteSync.
type OffsiteSyncOptions struct {
	// Now is the time LOCAL_RETENTION_DAYS is measured from (default: now).
	Now time.Time    `json:"-"`
	Log *slog.Logger `json:"-"`
}

// OffsiteSyncResult says what OffsiteSync copied, pruned and found.
type OffsiteSyncResult = offsite.SyncResult

// OffsiteSync copies every local backup not yet verified off-site, records
// the repository's backups, aborts interrupted multipart uploads, removes
// streamed change sets that uploaded incrementals now hold, and prunes
// local copies older than LOCAL_RETENTION_DAYS with a verified copy.
// Progress: phase "offsite", then "done". Errors: CONFIG when OFFSITE_URL
// is empty; each failed copy (the others still run).
func OffsiteSync(ctx context.Context, cfg *config.Config, opts OffsiteSyncOptions, p Progress) (*OffsiteSyncResult, error) {
	r, err := openOffsite(cfg)
	if err != nil {
		return nil, err
	}
	log := logger(opts.Log)
	for _, w := range r.S.Warnings {
		log.Warn(w)
	}
	now := opts.Now
	if now.IsZero() {
		now = time.Now()
	}
	p.Report(progress.Event{Phase: "offsite", Message: r.S.String()})
	res, err := r.Sync(ctx, cfg, now, log)
	p.Report(progress.Event{Phase: "done"})
	if err != nil {
		return res, fmt.Errorf("off-site sync: %w", err)
	}
	return res, nil
}

func openOffsite(cfg *config.Config) (*offsite.Repo, error) {
	r, err := offsite.Open(cfg)
	if errors.Is(err, offsite.ErrNotConfigured) {
		return nil, &errs.Error{Code: errs.Config, Message: err.Error(), Err: err,
			Fix: &errs.Fix{Action: errs.ActConfig, Text: "set OFFSITE_URL (and OFFSITE_ENDPOINT, credentials) in the configuration"}}
	}
	if err != nil {
		return nil, &errs.Error{Code: errs.Config, Message: err.Error(), Err: err}
	}
	return r, nil
}

// fetchMissing is the one call the read paths (restore, verify, drill)
// make before they read BACKUP_DIR: what they need and is only off-site
// is fetched (see offsite.Prepare). Without a repository it does nothing.
func fetchMissing(ctx context.Context, cfg *config.Config, need offsite.Need, log *slog.Logger) error {
	res, err := offsite.Prepare(ctx, cfg, need, log)
	if res != nil {
		for _, w := range res.Warnings {
			log.Warn(w)
		}
	}
	return err
}

// verifyOffsite checks the copies in the off-site repository (those of
// refs, or all): each stored object is read back whole and its SHA-256 and
// size compared with its off-site sidecar's; for a backup that is also
// local, the off-site sidecar must record the same SHA-256 as the local one
// (the same bytes: the local archive's own verification covers them); a
// backup only off-site is fetched into a scratch directory below the
// state directory, verified in full as a local archive is, and removed.
// Errors: CONFIG without a repository, the repository unreadable, NOT_FOUND
// for a named backup the repository does not hold.
func verifyOffsite(ctx context.Context, cfg *config.Config, refs []string, res *VerifyResult, p Progress) error {
	r, err := openOffsite(cfg)
	if err != nil {
		return err
	}
	if err := r.Check(ctx); err != nil {
		return err
	}
	remotes, err := r.Remotes(ctx, cfg)
	if err != nil {
		return err
	}
	local := map[string]catalog.Backup{}
	if all, err := catalog.List(cfg.BackupDir); err == nil {
		for _, b := range all {
			local[b.Name] = b
		}
	}
	var pick []offsite.Remote
	if len(refs) == 0 {
		pick = remotes
	}
	for _, ref := range refs {
		name := baseName(ref)
		found := false
		for _, rb := range remotes {
			if rb.Name == name || archive.TrimExt(rb.Name) == name || strings.TrimSuffix(rb.Name, ".age") == name {
				pick, found = append(pick, rb), true
				break
			}
		}
		if !found {
			return errs.New(errs.NotFound, fmt.Sprintf("backup %s has no copy in the off-site repository %s", ref, r.S)).
				WithFix("", "run `pme2go-backup offsite sync` to copy it, or verify without the off-site option")
		}
	}
	for i, rb := range pick {
		p.Report(progress.Event{Phase: "verify offsite", Object: rb.Name, Done: int64(i), Total: int64(len(pick)), Unit: progress.Archives})
		v := VerifiedArchive{Name: rb.Name, Path: "offsite:" + rb.Key, Location: "offsite", Problems: []VerifyProblem{}}
		problem := func(format string, a ...any) {
			v.Problems = append(v.Problems, VerifyProblem{Message: fmt.Sprintf(format, a...)})
		}
		want, size := "", int64(-1)
		if a := rb.Manifest.Archive; a != nil {
			want, size = a.SHA256, a.Size
		}
		got, n, err := r.Hash(ctx, rb.Key)
		switch {
		case err != nil:
			if ctx.Err() != nil {
				return ctx.Err()
			}
			problem("cannot read the off-site copy: %v", err)
		case want == "":
			problem("the off-site sidecar records no checksum")
		case got != want || (size >= 0 && n != size):
			problem("the off-site copy is damaged: %d bytes with %s, its sidecar records %d bytes with %s", n, got, size, want)
		}
		if lb, ok := local[rb.Name]; ok && len(v.Problems) == 0 {
			if lb.Manifest == nil || lb.Manifest.Archive == nil || lb.Manifest.Archive.SHA256 != want {
				problem("the off-site copy holds other bytes than the local archive (re-encrypted or rewritten locally since it was copied?); `pme2go-backup offsite sync` or rekey copies the local one")
			}
			v.Bytes = n
		} else if len(v.Problems) == 0 {
			deep, err := verifyFetched(ctx, cfg, r, rb)
			if err != nil {
				if ctx.Err() != nil {
					return ctx.Err()
				}
				problem("%v", err)
			} else {
				v.Members, v.Bytes = deep.Members, deep.Bytes
				for _, pr := range deep.Problems {
					v.Problems = append(v.Problems, VerifyProblem{Member: pr.Member, Message: pr.Message})
				}
			}
		}
		v.OK = len(v.Problems) == 0
		if !v.OK {
			res.Failed++
		}
		res.Archives = append(res.Archives, v)
	}
	return nil
}

// verifyFetched fetches a backup only off-site into a scratch directory
// below the state directory and verifies it as a local archive.
func verifyFetched(ctx context.Context, cfg *config.Config, r *offsite.Repo, rb offsite.Remote) (*archive.VerifyReport, error) {
	if err := os.MkdirAll(cfg.StateDir(), 0o700); err != nil {
		return nil, err
	}
	tmp, err := os.MkdirTemp(cfg.StateDir(), "verify-offsite-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(tmp)
	scratch := *cfg
	scratch.BackupDir = tmp
	path, err := r.Fetch(ctx, &scratch, rb.Key)
	if err != nil {
		return nil, err
	}
	return archive.Verify(ctx, path)
}

// OffsiteStatus is the off-site part of Status.
type OffsiteStatus struct {
	Repository string `json:"repository"`
	// Copied counts backups with a verified copy; NotCopied names the
	// local backups without one.
	Copied    int      `json:"copied"`
	NotCopied []string `json:"notCopied"`
	// LocalOnly, OffsiteOnly and Both count the backups by where they
	// live (LocalOnly includes those not yet copied; streamed change sets
	// rebuilt from the repository count as local).
	LocalOnly   int        `json:"localOnly"`
	OffsiteOnly int        `json:"offsiteOnly"`
	Both        int        `json:"both"`
	LastSync    *time.Time `json:"lastSync,omitempty"`
	LastError   string     `json:"lastError,omitempty"`
	// LastSuccess is when the last copy run without an error ended.
	LastSuccess *time.Time `json:"lastSuccess,omitempty"`
	// Streams is how far streaming sent each open segment.
	Streams       []offsite.StreamPos `json:"streams"`
	RetentionDays int                 `json:"retentionDays"`
	// LocalRetentionDays: -1 keeps local copies.
	LocalRetentionDays int `json:"localRetentionDays"`
}

// locate fills each backup's Location ("local", "offsite" or "both") and
// appends the backups whose local copy was pruned (from the state file).
func locate(cfg *config.Config, all []catalog.Backup) []Backup {
	list := backups(all)
	sums := map[string]string{}
	for _, b := range all {
		if b.Manifest != nil && b.Manifest.Archive != nil {
			sums[b.Name] = b.Manifest.Archive.SHA256
		}
	}
	copies, err := offsite.Copies(cfg)
	if err != nil || !offsite.Configured(cfg) {
		for i := range list {
			list[i].Location = "local"
		}
		return list
	}
	byName := map[string]*offsite.Copy{}
	for _, c := range copies {
		byName[c.Name] = c
	}
	seen := map[string]bool{}
	for i := range list {
		seen[list[i].Name] = true
		list[i].Location = "local"
		// The same bytes off-site (a rekeyed archive differs until copied again).
		if c := byName[list[i].Name]; c != nil && c.Size == list[i].Size && (sums[c.Name] == "" || c.SHA256 == "" || sums[c.Name] == c.SHA256) {
			list[i].Location = "both"
		}
	}
	for _, c := range copies {
		if seen[c.Name] || c.Manifest == nil {
			continue
		}
		m := c.Manifest
		b := fromCatalog(catalog.Backup{Name: c.Name, Path: "offsite:" + c.Key, Type: m.Type, Timestamp: m.Timestamp, Size: c.Size,
			Databases: m.Databases, ChainID: m.ChainID, Previous: m.Previous, Manifest: m})
		b.Location = "offsite"
		list = append(list, b)
	}
	sortBackups(list)
	return list
}

func offsiteStatus(cfg *config.Config, list []Backup) *OffsiteStatus {
	s, err := offsite.Parse(cfg)
	if err != nil {
		return nil
	}
	st, _ := offsite.LoadState(cfg)
	os := &OffsiteStatus{Repository: s.String(), NotCopied: []string{}, Streams: []offsite.StreamPos{},
		RetentionDays: s.RetentionDays, LocalRetentionDays: s.LocalRetentionDays}
	for _, b := range list {
		switch b.Location {
		case "both":
			os.Copied++
			os.Both++
		case "offsite":
			os.Copied++
			os.OffsiteOnly++
		default:
			os.LocalOnly++
			if b.Trigger != offsite.TriggerStream && b.Problem == "" {
				os.NotCopied = append(os.NotCopied, b.Name)
			}
		}
	}
	if st != nil {
		os.LastSync, os.LastError, os.LastSuccess = st.LastSync, st.LastError, st.LastSuccess
		for _, p := range st.Streams {
			os.Streams = append(os.Streams, *p)
		}
	}
	return os
}

// offsiteStreamSync runs the off-site streaming of open segments while a
// Stream runs (nil when no repository is configured).
func offsiteStreamSync(ctx context.Context, cfg *config.Config, dbs []string, log *slog.Logger) func() {
	if !offsite.Configured(cfg) {
		return func() {}
	}
	r, err := offsite.Open(cfg)
	if err != nil {
		log.Error("off-site streaming not started", "error", err)
		return func() {}
	}
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		r.StreamSync(ctx, cfg, dbs, r.S.SyncInterval, log, nil)
	}()
	return func() { cancel(); <-done }
}

// offsiteCleanup applies OFFSITE_RETENTION_DAYS and LOCAL_RETENTION_DAYS
// after local retention (nothing without a repository).
func offsiteCleanup(ctx context.Context, cfg *config.Config, now time.Time, dryRun bool, log *slog.Logger) ([]Retention, []string, error) {
	if !offsite.Configured(cfg) {
		return nil, nil, nil
	}
	r, err := openOffsite(cfg)
	if err != nil {
		return nil, nil, err
	}
	plan, err := r.Retention(ctx, cfg, now, dryRun, log)
	out := []Retention{}
	for _, d := range plan {
		b := fromCatalog(d.Backup)
		b.Location = "offsite"
		out = append(out, Retention{Backup: b, Keep: d.Keep, Reason: d.Reason, Removed: !d.Keep && !dryRun && err == nil})
	}
	if err != nil || dryRun {
		return out, nil, err
	}
	pruned, perr := r.PruneLocal(ctx, cfg, now, log)
	return out, pruned, perr
}

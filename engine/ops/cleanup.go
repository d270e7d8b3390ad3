package ops

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/pme2go/pme2go-backup/engine/backupdir"
	"github.com/pme2go/pme2go-backup/engine/catalog"
	"github.com/pme2go/pme2go-backup/engine/chain"
	"github.com/pme2go/pme2go-backup/engine/config"
	"github.com/pme2go/pme2go-backup/engine/progress"
	"github.com/pme2go/pme2go-backup/engine/restore"
)

// CleanupOptions tune Cleanup.
type CleanupOptions struct {
	// DryRun decides and reports, and changes nothing.
	DryRun bool `json:"dryRun,omitempty"`
	// Now is the time retention is measured from (default: now).
	Now time.Time    `json:"-"`
	Log *slog.Logger `json:"-"`
}

// CleanupResult says what retention decided for every backup and what was
// removed or dropped (or, in a dry run, would be).
type CleanupResult struct {
	DryRun    bool        `json:"dryRun"`
	Decisions []Retention `json:"decisions"`
	Removed   int         `json:"removed"` // backups removed (or to remove)
	Kept      int         `json:"kept"`
	// StaleWork lists work directories of interrupted point-in-time restores removed.
	StaleWork []string `json:"staleWork"`
	// Orphans are slots and publications of ours that belong to no open chain,
	// dropped (or, in a dry run, to drop).
	Orphans     []Orphan `json:"orphans"`
	OrphanError string   `json:"orphanError,omitempty"`
	// Offsite are the retention decisions for the off-site repository
	// (OFFSITE_RETENTION_DAYS); LocalPruned the local copies removed under
	// LOCAL_RETENTION_DAYS (their verified off-site copy stays).
	Offsite     []Retention `json:"offsite,omitempty"`
	LocalPruned []string    `json:"localPruned,omitempty"`
}

// Retention is the decision for one backup.
type Retention struct {
	Backup  Backup `json:"backup"`
	Keep    bool   `json:"keep"`
	Reason  string `json:"reason"`
	Removed bool   `json:"removed"` // false in a dry run or when removal failed
	Error   string `json:"error,omitempty"`
}

// Orphan is a server object of ours with no open chain.
type Orphan struct {
	Kind     string `json:"kind"` // "slot", "publication" or "schema"
	Name     string `json:"name"`
	Database string `json:"database"`
	Active   bool   `json:"active"`
	Chain    string `json:"chain,omitempty"`
	Reason   string `json:"reason"`
	// Installation is the short id of the installation that made it, when its name tells.
	Installation string `json:"installation,omitempty"`
}

func orphanOf(o chain.Orphan) Orphan {
	return Orphan{Kind: o.Kind, Name: o.Name, Database: o.Database, Active: o.Active, Chain: o.Chain, Reason: o.Reason, Installation: o.Installation}
}

// Cleanup applies BACKUP_RETENTION_DAYS (never removing the newest full
// backup or what a kept backup needs), removes the work directories of
// interrupted point-in-time restores and drops replication slots and
// publications of this installation that belong to no chain. It holds the
// backup directory lock (BUSY while a backup runs). Failures to remove one
// item do not stop the others; they are joined in the error and the result
// still says what was done.
func Cleanup(ctx context.Context, cfg *config.Config, opts CleanupOptions, p Progress) (*CleanupResult, error) {
	log := logger(opts.Log)
	unlock, err := backupdir.Prepare(cfg, cfg.FullDir())
	if err != nil {
		return nil, err
	}
	defer unlock()
	all, err := catalog.List(cfg.BackupDir)
	if err != nil {
		return nil, err
	}
	now := opts.Now
	if now.IsZero() {
		now = time.Now()
	}
	plan := catalog.Plan(all, cfg.RetentionDays, now)
	res := &CleanupResult{DryRun: opts.DryRun, Decisions: []Retention{}, StaleWork: []string{}, Orphans: []Orphan{}}
	var errList []error
	for i, d := range plan {
		r := Retention{Backup: fromCatalog(d.Backup), Keep: d.Keep, Reason: d.Reason}
		if !d.Keep {
			p.Report(progress.Event{Phase: "remove", Object: d.Backup.Name, Done: int64(i), Total: int64(len(plan)), Unit: progress.Archives})
			if !opts.DryRun {
				if err := catalog.Remove(d.Backup); err != nil {
					r.Error = err.Error()
					errList = append(errList, err)
				} else {
					r.Removed = true
					log.Info("backup removed by retention", "backup", d.Backup.Name, "reason", d.Reason)
				}
			}
			if opts.DryRun || r.Removed {
				res.Removed++
			}
		}
		res.Decisions = append(res.Decisions, r)
	}
	res.Kept = len(plan) - res.Removed
	if !opts.DryRun {
		stale, err := restore.RemoveStaleWork(cfg)
		if err != nil {
			errList = append(errList, err)
		}
		res.StaleWork = append(res.StaleWork, stale...)
	}
	var orphans []chain.Orphan
	if opts.DryRun {
		orphans, err = chain.Orphans(ctx, cfg)
	} else {
		orphans, err = chain.DropOrphans(ctx, cfg)
		if err != nil {
			errList = append(errList, fmt.Errorf("drop orphaned replication slots and publications: %w", err))
		}
	}
	if err != nil {
		res.OrphanError = err.Error()
		log.Warn("could not look for orphaned replication slots", "error", err)
	}
	for _, o := range orphans {
		res.Orphans = append(res.Orphans, orphanOf(o))
	}
	if off, pruned, err := offsiteCleanup(ctx, cfg, now, opts.DryRun, log); err != nil {
		res.Offsite, res.LocalPruned = off, pruned
		errList = append(errList, err)
	} else {
		res.Offsite, res.LocalPruned = off, pruned
	}
	p.Report(progress.Event{Phase: "done", Done: int64(len(plan)), Total: int64(len(plan)), Unit: progress.Archives})
	return res, errors.Join(errList...)
}

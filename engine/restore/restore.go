// Package restore restores full backups: it verifies and extracts the
// archive in one pass into a private directory while it restores each
// database with pg_restore into a fresh database (each member proven before
// it is used), and only once the whole archive is proven swaps it in place
// of the target, so that a failed restore leaves the target as it was. With a point-in-time target
// (Options.Target) it also replays the chain's change sets (engine/apply)
// into the fresh database before the swap.
package restore

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/pme2go/pme2go-backup/engine/apply"
	"github.com/pme2go/pme2go-backup/engine/archive"
	"github.com/pme2go/pme2go-backup/engine/backupdir"
	"github.com/pme2go/pme2go-backup/engine/catalog"
	"github.com/pme2go/pme2go-backup/engine/config"
	"github.com/pme2go/pme2go-backup/engine/errs"
	"github.com/pme2go/pme2go-backup/engine/fsutil"
	"github.com/pme2go/pme2go-backup/engine/pgclient"
	"github.com/pme2go/pme2go-backup/engine/progress"
)

// ErrNotEmpty is returned (wrapped) when the target database holds data and
// Force was not given.
var ErrNotEmpty = errors.New("target database is not empty")

// SafetyBackup takes the full backup of database db, about to be replaced,
// dumped from connectAs (its private name during the swap) and recorded as
// db, and returns the archive's path. The caller (restore) holds the backup
// directory lock. The front door supplies it (a full backup with trigger
// "safety", which starts no chain).
type SafetyBackup func(ctx context.Context, db, connectAs string) (path string, err error)

// Options describe one restore.
type Options struct {
	Backup         string // archive path or name
	TargetDB       string // restore into this database instead of the original
	Databases      []string
	Force          bool // replace a non-empty database
	NoSafetyBackup bool // with Force: skip the safety backup of the replaced database
	// SafetyBackup takes the safety backups; with Force and without
	// NoSafetyBackup, a restore over a database holding data needs it.
	SafetyBackup   SafetyBackup
	NoOwner        bool // pg_restore --no-owner
	RestoreGlobals bool // apply globals.sql (roles, tablespaces) first
	RestoreLogs    bool // put archived logs back
	DryRun         bool
	Log            *slog.Logger
	// Progress is told each step: phases "plan", "verify" (Object: the
	// archive), "globals", "restore" (Object: "<source> into <target>"),
	// "replace" and "safety-backup" (Object: the database replaced),
	// "replay" (Total: the transactions to replay, Done: those applied,
	// Message: each one's commit LSN, or a note at the end).
	Progress progress.Func

	// Target, when set, restores to a point in time: the newest suitable
	// full backup is chosen (Backup may name it, or be empty) and its
	// chain's change sets are replayed up to the target before the swap.
	Target *apply.Target
	// Resume continues an interrupted point-in-time restore in the scratch
	// database it left behind, without applying anything twice.
	Resume bool
}

// Step is one database restore in a plan.
type Step struct {
	Source       string `json:"source"`
	Target       string `json:"target"`
	TargetExists bool   `json:"targetExists"`
	TargetEmpty  bool   `json:"targetEmpty"`
	SafetyBackup bool   `json:"safetyBackup"`
}

// Plan is what a restore will do; a dry run returns it without acting.
type Plan struct {
	Archive  string            `json:"archive"`
	Manifest *archive.Manifest `json:"-"`
	Steps    []Step            `json:"steps"`
	Globals  bool              `json:"globals"`
	Logs     int               `json:"logs"`
}

// Result reports a finished restore.
type Result struct {
	Plan          *Plan
	PITR          *apply.Plan  `json:",omitempty"`
	Replay        *apply.Stats `json:",omitempty"`
	SafetyBackups []string
	// EndedSessions are the sessions of replaced databases that restore
	// --force ended before the safety backup (see replace.go).
	EndedSessions []Session `json:",omitempty"`
	// Notes are what the operator should know about the restored databases
	// (settings applied under another name, settings that could not be
	// applied).
	Notes        []string `json:",omitempty"`
	RestoredLogs []string
	Duration     time.Duration
}

// Run restores a full backup according to opts.
func Run(ctx context.Context, cfg *config.Config, opts Options) (*Result, error) {
	start := time.Now()
	if opts.Log == nil {
		opts.Log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	var pitr *apply.Plan
	if opts.Target != nil {
		var cleanup func()
		var err error
		pitr, cleanup, err = buildPITR(ctx, cfg, &opts)
		if err != nil {
			return nil, err
		}
		defer cleanup()
	}
	b, err := catalog.Find(cfg.BackupDir, opts.Backup)
	if err != nil {
		return nil, err
	}
	if b.Manifest != nil && b.Manifest.Type != archive.KindFull {
		return nil, fmt.Errorf("%s is an incremental backup; restore a full backup (point-in-time targets replay incrementals on top of it)", b.Name)
	}
	target := pgclient.FromConfig(cfg)
	var recovered []string
	if !opts.DryRun {
		unlock, err := backupdir.Prepare(cfg, cfg.FullDir())
		if err != nil {
			return nil, err
		}
		defer unlock()
		// A restore killed midway may have left a database shut or
		// renamed: put it right before looking at the targets.
		if recovered, err = RecoverInterrupted(ctx, cfg, opts.Log); err != nil {
			return nil, err
		}
	}
	// The archive is verified and extracted in one pass while the
	// databases are restored (docs/restore.md): each member is proven
	// against the sidecar manifest before it is used, everything goes into
	// scratch databases, and nothing is swapped in, nor any role created,
	// before the whole archive is proven. A failure drops the scratch
	// databases and leaves the targets as they were. The pass starts
	// before the targets are inspected, which it does not depend on.
	var ext *archive.VerifiedExtraction
	var dest string
	if !opts.DryRun && b.Manifest != nil {
		work, err := os.MkdirTemp(cfg.StateDir(), fsutil.TempPrefix("restore"))
		if err != nil {
			return nil, fmt.Errorf("create extraction directory: %w", err)
		}
		defer os.RemoveAll(work)
		dest = filepath.Join(work, "archive")
		if err := os.Mkdir(dest, 0o700); err != nil {
			return nil, fmt.Errorf("create extraction directory: %w", err)
		}
		opts.Progress.Report(progress.Event{Phase: "verify", Object: b.Name})
		if ext, err = archive.StartVerifiedExtract(ctx, b.Path, dest); err != nil {
			return nil, verifyFailed(b.Name, err)
		}
		defer ext.Abort()
	}
	plan, err := makePlan(ctx, target, b, opts)
	if err != nil {
		return nil, err
	}
	res := &Result{Plan: plan, PITR: pitr, Notes: recovered}
	var resumeDB string
	if pitr != nil {
		if resumeDB, err = checkScratch(ctx, target, plan, pitr, opts); err != nil {
			return nil, err
		}
	}
	if opts.DryRun {
		return res, nil
	}
	opts.Log.Debug("restore planned", "elapsed", time.Since(start).Round(time.Millisecond))
	// A failed verification stops whatever runs on the archive's content
	// at once (pg_restore into a scratch database) instead of at its end.
	rctx, stop := context.WithCancel(ctx)
	defer stop()
	go func() {
		if _, err := ext.Done(rctx); err != nil {
			stop()
		}
	}()
	fail := func(err error) error {
		if verr := ext.Failed(); verr != nil {
			if errors.Is(verr, archive.ErrVerification) {
				return verifyFailed(b.Name, verr)
			}
			if ctx.Err() == nil {
				return verr // the extraction's own failure: no space, no key
			}
		}
		if errors.Is(err, archive.ErrVerification) {
			return verifyFailed(b.Name, err)
		}
		return err
	}
	props := map[string]archive.DatabaseStats{}
	if _, ok := ext.Sidecar().Checksums["application_data.json"]; ok {
		if err := ext.Wait(rctx, "application_data.json"); err != nil {
			return nil, fail(err)
		}
		props = readProps(filepath.Join(dest, "application_data.json"))
	}
	if opts.RestoreGlobals && plan.Globals {
		// Roles and tablespaces cannot be taken back: only from an archive
		// proven whole.
		if _, err := ext.Done(rctx); err != nil {
			return nil, fail(err)
		}
		opts.Progress.Report(progress.Event{Phase: "globals", Message: "restore roles and tablespaces"})
		if err := restoreGlobals(ctx, cfg, target, opts.Log, filepath.Join(dest, "globals.sql")); err != nil {
			return nil, err
		}
	}
	for _, st := range plan.Steps {
		opts.Progress.Report(progress.Event{Phase: "restore", Object: st.Source + " into " + st.Target})
		var rp *replayer
		if pitr != nil {
			rp = &replayer{plan: pitr, opts: opts, resume: resumeDB != "", res: res, ddlCaptured: ddlCaptured(cfg, pitr)}
		}
		if err := restoreDatabase(rctx, cfg, target, opts, st, ext, filepath.Join(dest, "database", st.Source), props[st.Source], rp, res); err != nil {
			return res, fail(err)
		}
	}
	if _, err := ext.Done(rctx); err != nil {
		return res, fail(err)
	}
	opts.Log.Debug("restore finished", "elapsed", time.Since(start).Round(time.Millisecond))
	if opts.RestoreLogs {
		res.RestoredLogs, err = restoreLogs(dest, start)
		if err != nil {
			return res, err
		}
	}
	res.Duration = time.Since(start)
	return res, nil
}

// verifyFailed is the error of a restore stopped because its archive
// failed verification.
func verifyFailed(name string, err error) error {
	return &errs.Error{Code: errs.VerifyFailed, Err: err,
		Message: fmt.Sprintf("archive %s failed verification, nothing was restored (scratch databases dropped, targets untouched)", name)}
}

func makePlan(ctx context.Context, target pgclient.Target, b catalog.Backup, opts Options) (*Plan, error) {
	if b.Manifest == nil {
		return nil, fmt.Errorf("%s has no readable manifest beside it (%s); run pme2go-backup verify %s", b.Name, b.Problem, b.Path)
	}
	m := b.Manifest
	dbs := opts.Databases
	if len(dbs) == 0 {
		dbs = m.Databases
	}
	for _, db := range dbs {
		if !contains(m.Databases, db) {
			return nil, fmt.Errorf("database %s is not in %s (it holds %s)", db, b.Name, strings.Join(m.Databases, ", "))
		}
	}
	if opts.TargetDB != "" && len(dbs) != 1 {
		return nil, fmt.Errorf("--target-db needs exactly one source database, %s holds %s; choose one with --database", b.Name, strings.Join(dbs, ", "))
	}
	plan := &Plan{Archive: b.Path, Manifest: m, Globals: m.HasGlobals && opts.RestoreGlobals}
	for name := range m.Sizes {
		if strings.HasPrefix(name, "logs/") {
			plan.Logs++
		}
	}
	maint, err := connectMaintenance(ctx, target, "")
	if err != nil {
		return nil, err
	}
	defer maint.Close(context.Background())
	for _, db := range dbs {
		st := Step{Source: db, Target: db}
		if opts.TargetDB != "" {
			st.Target = opts.TargetDB
		}
		st.TargetExists, st.TargetEmpty, err = inspectTarget(ctx, target, maint, st.Target)
		if err != nil {
			return nil, err
		}
		if st.TargetExists {
			if err := checkPrepared(ctx, maint, st.Target); err != nil {
				return nil, err
			}
		}
		if st.TargetExists && !st.TargetEmpty {
			if !opts.Force {
				return nil, &errs.Error{Code: errs.NeedsForce, Message: fmt.Sprintf("database %s holds data", st.Target), Err: ErrNotEmpty,
					Fix: &errs.Fix{Action: errs.ActForce, Text: "replace it (a safety backup of it is taken first unless turned off), or restore beside it into another database"}}
			}
			st.SafetyBackup = !opts.NoSafetyBackup
			if st.SafetyBackup && opts.SafetyBackup == nil {
				return nil, fmt.Errorf("database %s holds data and no safety backup can be taken here (restore.Options.SafetyBackup is not set); nothing was changed", st.Target)
			}
		}
		plan.Steps = append(plan.Steps, st)
	}
	return plan, nil
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

// Package restore restores full backups: it verifies the archive, extracts it
// into a private directory, restores each database with pg_restore into a
// fresh database and only then swaps it in place of the target, so that a
// failed restore leaves the target as it was. With a point-in-time target
// (Options.Target) it also replays the chain's change sets (engine/apply)
// into the fresh database before the swap.
package restore

import (
	"context"
	"errors"
	"fmt"
	"github.com/pme2go/pme2go-backup/engine/errs"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/pme2go/pme2go-backup/engine/apply"
	"github.com/pme2go/pme2go-backup/engine/archive"
	"github.com/pme2go/pme2go-backup/engine/backup"
	"github.com/pme2go/pme2go-backup/engine/catalog"
	"github.com/pme2go/pme2go-backup/engine/config"
	"github.com/pme2go/pme2go-backup/engine/fsutil"
	"github.com/pme2go/pme2go-backup/engine/pgclient"
)

// ErrNotEmpty is returned (wrapped) when the target database holds data and
// Force was not given.
var ErrNotEmpty = errors.New("target database is not empty")

// Options describe one restore.
type Options struct {
	Backup         string // archive path or name
	TargetDB       string // restore into this database instead of the original
	Databases      []string
	Force          bool // replace a non-empty database
	NoSafetyBackup bool // with Force: skip the safety backup of the replaced database
	NoOwner        bool // pg_restore --no-owner
	RestoreGlobals bool // apply globals.sql (roles, tablespaces) first
	RestoreLogs    bool // put archived logs back
	DryRun         bool
	Log            *slog.Logger
	Progress       func(step string)

	// Target, when set, restores to a point in time: the newest suitable
	// full backup is chosen (Backup may name it, or be empty) and its
	// chain's change sets are replayed up to the target before the swap.
	Target *apply.Target
	// Resume continues an interrupted point-in-time restore in the scratch
	// database it left behind, without applying anything twice.
	Resume bool
	// OnReplayCommit is called after each replayed transaction.
	OnReplayCommit func(applied int64, commitLSN uint64)
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
	if opts.Progress == nil {
		opts.Progress = func(string) {}
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
	if b.Manifest != nil && b.Manifest.Type != "full" {
		return nil, fmt.Errorf("%s is an incremental backup; restore a full backup (point-in-time targets replay incrementals on top of it)", b.Name)
	}
	target := pgclient.FromConfig(cfg)
	var recovered []string
	if !opts.DryRun {
		unlock, err := backup.Prepare(cfg, cfg.FullDir())
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
	opts.Progress("verify " + b.Name)
	rep, err := archive.Verify(ctx, b.Path)
	if err != nil {
		return nil, err
	}
	if !rep.OK() {
		return nil, fmt.Errorf("archive %s failed verification, nothing was restored: %s", b.Name, describeProblems(rep))
	}
	work, err := os.MkdirTemp(cfg.StateDir(), fsutil.TempPrefix("restore"))
	if err != nil {
		return nil, fmt.Errorf("create extraction directory: %w", err)
	}
	defer os.RemoveAll(work)
	opts.Progress("extract " + b.Name)
	if _, err := archive.Extract(ctx, b.Path, work); err != nil {
		return nil, err
	}
	if opts.RestoreGlobals && plan.Globals {
		opts.Progress("restore globals")
		if err := restoreGlobals(ctx, cfg, target, opts.Log, filepath.Join(work, "globals.sql")); err != nil {
			return nil, err
		}
	}
	props := readProps(filepath.Join(work, "application_data.json"))
	for _, st := range plan.Steps {
		opts.Progress(fmt.Sprintf("restore %s into %s", st.Source, st.Target))
		var rp *replayer
		if pitr != nil {
			rp = &replayer{plan: pitr, opts: opts, resume: resumeDB != "", res: res, ddlCaptured: ddlCaptured(cfg, pitr)}
		}
		if err := restoreDatabase(ctx, cfg, target, opts, st, filepath.Join(work, "database", st.Source), props[st.Source], rp, res); err != nil {
			return res, err
		}
	}
	if opts.RestoreLogs {
		res.RestoredLogs, err = restoreLogs(work, start)
		if err != nil {
			return res, err
		}
	}
	res.Duration = time.Since(start)
	return res, nil
}

func describeProblems(rep *archive.VerifyReport) string {
	var parts []string
	for _, p := range rep.Problems {
		if p.Member != "" {
			parts = append(parts, p.Member+": "+p.Message)
		} else {
			parts = append(parts, p.Message)
		}
	}
	return strings.Join(parts, "; ")
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

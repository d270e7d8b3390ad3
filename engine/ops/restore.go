package ops

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/pme2go/pme2go-backup/engine/apply"
	"github.com/pme2go/pme2go-backup/engine/config"
	"github.com/pme2go/pme2go-backup/engine/errs"
	"github.com/pme2go/pme2go-backup/engine/offsite"
	"github.com/pme2go/pme2go-backup/engine/progress"
	"github.com/pme2go/pme2go-backup/engine/restore"
)

// RestoreTarget is a point-in-time target given as text, as an operator
// types it; at most one of Time, LSN, Xid, Name and Latest is set. Targets
// are inclusive unless Exclusive.
type RestoreTarget struct {
	Time      string `json:"time,omitempty"` // RFC 3339 or PostgreSQL timestamptz text
	LSN       string `json:"lsn,omitempty"`  // X/Y
	Xid       string `json:"xid,omitempty"`
	Name      string `json:"name,omitempty"` // a mark
	Latest    bool   `json:"latest,omitempty"`
	Exclusive bool   `json:"exclusive,omitempty"`
}

// IsZero reports whether no target is set (a plain restore of one backup).
func (t RestoreTarget) IsZero() bool {
	return t.Time == "" && t.LSN == "" && t.Xid == "" && t.Name == "" && !t.Latest && !t.Exclusive
}

// Validate checks the target's syntax without touching any server or
// archive: a malformed time, LSN or xid, or contradictory targets, is an
// error; no target at all is not.
func (t RestoreTarget) Validate() error {
	_, err := apply.ParseTarget(apply.TargetSpec{Time: t.Time, LSN: t.LSN, Xid: t.Xid,
		Name: t.Name, Latest: t.Latest, Exclusive: t.Exclusive})
	if err != nil && !errors.Is(err, apply.ErrNoTarget) {
		return err
	}
	return nil
}

// RestoreOptions describe one restore.
type RestoreOptions struct {
	// Backup is an archive path or name; optional with a Target (the target
	// chooses the full backup).
	Backup string `json:"backup,omitempty"`
	// Target, when set, restores to a point in time by replaying the chain.
	Target RestoreTarget `json:"target,omitzero"`
	// Resume continues an interrupted point-in-time restore.
	Resume bool `json:"resume,omitempty"`
	// TargetDB restores into this database (created when missing).
	TargetDB string `json:"targetDb,omitempty"`
	// Databases restores only these databases of the archive.
	Databases []string `json:"databases,omitempty"`
	// Force replaces a database that holds data; a safety backup of it is
	// taken first unless NoSafetyBackup.
	Force          bool         `json:"force,omitempty"`
	NoSafetyBackup bool         `json:"noSafetyBackup,omitempty"`
	NoOwner        bool         `json:"noOwner,omitempty"`
	RestoreGlobals bool         `json:"restoreGlobals,omitempty"`
	RestoreLogs    bool         `json:"restoreLogs,omitempty"`
	DryRun         bool         `json:"dryRun,omitempty"`
	Log            *slog.Logger `json:"-"`
}

// RestoreResult reports a restore (or, with DryRun, what it would do).
type RestoreResult struct {
	DryRun        bool               `json:"dryRun"`
	Archive       string             `json:"archive"`
	Databases     []RestoredDatabase `json:"databases"`
	Globals       bool               `json:"globals"`
	SafetyBackups []string           `json:"safetyBackups"`
	// EndedSessions are the sessions a restore with Force ended in the
	// databases it replaced, before their safety backups.
	EndedSessions []EndedSession `json:"endedSessions"`
	RestoredLogs  []string       `json:"restoredLogs"`
	// Notes say what the operator should know about the restored
	// databases (database settings applied under another name, or not
	// applied).
	Notes       []string     `json:"notes"`
	PointInTime *PointInTime `json:"pointInTime,omitempty"`
	Replay      *ReplayStats `json:"replay,omitempty"`
	// Differences name what the restored database holds differently from
	// the source at the target, and why; empty when the restore is exact.
	Differences []Difference `json:"differences"`
	Duration    float64      `json:"duration"` // seconds
}

// RestoredDatabase is one database restored (or to restore).
type RestoredDatabase struct {
	Source       string `json:"source"`
	Target       string `json:"target"`
	TargetExists bool   `json:"targetExists"`
	TargetEmpty  bool   `json:"targetEmpty"`
	SafetyBackup bool   `json:"safetyBackup"`
}

// EndedSession is a session of a replaced database that restore ended.
type EndedSession struct {
	Database    string `json:"database"`
	PID         int32  `json:"pid"`
	User        string `json:"user"`
	Application string `json:"application"`
}

// PointInTime is the plan of a point-in-time restore.
type PointInTime struct {
	Database       string         `json:"database"`
	Target         string         `json:"target"`
	ChainID        string         `json:"chainId"`
	Full           ArchiveRange   `json:"full"`
	Incrementals   []ArchiveRange `json:"incrementals"`
	Transactions   int64          `json:"transactions"` // to apply
	FirstCommitLSN LSN            `json:"firstCommitLsn,omitempty"`
	LastCommitLSN  LSN            `json:"lastCommitLsn,omitempty"`
	LastCommitTime *time.Time     `json:"lastCommitTime,omitempty"`
	Description    []string       `json:"description"`
	// RecoveryWindow: times (and LSNs) the chain can be restored to
	// exactly; ChainEnd: where the chain ended, if it did; Gap: --latest
	// reached an older state than the newest backup of the database;
	// LargeObjects: the state large objects were restored to.
	RecoveryWindow *apply.Window             `json:"recoveryWindow,omitempty"`
	ChainEnd       *apply.ChainEnd           `json:"chainEnd,omitempty"`
	Gap            *apply.Gap                `json:"gap,omitempty"`
	LargeObjects   *apply.LargeObjectsReport `json:"largeObjects,omitempty"`
}

// ArchiveRange is an archive of a plan with its LSN range.
type ArchiveRange struct {
	Name     string `json:"name"`
	Path     string `json:"path"`
	StartLSN LSN    `json:"startLsn"`
	EndLSN   LSN    `json:"endLsn,omitempty"` // absent for the full backup
}

// ReplayStats report a replay.
type ReplayStats struct {
	Transactions  int64   `json:"transactions"` // applied in this run
	Rows          int64   `json:"rows"`
	ResumedAt     LSN     `json:"resumedAt,omitempty"`
	LastCommitLSN LSN     `json:"lastCommitLsn,omitempty"`
	Sequences     int     `json:"sequences"`
	Duration      float64 `json:"duration"` // seconds
	// UnloggedKept names unlogged tables that keep the full backup's
	// content because no transaction was replayed.
	UnloggedKept []string `json:"unloggedKept,omitempty"`
}

// Difference is something the restored database holds differently from the
// source at the target: Kind names the cause (e.g. "unlogged-table",
// "large-objects", "chain-ended"), Object what it affects.
type Difference struct {
	Kind    string `json:"kind"`
	Object  string `json:"object,omitempty"`
	Message string `json:"message"`
}

// Restore restores a full backup, or a point in time by replaying its
// chain's change sets, into a scratch database swapped in only when
// everything succeeded: a failed restore leaves the target as it was.
// Progress phases: "verify" (verification and extraction, in one pass while
// the restore runs), "globals", "safety-backup",
// "restore", "plan", "replay" (Done = transactions applied), "done".
// Errors: USAGE (bad target), NOT_FOUND (unknown backup), NEEDS_FORCE (the
// target holds data), NEEDS_RESUME (an interrupted restore is in the way),
// TARGET_UNREACHABLE / CHAIN_ENDED (no backup holds the target), BUSY.
func Restore(ctx context.Context, cfg *config.Config, opts RestoreOptions, p Progress) (*RestoreResult, error) {
	var tp *apply.Target
	if !opts.Target.IsZero() {
		t, err := apply.ParseTarget(apply.TargetSpec{Time: opts.Target.Time, LSN: opts.Target.LSN, Xid: opts.Target.Xid,
			Name: opts.Target.Name, Latest: opts.Target.Latest, Exclusive: opts.Target.Exclusive})
		if err != nil {
			return nil, &errs.Error{Code: errs.Usage, Err: err}
		}
		tp = &t
	} else if opts.Backup == "" {
		return nil, errs.New(errs.Usage, "a restore needs a backup, or a point-in-time target (time, LSN, xid, mark name, or latest)")
	}
	if opts.Resume && tp == nil {
		return nil, errs.New(errs.Usage, "resume continues a point-in-time restore; give the same target again")
	}
	need := offsite.Need{PointInTime: tp != nil, Latest: opts.Target.Latest, Databases: opts.Databases}
	if opts.Backup != "" {
		need.Backups = []string{opts.Backup}
	}
	if len(need.Databases) == 0 {
		need.Databases = cfg.DBNames
	}
	if err := fetchMissing(ctx, cfg, need, logger(opts.Log)); err != nil {
		return nil, fmt.Errorf("restore failed: %w", err)
	}
	res, err := restore.Run(ctx, cfg, restore.Options{
		Target: tp, Resume: opts.Resume,
		Backup: opts.Backup, TargetDB: opts.TargetDB, Databases: opts.Databases,
		Force: opts.Force, NoSafetyBackup: opts.NoSafetyBackup, SafetyBackup: safetyBackup(cfg, logger(opts.Log)), NoOwner: opts.NoOwner,
		RestoreGlobals: opts.RestoreGlobals, RestoreLogs: opts.RestoreLogs, DryRun: opts.DryRun, Log: logger(opts.Log),
		Progress: p,
	})
	if err != nil {
		return nil, fmt.Errorf("restore failed: %w", known(err))
	}
	out := restoreResult(res, opts.DryRun)
	p.Report(progress.Event{Phase: "done", Message: "restore finished"})
	return out, nil
}

func restoreResult(res *restore.Result, dry bool) *RestoreResult {
	out := &RestoreResult{DryRun: dry, Databases: []RestoredDatabase{}, SafetyBackups: []string{}, RestoredLogs: []string{},
		Differences: []Difference{}, Duration: seconds(res.Duration)}
	if pl := res.Plan; pl != nil {
		out.Archive, out.Globals = pl.Archive, pl.Globals
		for _, s := range pl.Steps {
			out.Databases = append(out.Databases, RestoredDatabase{Source: s.Source, Target: s.Target,
				TargetExists: s.TargetExists, TargetEmpty: s.TargetEmpty, SafetyBackup: s.SafetyBackup})
		}
	}
	out.SafetyBackups = append(out.SafetyBackups, res.SafetyBackups...)
	out.Notes = append([]string{}, res.Notes...)
	out.EndedSessions = []EndedSession{}
	for _, s := range res.EndedSessions {
		out.EndedSessions = append(out.EndedSessions, EndedSession{Database: s.Database, PID: s.PID, User: s.User, Application: s.Application})
	}
	out.RestoredLogs = append(out.RestoredLogs, res.RestoredLogs...)
	if pp := res.PITR; pp != nil {
		pit := &PointInTime{Database: pp.Database, Target: pp.TargetText, ChainID: pp.ChainID,
			Full:         ArchiveRange{Name: pp.Full.Name, Path: pp.Full.Path, StartLSN: LSN(pp.Full.StartLSN)},
			Incrementals: []ArchiveRange{}, Transactions: pp.TxCount,
			FirstCommitLSN: LSN(pp.FirstCommitLSN), LastCommitLSN: LSN(pp.LastCommitLSN), Description: pp.Describe()}
		if pit.Target == "" {
			pit.Target = pp.Target.String()
		}
		if !pp.LastCommitTime.IsZero() {
			t := pp.LastCommitTime
			pit.LastCommitTime = &t
		}
		for _, a := range pp.Incrementals {
			pit.Incrementals = append(pit.Incrementals, ArchiveRange{Name: a.Name, Path: a.Path, StartLSN: LSN(a.StartLSN), EndLSN: LSN(a.EndLSN)})
		}
		pit.RecoveryWindow, pit.ChainEnd, pit.Gap, pit.LargeObjects = pp.Window, pp.ChainEnd, pp.Gap, pp.LargeObjects
		if g := pp.Gap; g != nil {
			out.Differences = append(out.Differences, Difference{Kind: "chain-ended", Object: pp.Database,
				Message: fmt.Sprintf("the newest state any backup holds is %s, %.0f s older than the last backup activity (%s): %s; %s",
					g.Reached.UTC().Format(time.RFC3339Nano), g.Seconds, g.LastActivity.UTC().Format(time.RFC3339Nano), g.Reason, g.Fix)})
		}
		if lo := pp.LargeObjects; lo != nil && !lo.Exact && pp.Target.Kind != apply.Latest {
			out.Differences = append(out.Differences, Difference{Kind: "large-objects", Object: pp.Database, Message: lo.Note})
		}
		out.PointInTime = pit
	}
	if r := res.Replay; r != nil {
		out.Replay = &ReplayStats{Transactions: r.Applied, Rows: r.Rows, ResumedAt: LSN(r.ResumedAt),
			LastCommitLSN: LSN(r.LastCommitLSN), Sequences: r.Sequences, Duration: seconds(r.Duration),
			UnloggedKept: r.UnloggedKept}
		for _, t := range r.UnloggedEmptied {
			out.Differences = append(out.Differences, Difference{Kind: "unlogged-table", Object: t,
				Message: "unlogged table left empty, as after PostgreSQL's own point-in-time recovery: its changes are never captured"})
		}
		for _, n := range r.SequencesUnknown {
			out.Differences = append(out.Differences, Difference{Kind: "sequence", Object: n.Sequence,
				Message: fmt.Sprintf("set to %d: %s", n.Value, n.Message)})
		}
		for _, v := range r.MatviewsRefreshed {
			out.Differences = append(out.Differences, Difference{Kind: "materialized-view-refreshed", Object: v,
				Message: "materialized view refreshed at the end of the replay (no DDL capture, so the source's refreshes are not in the change sets): its content is as of the target, not as of its last refresh on the source"})
		}
	}
	return out
}

// HasDifferences reports whether a finished restore named differences from
// the source (the CLI exits with its own status then).
func (r *RestoreResult) HasDifferences() bool { return r != nil && len(r.Differences) > 0 }

package ops

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/pme2go/pme2go-backup/engine/config"
	"github.com/pme2go/pme2go-backup/engine/drill"
	"github.com/pme2go/pme2go-backup/engine/offsite"
	"github.com/pme2go/pme2go-backup/engine/progress"
	"github.com/pme2go/pme2go-backup/engine/restore"
)

// DrillOptions tune a restore drill.
type DrillOptions struct {
	// Databases to drill; empty: every configured database with a full backup.
	Databases []string `json:"databases,omitempty"`
	// Trigger is recorded with the result ("manual", "scheduled").
	Trigger string       `json:"trigger,omitempty"`
	Log     *slog.Logger `json:"-"`
}

// DrillResult is the outcome of a restore drill (engine/drill.Result): per
// database the archives restored, the point reached, what was compared
// (tables, rows, checksummed tables, indexes checked by amcheck, CHECK
// constraints and views), the problems found and notes.
type DrillResult = drill.Result

// DrilledDatabase is the drill of one database.
type DrilledDatabase = drill.Database

// DrillIssue is one problem a drill found.
type DrillIssue = drill.Issue

// LastDrill summarizes the last restore drill for Status (and metrics).
type LastDrill struct {
	Time     time.Time `json:"time"`
	OK       bool      `json:"ok"`
	Database string    `json:"database"` // the databases drilled, comma-separated
	Error    string    `json:"error,omitempty"`
	Duration float64   `json:"duration"` // seconds
	Trigger  string    `json:"trigger,omitempty"`
}

// BackupDrill marks, in List, an archive the last drill restored.
type BackupDrill struct {
	Time time.Time `json:"time"`
	OK   bool      `json:"ok"`
}

// Drill runs a restore drill (engine/drill): the newest backup of each
// database is restored into a scratch database (pme2go_drill_<id>_<db>),
// checked against what the archives recorded, and dropped; the result is
// kept in BACKUP_DIR/state/drill.json and shown by Status and List.
// Progress phases: "restore <db>…", "check <db>…", "done". Errors:
// DRILL_FAILED (the result says what failed), NOT_FOUND (no full backup),
// BUSY (another drill runs, or a backup or restore holds the backup
// directory: nothing is recorded, the last result stands), CONN_ERR.
func Drill(ctx context.Context, cfg *config.Config, opts DrillOptions, p Progress) (*DrillResult, error) {
	dbs := opts.Databases
	if len(dbs) == 0 {
		dbs = cfg.DBNames
	}
	if err := fetchMissing(ctx, cfg, offsite.Need{PointInTime: true, Latest: true, Databases: dbs}, logger(opts.Log)); err != nil {
		return nil, fmt.Errorf("restore drill: %w", err)
	}
	res, err := drill.Run(ctx, cfg, drill.Options{Databases: opts.Databases, Trigger: opts.Trigger, Log: logger(opts.Log),
		Progress: func(step string) {
			phase, object, _ := strings.Cut(step, " ")
			p.Report(progress.Event{Phase: phase, Object: object})
		}, Restore: drillRestore})
	if err != nil {
		return res, known(err)
	}
	p.Report(progress.Event{Phase: "done", Message: "restore drill finished"})
	return res, nil
}

// drillRestore is the restore a drill runs: the restore workflow into the
// scratch database, without safety backup (the scratch database is new).
func drillRestore(ctx context.Context, cfg *config.Config, req drill.RestoreRequest) (*drill.Restored, error) {
	res, err := restore.Run(ctx, cfg, restore.Options{TargetDB: req.Scratch, Databases: []string{req.Database},
		NoSafetyBackup: true, Log: req.Log, Progress: req.Progress, Backup: req.Backup, Target: req.Target})
	if err != nil {
		return nil, err
	}
	out := &drill.Restored{PITR: res.PITR, Notes: res.Notes}
	if res.Replay != nil {
		out.Applied = res.Replay.Applied
		out.ReplayNotes = restore.ReplayNotes(res.Replay)
	}
	return out, nil
}

// lastDrill reads the last drill's summary; nil when none ran or its
// result cannot be read (the error is put in the summary then).
func lastDrill(cfg *config.Config) (*LastDrill, *drill.Result) {
	r, err := drill.Last(cfg)
	if err != nil {
		return &LastDrill{Error: err.Error()}, nil
	}
	if r == nil {
		return nil, nil
	}
	var dbs []string
	for _, d := range r.Databases {
		dbs = append(dbs, d.Database)
	}
	return &LastDrill{Time: r.Time, OK: r.OK, Database: strings.Join(dbs, ","), Error: r.Error, Duration: r.Duration, Trigger: r.Trigger}, r
}

// drillMarks maps archive names to the last drill that restored them.
func drillMarks(r *drill.Result) map[string]*BackupDrill {
	out := map[string]*BackupDrill{}
	if r == nil {
		return out
	}
	for _, d := range r.Databases {
		for _, a := range d.Archives {
			out[a] = &BackupDrill{Time: r.Time, OK: d.OK}
		}
	}
	return out
}

// DescribeDrill renders a drill's outcome in a few lines for people.
func DescribeDrill(r *DrillResult) []string {
	if r == nil {
		return nil
	}
	var out []string
	for _, d := range r.Databases {
		state := "OK"
		if !d.OK {
			state = "FAILED"
		}
		line := fmt.Sprintf("%s %s: %s", state, d.Database, strings.Join(d.Archives, " + "))
		if d.LastCommitTime != nil {
			line += fmt.Sprintf(", to %s (LSN %s, %d transactions replayed)", d.LastCommitTime.UTC().Format(time.RFC3339), d.LastCommitLSN, d.Transactions)
		}
		out = append(out, line)
		out = append(out, fmt.Sprintf("  %d tables (%d rows) counted, %d checksummed; %d indexes checked by amcheck (%s); %d CHECK constraints, %d views usable; scratch database %s %s; %.1f s",
			d.Tables, d.Rows, d.ChecksummedTables, d.Indexes, d.Amcheck, d.Constraints, d.Views, d.Scratch, dropped(d.ScratchDropped), d.Duration))
		for _, p := range d.Problems {
			obj := ""
			if p.Object != "" {
				obj = p.Object + ": "
			}
			out = append(out, fmt.Sprintf("  problem (%s): %s%s", p.Kind, obj, p.Message))
		}
		for _, n := range d.Notes {
			out = append(out, "  note: "+n)
		}
	}
	return out
}

func dropped(ok bool) string {
	if ok {
		return "dropped"
	}
	return "NOT dropped"
}

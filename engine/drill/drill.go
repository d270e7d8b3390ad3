// Package drill runs restore drills: for each configured database that has
// a backup, it restores the newest backup (the newest full backup and, when
// that backup started a change-capture chain, every change set of the chain
// up to the newest transaction) into a scratch database of its own, checks
// the restored database against what the archives recorded, drops the
// scratch database, and keeps the outcome in BACKUP_DIR/state/drill.json.
//
// What is compared (docs/drill.md says the same for operators):
//
//   - Row counts, per table: the rows of the table's data in the full
//     backup (pg_dump's COPY data, taken at the chain's snapshot), plus the
//     inserts, minus the deletes of the replayed change sets (a TRUNCATE
//     resets the count), against count(*) of the restored table (ONLY the
//     table; partitions summed per partition tree, since changes may be
//     published under the tree's root).
//   - Checksums, per table the replayed change sets did not touch: an
//     order-independent checksum (sum of 64-bit hashes of each row's COPY
//     text line) of the full backup's data against the same of COPY … TO
//     STDOUT of the restored table, under pg_dump's output settings
//     (DateStyle ISO, IntervalStyle postgres, extra_float_digits 3, the
//     dump's client encoding). A changed table has only its count compared:
//     the change sets hold the new rows but, for deletes and updates under
//     the default replica identity, only the old rows' keys.
//   - amcheck: bt_index_check(index, heapallindexed => true) on every valid
//     B-tree index of the restored database, when the amcheck extension is
//     available (it is created in the scratch database only, in a schema of
//     the drill's; never in a source database).
//   - Usability: the restore itself (pg_restore stops at the first error),
//     every CHECK constraint that calls a user function evaluated over its
//     table's rows in an ordinary session (the database's default
//     search_path), and every view planned (SELECT … LIMIT 0).
//
// Tables are not compared (and are named in the notes) when their counts
// cannot be known from the archives: unlogged tables (never captured),
// foreign tables, and, when the change sets hold captured DDL, tables
// created or dropped by it.
package drill

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pme2go/pme2go-backup/engine/apply"
	"github.com/pme2go/pme2go-backup/engine/archive"
	"github.com/pme2go/pme2go-backup/engine/catalog"
	"github.com/pme2go/pme2go-backup/engine/config"
	"github.com/pme2go/pme2go-backup/engine/errs"
	"github.com/pme2go/pme2go-backup/engine/fsutil"
	"github.com/pme2go/pme2go-backup/engine/lock"
	"github.com/pme2go/pme2go-backup/engine/lsn"
	"github.com/pme2go/pme2go-backup/engine/pgclient"
	"github.com/pme2go/pme2go-backup/engine/progress"
)

// Options tune a drill.
type Options struct {
	// Databases to drill; default: every configured database (DB_NAME)
	// that has a full backup.
	Databases []string
	Log       *slog.Logger
	// Progress is told each step ("restore app", "check app", …).
	Progress func(step string)
	// Trigger is recorded with the result ("manual", "scheduled").
	Trigger string
	// Restore restores each database into its scratch database (required).
	Restore Restorer
}

// RestoreRequest is one restore a drill asks for: database Database into
// the scratch database Scratch, either to Target (the newest transaction of
// the newest chain) or, when Target is nil, the full backup at Backup alone.
type RestoreRequest struct {
	Database string
	Scratch  string
	Backup   string
	Target   *apply.Target
	Log      *slog.Logger
	// Progress is told each step of the restore.
	Progress progress.Func
}

// Restored is what a drill needs of a finished restore.
type Restored struct {
	// PITR is the point-in-time plan replayed (nil for a full backup alone).
	PITR *apply.Plan
	// Applied counts the replayed transactions.
	Applied int64
	// ReplayNotes are the replay's notes, Notes the restore's.
	ReplayNotes, Notes []string
}

// Restorer restores for a drill; the front door supplies it (the restore
// workflow, without safety backup). Declared here so that drill does not
// depend on the restore workflow.
type Restorer func(ctx context.Context, cfg *config.Config, req RestoreRequest) (*Restored, error)

// Result is the outcome of one drill; it is what drill.json holds.
type Result struct {
	Time      time.Time  `json:"time"` // when the drill started (UTC)
	Finished  time.Time  `json:"finished"`
	OK        bool       `json:"ok"`
	Duration  float64    `json:"duration"` // seconds
	Trigger   string     `json:"trigger,omitempty"`
	Databases []Database `json:"databases"`
	// Error is why the drill failed, empty when OK.
	Error string `json:"error,omitempty"`
}

// Database is the drill of one database.
type Database struct {
	Database     string `json:"database"`
	OK           bool   `json:"ok"`
	FullBackup   string `json:"fullBackup"`
	Incrementals int    `json:"incrementals"`
	// Archives are the names of the archives restored (the full backup,
	// then the incrementals replayed).
	Archives []string `json:"archives"`
	// Transactions replayed from the change sets, and the last one's
	// commit LSN and time: the point the drill restored to.
	Transactions   int64      `json:"transactions"`
	LastCommitLSN  string     `json:"lastCommitLsn,omitempty"`
	LastCommitTime *time.Time `json:"lastCommitTime,omitempty"`
	Scratch        string     `json:"scratchDatabase"`
	// ScratchDropped says the scratch database is gone again.
	ScratchDropped bool `json:"scratchDropped"`
	// Tables whose row count was compared, their rows, and how many of
	// them also had their checksum compared.
	Tables            int   `json:"tables"`
	Rows              int64 `json:"rows"`
	ChecksummedTables int   `json:"checksummedTables"`
	// Indexes checked by amcheck; Amcheck says "ran", or why not.
	Indexes     int      `json:"indexesChecked"`
	Amcheck     string   `json:"amcheck"`
	Constraints int      `json:"constraintsChecked"`
	Views       int      `json:"viewsChecked"`
	Problems    []Issue  `json:"problems"`
	Notes       []string `json:"notes"`
	Duration    float64  `json:"duration"` // seconds
	Error       string   `json:"error,omitempty"`
	// busy is the restore's BUSY error: a backup or restore held the
	// backup directory, so nothing was drilled.
	busy error
}

// Issue is one thing a drill found wrong: Kind is "restore", "row-count",
// "checksum", "amcheck", "constraint" or "view"; Object the table, index,
// constraint or view.
type Issue struct {
	Kind    string `json:"kind"`
	Object  string `json:"object,omitempty"`
	Message string `json:"message"`
}

// StateFile is the name of the last drill's result in BACKUP_DIR/state.
const StateFile = "drill.json"

// scratchPrefix starts the name of every scratch database of a drill,
// followed by the installation's short id and "_".
const scratchPrefix = "pme2go_drill_"

// Run drills every database of opts (see the package comment), one after
// the other, and saves the result. It returns the result with an error of
// code DRILL_FAILED when any database failed its drill; other errors
// (BUSY, NOT_FOUND when there is no backup at all, CONN_ERR) come before
// anything was restored. A cancelled drill drops its scratch database too.
func Run(ctx context.Context, cfg *config.Config, opts Options) (*Result, error) {
	start := time.Now()
	log := opts.Log
	if log == nil {
		log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	step := opts.Progress
	if step == nil {
		step = func(string) {}
	}
	if err := fsutil.EnsurePrivateDir(cfg.StateDir()); err != nil {
		return nil, fmt.Errorf("state directory %s is not usable (check BACKUP_DIR): %w", cfg.StateDir(), err)
	}
	l, err := lock.TryAcquire(filepath.Join(cfg.StateDir(), "drill.lock"), "a restore drill")
	if err != nil {
		return nil, err
	}
	defer l.Release()
	id, err := config.InstallationShortID(cfg)
	if err != nil {
		return nil, err
	}
	all, err := catalog.List(cfg.BackupDir)
	if err != nil {
		return nil, err
	}
	dbs := opts.Databases
	if len(dbs) == 0 {
		for _, db := range cfg.DBNames {
			if _, ok := newestFull(all, db); ok {
				dbs = append(dbs, db)
			}
		}
		if len(dbs) == 0 {
			return nil, errs.New(errs.NotFound, fmt.Sprintf("no full backup of %s in %s: nothing to drill", strings.Join(cfg.DBNames, ", "), cfg.BackupDir)).
				WithFix(errs.ActFullBackup, "take a full backup first")
		}
	}
	for _, db := range dbs {
		if _, ok := newestFull(all, db); !ok {
			return nil, errs.New(errs.NotFound, fmt.Sprintf("no full backup of database %s in %s", db, cfg.BackupDir)).
				WithFix(errs.ActFullBackup, "take a full backup first")
		}
	}
	if opts.Restore == nil {
		return nil, errors.New("drill.Options.Restore is not set: a drill needs the restore it runs")
	}
	target := pgclient.FromConfig(cfg)
	if err := dropLeftovers(ctx, target, id, log); err != nil {
		return nil, err
	}
	res := &Result{Time: start.UTC(), Trigger: opts.Trigger, Databases: []Database{}}
	var failed []string
	for _, db := range dbs {
		d := drillOne(ctx, cfg, target, id, db, all, opts.Restore, log, step)
		if d.busy != nil {
			// Not a failed drill: a backup or restore holds the backup
			// directory. Nothing is recorded; the last result stands.
			return nil, errs.Wrap(errs.Busy, "restore drill not run: the backup directory is in use", d.busy).
				WithFix(errs.ActWait, "run the drill again once the backup or restore has finished; the last drill's result is kept")
		}
		res.Databases = append(res.Databases, d)
		if !d.OK {
			failed = append(failed, db+": "+d.Error)
		}
		if ctx.Err() != nil {
			break
		}
	}
	res.Finished = time.Now().UTC()
	res.Duration = time.Since(start).Seconds()
	res.OK = len(failed) == 0 && ctx.Err() == nil
	var out error
	switch {
	case ctx.Err() != nil:
		res.Error = "the drill was cancelled"
		out = fmt.Errorf("restore drill cancelled: %w", ctx.Err())
	case len(failed) > 0:
		res.Error = strings.Join(failed, "; ")
		out = errs.New(errs.DrillFailed, "restore drill failed: "+res.Error).
			WithFix("", "run pme2go-backup verify, take a new full backup, and look at the drill's problems (pme2go-backup status --json)")
	}
	if err := Save(cfg, res); err != nil {
		log.Error("drill result not saved", "error", err)
		if out == nil {
			out = err
		}
	}
	return res, out
}

// newestFull is the newest full backup holding db.
func newestFull(all []catalog.Backup, db string) (catalog.Backup, bool) {
	for i := len(all) - 1; i >= 0; i-- {
		b := all[i]
		if b.Type == archive.KindFull && b.Manifest != nil && slices.Contains(b.Manifest.Databases, db) && !b.Manifest.IsSafety() {
			return b, true
		}
	}
	return catalog.Backup{}, false
}

// hasChain reports whether full backup b started a change-capture chain
// for db (then the drill replays it to its newest transaction).
func hasChain(b catalog.Backup, db string) bool {
	m := b.Manifest
	if m == nil || m.ChainID == "" {
		return false
	}
	if c, _ := m.Metadata["chain:"+db].(string); c != "" {
		return true
	}
	return len(m.Databases) == 1 && !strings.Contains(m.ChainID, ",")
}

// ScratchName is the scratch database of a drill of db by the installation
// with short id: pme2go_drill_<id>_<db>, cut to PostgreSQL's 63 bytes.
func ScratchName(id, db string) string {
	name := scratchPrefix + id + "_" + db
	for len(name) > 63 {
		name = name[:len(name)-1]
	}
	// Never cut inside a UTF-8 sequence.
	for len(name) > 0 && !validUTF8End(name) {
		name = name[:len(name)-1]
	}
	return name
}

func validUTF8End(s string) bool {
	return strings.ToValidUTF8(s, "\uFFFD") == s
}

// drillOne drills one database; it never returns without having dropped
// its scratch database (or said in Error why it could not).
func drillOne(ctx context.Context, cfg *config.Config, target pgclient.Target, id, db string, all []catalog.Backup, restoreFn Restorer, log *slog.Logger, step func(string)) (d Database) {
	start := time.Now()
	scratch := ScratchName(id, db)
	d = Database{Database: db, Scratch: scratch, Problems: []Issue{}, Notes: []string{}, Archives: []string{}}
	full, _ := newestFull(all, db)
	d.FullBackup = full.Name
	defer func() {
		// Also on failure and cancellation: nothing of the drill stays.
		derr := dropScratch(context.WithoutCancel(ctx), target, id, log)
		d.ScratchDropped = derr == nil
		if derr != nil {
			d.Problems = append(d.Problems, Issue{Kind: "cleanup", Object: scratch, Message: derr.Error()})
			if d.Error == "" {
				d.Error = derr.Error()
			}
		}
		d.OK = d.Error == "" && len(d.Problems) == 0
		if !d.OK && d.Error == "" {
			d.Error = summarize(d.Problems)
		}
		d.Duration = time.Since(start).Seconds()
		log.Info("restore drill of database finished", "database", db, "ok", d.OK, "tables", d.Tables, "rows", d.Rows,
			"checksummed", d.ChecksummedTables, "indexes", d.Indexes, "duration_ms", time.Since(start).Milliseconds(), "error", d.Error)
	}()
	fail := func(kind string, err error) Database {
		d.Error = err.Error()
		d.Problems = append(d.Problems, Issue{Kind: kind, Message: err.Error()})
		return d
	}

	step("restore " + db)
	ropts := RestoreRequest{Database: db, Scratch: scratch, Log: log,
		Progress: func(e progress.Event) {
			if e.Done == 0 { // steps, not each replayed transaction
				step("restore " + db + ": " + strings.TrimSpace(e.Phase+" "+e.Object+" "+e.Message))
			}
		}}
	if hasChain(full, db) {
		latest, err := apply.ParseTarget(apply.TargetSpec{Latest: true})
		if err != nil {
			return fail("restore", err)
		}
		ropts.Target = &latest
	} else {
		ropts.Backup = full.Path
		d.Notes = append(d.Notes, fmt.Sprintf("%s started no change-capture chain for %s: the drill restored the full backup alone", full.Name, db))
	}
	rres, err := restoreFn(ctx, cfg, ropts)
	if err != nil {
		if errs.CodeOf(err) == errs.Busy {
			d.busy = err
		}
		return fail("restore", fmt.Errorf("restore of %s into scratch database %s failed: %w", db, scratch, err))
	}
	fullPath := full.Path
	var segments []string
	d.Archives = append(d.Archives, full.Name)
	if p := rres.PITR; p != nil {
		d.FullBackup = p.Full.Name
		fullPath = p.Full.Path
		d.Archives = []string{p.Full.Name}
		d.Incrementals = len(p.Incrementals)
		d.Transactions = rres.Applied
		if p.LastCommitLSN != 0 {
			d.LastCommitLSN = lsn.LSN(p.LastCommitLSN).String()
		}
		if !p.LastCommitTime.IsZero() {
			t := p.LastCommitTime.UTC()
			d.LastCommitTime = &t
		}
		for _, a := range p.Incrementals {
			segments = append(segments, a.Path)
			d.Archives = append(d.Archives, a.Name)
		}
		if g := p.Gap; g != nil {
			d.Notes = append(d.Notes, fmt.Sprintf("the newest state any backup holds is %s: %s", g.Reached.UTC().Format(time.RFC3339), g.Reason))
		}
		for _, line := range rres.ReplayNotes {
			d.Notes = append(d.Notes, line)
		}
	}
	d.Notes = append(d.Notes, rres.Notes...)
	if err := markScratch(ctx, target, scratch); err != nil {
		return fail("restore", err)
	}

	step("check " + db)
	var lastLSN uint64
	if rres.PITR != nil {
		lastLSN = rres.PITR.LastCommitLSN
	}
	if err := check(ctx, cfg, target, db, scratch, fullPath, segments, lastLSN, &d, log, step); err != nil {
		if errors.Is(err, context.Canceled) || ctx.Err() != nil {
			return fail("check", fmt.Errorf("drill of %s cancelled: %w", db, err))
		}
		return fail("check", err)
	}
	return d
}

func summarize(problems []Issue) string {
	var parts []string
	for i, p := range problems {
		if i == 5 {
			parts = append(parts, fmt.Sprintf("and %d more", len(problems)-5))
			break
		}
		if p.Object != "" {
			parts = append(parts, p.Object+": "+p.Message)
		} else {
			parts = append(parts, p.Message)
		}
	}
	return strings.Join(parts, "; ")
}

// scratchComment marks a drill's scratch database.
const scratchComment = "pme2go-backup restore drill scratch database (dropped after the drill)"

func markScratch(ctx context.Context, target pgclient.Target, db string) error {
	conn, err := connectMaint(ctx, target)
	if err != nil {
		return err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	if _, err := conn.Exec(ctx, "COMMENT ON DATABASE "+pgx.Identifier{db}.Sanitize()+" IS '"+scratchComment+"'"); err != nil {
		return fmt.Errorf("mark scratch database %s: %w", db, err)
	}
	return nil
}

func connectMaint(ctx context.Context, target pgclient.Target) (*pgx.Conn, error) {
	var lastErr error
	for _, db := range []string{"postgres", "template1"} {
		conn, err := target.Connect(ctx, db)
		if err == nil {
			return conn, nil
		}
		lastErr = err
	}
	return nil, lastErr
}

// dropLeftovers drops the scratch databases a drill of this installation
// left behind (a killed process): every database whose name starts with
// pme2go_drill_<id>_, including the restore's own scratch names derived
// from them.
func dropLeftovers(ctx context.Context, target pgclient.Target, id string, log *slog.Logger) error {
	return dropScratch(ctx, target, id, log)
}

// dropScratch drops every database of this installation's drills (see
// dropLeftovers), ending sessions connected to them.
func dropScratch(ctx context.Context, target pgclient.Target, id string, log *slog.Logger) error {
	conn, err := connectMaint(ctx, target)
	if err != nil {
		return err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	prefix := scratchPrefix + id + "_"
	rows, err := conn.Query(ctx, `SELECT datname FROM pg_catalog.pg_database WHERE starts_with(datname, $1)`, prefix)
	if err != nil {
		return fmt.Errorf("look for drill scratch databases: %w", err)
	}
	names, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return fmt.Errorf("look for drill scratch databases: %w", err)
	}
	var errList []error
	for _, name := range names {
		ident := pgx.Identifier{name}.Sanitize()
		conn.Exec(ctx, "ALTER DATABASE "+ident+" IS_TEMPLATE false")
		if _, err := conn.Exec(ctx, "DROP DATABASE IF EXISTS "+ident+" WITH (FORCE)"); err != nil {
			errList = append(errList, fmt.Errorf("drop drill scratch database %s (drop it by hand): %w", name, err))
			continue
		}
		log.Info("drill scratch database dropped", "database", name)
	}
	return errors.Join(errList...)
}

// Save writes res as BACKUP_DIR/state/drill.json (mode 0600, atomically).
func Save(cfg *config.Config, res *Result) error {
	data, err := marshal(res)
	if err != nil {
		return err
	}
	if err := fsutil.WriteFileAtomic(filepath.Join(cfg.StateDir(), StateFile), data, 0o600); err != nil {
		return fmt.Errorf("save the drill result: %w", err)
	}
	return nil
}

// Last reads the last drill's result; nil (and no error) when no drill has
// run yet.
func Last(cfg *config.Config) (*Result, error) {
	data, err := os.ReadFile(filepath.Join(cfg.StateDir(), StateFile))
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read the last drill's result: %w", err)
	}
	return unmarshal(data)
}

func marshal(res *Result) ([]byte, error) {
	data, err := json.MarshalIndent(res, "", "  ")
	if err != nil {
		return nil, fmt.Errorf("encode the drill result: %w", err)
	}
	return append(data, '\n'), nil
}

func unmarshal(data []byte) (*Result, error) {
	var res Result
	if err := json.Unmarshal(data, &res); err != nil {
		return nil, fmt.Errorf("read the last drill's result (%s): %w", StateFile, err)
	}
	return &res, nil
}

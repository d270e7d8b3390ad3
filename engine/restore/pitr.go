package restore

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"

	"github.com/pme2go/pme2go-backup/engine/errs"
	"github.com/pme2go/pme2go-backup/engine/lsn"
	"github.com/pme2go/pme2go-backup/engine/progress"

	"github.com/jackc/pgx/v5"

	"github.com/pme2go/pme2go-backup/engine/apply"
	"github.com/pme2go/pme2go-backup/engine/catalog"
	"github.com/pme2go/pme2go-backup/engine/chain"
	"github.com/pme2go/pme2go-backup/engine/config"
	"github.com/pme2go/pme2go-backup/engine/fsutil"
	"github.com/pme2go/pme2go-backup/engine/pgclient"
)

// buildPITR plans a point-in-time restore: it picks the database, builds
// and prepares the replay plan (extracting change sets into a private work
// directory that the returned cleanup removes) and points opts at the
// chosen full backup.
func buildPITR(ctx context.Context, cfg *config.Config, opts *Options) (*apply.Plan, func(), error) {
	db := ""
	switch {
	case len(opts.Databases) == 1:
		db = opts.Databases[0]
	case len(opts.Databases) == 0 && len(cfg.DBNames) == 1:
		db = cfg.DBNames[0]
	default:
		return nil, nil, errs.New(errs.Usage, fmt.Sprintf("a point-in-time restore replays one database (configured: %s)", strings.Join(cfg.DBNames, ", "))).
			WithFix(errs.ActChooseDatabase, "name the one database to restore")
	}
	// A subdirectory: backupdir.Prepare removes temporary files directly in
	// the state directory, and runs after planning.
	base := filepath.Join(cfg.StateDir(), "pitr")
	for _, d := range []string{cfg.BackupDir, cfg.StateDir(), base} {
		if err := fsutil.EnsurePrivateDir(d); err != nil {
			return nil, nil, fmt.Errorf("directory %s is not usable (check BACKUP_DIR): %w", d, err)
		}
	}
	if _, err := RemoveStaleWork(cfg); err != nil {
		opts.Log.Warn("could not remove stale work directories", "error", err)
	}
	// The pid in the name lets a later run remove the directory once its
	// process is gone (RemoveStaleWork), never while a restore uses it.
	work, err := os.MkdirTemp(base, fsutil.TempPrefix("work")+strconv.Itoa(os.Getpid())+"-")
	if err != nil {
		return nil, nil, fmt.Errorf("create change-set work directory: %w", err)
	}
	cleanup := func() { os.RemoveAll(work) }
	opts.Progress.Report(progress.Event{Phase: "plan", Object: "point-in-time restore of " + db + " to " + opts.Target.String()})
	plan, err := apply.Build(ctx, cfg.BackupDir, db, *opts.Target, work)
	if err != nil {
		cleanup()
		return nil, nil, err
	}
	if opts.Backup != "" {
		b, err := catalog.Find(cfg.BackupDir, opts.Backup)
		if err != nil {
			cleanup()
			return nil, nil, err
		}
		if filepath.Clean(b.Path) != filepath.Clean(plan.Full.Path) {
			cleanup()
			return nil, nil, errs.New(errs.Usage, fmt.Sprintf("target %s needs full backup %s, not %s", opts.Target, plan.Full.Name, b.Name)).
				WithFix(errs.ActNoBackup, "name no backup and let the target choose its full backup")
		}
	}
	opts.Backup, opts.Databases = plan.Full.Path, []string{db}
	return plan, cleanup, nil
}

// pitrScratchName is the fixed name of the database a point-in-time
// restore into target replays into, so that --resume finds it.
func pitrScratchName(target string) string {
	return fitName(target, "_pme2go_pitr")
}

// scratchMark is the database comment that ties a scratch database to its
// plan.
func scratchMark(p *apply.Plan) string {
	return "pme2go-backup point-in-time restore: full=" + p.Full.Name + " chain=" + p.ChainID
}

// checkScratch looks for the scratch database of an interrupted restore:
// with Resume it must exist and belong to the same full backup and chain
// (its name is returned); without Resume it must not exist.
func checkScratch(ctx context.Context, target pgclient.Target, plan *Plan, p *apply.Plan, opts Options) (string, error) {
	if len(plan.Steps) != 1 {
		return "", fmt.Errorf("a point-in-time restore replays exactly one database")
	}
	name := pitrScratchName(plan.Steps[0].Target)
	maint, err := connectMaintenance(ctx, target, name)
	if err != nil {
		return "", err
	}
	defer maint.Close(context.Background())
	var comment *string
	err = maint.QueryRow(ctx, `SELECT shobj_description(oid, 'pg_database') FROM pg_database WHERE datname = $1`, name).Scan(&comment)
	exists := err == nil
	if err != nil && err != pgx.ErrNoRows {
		return "", fmt.Errorf("look up database %s: %w", name, err)
	}
	switch {
	case exists && !opts.Resume:
		return "", errs.New(errs.NeedsResume, fmt.Sprintf("database %s was left by an interrupted point-in-time restore", name)).
			WithFix(errs.ActResume, fmt.Sprintf("resume the same restore to continue it, or drop it (DROP DATABASE %s) to start over", pgx.Identifier{name}.Sanitize()))
	case !exists:
		return "", nil // --resume with nothing to resume: a normal restore
	case comment == nil || *comment != scratchMark(p):
		got := "no mark"
		if comment != nil {
			got = *comment
		}
		return "", errs.New(errs.NeedsResume, fmt.Sprintf("database %s belongs to another restore (%s), not to full backup %s of chain %s", name, got, p.Full.Name, p.ChainID)).
			WithFix(errs.ActNoResume, fmt.Sprintf("drop it (DROP DATABASE %s) and restore again without resuming", pgx.Identifier{name}.Sanitize()))
	}
	return name, nil
}

// markScratch records the plan in the scratch database's comment.
func markScratch(ctx context.Context, maint *pgx.Conn, db string, p *apply.Plan) error {
	_, err := maint.Exec(ctx, "COMMENT ON DATABASE "+pgx.Identifier{db}.Sanitize()+" IS "+quoteLit(scratchMark(p)))
	if err != nil {
		return fmt.Errorf("mark scratch database %s: %w", db, err)
	}
	return nil
}

// replayer replays a plan into the scratch database.
type replayer struct {
	plan        *apply.Plan
	opts        Options
	resume      bool
	ddlCaptured bool // the chain captured DDL: no refresh of materialized views at the end
	res         *Result
}

func (r *replayer) run(ctx context.Context, target pgclient.Target, db string) error {
	conn, err := target.Connect(ctx, db)
	if err != nil {
		return err
	}
	defer conn.Close(context.Background())
	total := r.plan.TxCount
	r.opts.Progress.Report(progress.Event{Phase: "replay", Object: fmt.Sprintf("%d transactions into %s", total, db), Total: total, Unit: progress.Transactions})
	onCommit := func(applied int64, commitLSN uint64) {
		r.opts.Progress.Report(progress.Event{Phase: "replay", Done: applied, Total: total, Unit: progress.Transactions, Message: "commit " + lsn.LSN(commitLSN).String()})
	}
	st, err := apply.Replay(ctx, conn, r.plan, apply.ReplayOptions{Resume: r.resume, OnCommit: onCommit, Log: r.opts.Log,
		RefreshMatviews: !r.ddlCaptured})
	r.res.Replay = st
	if err == nil {
		// Large objects are not in the change stream: put back the state
		// the last archive recorded (r.plan.LargeObjects reports it).
		_, err = apply.ApplyLargeObjects(ctx, conn, r.plan)
	}
	if err == nil && st != nil {
		// A sequence whose value at the target is unknown is never left
		// behind the rows its column holds; exact ones are left as they
		// were at the target.
		var raised map[string]string
		if raised, err = apply.RaiseOwnedSequencesExcept(ctx, conn, st.SequencesExact); len(raised) > 0 {
			r.opts.Log.Info("sequences raised to the values their columns hold", "sequences", raised)
		}
		for i, n := range st.SequencesUnknown {
			if how, ok := raised[n.Sequence]; ok {
				st.SequencesUnknown[i].Message += "; raised to " + how
				if cerr := conn.QueryRow(ctx, "SELECT last_value FROM "+n.Sequence).Scan(&st.SequencesUnknown[i].Value); cerr != nil {
					err = fmt.Errorf("read sequence %s: %w", n.Sequence, cerr)
				}
			}
		}
	}

	if err != nil {
		return fmt.Errorf("%w (scratch database %s kept; the target database was not changed)", err, db)
	}
	for _, line := range ReplayNotes(st) {
		r.opts.Progress.Report(progress.Event{Phase: "replay", Message: line})
		r.opts.Log.Warn(line)
	}
	return nil
}

// ReplayNotes says in words where a replayed database differs from the
// source by design: unlogged tables (never captured) and materialized
// views refreshed at the end instead of at the source's refreshes.
func ReplayNotes(st *apply.Stats) []string {
	if st == nil {
		return nil
	}
	var out []string
	if len(st.UnloggedEmptied) > 0 {
		out = append(out, "unlogged tables are empty, as after PostgreSQL's own point-in-time recovery (their changes are never captured): "+strings.Join(st.UnloggedEmptied, ", "))
	}
	if len(st.UnloggedKept) > 0 {
		out = append(out, "unlogged tables keep the full backup's content (no transaction was replayed; their later changes are never captured): "+strings.Join(st.UnloggedKept, ", "))
	}
	for _, n := range st.SequencesUnknown {
		out = append(out, fmt.Sprintf("sequence %s set to %d: %s", n.Sequence, n.Value, n.Message))
	}
	if len(st.MatviewsRefreshed) > 0 {
		out = append(out, "materialized views refreshed at the end of the replay (the chain has no DDL capture, so the source's refreshes are not in it; their content is as of the target, not as of their last refresh on the source): "+strings.Join(st.MatviewsRefreshed, ", "))
	}
	return out
}

// ddlCaptured reports whether the plan's chain captured DDL (then its
// change sets carry REFRESH MATERIALIZED VIEW at its position): from the
// full backup's manifest when it says, else from the chain's state.
func ddlCaptured(cfg *config.Config, p *apply.Plan) bool {
	if p.Full.Manifest != nil {
		if v, ok := p.Full.Manifest.Metadata["captureDdl:"+p.Database].(bool); ok {
			return v
		}
	}
	if st, err := chain.Load(cfg, p.ChainID); err == nil && st != nil {
		return st.CaptureDDL
	}
	return false
}

// RemoveStaleWork removes change-set work directories under
// BACKUP_DIR/state/pitr left by point-in-time restores whose process has
// died (crash, SIGKILL). Directories of running restores are kept.
func RemoveStaleWork(cfg *config.Config) ([]string, error) {
	base := filepath.Join(cfg.StateDir(), "pitr")
	entries, err := os.ReadDir(base)
	if os.IsNotExist(err) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("list %s: %w", base, err)
	}
	prefix := fsutil.TempPrefix("work")
	var removed []string
	for _, e := range entries {
		rest, ok := strings.CutPrefix(e.Name(), prefix)
		if !ok {
			continue
		}
		pidText, _, _ := strings.Cut(rest, "-")
		pid, err := strconv.Atoi(pidText)
		if err == nil && pid > 0 && syscall.Kill(pid, 0) != syscall.ESRCH {
			continue // its restore is still running (or not ours to judge)
		}
		p := filepath.Join(base, e.Name())
		if err := os.RemoveAll(p); err != nil {
			return removed, fmt.Errorf("remove stale work directory %s: %w", p, err)
		}
		removed = append(removed, p)
	}
	return removed, nil
}

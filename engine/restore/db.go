package restore

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/pme2go/pme2go-backup/engine/errs"

	"github.com/jackc/pgx/v5"

	"github.com/pme2go/pme2go-backup/engine/apply"
	"github.com/pme2go/pme2go-backup/engine/archive"
	"github.com/pme2go/pme2go-backup/engine/config"
	"github.com/pme2go/pme2go-backup/engine/pgclient"
)

// connectMaintenance connects to a database other than avoid, for CREATE,
// RENAME and DROP DATABASE: postgres, else template1.
func connectMaintenance(ctx context.Context, target pgclient.Target, avoid ...string) (*pgx.Conn, error) {
	var lastErr error
	for _, db := range []string{"postgres", "template1"} {
		if contains(avoid, db) {
			continue
		}
		conn, err := target.Connect(ctx, db)
		if err == nil {
			return conn, nil
		}
		lastErr = err
	}
	return nil, lastErr
}

// inspectTarget reports whether db exists and whether it holds any user
// relation or large object.
func inspectTarget(ctx context.Context, target pgclient.Target, maint *pgx.Conn, db string) (exists, empty bool, err error) {
	if err := maint.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)`, db).Scan(&exists); err != nil {
		return false, false, fmt.Errorf("look up database %s: %w", db, err)
	}
	if !exists {
		return false, true, nil
	}
	conn, err := target.Connect(ctx, db)
	if err != nil {
		return true, false, err
	}
	defer conn.Close(context.Background())
	var n int
	err = conn.QueryRow(ctx, `SELECT (SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
	                          WHERE n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg\_toast%'
	                            AND c.relkind IN ('r', 'p', 'v', 'm', 'S', 'f'))
	                        + (SELECT count(*) FROM pg_largeobject_metadata)`).Scan(&n)
	if err != nil {
		return true, false, fmt.Errorf("inspect database %s: %w", db, err)
	}
	return true, n == 0, nil
}

// restoreDatabase restores dumpDir into a fresh database and swaps it in
// place of st.Target. Until the swap the target is untouched; a failure drops
// the fresh database and leaves the target as it was.
//
// With rp set (point-in-time restore) the fresh database has a fixed name,
// the change sets are replayed into it before the swap, and a replay that
// fails or is interrupted leaves it in place for Options.Resume; rp.resume
// skips creating it and pg_restore.
//
// The dump is read from ext while it is being verified and extracted:
// pg_restore starts with the pre-data section once toc.dat is proven,
// loads the data once every member of the dump is, and nothing goes past
// the scratch database (a kept point-in-time scratch database, the swap)
// before the whole archive is proven.
func restoreDatabase(ctx context.Context, cfg *config.Config, target pgclient.Target, opts Options, st Step, ext *archive.VerifiedExtraction, dumpDir string, props archive.DatabaseStats, rp *replayer, res *Result) error {
	fresh := scratchName(st.Target, "restore")
	if rp != nil {
		fresh = pitrScratchName(st.Target)
	}
	// The journal is written (and synced) while the maintenance
	// connection is made.
	type journaled struct {
		j   *journal
		err error
	}
	jc := make(chan journaled, 1)
	go func() {
		j, err := newJournal(cfg, st.Target, fresh, rp != nil)
		jc <- journaled{j, err}
	}()
	maint, err := connectMaintenance(ctx, target, st.Target, fresh)
	jr := <-jc
	if err != nil {
		jr.j.close()
		return err
	}
	defer maint.Close(context.Background())
	j := jr.j
	if jr.err != nil {
		return jr.err
	}
	defer j.close()
	keep := false // a replay in progress is kept for --resume
	swapped := false
	defer func() {
		if !swapped && !keep {
			dropDatabase(context.Background(), maint, fresh, opts.Log)
		}
	}()
	settings := &settingsFuture{done: make(chan struct{})}
	defer settings.wait()
	pinned := -1 // unknown: a resumed scratch database
	var early chan *pgx.Conn
	earlyConn := func() *pgx.Conn {
		if early == nil {
			return nil
		}
		c := <-early
		early = nil
		return c
	}
	defer func() {
		if c := earlyConn(); c != nil {
			c.Close(context.Background())
		}
	}()
	if rp == nil || !rp.resume {
		// The scratch database is created while pgRestore reads the
		// table of contents; maint is not used by anything else meanwhile.
		created := make(chan error, 1)
		go func() {
			t := time.Now()
			err := createDatabase(ctx, maint, fresh, props, opts.Log)
			opts.Log.Debug("scratch database created", "database", fresh, "duration", time.Since(t).Round(time.Millisecond))
			created <- err
		}()
		// Once the scratch database exists, the connection that will
		// remove our machinery from it is opened while pg_restore runs.
		waitCreated := sync.OnceValue(func() error {
			err := <-created
			if err == nil {
				early = make(chan *pgx.Conn, 1)
				go func() {
					conn, err := target.Connect(ctx, fresh)
					if err != nil {
						conn = nil // removeMachinery connects then
					}
					early <- conn
				}()
			}
			return err
		})
		pinned, err = pgRestore(ctx, cfg, target, opts, st, fresh, dumpDir, ext, settings, waitCreated)
		if cerr := waitCreated(); cerr != nil {
			return cerr
		}
		if err != nil {
			return err
		}
	}
	// A resumed point-in-time scratch database was built from this archive
	// when it was proven; it stays for another --resume whatever happens
	// to the archive now.
	keep = rp != nil && rp.resume
	if _, err := ext.Done(ctx); err != nil {
		return err
	}
	keep = false
	t := time.Now()
	if conn := earlyConn(); conn != nil {
		removed, err := dropMachinery(ctx, conn)
		conn.Close(context.Background())
		for _, d := range removed {
			opts.Log.Info("pme2go-backup object removed from the restored database", "database", fresh, "object", d)
		}
		if err != nil {
			return err
		}
	} else if _, err := removeMachinery(ctx, target, fresh, opts.Log); err != nil {
		return err
	}
	opts.Log.Debug("machinery removed", "duration", time.Since(t).Round(time.Millisecond))
	if rp != nil {
		if err := markScratch(ctx, maint, fresh, rp.plan); err != nil {
			return err
		}
		keep = true
		if err := rp.run(ctx, target, fresh); err != nil {
			return err
		}
		// Replayed DDL must not have brought any back.
		if _, err := removeMachinery(ctx, target, fresh, opts.Log); err != nil {
			return err
		}
		keep = false
	}
	// The functions as dumped again (pgRestore gave them a temporary
	// search_path for loading data and for the replay). A restore that
	// pinned none (and replayed nothing) has none to unpin.
	if pinned != 0 || rp != nil {
		t = time.Now()
		if _, err := unpinFunctionPaths(ctx, target, fresh); err != nil {
			return err
		}
		opts.Log.Debug("function paths unpinned", "duration", time.Since(t).Round(time.Millisecond))
	}
	t = time.Now()
	notes, limit, err := restoreSettings(ctx, cfg, target, maint, opts, st, dumpDir, fresh, settings)
	res.Notes = append(res.Notes, notes...)
	if err != nil {
		return err
	}
	opts.Log.Debug("database settings applied", "duration", time.Since(t).Round(time.Millisecond))
	t = time.Now()
	defer func() { opts.Log.Debug("swapped in", "duration", time.Since(t).Round(time.Millisecond)) }()
	waitSessionsGone(ctx, maint, fresh)
	if st.TargetExists {
		err = replaceDatabase(ctx, cfg, maint, fresh, st, opts, res, j, limit)
	} else {
		err = renameDatabase(ctx, maint, fresh, st.Target, limit)
	}
	if err != nil {
		if rp != nil {
			// Kept for --resume, which recognises it by its mark.
			keep = true
			markScratch(context.WithoutCancel(ctx), maint, fresh, rp.plan)
		}
		return err
	}
	swapped = true
	if rp != nil {
		if err := apply.DropOrigin(ctx, maint, st.Target); err != nil {
			opts.Log.Warn("replication origin of the restore left behind; drop it with pg_replication_origin_drop", "error", err)
		}
	}
	return nil
}

// pgRestore runs pg_restore of dumpDir, being extracted by ext, into the
// fresh database: the pre-data section (schemas, types, tables, functions)
// as soon as toc.dat is proven, while the rest of the archive is still
// extracted; the data and post-data sections (in parallel, --jobs) once
// every member of the dump is proven. When every member of the dump is
// already proven by the time the scratch database exists and the dump
// holds no function or procedure (nothing to pin, userfuncs.go), it runs
// pg_restore once for all sections instead, which saves a pg_restore run
// and the two catalog passes of pinning. It also starts reading the
// database-level settings from the table of contents into settings, and
// returns how many functions it pinned.
//
// created waits for the scratch database to exist (created meanwhile).
func pgRestore(ctx context.Context, cfg *config.Config, target pgclient.Target, opts Options, st Step, fresh, dumpDir string, ext *archive.VerifiedExtraction, settings *settingsFuture, created func() error) (int, error) {
	tool, err := findTool(ctx, "pg_restore", cfg.PgBinDir)
	if err != nil {
		return 0, err
	}
	prefix := "database/" + st.Source + "/"
	if err := ext.Wait(ctx, prefix+"toc.dat"); err != nil {
		return 0, err
	}
	opts.Log.Debug("table of contents proven")
	go func() {
		if ext.WaitPrefix(ctx, prefix) == nil {
			opts.Log.Debug("dump proven")
		}
	}()
	settings.started = true
	go settings.run(ctx, cfg, target, opts.Log, dumpDir, fresh, opts.NoOwner)
	// Our machinery (chain publications, DDL capture) stays out.
	list := dumpDir + ".restore-list"
	left, err := ourTOCList(ctx, cfg, target, opts.Log, dumpDir, fresh, list)
	if err != nil {
		return 0, err
	}
	defer os.Remove(list)
	for _, l := range left {
		opts.Log.Info("pme2go-backup object left out of the restore", "database", st.Target, "entry", l)
	}
	opts.Log.Debug("restore list written")
	if err := created(); err != nil {
		return 0, err
	}
	listing, err := os.ReadFile(list)
	if err != nil {
		return 0, fmt.Errorf("read restore list: %w", err)
	}
	args := []string{"-w", "--exit-on-error", "--jobs=" + strconv.Itoa(cfg.Jobs), "--dbname=" + conninfoDB(fresh), "--use-list=" + list}
	if opts.NoOwner {
		args = append(args, "--no-owner", "--no-acl")
	}
	run := func(sections ...string) error {
		t := time.Now()
		a := append([]string(nil), args...)
		for _, s := range sections {
			a = append(a, "--section="+s)
		}
		if err := tool.Run(ctx, opts.Log, target, fresh, append(a, dumpDir)...); err != nil {
			if ext.Failed() != nil {
				return err // reported as the archive's failure
			}
			return &errs.Error{Code: errs.CodeOf(err), Message: fmt.Sprintf("%v (the target database %s was not changed)", err, st.Target), Err: err,
				Fix: &errs.Fix{Action: errs.ActRestoreGlobals, Text: "if roles are missing, create them first from the backup's globals, or restore without ownership and privileges"}}
		}
		opts.Log.Info("pg_restore finished", "database", st.Target, "sections", strings.Join(sections, ","), "duration", time.Since(t).Round(time.Millisecond))
		return nil
	}
	if ext.Proven(prefix) && !hasFunctions(string(listing)) {
		opts.Log.Debug("dump proven before pg_restore: one run")
		return 0, run("pre-data", "data", "post-data")
	}
	// Two steps: the pre-data section while the rest of the archive is
	// still extracted, and so that functions called while data is loaded
	// find what their bodies name (userfuncs.go).
	if err := run("pre-data"); err != nil {
		return 0, err
	}
	t0 := time.Now()
	pins, err := pinFunctionPaths(ctx, target, fresh, opts.Log)
	if err != nil {
		return 0, err
	}
	opts.Log.Debug("function paths pinned", "duration", time.Since(t0).Round(time.Millisecond))
	if pins.n > 0 {
		opts.Log.Debug("functions given a temporary search_path for the restore", "database", st.Target, "functions", pins.n)
	}
	t := time.Now()
	if err := ext.WaitPrefix(ctx, prefix); err != nil {
		return 0, err
	}
	opts.Log.Info("dump extracted", "database", st.Target, "waited", time.Since(t).Round(time.Millisecond))
	aside, err := setAsideOwnerTables(ctx, target, fresh, opts.Log)
	if err != nil {
		return 0, err
	}
	if len(aside) == 0 {
		err = run("data", "post-data")
	} else if err = run("data"); err == nil {
		if err = loadOwnerTables(ctx, target, fresh, aside); err == nil {
			err = run("post-data")
		}
	}
	var e *errs.Error
	if err != nil && len(pins.narrowed) > 0 && errors.As(err, &e) {
		// A function that needed a schema left out fails as "function …
		// does not exist": say which were narrowed, and what to do.
		return 0, &errs.Error{Code: e.Code, Message: e.Message + narrowedNote(pins.narrowed), Err: err,
			Fix: &errs.Fix{Text: "give each function named a search_path of its own in the source (ALTER FUNCTION … SET search_path = its schemas, pg_temp), as PostgreSQL's CREATE FUNCTION documentation advises, and take a new full backup; or take away the other roles' CREATE privilege on those schemas and their objects there; a restore of this backup as it is would run their code with the restoring role's privileges"}}
	}
	return pins.touched(), err
}

// hasFunctions reports whether a pg_restore -l listing (as pg_restore -L
// reads it) restores a function or procedure.
func hasFunctions(listing string) bool {
	for _, l := range strings.Split(listing, "\n") {
		if rest, ok := tocRest(l); ok && (strings.HasPrefix(rest, "FUNCTION ") || strings.HasPrefix(rest, "PROCEDURE ")) {
			return true
		}
	}
	return false
}

// waitSessionsGone waits, for up to a second, until no session is
// connected to db any more: the sessions just closed (pg_restore's, ours)
// end asynchronously, and ALTER DATABASE … RENAME (the swap) waits for
// them in steps of 100 ms (CountOtherDBBackends), so a short poll first
// saves most of such a step. Only client sessions are waited for: the
// rename itself ends autovacuum workers (which a freshly loaded database
// attracts). Errors are ignored: the swap then waits as before.
func waitSessionsGone(ctx context.Context, maint *pgx.Conn, db string) {
	deadline := time.Now().Add(time.Second)
	for time.Now().Before(deadline) {
		var n int
		if err := maint.QueryRow(ctx, `SELECT count(*) FROM pg_stat_activity WHERE datname = $1 AND backend_type = 'client backend'`, db).Scan(&n); err != nil || n == 0 {
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(5 * time.Millisecond):
		}
	}
}

// conninfoDB is a libpq connection string naming database db: --dbname
// takes a name with "=" in it for a connection string itself.
func conninfoDB(db string) string {
	return "dbname='" + strings.NewReplacer(`\`, `\\`, `'`, `\'`).Replace(db) + "'"
}

// scratchName builds a database name derived from db that fits in 63 bytes.
func scratchName(db, what string) string {
	return fitName(db, fmt.Sprintf("_pme2go_%s_%d", what, time.Now().UnixNano()%1e9))
}

// fitName appends suffix to db, first cutting db (at a character boundary)
// so that the whole fits in PostgreSQL's 63 bytes of a name.
func fitName(db, suffix string) string {
	for len(db)+len(suffix) > 63 {
		_, size := utf8.DecodeLastRuneInString(db)
		db = db[:len(db)-size]
	}
	return db + suffix
}

func createDatabase(ctx context.Context, maint *pgx.Conn, name string, p archive.DatabaseStats, log *slog.Logger) error {
	q := "CREATE DATABASE " + pgx.Identifier{name}.Sanitize() + " TEMPLATE template0"
	// Only superusers may connect while it is built (userfuncs.go); a
	// restoring role that is not one would lock itself out.
	var super bool
	if err := maint.QueryRow(ctx, `SELECT rolsuper FROM pg_catalog.pg_roles WHERE rolname = current_user`).Scan(&super); err != nil {
		return fmt.Errorf("create database %s: %w", name, err)
	}
	if super {
		q += " CONNECTION LIMIT 0"
	}
	if p.Encoding != "" {
		q += " ENCODING " + quoteLit(p.Encoding) + " LC_COLLATE " + quoteLit(p.Collate) + " LC_CTYPE " + quoteLit(p.Ctype)
	}
	if p.Owner != "" {
		var ok bool
		if err := maint.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = $1)`, p.Owner).Scan(&ok); err == nil && ok {
			q += " OWNER " + pgx.Identifier{p.Owner}.Sanitize()
		} else {
			log.Warn("original database owner does not exist; the restored database is owned by DB_USER", "owner", p.Owner)
		}
	}
	if _, err := maint.Exec(ctx, q); err != nil {
		return fmt.Errorf("create database %s: %w", name, err)
	}
	return nil
}

// renameDatabase gives the restored database fresh the name of a target
// that does not exist, and in the same transaction its connection limit
// (the dumped one; -1 for none): until then only superusers could connect
// to it (createDatabase).
func renameDatabase(ctx context.Context, maint *pgx.Conn, fresh, target string, limit int) error {
	tx, err := maint.Begin(ctx)
	if err != nil {
		return err
	}
	defer tx.Rollback(context.Background())
	if err := setConnLimit(ctx, tx, fresh, limit); err != nil {
		return err
	}
	if _, err := tx.Exec(ctx, "ALTER DATABASE "+ident(fresh)+" RENAME TO "+ident(target)); err != nil {
		return fmt.Errorf("rename restored database to %s: %w", target, err)
	}
	if err := tx.Commit(ctx); err != nil {
		return fmt.Errorf("rename restored database to %s: %w", target, err)
	}
	return nil
}

func dropDatabase(ctx context.Context, maint *pgx.Conn, name string, log *slog.Logger) {
	// A template (IS_TEMPLATE restored from the dump) cannot be dropped.
	maint.Exec(ctx, "ALTER DATABASE "+ident(name)+" IS_TEMPLATE false")
	if _, err := maint.Exec(ctx, "DROP DATABASE IF EXISTS "+pgx.Identifier{name}.Sanitize()); err != nil {
		log.Warn("could not drop scratch database; drop it by hand", "database", name, "error", err)
	}
}

func quoteLit(s string) string {
	return "'" + strings.ReplaceAll(s, "'", "''") + "'"
}

// readProps reads each database's encoding, locale and owner recorded in
// application_data.json; a missing file yields server defaults.
func readProps(path string) map[string]archive.DatabaseStats {
	var ad archive.AppData
	if data, err := os.ReadFile(path); err == nil {
		json.Unmarshal(data, &ad)
	}
	if ad.Databases == nil {
		ad.Databases = map[string]archive.DatabaseStats{}
	}
	return ad.Databases
}

// restoreGlobals applies globals.sql with psql. Roles and tablespaces that
// already exist make psql report errors, which are logged, not fatal.
func restoreGlobals(ctx context.Context, cfg *config.Config, target pgclient.Target, log *slog.Logger, file string) error {
	psql, err := findTool(ctx, "psql", cfg.PgBinDir)
	if err != nil {
		return err
	}
	return psql.Run(ctx, log, target, "postgres", "-X", "-q", "-v", "ON_ERROR_STOP=0", "-f", file)
}

// restoreLogs puts archived logs back at their original paths. An existing
// file is never overwritten: the archived copy is written beside it as
// <name>.restored-<timestamp>.
func restoreLogs(work string, now time.Time) ([]string, error) {
	root := filepath.Join(work, "logs")
	var restored []string
	err := filepath.Walk(root, func(p string, info os.FileInfo, err error) error {
		if os.IsNotExist(err) && p == root {
			return filepath.SkipDir
		}
		if err != nil || !info.Mode().IsRegular() {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		dst := filepath.Join("/", rel)
		if _, err := os.Stat(dst); err == nil {
			dst += ".restored-" + archive.TimestampName(now)
		}
		if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
			return fmt.Errorf("restore log %s: %w", dst, err)
		}
		data, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		if err := os.WriteFile(dst, data, 0o640); err != nil {
			return fmt.Errorf("restore log %s: %w", dst, err)
		}
		restored = append(restored, dst)
		return nil
	})
	return restored, err
}

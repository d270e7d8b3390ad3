package restore

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/pme2go/pme2go-backup/engine/chain"
	"github.com/pme2go/pme2go-backup/engine/config"
	"github.com/pme2go/pme2go-backup/engine/progress"
)

// Replacing a database that holds data (restore --force) loses nothing that
// was committed in it: from the moment its safety backup starts, nothing new
// can commit there.
//
// The restored database is prepared completely first (pg_restore, replay,
// settings) while the application keeps running; only then is the database
// being replaced shut (lockOut):
//
//  1. ALTER DATABASE … ALLOW_CONNECTIONS false refuses every new
//     connection, a superuser's too. CONNECTION LIMIT 0 would not do:
//     superusers (often the application's role) bypass connection limits.
//  2. Its sessions are ended with pg_terminate_backend (their pids, users and
//     application names are logged and counted in Result.EndedSessions);
//     their open transactions roll back, which is what losing a connection
//     means to an application.
//  3. In one transaction, the database is renamed to a private name and the
//     restored database (refusing connections too) takes its name: the
//     application, reconnecting, finds the restored database and is told it
//     does not accept connections yet.
//  4. The replaced database, under its private name, accepts connections
//     again so that pg_dump (which has to connect, and cannot while
//     ALLOW_CONNECTIONS is false) can take the safety backup; nobody else
//     knows the name. Its snapshot therefore holds every commit ever made in
//     the replaced database.
//  5. The replaced database's chain ends, the restored database gets the
//     replaced one's ALLOW_CONNECTIONS setting back, and the replaced one is
//     dropped.
//
// A failure at any step puts everything back: the renames are undone, the
// database gets its connection setting back, and the restored database is
// dropped (a point-in-time scratch database is kept for --resume). Should
// the process die in between, the log says which ALTER DATABASE gives the
// connections back.

// Session is a database session a restore ended.
type Session struct {
	Database    string `json:"database"`
	PID         int32  `json:"pid"`
	User        string `json:"user"`
	Application string `json:"application"`
}

// lockout is a database shut to new connections by lockOut.
type lockout struct {
	db        string
	allowConn bool // its ALLOW_CONNECTIONS setting before
	ended     []Session
}

// lockOutTimeout bounds how long lockOut waits for ended sessions to go.
const lockOutTimeout = 30 * time.Second

// lockOut makes db refuse new connections and ends its sessions (every
// backend connected to it but ours and autovacuum's, which RENAME
// DATABASE stops itself). It returns once none is left. On error the
// database has its setting back.
func lockOut(ctx context.Context, maint *pgx.Conn, db string, log *slog.Logger) (_ *lockout, err error) {
	l := &lockout{db: db}
	if err := maint.QueryRow(ctx, `SELECT datallowconn FROM pg_database WHERE datname = $1`, db).Scan(&l.allowConn); err != nil {
		return nil, fmt.Errorf("look up database %s: %w", db, err)
	}
	if _, err := maint.Exec(ctx, "ALTER DATABASE "+ident(db)+" ALLOW_CONNECTIONS false"); err != nil {
		return nil, fmt.Errorf("refuse new connections to database %s (needs its owner or a superuser): %w", db, err)
	}
	log.Warn("database refuses new connections until the restore has replaced it; should the restore die before, give them back with ALTER DATABASE … ALLOW_CONNECTIONS true",
		"database", db, "sql", "ALTER DATABASE "+ident(db)+" ALLOW_CONNECTIONS true")
	defer func() {
		if err != nil {
			err = errors.Join(err, l.giveBack(context.WithoutCancel(ctx), maint, db))
		}
	}()
	if err := l.endSessions(ctx, maint, log); err != nil {
		return nil, err
	}
	return l, nil
}

// endSessions ends the sessions of the locked-out database until none is
// left (at most lockOutTimeout), recording each one ended.
func (l *lockout) endSessions(ctx context.Context, maint *pgx.Conn, log *slog.Logger) error {
	db := l.db
	seen := map[int32]bool{}
	for _, s := range l.ended {
		seen[s.PID] = true
	}
	deadline := time.Now().Add(lockOutTimeout)
	for {
		rows, err := maint.Query(ctx, `SELECT pid, coalesce(usename::text, ''), coalesce(application_name, '')
		     FROM pg_stat_activity
		    WHERE datname = $1 AND pid <> pg_backend_pid() AND coalesce(backend_type, '') NOT LIKE 'autovacuum%'`, db)
		if err != nil {
			return fmt.Errorf("list sessions of database %s: %w", db, err)
		}
		left, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (Session, error) {
			s := Session{Database: db}
			err := r.Scan(&s.PID, &s.User, &s.Application)
			return s, err
		})
		if err != nil {
			return fmt.Errorf("list sessions of database %s: %w", db, err)
		}
		if len(left) == 0 {
			return nil
		}
		for _, s := range left {
			if !seen[s.PID] {
				seen[s.PID] = true
				l.ended = append(l.ended, s)
				log.Warn("session ended: its database is being replaced by a restore", "database", db, "pid", s.PID, "user", s.User, "application", s.Application)
			}
			var ok bool
			if err := maint.QueryRow(ctx, `SELECT pg_terminate_backend($1)`, s.PID).Scan(&ok); err != nil {
				return fmt.Errorf("end session %d (%s) of database %s (needs a superuser or pg_signal_backend): %w", s.PID, s.Application, db, err)
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("sessions of database %s still there %s after being ended (pids %v); stop them and retry", db, lockOutTimeout, pids(left))
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("end the sessions of database %s: %w", db, ctx.Err())
		case <-time.After(50 * time.Millisecond):
		}
	}
}

func pids(ss []Session) []int32 {
	var out []int32
	for _, s := range ss {
		out = append(out, s.PID)
	}
	return out
}

// giveBack gives the database now named name the ALLOW_CONNECTIONS setting
// it had before lockOut.
func (l *lockout) giveBack(ctx context.Context, maint *pgx.Conn, name string) error {
	if err := setAllowConnections(ctx, maint, name, l.allowConn); err != nil {
		return fmt.Errorf("give database %s its connections back (run ALTER DATABASE %s ALLOW_CONNECTIONS %t): %w", name, ident(name), l.allowConn, err)
	}
	return nil
}

func setAllowConnections(ctx context.Context, maint *pgx.Conn, db string, allow bool) error {
	_, err := maint.Exec(ctx, fmt.Sprintf("ALTER DATABASE %s ALLOW_CONNECTIONS %t", ident(db), allow))
	return err
}

// renameBoth renames a to a2 and b to b2 in one transaction.
func renameBoth(ctx context.Context, maint *pgx.Conn, a, a2, b, b2 string) error {
	tx, err := maint.Begin(ctx)
	if err != nil {
		return err
	}
	defer tx.Rollback(context.Background())
	if _, err := tx.Exec(ctx, "ALTER DATABASE "+ident(a)+" RENAME TO "+ident(a2)); err != nil {
		return fmt.Errorf("rename database %s to %s: %w", a, a2, err)
	}
	if _, err := tx.Exec(ctx, "ALTER DATABASE "+ident(b)+" RENAME TO "+ident(b2)); err != nil {
		return fmt.Errorf("rename database %s to %s: %w", b, b2, err)
	}
	return tx.Commit(ctx)
}

// replaceDatabase puts the restored database fresh in place of the
// existing database st.Target: with Force it locks the target out first
// (see above), takes the safety backup when st.SafetyBackup, ends the
// target's chain and drops the replaced database. On error the target is as
// it was (same name, same connection setting) and fresh still exists under
// its own name.
//
// limit is the restored database's connection limit (the dumped one, -1
// for none), set while nobody can connect to it, before the swap.
func replaceDatabase(ctx context.Context, cfg *config.Config, maint *pgx.Conn, fresh string, st Step, opts Options, res *Result, j *journal, limit int) (err error) {
	// A prepared transaction keeps a database from being renamed, and is
	// neither committed nor rolled back: nobody's decision to take here.
	if err := checkPrepared(ctx, maint, st.Target); err != nil {
		return err
	}
	old := scratchName(st.Target, "old")
	// The journal knows the private name and the original setting before
	// anything changes (journal.go).
	j.Old = old
	if err := maint.QueryRow(ctx, `SELECT datallowconn FROM pg_database WHERE datname = $1`, st.Target).Scan(&j.AllowConn); err != nil {
		return fmt.Errorf("look up database %s: %w", st.Target, err)
	}
	if err := j.set(phaseLocked); err != nil {
		return err
	}
	var lk *lockout
	if opts.Force {
		opts.Progress.Report(progress.Event{Phase: "replace", Object: st.Target, Message: "refuse new connections and end its sessions"})
		if lk, err = lockOut(ctx, maint, st.Target, opts.Log); err != nil {
			return err
		}
	}
	swapped := false
	defer func() {
		if err == nil {
			return
		}
		bg := context.WithoutCancel(ctx)
		if swapped {
			if e := renameBoth(bg, maint, st.Target, fresh, old, st.Target); e != nil {
				j.keep = true
				err = errors.Join(err, fmt.Errorf("could not put database %s back; it is now named %s: rename it back with ALTER DATABASE %s RENAME TO %s (after renaming away the restored database %s), or run the restore again, which does it: %w",
					st.Target, old, ident(old), ident(st.Target), st.Target, e))
				return
			}
		}
		if lk != nil {
			if e := lk.giveBack(bg, maint, st.Target); e != nil {
				j.keep = true
				err = errors.Join(err, e)
			}
		}
		setAllowConnections(bg, maint, fresh, true) // for --resume
	}()
	// Nobody connects to the restored database before the replaced one is
	// safe in its backup.
	if err := setAllowConnections(ctx, maint, fresh, false); err != nil {
		return fmt.Errorf("restored database %s: %w", fresh, err)
	}
	if err := setConnLimit(ctx, maint, fresh, limit); err != nil {
		return err
	}
	err = renameBoth(ctx, maint, st.Target, old, fresh, st.Target)
	for try := 0; err != nil && lk != nil && isInUse(err) && try < 3; try++ {
		// A session that was connecting while the database was shut
		// (past the check, not yet listed): end it too, and retry.
		if err = lk.endSessions(ctx, maint, opts.Log); err == nil {
			err = renameBoth(ctx, maint, st.Target, old, fresh, st.Target)
		}
	}
	if lk != nil {
		res.EndedSessions = append(res.EndedSessions, lk.ended...)
	}
	if err != nil {
		hint := "is it in use? stop the application or pass --force"
		if opts.Force {
			hint = "a prepared transaction (pg_prepared_xacts) or a session that could not be ended holds it"
		}
		return fmt.Errorf("replace database %s (%s); it was not changed: %w", st.Target, hint, err)
	}
	swapped = true
	// Under its private name, for the safety backup and the end of its
	// chain only.
	if err := setAllowConnections(ctx, maint, old, true); err != nil {
		return fmt.Errorf("open database %s (now %s) to its safety backup: %w", st.Target, old, err)
	}
	if st.SafetyBackup {
		opts.Progress.Report(progress.Event{Phase: "safety-backup", Object: st.Target})
		path, err := opts.SafetyBackup(ctx, st.Target, old)
		if err != nil {
			return fmt.Errorf("safety backup of %s failed, nothing was restored: %w", st.Target, err)
		}
		res.SafetyBackups = append(res.SafetyBackups, path)
	}
	if err := endChainOf(ctx, cfg, st.Target, old, opts); err != nil {
		return err
	}
	if err := j.set(phaseCommitted); err != nil {
		return err
	}
	allow := true
	if lk != nil {
		allow = lk.allowConn
	}
	if err := setAllowConnections(ctx, maint, st.Target, allow); err != nil {
		return fmt.Errorf("open the restored database %s: %w", st.Target, err)
	}
	swapped = false
	// The replaced database: closed again, no longer a template, dropped.
	setAllowConnections(ctx, maint, old, false)
	dropDatabase(ctx, maint, old, opts.Log)
	return nil
}

// isInUse reports whether err is PostgreSQL's object_in_use (a database
// others are connected to).
func isInUse(err error) bool {
	var pgErr *pgconn.PgError
	return errors.As(err, &pgErr) && pgErr.Code == "55006"
}

// checkPrepared refuses a database holding prepared transactions, naming
// them, before anything is changed.
func checkPrepared(ctx context.Context, maint *pgx.Conn, db string) error {
	rows, err := maint.Query(ctx, `SELECT format('%s (owner %s, prepared %s ago)', gid, owner, date_trunc('second', now() - prepared))
	     FROM pg_prepared_xacts WHERE database = $1 ORDER BY prepared`, db)
	if err != nil {
		return fmt.Errorf("list prepared transactions of %s: %w", db, err)
	}
	list, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return fmt.Errorf("list prepared transactions of %s: %w", db, err)
	}
	if len(list) > 0 {
		return fmt.Errorf("database %s holds %d prepared transaction(s), which keep it from being replaced: %s; end each with COMMIT PREPARED 'gid' or ROLLBACK PREPARED 'gid' in database %s, then retry (nothing was changed)",
			db, len(list), strings.Join(list, ", "), db)
	}
	return nil
}

// endChainOf ends the open change-capture chain of a database being
// replaced: changes of the restored database continue no chain. The next
// full backup starts a new one. The chain's slot and publication are dropped
// in the replaced database, reached as connectAs.
func endChainOf(ctx context.Context, cfg *config.Config, db, connectAs string, opts Options) error {
	st, err := chain.OpenFor(cfg, db)
	if err != nil || st == nil {
		return err
	}
	reason := fmt.Sprintf("database %s was replaced by a restore; take a new full backup to start a new chain", db)
	if err := st.MarkEnded(chain.StatusBroken, reason); err != nil {
		return fmt.Errorf("end the change-capture chain %s of %s before replacing it: %w", st.ID, db, err)
	}
	at := *st
	at.Database = connectAs
	if err := chain.DropServerObjects(ctx, cfg, &at); err != nil {
		return fmt.Errorf("end the change-capture chain %s of %s before replacing it: %w", st.ID, db, err)
	}
	opts.Log.Warn("change capture chain ended", "chain", st.ID, "database", db, "reason", reason)
	return nil
}

func ident(name string) string { return pgx.Identifier{name}.Sanitize() }

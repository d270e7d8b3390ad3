package restore

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"log/slog"
	"strings"

	"github.com/jackc/pgx/v5"

	"github.com/pme2go/pme2go-backup/engine/apply"
	"github.com/pme2go/pme2go-backup/engine/pgclient"
)

// User functions called while data is loaded.
//
// pg_restore runs every entry with search_path = '' (CVE-2018-1058), and
// replay with search_path = pg_catalog. Data loading evaluates user code:
// CHECK constraints (of tables and domains), generated columns, and index
// expressions when an index is built. pg_dump qualifies the function such
// an expression calls, but not what that function's body calls: a CHECK
// constraint calling public.f() whose body calls g() without a schema works
// in the application's sessions (search_path "$user", public) and fails in
// a plain pg_restore with "function g(integer) does not exist", so the
// database cannot be restored at all.
//
// The restore therefore runs pg_restore in two steps: the pre-data section
// (types, functions, tables with their CHECK constraints, and the grants on
// schemas), then — after giving every SQL and PL/pgSQL function without a
// search_path setting of its own a temporary one — the data and post-data
// sections and the replay. Before the restored database is swapped in,
// those settings are reset, so that the functions are exactly as dumped.
//
// What the temporary setting may name. Code reached through it runs with
// the restoring role's privileges (a superuser): a function or operator
// planted in a schema on it (an exact-match overload beats pg_catalog's,
// the CVE-2018-1058 attack) would run as that role. So a schema is named
// only when nobody but the function's owner could have put anything there:
// pg_catalog first (built-in names cannot be shadowed), then of the
// function's own schema, the schema named like its owner and public (the
// order in which the application's sessions, under the default "$user",
// public, most likely found what the body names) each one that is
// trusted, then pg_temp and the marker. A schema is trusted for a function
// when every role that may create objects in it (its owner, and each role
// holding CREATE on it; pg_database_owner stands for the database's owner)
// and every owner of a function, operator, relation, type, collation,
// conversion or text search object in it is a superuser or a member of the
// function's owner: then nothing reached through it runs code its owner
// could not already run by changing the function itself. An untrusted
// schema is left out and logged with the reason; when the data then fails
// to load ("function … does not exist"), the error names these functions
// and says how to give them a search_path of their own. Grants on schemas
// are restored with the pre-data section, so the check sees the source's.
//
// Nobody but a superuser can connect to the scratch database meanwhile
// (createDatabase gives it CONNECTION LIMIT 0, which does not apply to
// superusers; the dumped limit, or none, is set in the transaction that
// renames it into place, or while it refuses all connections before a
// --force swap), so nothing can be planted there during the restore
// either, and no session of another role can hold up the swap.
//
// The marker ends every temporary setting so that unpinFunctionPaths finds
// exactly the settings the restore made, also in a point-in-time scratch
// database a resumed restore finds again: a schema name that does not
// exist (name lookup ignores it), drawn at random per restore so that no
// function of the dump can carry it, and kept in the scratch database as
// the setting pinSetting until the functions are reset. A restoring role
// that may not set it (not a superuser) uses the fixed name pinMarker.
//
// PostgreSQL documentation relied on: ALTER FUNCTION … SET/RESET
// configuration_parameter (a function's setting applies while it runs,
// including to the functions it calls); CREATE FUNCTION, "Writing
// SECURITY DEFINER Functions Safely" (pg_catalog first, pg_temp last);
// 5.9.6 "Usage Patterns" of schemas (CVE-2018-1058); pg_dump's notes on
// search_path; CREATE DATABASE … CONNECTION LIMIT (superusers exempt).

// pinMarker ends the temporary search_path the restore gives functions
// when no per-restore marker could be recorded (and in scratch databases
// of earlier versions).
const pinMarker = "pme2go_restore_pin"

// pinSetting is the database-level setting of the scratch database holding
// the per-restore marker while functions carry it.
const pinSetting = "pme2go.restore_pin"

// pinned is what pinFunctionPaths did.
type pinned struct {
	n        int      // functions given a temporary search_path
	recorded bool     // the marker was recorded in the database (pinSetting)
	narrowed []string // "function: schema left out (reason)", one per function concerned
}

// touched is 0 when pinFunctionPaths left nothing for unpinFunctionPaths
// to undo.
func (p pinned) touched() int {
	if p.n == 0 && p.recorded {
		return 1
	}
	return p.n
}

// pinFunctionPaths gives the user functions of db that have no search_path
// setting of their own the temporary one described above. Functions of
// extensions and functions the restoring role may not alter (it is not
// their owner nor a superuser) are left alone; the latter are logged.
func pinFunctionPaths(ctx context.Context, target pgclient.Target, db string, log *slog.Logger) (pinned, error) {
	var res pinned
	conn, err := target.Connect(ctx, db)
	if err != nil {
		return res, err
	}
	defer conn.Close(context.Background())
	// regprocedure text is then the function's signature, qualified.
	if _, err := conn.Exec(ctx, "SET search_path = pg_catalog, pg_temp"); err != nil {
		return res, err
	}
	rows, err := conn.Query(ctx, `
		SELECT p.oid::regprocedure::text, p.proowner, o.rolname, n.oid, n.nspname,
		       (SELECT s.oid FROM pg_catalog.pg_namespace s WHERE s.nspname = o.rolname),
		       (SELECT s.oid FROM pg_catalog.pg_namespace s WHERE s.nspname = 'public')
		  FROM pg_catalog.pg_proc p
		  JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace
		  JOIN pg_catalog.pg_language l ON l.oid = p.prolang
		  JOIN pg_catalog.pg_roles o ON o.oid = p.proowner
		 WHERE l.lanname IN ('sql', 'plpgsql')
		   AND p.prokind IN ('f', 'p')
		   AND n.nspname NOT IN ('pg_catalog', 'information_schema')
		   AND n.nspname NOT LIKE 'pg\_%'
		   AND NOT EXISTS (SELECT 1 FROM pg_catalog.unnest(p.proconfig) c WHERE c LIKE 'search\_path=%')
		   AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_depend d
		                    WHERE d.classid = 'pg_catalog.pg_proc'::pg_catalog.regclass AND d.objid = p.oid AND d.deptype = 'e')
		 ORDER BY 1`)
	if err != nil {
		return res, fmt.Errorf("list functions of %s: %w", db, err)
	}
	type schema struct {
		oid  uint32
		name string
	}
	type fn struct {
		sig   string
		owner uint32
		cands []schema // own schema, owner's schema, public, in that order
	}
	var fns []fn
	for rows.Next() {
		var f fn
		var ownerName, nspName string
		var nsp uint32
		var ownerNsp, public *uint32
		if err := rows.Scan(&f.sig, &f.owner, &ownerName, &nsp, &nspName, &ownerNsp, &public); err != nil {
			rows.Close()
			return res, err
		}
		f.cands = append(f.cands, schema{nsp, nspName})
		if ownerNsp != nil {
			f.cands = append(f.cands, schema{*ownerNsp, ownerName})
		}
		if public != nil {
			f.cands = append(f.cands, schema{*public, "public"})
		}
		fns = append(fns, f)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return res, fmt.Errorf("list functions of %s: %w", db, err)
	}
	if len(fns) == 0 {
		return res, nil
	}
	marker, err := newMarker(ctx, conn, db, log)
	if err != nil {
		return res, err
	}
	res.recorded = marker != pinMarker
	type pair struct{ nsp, owner uint32 }
	why := map[pair]string{} // "" when trusted
	for _, f := range fns {
		var keep []string
		var left []string
		seen := map[uint32]bool{}
		for _, s := range f.cands {
			if seen[s.oid] {
				continue
			}
			seen[s.oid] = true
			k := pair{s.oid, f.owner}
			reason, ok := why[k]
			if !ok {
				if reason, err = untrustedSchema(ctx, conn, s.oid, f.owner); err != nil {
					return res, fmt.Errorf("check schema %s for the temporary search_path of %s: %w", s.name, f.sig, err)
				}
				why[k] = reason
			}
			if reason != "" {
				left = append(left, fmt.Sprintf("%s (%s)", s.name, reason))
				continue
			}
			keep = append(keep, s.name)
		}
		if len(left) > 0 {
			res.narrowed = append(res.narrowed, f.sig+": "+strings.Join(left, ", "))
			log.Warn("schemas left out of a function's temporary search_path for the restore: code found there would run with the restoring role's privileges",
				"database", db, "function", f.sig, "left out", strings.Join(left, "; "))
		}
		q := "ALTER FUNCTION " + f.sig + " SET search_path = " + pinnedPath(keep, marker)
		if _, err := conn.Exec(ctx, q); err != nil {
			if ctx.Err() != nil {
				return res, ctx.Err()
			}
			log.Warn("function left without a temporary search_path for the restore; a CHECK constraint or index calling it may fail", "database", db, "function", f.sig, "error", err)
			continue
		}
		res.n++
	}
	return res, nil
}

// untrustedSchema returns why schema nsp may not be on the temporary
// search_path of a function owned by owner, or "" when it may.
func untrustedSchema(ctx context.Context, conn *pgx.Conn, nsp, owner uint32) (string, error) {
	var reason string
	err := conn.QueryRow(ctx, apply.UntrustedSchemaSQL, nsp, owner).Scan(&reason)
	if err == pgx.ErrNoRows {
		return "", nil
	}
	return reason, err
}

// newMarker draws the marker of this restore and records it in db
// (pinSetting); a role that may not record it gets pinMarker. Functions of
// the dump already carrying the chosen marker cannot exist (it is new),
// but a stale setting of an earlier attempt is reused so that its
// functions are found again.
func newMarker(ctx context.Context, conn *pgx.Conn, db string, log *slog.Logger) (string, error) {
	if m := recordedMarker(ctx, conn); m != "" {
		return m, nil
	}
	var b [8]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", fmt.Errorf("draw the restore's marker: %w", err)
	}
	m := pinMarker + "_" + hex.EncodeToString(b[:])
	if _, err := conn.Exec(ctx, "ALTER DATABASE "+ident(db)+" SET "+pinSetting+" = "+quoteLit(m)); err != nil {
		if ctx.Err() != nil {
			return "", ctx.Err()
		}
		log.Debug("per-restore marker not recorded; the fixed one is used", "database", db, "error", err)
		return pinMarker, nil
	}
	return m, nil
}

// recordedMarker returns the marker recorded in conn's database, or "".
// Only a value of the form newMarker draws is accepted.
func recordedMarker(ctx context.Context, conn *pgx.Conn) string {
	rows, err := conn.Query(ctx, `SELECT c FROM pg_catalog.pg_db_role_setting s
		JOIN pg_catalog.pg_database d ON d.oid = s.setdatabase, pg_catalog.unnest(s.setconfig) c
		WHERE d.datname = pg_catalog.current_database() AND s.setrole = 0 AND c LIKE $1`, pinSetting+"=%")
	if err != nil {
		return ""
	}
	vals, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil || len(vals) != 1 {
		return ""
	}
	m := strings.TrimPrefix(vals[0], pinSetting+"=")
	if h, ok := strings.CutPrefix(m, pinMarker+"_"); ok && len(h) == 16 && strings.Trim(h, "0123456789abcdef") == "" {
		return m
	}
	return ""
}

// pinnedPath is the temporary search_path value (SQL text): pg_catalog,
// the trusted schemas, pg_temp and the marker.
func pinnedPath(schemas []string, marker string) string {
	parts := []string{"pg_catalog"}
	for _, s := range schemas {
		parts = append(parts, pgx.Identifier{s}.Sanitize())
	}
	return strings.Join(append(parts, "pg_temp", marker), ", ")
}

// unpinFunctionPaths resets the search_path settings pinFunctionPaths made
// in db (recognised by the marker), removes the recorded marker, and
// returns how many functions were reset. It leaves every other setting of
// the functions as it was.
func unpinFunctionPaths(ctx context.Context, target pgclient.Target, db string) (int, error) {
	conn, err := target.Connect(ctx, db)
	if err != nil {
		return 0, err
	}
	defer conn.Close(context.Background())
	if _, err := conn.Exec(ctx, "SET search_path = pg_catalog, pg_temp"); err != nil {
		return 0, err
	}
	marker := recordedMarker(ctx, conn)
	if marker == "" {
		marker = pinMarker
	}
	rows, err := conn.Query(ctx, `
		SELECT p.oid::regprocedure::text FROM pg_catalog.pg_proc p
		 WHERE EXISTS (SELECT 1 FROM pg_catalog.unnest(p.proconfig) c
		                WHERE c LIKE 'search\_path=%' AND (c LIKE '%, ' || $1 OR c LIKE '%, "' || $1 || '"'))`, marker)
	if err != nil {
		return 0, fmt.Errorf("list pinned functions of %s: %w", db, err)
	}
	sigs, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return 0, fmt.Errorf("list pinned functions of %s: %w", db, err)
	}
	// One transaction, with the user's event triggers kept from firing on
	// these ALTER FUNCTION statements (their code would run with the
	// restoring role's privileges, and could write rows the source never
	// had): ENABLE ALWAYS ones are set to fire on origin only for the
	// transaction and put back in it; session_replication_role = replica
	// keeps the others quiet.
	tx, err := conn.Begin(ctx)
	if err != nil {
		return 0, err
	}
	defer tx.Rollback(context.Background())
	always, err := quietEventTriggers(ctx, tx)
	if err != nil {
		return 0, fmt.Errorf("reset the temporary search_path of the functions of %s: %w", db, err)
	}
	for _, sig := range sigs {
		if _, err := tx.Exec(ctx, "ALTER FUNCTION "+sig+" RESET search_path"); err != nil {
			return 0, fmt.Errorf("reset the temporary search_path of %s in %s: %w", sig, db, err)
		}
	}
	if err := loudEventTriggers(ctx, tx, always); err != nil {
		return 0, fmt.Errorf("reset the temporary search_path of the functions of %s: %w", db, err)
	}
	if marker != pinMarker {
		if _, err := tx.Exec(ctx, "ALTER DATABASE "+ident(db)+" RESET "+pinSetting); err != nil {
			return 0, fmt.Errorf("remove the restore's marker from %s: %w", db, err)
		}
	}
	if err := tx.Commit(ctx); err != nil {
		return 0, fmt.Errorf("reset the temporary search_path of the functions of %s: %w", db, err)
	}
	return len(sigs), nil
}

// quietEventTriggers keeps the user's event triggers from firing on the
// rest of transaction tx: it sets session_replication_role = replica for
// tx and switches those enabled ALWAYS to ENABLE (origin), returning their
// names for loudEventTriggers. Only a superuser can own event triggers and
// set the role; for another role there is nothing to quiet, or nothing it
// can do (then nothing is done).
func quietEventTriggers(ctx context.Context, tx pgx.Tx) ([]string, error) {
	var super bool
	if err := tx.QueryRow(ctx, `SELECT rolsuper FROM pg_catalog.pg_roles WHERE rolname = current_user`).Scan(&super); err != nil || !super {
		return nil, err
	}
	if _, err := tx.Exec(ctx, "SET LOCAL session_replication_role = replica"); err != nil {
		return nil, err
	}
	rows, err := tx.Query(ctx, `SELECT evtname FROM pg_catalog.pg_event_trigger WHERE evtenabled = 'A' ORDER BY 1`)
	if err != nil {
		return nil, err
	}
	names, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, err
	}
	for _, n := range names {
		if _, err := tx.Exec(ctx, "ALTER EVENT TRIGGER "+ident(n)+" ENABLE"); err != nil {
			return nil, err
		}
	}
	return names, nil
}

// loudEventTriggers puts back ENABLE ALWAYS on the event triggers
// quietEventTriggers switched.
func loudEventTriggers(ctx context.Context, tx pgx.Tx, names []string) error {
	for _, n := range names {
		if _, err := tx.Exec(ctx, "ALTER EVENT TRIGGER "+ident(n)+" ENABLE ALWAYS"); err != nil {
			return err
		}
	}
	return nil
}

// narrowedNote is what a failed data load adds to its error when functions
// were given a narrower temporary search_path (at most five named).
func narrowedNote(narrowed []string) string {
	if len(narrowed) == 0 {
		return ""
	}
	shown := narrowed
	if len(shown) > 5 {
		shown = shown[:5]
	}
	s := "; schemas where other roles may create objects were left out of the temporary search_path of " +
		fmt.Sprint(len(narrowed)) + " function(s), because code found there would run with the restoring role's privileges: " +
		strings.Join(shown, "; ")
	if len(narrowed) > len(shown) {
		s += fmt.Sprintf("; and %d more (see the log)", len(narrowed)-len(shown))
	}
	return s
}

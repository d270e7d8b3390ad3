package restore

import (
	"context"
	"fmt"
	"log/slog"
	"strings"

	"github.com/jackc/pgx/v5"

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
// (types, functions, tables with their CHECK constraints), then — after
// giving every SQL and PL/pgSQL function without a search_path setting of
// its own a temporary one — the data and post-data sections and the replay.
// The temporary setting is the function's own schema, its owner's schema,
// public (the order in which the application's sessions, under the default
// "$user", public, most likely found what the body names), followed by the
// marker pinMarker, a schema that does not exist and is therefore ignored by
// name lookup; the marker lets unpinFunctionPaths find exactly the settings
// the restore made, also in a scratch database a resumed restore finds
// again. Before the restored database is swapped in, those settings are
// reset, so that the functions are exactly as dumped (proconfig NULL).
//
// This is user code run by the restoring role, as pg_restore already runs
// the constraint's own function; a role that may create objects in public
// could place a function there that such an unqualified call reaches during
// the restore, as it would in the application's sessions (docs/drill.md).
//
// PostgreSQL documentation relied on: ALTER FUNCTION … SET/RESET
// configuration_parameter (a function's setting applies while it runs,
// including to the functions it calls), and pg_dump's notes on
// search_path.

// pinMarker ends the temporary search_path the restore gives functions.
const pinMarker = "pme2go_restore_pin"

// pinFunctionPaths gives the user functions of db that have no search_path
// setting of their own the temporary one described above. Functions of
// extensions and functions the restoring role may not alter (it is not
// their owner nor a superuser) are left alone; the latter are logged. It
// returns how many functions were pinned.
func pinFunctionPaths(ctx context.Context, target pgclient.Target, db string, log *slog.Logger) (int, error) {
	conn, err := target.Connect(ctx, db)
	if err != nil {
		return 0, err
	}
	defer conn.Close(context.Background())
	// regprocedure text is then the function's signature, qualified.
	if _, err := conn.Exec(ctx, "SET search_path = pg_catalog"); err != nil {
		return 0, err
	}
	rows, err := conn.Query(ctx, `
		SELECT p.oid::regprocedure::text, n.nspname, pg_catalog.pg_get_userbyid(p.proowner)
		  FROM pg_catalog.pg_proc p
		  JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace
		  JOIN pg_catalog.pg_language l ON l.oid = p.prolang
		 WHERE l.lanname IN ('sql', 'plpgsql')
		   AND p.prokind IN ('f', 'p')
		   AND n.nspname NOT IN ('pg_catalog', 'information_schema')
		   AND n.nspname NOT LIKE 'pg\_%'
		   AND NOT EXISTS (SELECT 1 FROM pg_catalog.unnest(p.proconfig) c WHERE c LIKE 'search\_path=%')
		   AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_depend d
		                    WHERE d.classid = 'pg_catalog.pg_proc'::pg_catalog.regclass AND d.objid = p.oid AND d.deptype = 'e')`)
	if err != nil {
		return 0, fmt.Errorf("list functions of %s: %w", db, err)
	}
	type fn struct{ sig, schema, owner string }
	var fns []fn
	for rows.Next() {
		var f fn
		if err := rows.Scan(&f.sig, &f.schema, &f.owner); err != nil {
			rows.Close()
			return 0, err
		}
		fns = append(fns, f)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return 0, fmt.Errorf("list functions of %s: %w", db, err)
	}
	n := 0
	for _, f := range fns {
		path := pinnedPath(f.schema, f.owner)
		q := "ALTER FUNCTION " + f.sig + " SET search_path = " + path
		if _, err := conn.Exec(ctx, q); err != nil {
			if ctx.Err() != nil {
				return n, ctx.Err()
			}
			log.Warn("function left without a temporary search_path for the restore; a CHECK constraint or index calling it may fail", "database", db, "function", f.sig, "error", err)
			continue
		}
		n++
	}
	return n, nil
}

// pinnedPath is the temporary search_path value (SQL text) for a function
// in schema owned by owner.
func pinnedPath(schema, owner string) string {
	seen := map[string]bool{}
	var parts []string
	for _, s := range []string{schema, owner, "public", pinMarker} {
		if !seen[s] {
			seen[s] = true
			parts = append(parts, pgx.Identifier{s}.Sanitize())
		}
	}
	return strings.Join(parts, ", ")
}

// unpinFunctionPaths resets the search_path settings pinFunctionPaths made
// in db (recognised by pinMarker), returning how many were reset.
func unpinFunctionPaths(ctx context.Context, target pgclient.Target, db string) (int, error) {
	conn, err := target.Connect(ctx, db)
	if err != nil {
		return 0, err
	}
	defer conn.Close(context.Background())
	if _, err := conn.Exec(ctx, "SET search_path = pg_catalog"); err != nil {
		return 0, err
	}
	rows, err := conn.Query(ctx, `
		SELECT p.oid::regprocedure::text FROM pg_catalog.pg_proc p
		 WHERE EXISTS (SELECT 1 FROM pg_catalog.unnest(p.proconfig) c
		                WHERE c LIKE 'search\_path=%' AND c LIKE '%' || $1)`, pinMarker)
	if err != nil {
		return 0, fmt.Errorf("list pinned functions of %s: %w", db, err)
	}
	sigs, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return 0, fmt.Errorf("list pinned functions of %s: %w", db, err)
	}
	for _, sig := range sigs {
		if _, err := conn.Exec(ctx, "ALTER FUNCTION "+sig+" RESET search_path"); err != nil {
			return 0, fmt.Errorf("reset the temporary search_path of %s in %s: %w", sig, db, err)
		}
	}
	return len(sigs), nil
}

package drill

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/jackc/pgx/v5"

	"github.com/pme2go/pme2go-backup/engine/apply"
	"github.com/pme2go/pme2go-backup/engine/archive"
	"github.com/pme2go/pme2go-backup/engine/config"
	"github.com/pme2go/pme2go-backup/engine/fsutil"
	"github.com/pme2go/pme2go-backup/engine/pgclient"
)

// table is a table of the restored database.
type table struct {
	rel         relName
	root        relName // partition tree root; rel itself outside a tree
	kind        byte    // 'r', 'p', 'f'
	persistence byte    // 'p', 'u'
	columns     string  // COPY column list, quoted
}

// check compares the restored scratch database with the full backup at
// fullPath plus the change sets of the incremental archives up to lastLSN,
// runs amcheck and the usability checks, and records the findings in d.
// The returned error is for checks that could not run at all.
func check(ctx context.Context, cfg *config.Config, target pgclient.Target, db, scratch, fullPath string, incrementals []string, lastLSN uint64, d *Database, log *slog.Logger, step func(string)) error {
	work, release, err := fsutil.MkdirTemp(cfg.StateDir(), "drill")
	if err != nil {
		return fmt.Errorf("create drill work directory: %w", err)
	}
	defer release()
	defer os.RemoveAll(work)
	step("check " + db + ": read the full backup's table data")
	if err := os.Mkdir(filepath.Join(work, "full"), 0o700); err != nil {
		return err
	}
	if _, err := archive.Extract(ctx, fullPath, filepath.Join(work, "full")); err != nil {
		return fmt.Errorf("extract %s: %w", filepath.Base(fullPath), err)
	}
	sm := newSummer()
	dd, err := readDump(ctx, cfg, target, scratch, filepath.Join(work, "full", "database", db), sm, log)
	if err != nil {
		return err
	}
	os.RemoveAll(filepath.Join(work, "full"))
	dl := newDeltas()
	if lastLSN != 0 && len(incrementals) > 0 {
		step("check " + db + ": count the change sets' rows")
		if dl, err = readDeltas(ctx, incrementals, lastLSN, work); err != nil {
			return err
		}
	}

	conn, err := target.Connect(ctx, scratch)
	if err != nil {
		return err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	step("check " + db + ": compare row counts and checksums")
	if err := compareTables(ctx, conn, dd, dl, sm, d); err != nil {
		return err
	}
	step("check " + db + ": amcheck")
	if err := runAmcheck(ctx, conn, d); err != nil {
		return err
	}
	step("check " + db + ": constraints and views")
	return usable(ctx, target, scratch, d)
}

func listTables(ctx context.Context, conn *pgx.Conn) (map[relName]*table, error) {
	rows, err := conn.Query(ctx, `
		SELECT n.nspname, c.relname, c.relkind::text, c.relpersistence::text,
		       COALESCE(rn.nspname, n.nspname), COALESCE(r.relname, c.relname),
		       COALESCE((SELECT string_agg(quote_ident(a.attname), ', ' ORDER BY a.attnum)
		                   FROM pg_catalog.pg_attribute a
		                  WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped AND a.attgenerated = ''), '')
		  FROM pg_catalog.pg_class c
		  JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
		  LEFT JOIN pg_catalog.pg_class r ON r.oid = pg_catalog.pg_partition_root(c.oid)
		  LEFT JOIN pg_catalog.pg_namespace rn ON rn.oid = r.relnamespace
		 WHERE c.relkind IN ('r', 'p', 'f')
		   AND n.nspname NOT IN ('pg_catalog', 'information_schema')
		   AND n.nspname NOT LIKE 'pg\_toast%' AND n.nspname NOT LIKE 'pg\_temp%'`)
	if err != nil {
		return nil, fmt.Errorf("list the restored tables: %w", err)
	}
	defer rows.Close()
	out := map[relName]*table{}
	for rows.Next() {
		var t table
		var kind, pers string
		if err := rows.Scan(&t.rel.Schema, &t.rel.Name, &kind, &pers, &t.root.Schema, &t.root.Name, &t.columns); err != nil {
			return nil, err
		}
		t.kind, t.persistence = kind[0], pers[0]
		out[t.rel] = &t
	}
	return out, rows.Err()
}

// compareTables compares row counts (per partition tree) and, for tables
// the change sets did not touch, checksums.
func compareTables(ctx context.Context, conn *pgx.Conn, dd *dumpData, dl *deltas, sm *summer, d *Database) error {
	tables, err := listTables(ctx, conn)
	if err != nil {
		return err
	}
	// pg_dump's output settings, so that COPY TO prints rows as the dump did.
	for _, q := range []string{"SET DateStyle = ISO", "SET IntervalStyle = postgres", "SET extra_float_digits = 3", "SET search_path = pg_catalog"} {
		if _, err := conn.Exec(ctx, q); err != nil {
			return err
		}
	}
	if dd.Encoding != "" {
		if _, err := conn.Exec(ctx, "SET client_encoding = '"+strings.ReplaceAll(dd.Encoding, "'", "''")+"'"); err != nil {
			return err
		}
	}
	// Truncations of a partitioned table empty its whole tree.
	for n := range dl.Truncated {
		if t, ok := tables[n]; ok && t.kind == 'p' {
			for _, o := range tables {
				if o.root == t.root && o.rel != n && !dl.Touched[o.rel] {
					dl.Truncated[o.rel] = true
				}
			}
		}
	}
	type tree struct {
		expected, actual, dumped, ins, del int64
		checked                            bool
	}
	trees := map[relName]*tree{}
	var skipped []string
	names := make([]relName, 0, len(tables))
	for n := range tables {
		names = append(names, n)
	}
	sort.Slice(names, func(i, j int) bool { return names[i].String() < names[j].String() })
	for _, n := range names {
		t := tables[n]
		dumped, inDump := dd.Tables[n]
		switch {
		case t.kind == 'f':
			continue // foreign tables: their rows live elsewhere
		case t.persistence == 'u':
			skipped = append(skipped, n.String()+" (unlogged: its changes are never captured)")
			continue
		case !inDump && dl.DDL:
			skipped = append(skipped, n.String()+" (created by DDL the change sets replayed)")
			continue
		}
		tr := trees[t.root]
		if tr == nil {
			tr = &tree{}
			trees[t.root] = tr
		}
		base := dumped.Rows
		if dl.Truncated[n] {
			base = 0
		}
		tr.dumped += base
		tr.ins += dl.Inserts[n]
		tr.del += dl.Deletes[n]
		tr.expected += base + dl.Inserts[n] - dl.Deletes[n]
		tr.checked = true
		if t.kind != 'r' {
			continue
		}
		touched := dl.Touched[n] || dl.Touched[t.root] || dl.Truncated[n]
		if !touched && inDump {
			got, err := copySum(ctx, conn, t, sm)
			if err != nil {
				return err
			}
			tr.actual += got.Rows
			d.ChecksummedTables++
			if got.Rows == dumped.Rows && got.Sum != dumped.Sum {
				d.Problems = append(d.Problems, Issue{Kind: "checksum", Object: n.String(),
					Message: fmt.Sprintf("the %d restored rows differ from the full backup's data (checksum %016x, recorded %016x)", got.Rows, got.Sum, dumped.Sum)})
			}
			continue
		}
		var cnt int64
		if err := conn.QueryRow(ctx, "SELECT count(*) FROM ONLY "+n.sql()).Scan(&cnt); err != nil {
			return fmt.Errorf("count the rows of %s: %w", n, err)
		}
		tr.actual += cnt
	}
	// Tables of the full backup that the restored database lacks.
	for n, s := range dd.Tables {
		if _, ok := tables[n]; ok || strings.HasPrefix(n.Schema, "pme2go_") {
			continue
		}
		if dl.DDL {
			skipped = append(skipped, n.String()+" (dropped or renamed by DDL the change sets replayed)")
			continue
		}
		d.Problems = append(d.Problems, Issue{Kind: "row-count", Object: n.String(),
			Message: fmt.Sprintf("the full backup holds %d rows of this table, but the restored database has no such table", s.Rows)})
	}
	roots := make([]relName, 0, len(trees))
	for r := range trees {
		roots = append(roots, r)
	}
	sort.Slice(roots, func(i, j int) bool { return roots[i].String() < roots[j].String() })
	for _, r := range roots {
		tr := trees[r]
		d.Tables++
		d.Rows += tr.actual
		if tr.actual != tr.expected {
			d.Problems = append(d.Problems, Issue{Kind: "row-count", Object: r.String(),
				Message: fmt.Sprintf("%d rows restored, %d expected (%d in the full backup, %d inserted and %d deleted by the replayed change sets)",
					tr.actual, tr.expected, tr.dumped, tr.ins, tr.del)})
		}
	}
	if len(skipped) > 0 {
		d.Notes = append(d.Notes, "tables not compared: "+strings.Join(skipped, ", "))
	}
	return nil
}

// copySum digests a restored table's rows as COPY TO prints them.
func copySum(ctx context.Context, conn *pgx.Conn, t *table, sm *summer) (tableSum, error) {
	w := &lineSummer{sm: sm}
	q := "COPY " + t.rel.sql() + " TO STDOUT"
	if t.columns != "" {
		q = "COPY " + t.rel.sql() + " (" + t.columns + ") TO STDOUT"
	}
	if _, err := conn.PgConn().CopyTo(ctx, w, q); err != nil {
		return tableSum{}, fmt.Errorf("read the rows of %s: %w", t.rel, err)
	}
	if len(w.partial) > 0 {
		w.add(w.partial)
	}
	return w.sum, nil
}

// lineSummer digests a COPY text stream line by line.
type lineSummer struct {
	sm      *summer
	sum     tableSum
	partial []byte
}

func (w *lineSummer) add(line []byte) {
	w.sum.Rows++
	w.sum.Sum += w.sm.line(line)
}

func (w *lineSummer) Write(p []byte) (int, error) {
	n := len(p)
	for len(p) > 0 {
		i := indexNL(p)
		if i < 0 {
			w.partial = append(w.partial, p...)
			break
		}
		if len(w.partial) > 0 {
			w.partial = append(w.partial, p[:i]...)
			w.add(w.partial)
			w.partial = w.partial[:0]
		} else {
			w.add(p[:i])
		}
		p = p[i+1:]
	}
	return n, nil
}

func indexNL(p []byte) int {
	for i, c := range p {
		if c == '\n' {
			return i
		}
	}
	return -1
}

// drillSchema holds amcheck when the drill creates it.
const drillSchema = "pme2go_drill"

// runAmcheck runs bt_index_check with heapallindexed on every valid B-tree
// index of the restored database's own schemas. The extension is created
// in the scratch database only; when it cannot be, d.Amcheck says why.
func runAmcheck(ctx context.Context, conn *pgx.Conn, d *Database) error {
	var schema *string
	if err := conn.QueryRow(ctx, `SELECT n.nspname FROM pg_catalog.pg_extension e JOIN pg_catalog.pg_namespace n ON n.oid = e.extnamespace WHERE e.extname = 'amcheck'`).Scan(&schema); err != nil && err != pgx.ErrNoRows {
		return fmt.Errorf("look for amcheck: %w", err)
	}
	if schema == nil {
		var avail bool
		if err := conn.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_available_extensions WHERE name = 'amcheck')`).Scan(&avail); err != nil {
			return fmt.Errorf("look for amcheck: %w", err)
		}
		if !avail {
			d.Amcheck = "not run: the amcheck extension is not installed on the server (postgresql-contrib)"
			return nil
		}
		_, err := conn.Exec(ctx, "CREATE SCHEMA "+drillSchema)
		if err == nil {
			_, err = conn.Exec(ctx, "CREATE EXTENSION amcheck SCHEMA "+drillSchema)
		}
		if err != nil {
			d.Amcheck = "not run: the amcheck extension could not be created in the scratch database: " + err.Error()
			return nil
		}
		s := drillSchema
		schema = &s
	}
	rows, err := conn.Query(ctx, `
		SELECT c.oid, quote_ident(n.nspname) || '.' || quote_ident(c.relname)
		  FROM pg_catalog.pg_index i
		  JOIN pg_catalog.pg_class c ON c.oid = i.indexrelid
		  JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
		  JOIN pg_catalog.pg_am am ON am.oid = c.relam
		 WHERE am.amname = 'btree' AND i.indisvalid AND i.indisready AND c.relpersistence <> 't'
		   AND n.nspname NOT IN ('pg_catalog', 'information_schema', $1)
		   AND n.nspname NOT LIKE 'pg\_toast%'
		 ORDER BY 2`, drillSchema)
	if err != nil {
		return fmt.Errorf("list indexes: %w", err)
	}
	type index struct {
		oid  uint32
		name string
	}
	idx, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (index, error) {
		var x index
		return x, r.Scan(&x.oid, &x.name)
	})
	if err != nil {
		return fmt.Errorf("list indexes: %w", err)
	}
	fn := pgx.Identifier{*schema, "bt_index_check"}.Sanitize()
	for _, x := range idx {
		if _, err := conn.Exec(ctx, "SELECT "+fn+"($1::pg_catalog.oid::pg_catalog.regclass, true)", x.oid); err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			d.Problems = append(d.Problems, Issue{Kind: "amcheck", Object: x.name, Message: err.Error()})
			continue
		}
		d.Indexes++
	}
	d.Amcheck = "ran"
	return nil
}

// usable evaluates, in an ordinary session of the restored database (its
// default search_path), every validated CHECK constraint that calls a user
// function over its table's rows, and plans every view.
//
// Neither runs anybody's code with the drill's (superuser) privileges that
// it would not run with on the source: a CHECK constraint or view of a role
// that is not a superuser is evaluated with that role's privileges, inside
// a SECURITY DEFINER function it owns (where PostgreSQL refuses SET ROLE
// and SET SESSION AUTHORIZATION; schema checkSchema, on a connection of
// its own); one of a superuser runs as the drill's role under the default
// search_path less the schemas where a role that is not a superuser may
// create objects or owns some (apply.UntrustedSchemaSQL), so that an
// object planted there (public.lower(varchar), say) is not reached.
func usable(ctx context.Context, target pgclient.Target, db string, d *Database) error {
	conn, err := target.Connect(ctx, db)
	if err != nil {
		return err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	// Expressions and names listed fully qualified: they are evaluated
	// under other search_paths.
	if _, err := conn.Exec(ctx, "SET search_path = pg_catalog"); err != nil {
		return err
	}
	ev, err := newEvaluator(ctx, target, conn, db)
	if err != nil {
		return err
	}
	defer ev.close(context.WithoutCancel(ctx))
	rows, err := conn.Query(ctx, `
		SELECT quote_ident(n.nspname) || '.' || quote_ident(c.relname), quote_ident(k.conname),
		       pg_catalog.pg_get_expr(k.conbin, k.conrelid), c.relowner
		  FROM pg_catalog.pg_constraint k
		  JOIN pg_catalog.pg_class c ON c.oid = k.conrelid
		  JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
		 WHERE k.contype = 'c' AND k.convalidated AND c.relkind IN ('r', 'p')
		   AND EXISTS (SELECT 1 FROM pg_catalog.pg_depend dp
		                 JOIN pg_catalog.pg_proc p ON p.oid = dp.refobjid
		                 JOIN pg_catalog.pg_namespace pn ON pn.oid = p.pronamespace
		                WHERE dp.classid = 'pg_catalog.pg_constraint'::pg_catalog.regclass AND dp.objid = k.oid
		                  AND dp.refclassid = 'pg_catalog.pg_proc'::pg_catalog.regclass
		                  AND pn.nspname NOT IN ('pg_catalog', 'information_schema'))
		 ORDER BY 1, 2`)
	if err != nil {
		return fmt.Errorf("list CHECK constraints: %w", err)
	}
	type constraint struct {
		table, name, expr string
		owner             uint32
	}
	cons, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (constraint, error) {
		var c constraint
		return c, r.Scan(&c.table, &c.name, &c.expr, &c.owner)
	})
	if err != nil {
		return fmt.Errorf("list CHECK constraints: %w", err)
	}
	for _, c := range cons {
		bad, err := ev.count(ctx, c.owner, "SELECT count(*) FROM ONLY "+c.table+" WHERE NOT ("+c.expr+")")
		switch {
		case ctx.Err() != nil:
			return ctx.Err()
		case err != nil:
			d.Problems = append(d.Problems, Issue{Kind: "constraint", Object: c.table + " " + c.name,
				Message: "the CHECK constraint cannot be evaluated in an ordinary session: " + err.Error()})
		case bad > 0:
			d.Problems = append(d.Problems, Issue{Kind: "constraint", Object: c.table + " " + c.name,
				Message: fmt.Sprintf("%d rows violate the CHECK constraint", bad)})
		default:
			d.Constraints++
		}
	}
	rows, err = conn.Query(ctx, `
		SELECT quote_ident(n.nspname) || '.' || quote_ident(c.relname), c.relowner
		  FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
		 WHERE c.relkind = 'v' AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg\_%'
		 ORDER BY 1`)
	if err != nil {
		return fmt.Errorf("list views: %w", err)
	}
	type view struct {
		name  string
		owner uint32
	}
	views, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (view, error) {
		var v view
		return v, r.Scan(&v.name, &v.owner)
	})
	if err != nil {
		return fmt.Errorf("list views: %w", err)
	}
	for _, v := range views {
		_, err := ev.count(ctx, v.owner, "SELECT count(*) FROM (SELECT * FROM "+v.name+" LIMIT 0) AS v")
		switch {
		case ctx.Err() != nil:
			return ctx.Err()
		case err != nil:
			d.Problems = append(d.Problems, Issue{Kind: "view", Object: v.name, Message: "the view cannot be queried: " + err.Error()})
		default:
			d.Views++
		}
	}
	return nil
}

// checkSchema holds the drill's owner functions in the scratch database
// while the usability checks run.
const checkSchema = "pme2go_drill_check"

// evaluator runs the usability checks' queries with the privileges
// described at usable.
type evaluator struct {
	target pgclient.Target
	conn   *pgx.Conn
	db     string
	supers map[uint32]bool   // role OID: superuser
	fns    map[uint32]string // owner OID: its function
	path   map[uint32]string // superuser OID: its safe search_path
	left   map[uint32]string // superuser OID: schemas left out, and why
}

func newEvaluator(ctx context.Context, target pgclient.Target, conn *pgx.Conn, db string) (*evaluator, error) {
	ev := &evaluator{target: target, conn: conn, db: db, supers: map[uint32]bool{}, fns: map[uint32]string{}, path: map[uint32]string{}, left: map[uint32]string{}}
	rows, err := conn.Query(ctx, `SELECT oid, rolsuper FROM pg_catalog.pg_roles`)
	if err != nil {
		return nil, fmt.Errorf("list roles: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var oid uint32
		var super bool
		if err := rows.Scan(&oid, &super); err != nil {
			return nil, err
		}
		ev.supers[oid] = super
	}
	return ev, rows.Err()
}

// count runs q (one bigint) for an object owned by owner.
func (ev *evaluator) count(ctx context.Context, owner uint32, q string) (int64, error) {
	if ev.supers[owner] {
		return ev.countTrusted(ctx, owner, q)
	}
	fn, ok := ev.fns[owner]
	if !ok {
		var err error
		if fn, err = ev.ownerFunction(ctx, owner); err != nil {
			return 0, err
		}
		ev.fns[owner] = fn
	}
	// On a connection of its own: the owner's code may change the
	// session (settings, prepared statements); it is closed after.
	c, err := ev.target.Connect(ctx, ev.db)
	if err != nil {
		return 0, err
	}
	defer c.Close(context.WithoutCancel(ctx))
	var n *int64
	if err := c.QueryRow(ctx, "SELECT "+fn+"($1)", q).Scan(&n); err != nil {
		return 0, err
	}
	if n == nil {
		return 0, nil
	}
	return *n, nil
}

// ownerFunction creates the SECURITY DEFINER function running a query as
// the role with OID owner, and returns its name.
func (ev *evaluator) ownerFunction(ctx context.Context, owner uint32) (string, error) {
	var ident string
	if err := ev.conn.QueryRow(ctx, `SELECT pg_catalog.quote_ident(rolname) FROM pg_catalog.pg_roles WHERE oid = $1`, owner).Scan(&ident); err != nil {
		return "", fmt.Errorf("look up role %d: %w", owner, err)
	}
	name := checkSchema + ".as_" + fmt.Sprint(owner)
	for _, q := range []string{
		"CREATE SCHEMA IF NOT EXISTS " + checkSchema,
		"CREATE FUNCTION " + name + "(q pg_catalog.text) RETURNS pg_catalog.int8 LANGUAGE plpgsql SECURITY DEFINER AS " +
			"'DECLARE pme2go_n pg_catalog.int8; BEGIN EXECUTE q INTO pme2go_n; RETURN pme2go_n; END'",
		"REVOKE ALL ON FUNCTION " + name + "(pg_catalog.text) FROM PUBLIC",
		"ALTER FUNCTION " + name + "(pg_catalog.text) OWNER TO " + ident,
		// Default privileges of the drill's role may have given it to
		// others (the scratch database takes connections now): only
		// its owner keeps EXECUTE.
		`DO $d$ DECLARE r record; BEGIN
  FOR r IN SELECT DISTINCT a.grantee::pg_catalog.regrole::pg_catalog.text AS g
             FROM pg_catalog.pg_proc p, pg_catalog.aclexplode(p.proacl) a
            WHERE p.oid = '` + name + `(pg_catalog.text)'::pg_catalog.regprocedure AND a.grantee NOT IN (0, p.proowner) LOOP
    EXECUTE 'REVOKE ALL ON FUNCTION ` + name + `(pg_catalog.text) FROM ' || r.g;
  END LOOP;
END $d$`,
	} {
		if _, err := ev.conn.Exec(ctx, q); err != nil {
			return "", fmt.Errorf("prepare the checks run as role %s: %w", ident, err)
		}
	}
	return name, nil
}

// countTrusted runs q as the drill's role under the default search_path
// less the schemas untrusted for the superuser owner.
func (ev *evaluator) countTrusted(ctx context.Context, owner uint32, q string) (int64, error) {
	path, ok := ev.path[owner]
	if !ok {
		var err error
		if path, err = ev.trustedPath(ctx, owner); err != nil {
			return 0, err
		}
		ev.path[owner] = path
	}
	tx, err := ev.conn.Begin(ctx)
	if err != nil {
		return 0, err
	}
	defer tx.Rollback(context.WithoutCancel(ctx))
	if _, err := tx.Exec(ctx, "SELECT pg_catalog.set_config('search_path', $1, true)", path); err != nil {
		return 0, err
	}
	var n int64
	if err := tx.QueryRow(ctx, q).Scan(&n); err != nil {
		if l := ev.left[owner]; l != "" {
			return 0, fmt.Errorf("%w (left out of the search_path for this check, because code found there would run with the drill's privileges: %s)", err, l)
		}
		return 0, err
	}
	return n, nil
}

// trustedPath is the default search_path of the database (as a new
// session of the drill's role sees it) without the schemas untrusted for
// owner, pg_temp last.
func (ev *evaluator) trustedPath(ctx context.Context, owner uint32) (string, error) {
	c, err := ev.target.Connect(ctx, ev.db)
	if err != nil {
		return "", err
	}
	defer c.Close(context.WithoutCancel(ctx))
	rows, err := c.Query(ctx, `SELECT s.nspname::text, n.oid FROM pg_catalog.unnest(pg_catalog.current_schemas(false)) AS s(nspname)
		JOIN pg_catalog.pg_namespace n ON n.nspname = s.nspname`)
	if err != nil {
		return "", fmt.Errorf("read the default search_path: %w", err)
	}
	type schema struct {
		name string
		oid  uint32
	}
	schemas, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (schema, error) {
		var s schema
		return s, r.Scan(&s.name, &s.oid)
	})
	if err != nil {
		return "", fmt.Errorf("read the default search_path: %w", err)
	}
	var keep, left []string
	for _, s := range schemas {
		var reason string
		err := c.QueryRow(ctx, apply.UntrustedSchemaSQL, s.oid, owner).Scan(&reason)
		switch {
		case err == pgx.ErrNoRows:
			keep = append(keep, pgx.Identifier{s.name}.Sanitize())
		case err != nil:
			return "", fmt.Errorf("check schema %s: %w", s.name, err)
		default:
			left = append(left, s.name+" ("+reason+")")
		}
	}
	ev.left[owner] = strings.Join(left, ", ")
	return strings.Join(append(keep, "pg_temp"), ", "), nil
}

// close drops the owner functions.
func (ev *evaluator) close(ctx context.Context) {
	if len(ev.fns) > 0 {
		ev.conn.Exec(ctx, "DROP SCHEMA IF EXISTS "+checkSchema+" CASCADE")
	}
}

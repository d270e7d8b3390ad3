package apply

import (
	"context"
	"errors"
	"fmt"
	"sort"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// The change sets hold the complete result of what the source did, so
// replay runs no trigger, no rule and no event trigger: with
// session_replication_role = replica PostgreSQL still fires those set
// ENABLE ALWAYS or ENABLE REPLICA (and event triggers set so). The scratch
// database is private until the swap, so before the replay every such
// object is switched off there, its enable state recorded in
// replaySchema.user_code (in the scratch database, so that an interrupted
// replay resumes with the states of the source), and after the replay each
// one's exact state is put back and replaySchema dropped, in one
// transaction, before the swap. Internal triggers (foreign keys) are left
// alone: they are ENABLE ORIGIN and do not fire under
// session_replication_role = replica. A table with FORCE ROW LEVEL
// SECURITY gets NO FORCE for the replay, so that its owner's statements
// are not filtered by its policies, and FORCE back afterwards.
//
// Objects are recorded by OID, so that one renamed by captured DDL is still
// found; one dropped by captured DDL is forgotten. Objects created or
// re-enabled by captured DDL are recorded and switched off after each DDL
// statement (syncUserCode). Known limit: DDL that disables a trigger that
// replay had already switched off is not seen, and the trigger gets its
// earlier state back.

// guardNames are the event triggers that keep non-superusers from changing
// replaySchema's objects during the replay.
var guardNames = []string{"pme2go_replay_guard", "pme2go_replay_guard_drop"}

// disableEventTriggersSQL switches off the event triggers that are on,
// except replay's guards, returning nothing; recordEventTriggersSQL lists
// them first.
const recordEventTriggersSQL = `SELECT e.oid::pg_catalog.int8, e.evtenabled::pg_catalog.text FROM pg_catalog.pg_event_trigger e
 WHERE e.evtenabled <> 'D' AND e.evtname NOT IN ('pme2go_replay_guard', 'pme2go_replay_guard_drop')`

// syncUserCodeSQL records the enable state of every trigger, rule and
// event trigger that is on (and every FORCE ROW LEVEL SECURITY) that is
// not recorded yet or was changed, and switches them off. Event triggers
// first, so that the ALTER TABLE statements fire none.
const syncUserCodeSQL = `INSERT INTO pme2go_replay.user_code (kind, oid, state)
  SELECT 'e', e.oid, e.evtenabled FROM pg_catalog.pg_event_trigger e
   WHERE e.evtenabled <> 'D' AND e.evtname NOT IN ('pme2go_replay_guard', 'pme2go_replay_guard_drop')
  UNION ALL
  SELECT 't', t.oid, t.tgenabled FROM pg_catalog.pg_trigger t JOIN pg_catalog.pg_class c ON c.oid = t.tgrelid
   WHERE NOT t.tgisinternal AND t.tgenabled <> 'D' AND c.relkind IN ('r', 'p')
  UNION ALL
  SELECT 'r', r.oid, r.ev_enabled FROM pg_catalog.pg_rewrite r JOIN pg_catalog.pg_class c ON c.oid = r.ev_class
   WHERE r.rulename <> '_RETURN' AND r.ev_enabled <> 'D' AND c.relkind IN ('r', 'p')
  UNION ALL
  SELECT 'f', c.oid, 't' FROM pg_catalog.pg_class c WHERE c.relforcerowsecurity AND c.relkind IN ('r', 'p')
ON CONFLICT (kind, oid) DO UPDATE SET state = EXCLUDED.state;
DO $pme2go$ DECLARE x record; BEGIN
  FOR x IN SELECT pg_catalog.format('ALTER EVENT TRIGGER %I DISABLE', e.evtname) AS q FROM pg_catalog.pg_event_trigger e
            WHERE e.evtenabled <> 'D' AND e.evtname NOT IN ('pme2go_replay_guard', 'pme2go_replay_guard_drop') LOOP
    EXECUTE x.q;
  END LOOP;
  FOR x IN SELECT pg_catalog.format('ALTER TABLE ONLY %s DISABLE TRIGGER %I', t.tgrelid::pg_catalog.regclass, t.tgname) AS q
             FROM pg_catalog.pg_trigger t JOIN pg_catalog.pg_class c ON c.oid = t.tgrelid
            WHERE NOT t.tgisinternal AND t.tgenabled <> 'D' AND c.relkind IN ('r', 'p')
           UNION ALL
           SELECT pg_catalog.format('ALTER TABLE %s DISABLE RULE %I', r.ev_class::pg_catalog.regclass, r.rulename)
             FROM pg_catalog.pg_rewrite r JOIN pg_catalog.pg_class c ON c.oid = r.ev_class
            WHERE r.rulename <> '_RETURN' AND r.ev_enabled <> 'D' AND c.relkind IN ('r', 'p')
           UNION ALL
           SELECT pg_catalog.format('ALTER TABLE ONLY %s NO FORCE ROW LEVEL SECURITY', c.oid::pg_catalog.regclass)
             FROM pg_catalog.pg_class c WHERE c.relforcerowsecurity AND c.relkind IN ('r', 'p') LOOP
    EXECUTE x.q;
  END LOOP;
END $pme2go$`

// setupSchemaSQL creates replaySchema with the state table and the guard
// event triggers. The guards keep any role but a superuser from creating,
// changing or dropping objects in replaySchema: the owner functions are
// owned by table owners, whose code could otherwise make them SECURITY
// INVOKER and so run later statements as the superuser.
const setupSchemaSQL = `CREATE SCHEMA pme2go_replay;
REVOKE ALL ON SCHEMA pme2go_replay FROM PUBLIC;
COMMENT ON SCHEMA pme2go_replay IS 'pme2go-backup point-in-time replay in progress; removed before the restored database is put in place';
CREATE TABLE pme2go_replay.user_code (kind pg_catalog."char", oid pg_catalog.oid, state pg_catalog."char" NOT NULL, PRIMARY KEY (kind, oid));
CREATE FUNCTION pme2go_replay.guard() RETURNS event_trigger LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $pme2go$
BEGIN
  IF NOT (SELECT r.rolsuper FROM pg_catalog.pg_roles r WHERE r.rolname OPERATOR(pg_catalog.=) current_user)
     AND EXISTS (SELECT 1 FROM pg_catalog.pg_event_trigger_ddl_commands() c WHERE c.schema_name OPERATOR(pg_catalog.=) 'pme2go_replay') THEN
    RAISE EXCEPTION 'objects of schema pme2go_replay may not be changed during a point-in-time replay';
  END IF;
END $pme2go$;
CREATE FUNCTION pme2go_replay.guard_drop() RETURNS event_trigger LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $pme2go$
BEGIN
  IF NOT (SELECT r.rolsuper FROM pg_catalog.pg_roles r WHERE r.rolname OPERATOR(pg_catalog.=) current_user)
     AND EXISTS (SELECT 1 FROM pg_catalog.pg_event_trigger_dropped_objects() o WHERE o.schema_name OPERATOR(pg_catalog.=) 'pme2go_replay') THEN
    RAISE EXCEPTION 'objects of schema pme2go_replay may not be dropped during a point-in-time replay';
  END IF;
END $pme2go$;
CREATE EVENT TRIGGER pme2go_replay_guard ON ddl_command_end EXECUTE FUNCTION pme2go_replay.guard();
ALTER EVENT TRIGGER pme2go_replay_guard ENABLE ALWAYS;
CREATE EVENT TRIGGER pme2go_replay_guard_drop ON sql_drop EXECUTE FUNCTION pme2go_replay.guard_drop();
ALTER EVENT TRIGGER pme2go_replay_guard_drop ENABLE ALWAYS`

// restoreUserCodeSQL renders the statements that put the recorded states
// back: table-level ones first, event triggers last.
const restoreUserCodeSQL = `SELECT q FROM (
  SELECT 1 AS o, pg_catalog.format('ALTER TABLE ONLY %s %s TRIGGER %I', t.tgrelid::pg_catalog.regclass,
         CASE s.state WHEN 'O' THEN 'ENABLE' WHEN 'R' THEN 'ENABLE REPLICA' WHEN 'A' THEN 'ENABLE ALWAYS' ELSE 'DISABLE' END, t.tgname) AS q
    FROM pme2go_replay.user_code s JOIN pg_catalog.pg_trigger t ON s.kind = 't' AND t.oid = s.oid
  UNION ALL
  SELECT 1, pg_catalog.format('ALTER TABLE %s %s RULE %I', r.ev_class::pg_catalog.regclass,
         CASE s.state WHEN 'O' THEN 'ENABLE' WHEN 'R' THEN 'ENABLE REPLICA' WHEN 'A' THEN 'ENABLE ALWAYS' ELSE 'DISABLE' END, r.rulename)
    FROM pme2go_replay.user_code s JOIN pg_catalog.pg_rewrite r ON s.kind = 'r' AND r.oid = s.oid
  UNION ALL
  SELECT 1, pg_catalog.format('ALTER TABLE ONLY %s FORCE ROW LEVEL SECURITY', c.oid::pg_catalog.regclass)
    FROM pme2go_replay.user_code s JOIN pg_catalog.pg_class c ON s.kind = 'f' AND c.oid = s.oid
  UNION ALL
  SELECT 2, pg_catalog.format('ALTER EVENT TRIGGER %I %s', e.evtname,
         CASE s.state WHEN 'O' THEN 'ENABLE' WHEN 'R' THEN 'ENABLE REPLICA' WHEN 'A' THEN 'ENABLE ALWAYS' ELSE 'DISABLE' END)
    FROM pme2go_replay.user_code s JOIN pg_catalog.pg_event_trigger e ON s.kind = 'e' AND e.oid = s.oid) x ORDER BY o`

// prepareScratch readies the scratch database for replay, in one
// transaction: on the first run it switches off the event triggers,
// creates replaySchema, records and switches off every trigger, rule and
// event trigger, and, when emptyUnlogged, empties the unlogged tables; on a
// resumed run (replaySchema exists) it only switches off what is on. It
// returns the unlogged tables' names.
func prepareScratch(ctx context.Context, conn *pgx.Conn, emptyUnlogged bool) ([]string, error) {
	tx, err := conn.Begin(ctx)
	if err != nil {
		return nil, fmt.Errorf("prepare the scratch database: %w", err)
	}
	defer tx.Rollback(context.WithoutCancel(ctx))
	var exists bool
	if err := tx.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_namespace WHERE nspname = 'pme2go_replay')`).Scan(&exists); err != nil {
		return nil, fmt.Errorf("prepare the scratch database: %w", err)
	}
	unlogged, err := unloggedTables(ctx, tx)
	if err != nil {
		return nil, err
	}
	if !exists {
		// Event triggers off before any DDL of ours could fire them.
		type evt struct {
			OID   int64
			State string
		}
		rows, _ := tx.Query(ctx, recordEventTriggersSQL)
		evts, err := pgx.CollectRows(rows, pgx.RowToStructByPos[evt])
		if err != nil {
			return nil, fmt.Errorf("list event triggers: %w", err)
		}
		if _, err := tx.Exec(ctx, `DO $pme2go$ DECLARE x record; BEGIN
			FOR x IN SELECT pg_catalog.format('ALTER EVENT TRIGGER %I DISABLE', e.evtname) AS q FROM pg_catalog.pg_event_trigger e
			          WHERE e.evtenabled <> 'D' LOOP EXECUTE x.q; END LOOP; END $pme2go$`); err != nil {
			return nil, fmt.Errorf("switch off event triggers: %w", err)
		}
		if _, err := tx.Exec(ctx, setupSchemaSQL); err != nil {
			return nil, fmt.Errorf("create schema %s in the scratch database: %w", replaySchema, err)
		}
		for _, e := range evts {
			if _, err := tx.Exec(ctx, `INSERT INTO pme2go_replay.user_code VALUES ('e', $1::pg_catalog.int8::pg_catalog.oid, $2::pg_catalog."char")`, e.OID, e.State); err != nil {
				return nil, fmt.Errorf("record event trigger state: %w", err)
			}
		}
		if emptyUnlogged && len(unlogged) > 0 {
			// Their changes are never decoded: past the full backup their
			// content is unknown, and PostgreSQL's own recovery empties them.
			if _, err := tx.Exec(ctx, "TRUNCATE ONLY "+joinNames(unlogged)); err != nil {
				return nil, fmt.Errorf("empty unlogged tables: %w", err)
			}
		}
	}
	if _, err := tx.Exec(ctx, syncUserCodeSQL); err != nil {
		return nil, fmt.Errorf("switch off triggers and rules in the scratch database: %w", err)
	}
	if err := tx.Commit(ctx); err != nil {
		return nil, fmt.Errorf("prepare the scratch database: %w", err)
	}
	return unlogged, nil
}

func joinNames(names []string) string {
	s := ""
	for i, n := range names {
		if i > 0 {
			s += ", "
		}
		s += n
	}
	return s
}

// unloggedTables lists the unlogged tables, schema-qualified.
func unloggedTables(ctx context.Context, tx pgx.Tx) ([]string, error) {
	rows, _ := tx.Query(ctx, `SELECT c.oid::pg_catalog.regclass::pg_catalog.text FROM pg_catalog.pg_class c
		WHERE c.relpersistence = 'u' AND c.relkind = 'r' ORDER BY 1`)
	names, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, fmt.Errorf("list unlogged tables: %w", err)
	}
	return names, nil
}

// syncUserCode records and switches off triggers, rules and event triggers
// that captured DDL created or switched on. The connection must be idle
// (inside the replay transaction).
func syncUserCode(ctx context.Context, conn *pgconn.PgConn) error {
	if err := conn.Exec(ctx, syncUserCodeSQL).Close(); err != nil {
		return fmt.Errorf("switch off triggers and rules after DDL: %w", err)
	}
	return nil
}

// finishScratch ends the replay's changes to the scratch database, in one
// transaction committed synchronously: it refreshes the populated
// materialized views (when refresh is set), drops replaySchema and puts back
// the recorded enable states (event triggers last, so that none fires). It
// returns the views refreshed and the number of states put back.
func finishScratch(ctx context.Context, conn *pgx.Conn, refresh bool) ([]string, int, error) {
	tx, err := conn.Begin(ctx)
	if err != nil {
		return nil, 0, fmt.Errorf("finish the scratch database: %w", err)
	}
	defer tx.Rollback(context.WithoutCancel(ctx))
	if _, err := tx.Exec(ctx, "SET LOCAL synchronous_commit = on"); err != nil {
		return nil, 0, err
	}
	var views []string
	if refresh {
		if views, err = refreshMatviews(ctx, tx); err != nil {
			return nil, 0, err
		}
	}
	var exists bool
	if err := tx.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_namespace WHERE nspname = 'pme2go_replay')`).Scan(&exists); err != nil {
		return nil, 0, err
	}
	var stmts []string
	if exists {
		rows, _ := tx.Query(ctx, restoreUserCodeSQL)
		if stmts, err = pgx.CollectRows(rows, pgx.RowTo[string]); err != nil {
			return nil, 0, fmt.Errorf("read the recorded trigger and rule states: %w", err)
		}
		for _, g := range guardNames {
			if _, err := tx.Exec(ctx, "DROP EVENT TRIGGER IF EXISTS "+g); err != nil {
				return nil, 0, fmt.Errorf("drop event trigger %s: %w", g, err)
			}
		}
		if _, err := tx.Exec(ctx, "DROP SCHEMA pme2go_replay CASCADE"); err != nil {
			return nil, 0, fmt.Errorf("drop schema %s: %w", replaySchema, err)
		}
	}
	for _, q := range stmts {
		if _, err := tx.Exec(ctx, q); err != nil {
			return nil, 0, fmt.Errorf("put back the enable state of a trigger or rule (%s): %w", q, err)
		}
	}
	if err := tx.Commit(ctx); err != nil {
		return nil, 0, fmt.Errorf("finish the scratch database: %w", err)
	}
	return views, len(stmts), nil
}

// refreshMatviews refreshes every populated materialized view, each after
// the views it reads from. PostgreSQL runs a refresh's query as the view's
// owner, in a security-restricted operation.
func refreshMatviews(ctx context.Context, tx pgx.Tx) ([]string, error) {
	rows, _ := tx.Query(ctx, `SELECT c.oid::pg_catalog.int8, c.oid::pg_catalog.regclass::pg_catalog.text FROM pg_catalog.pg_class c
		WHERE c.relkind = 'm' AND c.relispopulated ORDER BY c.oid`)
	type mv struct {
		OID  int64
		Name string
	}
	views, err := pgx.CollectRows(rows, pgx.RowToStructByPos[mv])
	if err != nil {
		return nil, fmt.Errorf("list materialized views: %w", err)
	}
	if len(views) == 0 {
		return nil, nil
	}
	// Edges view -> materialized view it reads, through plain views.
	rows, _ = tx.Query(ctx, `WITH RECURSIVE dep(mv, rel) AS (
		SELECT r.ev_class, d.refobjid FROM pg_catalog.pg_rewrite r
		  JOIN pg_catalog.pg_class m ON m.oid = r.ev_class AND m.relkind = 'm'
		  JOIN pg_catalog.pg_depend d ON d.classid = 'pg_catalog.pg_rewrite'::pg_catalog.regclass AND d.objid = r.oid
		   AND d.refclassid = 'pg_catalog.pg_class'::pg_catalog.regclass AND d.refobjid <> r.ev_class
		UNION
		SELECT dep.mv, d.refobjid FROM dep
		  JOIN pg_catalog.pg_class v ON v.oid = dep.rel AND v.relkind = 'v'
		  JOIN pg_catalog.pg_rewrite r ON r.ev_class = v.oid
		  JOIN pg_catalog.pg_depend d ON d.classid = 'pg_catalog.pg_rewrite'::pg_catalog.regclass AND d.objid = r.oid
		   AND d.refclassid = 'pg_catalog.pg_class'::pg_catalog.regclass AND d.refobjid <> v.oid)
		SELECT DISTINCT dep.mv::pg_catalog.int8, dep.rel::pg_catalog.int8 FROM dep
		  JOIN pg_catalog.pg_class c ON c.oid = dep.rel AND c.relkind = 'm'`)
	type edge struct{ From, To int64 }
	edges, err := pgx.CollectRows(rows, pgx.RowToStructByPos[edge])
	if err != nil {
		return nil, fmt.Errorf("order materialized views: %w", err)
	}
	deps := map[int64][]int64{}
	for _, e := range edges {
		deps[e.From] = append(deps[e.From], e.To)
	}
	byOID := map[int64]string{}
	for _, v := range views {
		byOID[v.OID] = v.Name
	}
	var order []string
	state := map[int64]int{} // 1 visiting, 2 done
	var visit func(oid int64) error
	visit = func(oid int64) error {
		switch state[oid] {
		case 1:
			return errors.New("materialized views depend on each other in a cycle")
		case 2:
			return nil
		}
		state[oid] = 1
		d := deps[oid]
		sort.Slice(d, func(i, j int) bool { return d[i] < d[j] })
		for _, o := range d {
			if err := visit(o); err != nil {
				return err
			}
		}
		state[oid] = 2
		if name, ok := byOID[oid]; ok {
			order = append(order, name)
		}
		return nil
	}
	for _, v := range views {
		if err := visit(v.OID); err != nil {
			return nil, err
		}
	}
	for _, name := range order {
		if _, err := tx.Exec(ctx, "REFRESH MATERIALIZED VIEW "+name); err != nil {
			return nil, fmt.Errorf("refresh materialized view %s: %w", name, err)
		}
	}
	return order, nil
}

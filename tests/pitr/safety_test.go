package pitr_test

import (
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pme2go/pme2go-backup/engine/apply"
	"github.com/pme2go/pme2go-backup/tests/pgharness"
)

// safetySchema is the source database of TestReplaySafety. Role mallory
// owns schema m, may create objects in public (on everyone's search_path)
// and plants code that tries to make her superuser (escalate: RESET ROLE,
// then ALTER ROLE; errors swallowed so that the statements around go on)
// wherever replay could run it: an operator = on varchar in public, an
// index expression, a CHECK constraint (on a table with FORCE ROW LEVEL
// SECURITY), a domain constraint and a generated column. Owned by
// postgres: tables with ENABLE ALWAYS / ENABLE REPLICA triggers that
// write to an audit table with an identity key, DO ALSO rules likewise, an
// event trigger, an inheritance parent with a child, an enum in another
// schema found through the database's search_path, an unlogged table and
// materialized views.
const safetySchema = `
CREATE ROLE mallory LOGIN NOSUPERUSER;
CREATE ROLE esc_operator; CREATE ROLE esc_index; CREATE ROLE esc_check; CREATE ROLE esc_domain; CREATE ROLE esc_generated;
GRANT CREATE ON SCHEMA public TO mallory;
CREATE SCHEMA m AUTHORIZATION mallory;
SET ROLE mallory;
CREATE FUNCTION m.escalate(how text) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
  BEGIN RESET ROLE; EXCEPTION WHEN others THEN NULL; END;
  BEGIN SET SESSION AUTHORIZATION DEFAULT; EXCEPTION WHEN others THEN NULL; END;
  BEGIN EXECUTE 'ALTER ROLE esc_' || how || ' SUPERUSER'; EXCEPTION WHEN others THEN NULL; END;
  BEGIN ALTER ROLE mallory SUPERUSER; EXCEPTION WHEN others THEN NULL; END;
END $$;
CREATE FUNCTION public.evil_eq(varchar, varchar) RETURNS boolean LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN PERFORM m.escalate('operator'); RETURN $1::text OPERATOR(pg_catalog.=) $2::text; END $$;
CREATE OPERATOR public.= (LEFTARG = varchar, RIGHTARG = varchar, FUNCTION = public.evil_eq);
CREATE FUNCTION m.idx_fn(text) RETURNS text LANGUAGE plpgsql IMMUTABLE AS $$ BEGIN PERFORM m.escalate('index'); RETURN $1; END $$;
CREATE FUNCTION m.chk_fn(int) RETURNS boolean LANGUAGE plpgsql IMMUTABLE AS $$ BEGIN PERFORM m.escalate('check'); RETURN $1 IS NOT NULL; END $$;
CREATE FUNCTION m.dom_fn(int) RETURNS boolean LANGUAGE plpgsql IMMUTABLE AS $$ BEGIN PERFORM m.escalate('domain'); RETURN $1 IS NOT NULL; END $$;
CREATE FUNCTION m.gen_fn(int) RETURNS int LANGUAGE plpgsql IMMUTABLE AS $$ BEGIN PERFORM m.escalate('generated'); RETURN $1 * 2; END $$;
CREATE DOMAIN m.evil_dom AS int CHECK (m.dom_fn(VALUE));
CREATE TABLE m.items (id int PRIMARY KEY, name text);
CREATE INDEX ON m.items ((m.idx_fn(name)));
CREATE TABLE m.checked (id int PRIMARY KEY, n int CHECK (m.chk_fn(n)));
ALTER TABLE m.checked ENABLE ROW LEVEL SECURITY;
ALTER TABLE m.checked FORCE ROW LEVEL SECURITY;
CREATE POLICY p_all ON m.checked USING (true) WITH CHECK (true);
CREATE TABLE m.dom_t (id int PRIMARY KEY, d m.evil_dom);
CREATE TABLE m.gen_t (id int PRIMARY KEY, a int, b int GENERATED ALWAYS AS (m.gen_fn(a)) STORED);
RESET ROLE;
CREATE TABLE public.kv (k varchar(20) PRIMARY KEY, v text);
GRANT ALL ON public.kv TO mallory;

CREATE TABLE acct (id int PRIMARY KEY, bal int NOT NULL);
CREATE TABLE audit (id int GENERATED ALWAYS AS IDENTITY PRIMARY KEY, acct int, bal int, what text);
CREATE FUNCTION audit_fn() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN INSERT INTO public.audit (acct, bal, what) VALUES (NEW.id, NEW.bal, TG_NAME); RETURN NEW; END $$;
CREATE TRIGGER acct_always AFTER INSERT OR UPDATE ON acct FOR EACH ROW EXECUTE FUNCTION audit_fn();
ALTER TABLE acct ENABLE ALWAYS TRIGGER acct_always;
CREATE TRIGGER acct_replica AFTER UPDATE ON acct FOR EACH ROW EXECUTE FUNCTION audit_fn();
ALTER TABLE acct ENABLE REPLICA TRIGGER acct_replica;
CREATE TRIGGER acct_origin AFTER DELETE ON acct FOR EACH ROW EXECUTE FUNCTION audit_fn();
CREATE TRIGGER acct_off AFTER INSERT ON acct FOR EACH ROW EXECUTE FUNCTION audit_fn();
ALTER TABLE acct DISABLE TRIGGER acct_off;
CREATE TABLE fk_child (id int PRIMARY KEY, acct int REFERENCES acct);
CREATE TABLE r_src (id int PRIMARY KEY, v text);
CREATE TABLE r_log (id int GENERATED ALWAYS AS IDENTITY PRIMARY KEY, src int, what text);
CREATE RULE r_ins AS ON INSERT TO r_src DO ALSO INSERT INTO r_log (src, what) VALUES (NEW.id, 'insert');
ALTER TABLE r_src ENABLE ALWAYS RULE r_ins;
CREATE RULE r_upd AS ON UPDATE TO r_src DO ALSO INSERT INTO r_log (src, what) VALUES (NEW.id, 'update');
ALTER TABLE r_src ENABLE REPLICA RULE r_upd;
CREATE FUNCTION ddl_note() RETURNS event_trigger LANGUAGE plpgsql AS $$ BEGIN NULL; END $$;
CREATE EVENT TRIGGER ev_always ON ddl_command_end EXECUTE FUNCTION ddl_note();
ALTER EVENT TRIGGER ev_always ENABLE ALWAYS;

CREATE TABLE inh_p (id int PRIMARY KEY, v text);
CREATE TABLE inh_c (extra text) INHERITS (inh_p);
ALTER TABLE inh_c ADD PRIMARY KEY (id);

CREATE SCHEMA other;
CREATE TYPE other.mood AS ENUM ('sad', 'ok', 'happy');
CREATE TABLE feelings (id int PRIMARY KEY, m other.mood, ms other.mood[]);

CREATE UNLOGGED TABLE scratchpad (id int PRIMARY KEY, note text);
INSERT INTO scratchpad SELECT g, 'before' FROM generate_series(1, 10) g;
INSERT INTO acct SELECT g, 100 FROM generate_series(1, 20) g;
CREATE MATERIALIZED VIEW mv_tot AS SELECT count(*) AS n, sum(bal) AS total FROM acct;
CREATE MATERIALIZED VIEW mv_dep AS SELECT n * 2 AS n2 FROM mv_tot;
CREATE MATERIALIZED VIEW mv_empty AS SELECT 1 AS one WITH NO DATA;
`

// safetyWorkload runs on the source after the full backup; mallory's part
// runs as mallory (as an application would).
const safetyWorkload = `
UPDATE acct SET bal = bal + id WHERE id <= 10;
INSERT INTO acct VALUES (21, 5), (22, 6);
DELETE FROM acct WHERE id = 3;
INSERT INTO fk_child VALUES (1, 21);
INSERT INTO r_src VALUES (1, 'a'), (2, 'b');
UPDATE r_src SET v = 'c' WHERE id = 2;
INSERT INTO inh_p VALUES (8, 'p8');
INSERT INTO inh_c VALUES (8, 'c8', 'w');
TRUNCATE inh_p;
INSERT INTO inh_p VALUES (1, 'p1'), (2, 'p2'), (3, 'p3');
INSERT INTO inh_c VALUES (1, 'c1', 'x'), (2, 'c2', 'y'), (3, 'c3', 'z');
UPDATE inh_p SET v = 'p1 changed' WHERE id = 1;
UPDATE ONLY inh_p SET v = 'p3 only' WHERE id = 3;
DELETE FROM ONLY inh_p WHERE id = 1;
UPDATE inh_c SET v = 'c2 changed' WHERE id = 2;
DELETE FROM inh_p WHERE id = 2;
DELETE FROM inh_c WHERE id = 3;
TRUNCATE ONLY inh_p;
INSERT INTO inh_p VALUES (7, 'after truncate only');
INSERT INTO feelings VALUES (1, 'ok', '{sad,happy}'), (2, 'sad', NULL);
UPDATE feelings SET m = 'happy' WHERE id = 2;
DELETE FROM feelings WHERE id = 1;
UPDATE scratchpad SET note = 'after';
`

const malloryWorkload = `
INSERT INTO public.kv VALUES ('a', '1'), ('b', '2'), ('c', '3');
UPDATE public.kv SET v = 'changed' WHERE k = 'a';
DELETE FROM public.kv WHERE k = 'b';
INSERT INTO m.items SELECT g, 'item ' || g FROM generate_series(1, 150) g;
UPDATE m.items SET name = 'renamed' WHERE id = 5;
DELETE FROM m.items WHERE id = 6;
INSERT INTO m.checked SELECT g, g FROM generate_series(1, 5) g;
UPDATE m.checked SET n = 50 WHERE id = 5;
DELETE FROM m.checked WHERE id = 4;
INSERT INTO m.dom_t VALUES (1, 1), (2, 2);
UPDATE m.dom_t SET d = 20 WHERE id = 2;
INSERT INTO m.gen_t (id, a) VALUES (1, 1), (2, 2);
UPDATE m.gen_t SET a = 10 WHERE id = 1;
`

// TestReplaySafety: a point-in-time restore runs no code a table owner
// planted with the restorer's privileges, fires no trigger or rule (and
// puts back their enable states), touches only the table each change
// names (inheritance), finds types of other schemas, empties unlogged
// tables and refreshes materialized views; the restored data equals the
// source.
func TestReplaySafety(t *testing.T) {
	c := pgharness.Start(t)
	c.CreateDB(t, "app")
	ctx := context.Background()
	c.Exec(t, "app", safetySchema)
	c.Exec(t, "postgres", `ALTER DATABASE app SET search_path = "$user", public, other`)
	// Without DDL capture: materialized views are refreshed at the end.
	e := newEnv(t, c, "CAPTURE_DDL=false")
	e.full(t)
	time.Sleep(20 * time.Millisecond)
	var atFull string
	c.Conn(t, "app").QueryRow(ctx, `SELECT clock_timestamp()::text`).Scan(&atFull)
	time.Sleep(20 * time.Millisecond)

	c.Exec(t, "app", safetyWorkload)
	mallory, err := pgx.Connect(ctx, strings.Replace(c.ConnString("app"), "user=postgres", "user=mallory", 1))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := mallory.Exec(ctx, malloryWorkload); err != nil {
		t.Fatalf("mallory's workload: %v", err)
	}
	mallory.Close(ctx)
	c.Exec(t, "app", `REFRESH MATERIALIZED VIEW mv_tot; REFRESH MATERIALIZED VIEW mv_dep`)
	if isSuper(t, c, "mallory") {
		t.Fatal("mallory became superuser on the source: the test's workload is wrong")
	}
	want := sums(t, c, "app")
	wantStates := enableStates(t, c, "app")
	e.incremental(t)

	res, err := e.restoreTo(ctx, apply.Target{Kind: apply.Latest}, "r_safe")
	if err != nil {
		t.Fatal(err)
	}
	st := res.Replay
	t.Logf("replayed %d transactions, %d rows; unlogged emptied %v; views refreshed %v; %d enable states put back",
		st.Applied, st.Rows, st.UnloggedEmptied, st.MatviewsRefreshed, st.UserCodeRestored)

	for _, how := range []string{"operator", "index", "check", "domain", "generated"} {
		t.Run("no escalation through "+how, func(t *testing.T) {
			if isSuper(t, c, "esc_"+how) {
				t.Fatalf("code planted in a %s ran as superuser during the point-in-time restore", how)
			}
		})
	}
	if isSuper(t, c, "mallory") {
		t.Error("mallory is superuser after the point-in-time restore")
	}
	t.Run("data equals the source", func(t *testing.T) {
		got := sums(t, c, "r_safe")
		var n int
		c.Conn(t, "r_safe").QueryRow(ctx, `SELECT count(*) FROM scratchpad`).Scan(&n)
		if n != 0 {
			t.Errorf("unlogged table scratchpad holds %d rows after a restore past the full backup, want 0", n)
		}
		delete(want, "public.scratchpad")
		delete(got, "public.scratchpad")
		same(t, "replay safety", want, got)
	})
	t.Run("enable states equal the source", func(t *testing.T) {
		if got := enableStates(t, c, "r_safe"); !slices.Equal(got, wantStates) {
			t.Fatalf("enable states differ:\n source   %v\n restored %v", wantStates, got)
		}
		var n int
		c.Conn(t, "r_safe").QueryRow(ctx, `SELECT count(*) FROM pg_namespace WHERE nspname = 'pme2go_replay'`).Scan(&n)
		if n != 0 {
			t.Fatal("schema pme2go_replay left in the restored database")
		}
	})
	t.Run("unlogged and materialized views named", func(t *testing.T) {
		if !slices.Equal(st.UnloggedEmptied, []string{"public.scratchpad"}) {
			t.Errorf("unlogged tables emptied: %v, want [scratchpad]", st.UnloggedEmptied)
		}
		if !slices.Equal(st.MatviewsRefreshed, []string{"public.mv_tot", "public.mv_dep"}) {
			t.Errorf("views refreshed: %v, want [mv_tot mv_dep] in that order", st.MatviewsRefreshed)
		}
		var populated bool
		c.Conn(t, "r_safe").QueryRow(ctx, `SELECT relispopulated FROM pg_class WHERE relname = 'mv_empty'`).Scan(&populated)
		if populated {
			t.Error("mv_empty was populated by the restore; the source has it WITH NO DATA")
		}
	})
	t.Run("foreign keys do not fire under replica role", func(t *testing.T) {
		conn := c.Conn(t, "r_safe")
		tx, err := conn.Begin(ctx)
		if err != nil {
			t.Fatal(err)
		}
		defer tx.Rollback(ctx)
		if _, err := tx.Exec(ctx, `SET LOCAL session_replication_role = replica`); err != nil {
			t.Fatal(err)
		}
		if _, err := tx.Exec(ctx, `INSERT INTO fk_child VALUES (99, 12345)`); err != nil {
			t.Fatalf("a row violating a foreign key was refused under session_replication_role = replica: %v", err)
		}
	})
	t.Run("target at the full backup keeps unlogged content", func(t *testing.T) {
		res, err := e.restoreTo(ctx, mustTarget(t, apply.TargetSpec{Time: atFull}), "r_at_full")
		if err != nil {
			t.Fatal(err)
		}
		if res.Replay.Applied != 0 || !slices.Equal(res.Replay.UnloggedKept, []string{"public.scratchpad"}) {
			t.Fatalf("applied %d, unlogged kept %v; want 0 and [scratchpad]", res.Replay.Applied, res.Replay.UnloggedKept)
		}
		var n int
		c.Conn(t, "r_at_full").QueryRow(ctx, `SELECT count(*) FROM scratchpad WHERE note = 'before'`).Scan(&n)
		if n != 10 {
			t.Fatalf("scratchpad holds %d rows of the full backup, want 10", n)
		}
	})
}

func isSuper(t *testing.T, c *pgharness.Cluster, role string) bool {
	t.Helper()
	var s bool
	if err := c.Conn(t, "postgres").QueryRow(context.Background(), `SELECT rolsuper FROM pg_roles WHERE rolname = $1`, role).Scan(&s); err != nil {
		t.Fatal(err)
	}
	return s
}

// enableStates lists every user trigger, rule and event trigger with its
// enable state, and the tables' FORCE ROW LEVEL SECURITY.
func enableStates(t *testing.T, c *pgharness.Cluster, db string) []string {
	t.Helper()
	rows, _ := c.Conn(t, db).Query(context.Background(), `SELECT x FROM (
		SELECT 'trigger ' || tgrelid::regclass || '.' || tgname || ' ' || tgenabled::text AS x FROM pg_trigger WHERE NOT tgisinternal
		UNION ALL SELECT 'rule ' || ev_class::regclass || '.' || rulename || ' ' || ev_enabled::text FROM pg_rewrite WHERE rulename <> '_RETURN'
		UNION ALL SELECT 'event trigger ' || evtname || ' ' || evtenabled::text FROM pg_event_trigger WHERE evtname NOT LIKE 'pme2go%'
		UNION ALL SELECT 'force rls ' || oid::regclass FROM pg_class WHERE relforcerowsecurity) s ORDER BY x`)
	states, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		t.Fatal(err)
	}
	return states
}

// TestCapturedDDLAsItsRole: with DDL capture, a role that is not a
// superuser adds a CHECK constraint whose function (trying to become
// superuser, RESET ROLE first) runs on the table's existing rows; replay
// runs the captured statement as that role, where it cannot escalate, and
// the restored data and constraint equal the source's.
func TestCapturedDDLAsItsRole(t *testing.T) {
	c := pgharness.Start(t)
	c.CreateDB(t, "app")
	ctx := context.Background()
	c.Exec(t, "app", `CREATE ROLE mallory LOGIN NOSUPERUSER; CREATE ROLE esc_ddl;
		CREATE SCHEMA m AUTHORIZATION mallory;
		SET ROLE mallory;
		CREATE FUNCTION m.chk(int) RETURNS boolean LANGUAGE plpgsql AS $$
		BEGIN
		  BEGIN RESET ROLE; EXCEPTION WHEN others THEN NULL; END;
		  BEGIN ALTER ROLE esc_ddl SUPERUSER; EXCEPTION WHEN others THEN NULL; END;
		  RETURN $1 IS NOT NULL;
		END $$;
		CREATE TABLE m.t (id int PRIMARY KEY, n int);
		INSERT INTO m.t SELECT g, g FROM generate_series(1, 10) g;
		RESET ROLE`)
	e := newEnv(t, c, "CAPTURE_DDL=true")
	e.full(t)
	mallory, err := pgx.Connect(ctx, strings.Replace(c.ConnString("app"), "user=postgres", "user=mallory", 1))
	if err != nil {
		t.Fatal(err)
	}
	for _, q := range []string{`ALTER TABLE m.t ADD CONSTRAINT n_ok CHECK (m.chk(n))`, `INSERT INTO m.t VALUES (11, 11)`, `UPDATE m.t SET n = 0 WHERE id = 1`} {
		if _, err := mallory.Exec(ctx, q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	mallory.Close(ctx)
	if isSuper(t, c, "esc_ddl") {
		t.Fatal("the source's own statement escalated: the test is wrong")
	}
	want := sums(t, c, "app")
	e.incremental(t)
	if _, err := e.restoreTo(ctx, apply.Target{Kind: apply.Latest}, "r_ddl_role"); err != nil {
		t.Fatal(err)
	}
	if isSuper(t, c, "esc_ddl") {
		t.Fatal("the captured ALTER TABLE … ADD CONSTRAINT … CHECK ran its function as superuser during the point-in-time restore")
	}
	same(t, "captured DDL as its role", want, sums(t, c, "r_ddl_role"))
	var def, owner string
	c.Conn(t, "r_ddl_role").QueryRow(ctx, `SELECT pg_get_constraintdef(oid), (SELECT relowner::regrole::text FROM pg_class WHERE oid = conrelid)
		FROM pg_constraint WHERE conname = 'n_ok'`).Scan(&def, &owner)
	if def != "CHECK (m.chk(n))" || owner != "mallory" {
		t.Fatalf("restored constraint %q on a table of %q, want CHECK (m.chk(n)) on mallory's", def, owner)
	}
}

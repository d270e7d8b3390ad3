package pitr_test

import (
	"context"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pme2go/pme2go-backup/engine/apply"
	"github.com/pme2go/pme2go-backup/engine/progress"
	"github.com/pme2go/pme2go-backup/engine/restore"
	"github.com/pme2go/pme2go-backup/tests/pgharness"
)

// funcPathSchema is the source of TestRestoreFunctionPath. Role eve, not a
// superuser, may create objects in public and plants there an exact-match
// overload public.lower(varchar) (CVE-2018-1058): whoever runs it as a
// superuser records itself in public.witness and makes eve superuser.
// Functions owned by postgres, in public, call lower() without a schema on
// a varchar; tables owned by postgres reach them through a CHECK
// constraint, a generated column, an index expression, a domain and a
// default. Role appo owns schema appo, whose CHECK function calls a
// sibling without a schema (the case the restore's temporary search_path
// exists for). Functions with settings of their own, one carrying the
// restore's old fixed marker, and event triggers (default and ALWAYS)
// that log every DDL statement into public.ddl_audit complete it.
const funcPathSchema = `
CREATE ROLE eve LOGIN NOSUPERUSER;
CREATE ROLE appo LOGIN NOSUPERUSER;
GRANT CREATE ON SCHEMA public TO eve;
CREATE TABLE public.witness (who text, how text);
GRANT INSERT ON public.witness TO PUBLIC;
SET ROLE eve;
CREATE FUNCTION public.lower(s varchar) RETURNS text LANGUAGE plpgsql AS $$
BEGIN
  IF (SELECT rolsuper FROM pg_catalog.pg_roles WHERE rolname = current_user) THEN
    BEGIN INSERT INTO public.witness VALUES (current_user, 'lower'); EXCEPTION WHEN others THEN NULL; END;
    BEGIN ALTER ROLE eve SUPERUSER; EXCEPTION WHEN others THEN NULL; END;
  END IF;
  RETURN pg_catalog.lower(s::text);
END $$;
CREATE FUNCTION public.forged() RETURNS int LANGUAGE sql SET search_path = public, pme2go_restore_pin AS 'SELECT 7';
RESET ROLE;
CREATE FUNCTION public.norm(s varchar) RETURNS text LANGUAGE sql IMMUTABLE AS 'SELECT lower(s)';
CREATE FUNCTION public.norm_x() RETURNS text LANGUAGE sql STABLE AS $$SELECT lower('X'::varchar)$$;
CREATE DOMAIN public.dnorm AS varchar CHECK (public.norm(VALUE) IS NOT NULL);
CREATE TABLE public.t_check (id int PRIMARY KEY, s varchar CHECK (public.norm(s) IS NOT NULL));
CREATE TABLE public.t_gen (id int PRIMARY KEY, s varchar, g text GENERATED ALWAYS AS (public.norm(s)) STORED);
CREATE TABLE public.t_index (id int PRIMARY KEY, s varchar);
CREATE INDEX t_index_norm ON public.t_index (public.norm(s));
CREATE TABLE public.t_dom (id int PRIMARY KEY, d public.dnorm);
CREATE TABLE public.t_default (id int PRIMARY KEY, s text DEFAULT public.norm_x());
GRANT ALL ON public.t_check, public.t_gen, public.t_index, public.t_dom, public.t_default TO appo;
CREATE SCHEMA appo AUTHORIZATION appo;
SET ROLE appo;
CREATE FUNCTION appo.chk_positive(n int) RETURNS boolean LANGUAGE sql IMMUTABLE AS 'SELECT n > 0';
CREATE FUNCTION appo.chk_qty(n int) RETURNS boolean LANGUAGE sql IMMUTABLE AS 'SELECT chk_positive(n) AND n < 1000000';
CREATE TABLE appo.orders (id int PRIMARY KEY, qty int CHECK (appo.chk_qty(qty)));
CREATE FUNCTION appo.both() RETURNS int LANGUAGE sql SET search_path = public SET statement_timeout = '5s' AS 'SELECT 3';
RESET ROLE;
CREATE FUNCTION public.keep_sp() RETURNS int LANGUAGE sql SET search_path = appo, pg_temp AS 'SELECT 1';
CREATE FUNCTION public.wm() RETURNS int LANGUAGE sql SET work_mem = '8MB' AS 'SELECT 2';
CREATE TABLE public.ddl_audit (tag text, at_role text);
CREATE FUNCTION public.ddl_log() RETURNS event_trigger LANGUAGE plpgsql AS $$
BEGIN INSERT INTO public.ddl_audit VALUES (tg_tag, current_user); END $$;
CREATE EVENT TRIGGER ev_log ON ddl_command_end EXECUTE FUNCTION public.ddl_log();
CREATE EVENT TRIGGER ev_log_always ON ddl_command_start EXECUTE FUNCTION public.ddl_log();
ALTER EVENT TRIGGER ev_log_always ENABLE ALWAYS;
`

// funcPathRows is the application's workload (run as appo, whose
// search_path reaches eve's lower: as appo it does no harm).
func funcPathRows(from, to int) string {
	r := func(s string) string {
		return strings.NewReplacer("$lo", strconv.Itoa(from), "$hi", strconv.Itoa(to)).Replace(s)
	}
	return r(`
INSERT INTO public.t_check SELECT g, 'Check ' || g FROM generate_series($lo, $hi) g;
INSERT INTO public.t_gen (id, s) SELECT g, 'Gen ' || g FROM generate_series($lo, $hi) g;
INSERT INTO public.t_index SELECT g, 'Idx ' || g FROM generate_series($lo, $hi) g;
INSERT INTO public.t_dom SELECT g, 'Dom ' || g FROM generate_series($lo, $hi) g;
INSERT INTO public.t_default (id) SELECT g FROM generate_series($lo, $hi) g;
INSERT INTO appo.orders SELECT g, g FROM generate_series($lo, $hi) g;
`)
}

// TestRestoreFunctionPath: the temporary search_path a restore gives
// functions (so that a CHECK constraint's function finds what its body
// names without a schema) never reaches a schema where another role may
// plant code: eve's exact-match overload in public never runs as the
// restoring superuser, through a CHECK constraint, a generated column, an
// index expression, a domain or a default, in the data load or in the
// replay. Nobody but a superuser can connect to the scratch database. The
// restored functions' settings equal the source's (a function with its own
// search_path, one with another setting only, one carrying the old fixed
// marker), the user's event triggers do not fire on the restore's own DDL,
// and the data equals the source. An interrupted point-in-time restore
// leaves the temporary settings only in its scratch database; --resume
// removes them. A database whose function needs a sibling in a schema eve
// may create in fails to restore, naming the function, eve and the fix,
// and leaves nothing behind.
func TestRestoreFunctionPath(t *testing.T) {
	c := pgharness.Start(t)
	c.CreateDB(t, "app")
	ctx := context.Background()
	c.Exec(t, "app", funcPathSchema)
	appo := func(sql string) {
		t.Helper()
		conn, err := pgx.Connect(ctx, strings.Replace(c.ConnString("app"), "user=postgres", "user=appo", 1))
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close(ctx)
		if _, err := conn.Exec(ctx, sql); err != nil {
			t.Fatalf("appo's workload: %v", err)
		}
	}
	appo(funcPathRows(1, 300))
	e := newEnv(t, c, "CAPTURE_DDL=false")
	full := e.full(t)
	wantFull := sums(t, c, "app")
	appo(funcPathRows(301, 400))
	if isSuper(t, c, "eve") {
		t.Fatal("eve became superuser on the source: the test's workload is wrong")
	}
	want := sums(t, c, "app")
	wantConfig := procConfigs(t, c, "app")
	wantStates := enableStates(t, c, "app")
	e.incremental(t)

	// eve tries to connect to every scratch database while restores run.
	var (
		stop       = make(chan struct{})
		wg         sync.WaitGroup
		eveIn      atomic.Value // name of a scratch database eve got into
		eveRefused atomic.Int64
	)
	wg.Add(1)
	go func() {
		defer wg.Done()
		admin, err := pgx.Connect(ctx, c.ConnString("postgres"))
		if err != nil {
			return
		}
		defer admin.Close(ctx)
		for {
			select {
			case <-stop:
				return
			case <-time.After(10 * time.Millisecond):
			}
			rows, _ := admin.Query(ctx, `SELECT datname FROM pg_database WHERE datname LIKE '%\_pme2go\_%'`)
			names, _ := pgx.CollectRows(rows, pgx.RowTo[string])
			for _, db := range names {
				conn, err := pgx.Connect(ctx, strings.Replace(c.ConnString(db), "user=postgres", "user=eve", 1))
				if err == nil {
					eveIn.Store(db)
					conn.Close(ctx)
				} else if strings.Contains(err.Error(), "too many connections") {
					eveRefused.Add(1)
				}
			}
		}
	}()
	stopPoller := sync.OnceFunc(func() { close(stop); wg.Wait() })
	defer stopPoller()

	check := func(t *testing.T, db string, want map[string]pgharness.TableSum) {
		t.Helper()
		if isSuper(t, c, "eve") {
			t.Fatal("eve's overload of lower ran as superuser during the restore: eve is superuser")
		}
		var w []string
		rows, _ := c.Conn(t, db).Query(ctx, `SELECT who || ' ' || how FROM public.witness`)
		w, _ = pgx.CollectRows(rows, pgx.RowTo[string])
		if len(w) > 0 {
			t.Fatalf("eve's code ran with superuser rights during the restore: %v", w)
		}
		same(t, "restored data", want, sums(t, c, db))
		if got := procConfigs(t, c, db); !slices.Equal(got, wantConfig) {
			t.Fatalf("function settings differ from the source:\n source   %v\n restored %v", wantConfig, got)
		}
		if got := enableStates(t, c, db); !slices.Equal(got, wantStates) {
			t.Fatalf("enable states differ:\n source   %v\n restored %v", wantStates, got)
		}
		var limit int
		var settings []string
		c.Conn(t, "postgres").QueryRow(ctx, `SELECT datconnlimit FROM pg_database WHERE datname = $1`, db).Scan(&limit)
		rows, _ = c.Conn(t, "postgres").Query(ctx, `SELECT array_to_string(setconfig, ',') FROM pg_db_role_setting s JOIN pg_database d ON d.oid = s.setdatabase WHERE d.datname = $1`, db)
		settings, _ = pgx.CollectRows(rows, pgx.RowTo[string])
		if limit != -1 || len(settings) > 0 {
			t.Fatalf("restored database keeps the restore's settings: connection limit %d, settings %v", limit, settings)
		}
	}

	t.Run("full restore", func(t *testing.T) {
		if _, err := e.restoreTo(ctx, apply.Target{Kind: apply.Latest}, "r_full", func(o *restore.Options) { o.Target, o.Backup = nil, full.Path }); err != nil {
			t.Fatal(err)
		}
		check(t, "r_full", wantFull)
	})

	t.Run("point-in-time restore", func(t *testing.T) {
		if _, err := e.restoreTo(ctx, apply.Target{Kind: apply.Latest}, "r_pitr"); err != nil {
			t.Fatal(err)
		}
		check(t, "r_pitr", want)
	})

	t.Run("interrupted, then resumed", func(t *testing.T) {
		cctx, cancel := context.WithCancel(ctx)
		defer cancel()
		_, err := e.restoreTo(cctx, apply.Target{Kind: apply.Latest}, "r_resumed", func(o *restore.Options) {
			o.Progress = func(ev progress.Event) {
				if ev.Phase == "replay" && ev.Done > 0 { // a transaction was applied
					cancel()
				}
			}
		})
		if err == nil {
			t.Fatal("the restore was not interrupted")
		}
		scratch := "r_resumed_pme2go_pitr"
		var pinned int
		sc := c.Conn(t, scratch)
		sc.QueryRow(ctx, `SELECT count(*) FROM pg_proc WHERE array_to_string(proconfig, ',') LIKE '%pme2go_restore_pin_%'`).Scan(&pinned)
		sc.Close(ctx)
		if pinned == 0 {
			t.Fatal("the kept scratch database holds no function with the temporary search_path: the test does not test the resume")
		}
		var exists bool
		c.Conn(t, "postgres").QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = 'r_resumed')`).Scan(&exists)
		if exists {
			t.Fatal("the target exists after an interrupted restore")
		}
		if _, err := e.restoreTo(ctx, apply.Target{Kind: apply.Latest}, "r_resumed", func(o *restore.Options) { o.Resume = true }); err != nil {
			t.Fatalf("resume: %v", err)
		}
		check(t, "r_resumed", want)
	})

	stopPoller()
	t.Run("scratch databases closed to other roles", func(t *testing.T) {
		if db := eveIn.Load(); db != nil {
			t.Fatalf("eve connected to scratch database %v during a restore", db)
		}
		if eveRefused.Load() == 0 {
			t.Fatal("eve never tried to connect to a scratch database: the test does not test it")
		}
		t.Logf("eve was refused %d times", eveRefused.Load())
	})

	t.Run("a function needing an untrusted schema fails clearly", func(t *testing.T) {
		c.CreateDB(t, "app2")
		c.Exec(t, "app2", `GRANT CREATE ON SCHEMA public TO eve;
			CREATE FUNCTION public.chk_positive(n int) RETURNS boolean LANGUAGE sql IMMUTABLE AS 'SELECT n > 0';
			CREATE FUNCTION public.chk_qty(n int) RETURNS boolean LANGUAGE sql IMMUTABLE AS 'SELECT chk_positive(n)';
			CREATE TABLE orders (id int PRIMARY KEY, qty int CHECK (public.chk_qty(qty)));
			INSERT INTO orders VALUES (1, 1), (2, 2)`)
		e2 := newEnv(t, c, "DB_NAME=app2", "CAPTURE_DDL=false")
		full2 := e2.full(t)
		_, err := e2.restoreTo(ctx, apply.Target{Kind: apply.Latest}, "r_app2", func(o *restore.Options) { o.Target, o.Backup = nil, full2.Path })
		if err == nil {
			t.Fatal("restored, but the CHECK function's sibling is only found through public, where eve may create objects")
		}
		t.Logf("the refusal: %v", err)
		for _, s := range []string{"public.chk_qty(integer)", "eve", "search_path"} {
			if !strings.Contains(err.Error(), s) {
				t.Errorf("the error does not name %q: %v", s, err)
			}
		}
		var left []string
		rows, _ := c.Conn(t, "postgres").Query(ctx, `SELECT datname FROM pg_database WHERE datname LIKE 'r\_app2%'`)
		left, _ = pgx.CollectRows(rows, pgx.RowTo[string])
		if len(left) > 0 {
			t.Fatalf("databases left after the failed restore: %v", left)
		}
	})
}

// ownerLoadSchema: role tom, not a superuser, owns tables whose data runs
// his code when loaded (a CHECK constraint, a generated column, a domain;
// his code tries to make him superuser and records who ran it), one with
// a GENERATED ALWAYS identity, one of his tables is a partition of his
// partitioned table, and a table without columns holds rows.
const ownerLoadSchema = `
CREATE ROLE tom LOGIN NOSUPERUSER;
CREATE SCHEMA t AUTHORIZATION tom;
SET ROLE tom;
CREATE TABLE t.ran (who text);
CREATE FUNCTION t.esc(n int) RETURNS boolean LANGUAGE plpgsql AS $$
BEGIN
  INSERT INTO t.ran SELECT current_user WHERE current_user <> 'tom';
  BEGIN RESET ROLE; EXCEPTION WHEN others THEN NULL; END;
  BEGIN SET SESSION AUTHORIZATION DEFAULT; EXCEPTION WHEN others THEN NULL; END;
  BEGIN ALTER ROLE tom SUPERUSER; EXCEPTION WHEN others THEN NULL; END;
  RETURN n IS NOT NULL;
END $$;
CREATE FUNCTION t.twice(n int) RETURNS int LANGUAGE plpgsql IMMUTABLE AS $$ BEGIN PERFORM t.esc(n); RETURN n * 2; END $$;
CREATE DOMAIN t.dom AS int CHECK (t.esc(VALUE));
CREATE TABLE t.checked (id int GENERATED ALWAYS AS IDENTITY PRIMARY KEY, n int CHECK (t.esc(n)), note varchar(20), tags text[]);
CREATE TABLE t.gen (id int PRIMARY KEY, a int, b int GENERATED ALWAYS AS (t.twice(a)) STORED);
CREATE TABLE t.domt (id int PRIMARY KEY, d t.dom);
CREATE TABLE t.parts (id int, n int CHECK (t.esc(n))) PARTITION BY RANGE (id);
CREATE TABLE t.parts_1 PARTITION OF t.parts FOR VALUES FROM (0) TO (1000);
CREATE TABLE t.nocols ();
RESET ROLE;
`

// ownerLoadRows is tom's workload, run in his own session (his code
// cannot RESET ROLE out of it).
const ownerLoadRows = `
INSERT INTO t.checked (n, note, tags) SELECT g, 'note ' || g, ARRAY['a', 'b''c', NULL] FROM generate_series(1, 50) g;
INSERT INTO t.gen (id, a) SELECT g, g FROM generate_series(1, 50) g;
INSERT INTO t.domt SELECT g, g FROM generate_series(1, 50) g;
INSERT INTO t.parts SELECT g, g FROM generate_series(1, 50) g;
INSERT INTO t.nocols SELECT FROM generate_series(1, 3);
`

// TestOwnerCodeDuringDataLoad: a plain pg_restore as a superuser loads a
// table with COPY and so runs its owner's CHECK, generated-column and
// domain code as the superuser (the owner becomes superuser). Our restore
// loads such tables with their owner's privileges: the owner stays
// unprivileged, his code never ran as anyone else, and the restored data
// (identity values, arrays, a partition, a table without columns) and
// schema equal the source.
func TestOwnerCodeDuringDataLoad(t *testing.T) {
	c := pgharness.Start(t)
	c.CreateDB(t, "app")
	ctx := context.Background()
	c.Exec(t, "app", ownerLoadSchema)
	tom, err := pgx.Connect(ctx, strings.Replace(c.ConnString("app"), "user=postgres", "user=tom", 1))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tom.Exec(ctx, ownerLoadRows); err != nil {
		t.Fatalf("tom's workload: %v", err)
	}
	tom.Close(ctx)
	if isSuper(t, c, "tom") {
		t.Fatal("tom became superuser on the source: the test's workload is wrong")
	}
	e := newEnv(t, c, "CAPTURE_DDL=false")
	full := e.full(t)
	want := sums(t, c, "app")
	if _, err := e.restoreTo(ctx, apply.Target{}, "r_owner", func(o *restore.Options) { o.Target, o.Backup = nil, full.Path }); err != nil {
		t.Fatal(err)
	}
	if isSuper(t, c, "tom") {
		t.Fatal("tom's code ran as superuser during the restore's data load: tom is superuser")
	}
	same(t, "restored data", want, sums(t, c, "r_owner"))
	var left int
	c.Conn(t, "r_owner").QueryRow(ctx, `SELECT count(*) FROM pg_class WHERE relname LIKE 'pme2go\_load%' OR relnamespace::regnamespace::text = 'pme2go_load'`).Scan(&left)
	if left != 0 {
		t.Fatalf("%d objects of the data load left in the restored database", left)
	}
	pgharness.CompareDatabases(t, c, "app", "r_owner")
}

// procConfigs lists every user function with its settings.
func procConfigs(t *testing.T, c *pgharness.Cluster, db string) []string {
	t.Helper()
	rows, _ := c.Conn(t, db).Query(context.Background(), `SELECT p.oid::regprocedure::text || ' ' || coalesce(p.proconfig::text, 'NULL')
		FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
		WHERE n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pme2go%' ORDER BY 1`)
	out, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		t.Fatal(err)
	}
	return out
}

package integration

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pme2go/pme2go-backup/engine/config"
	"github.com/pme2go/pme2go-backup/engine/errs"
	"github.com/pme2go/pme2go-backup/engine/ops"
	"github.com/pme2go/pme2go-backup/tests/pgharness"
)

// checkFuncSQL is a CHECK constraint calling a function whose body calls
// another without a schema: fine for the application (search_path
// "$user", public), fatal to a plain pg_restore (search_path ”).
const checkFuncSQL = `
CREATE FUNCTION chk_positive(n int) RETURNS boolean LANGUAGE sql IMMUTABLE AS 'SELECT n > 0';
CREATE FUNCTION chk_qty(n int) RETURNS boolean LANGUAGE sql IMMUTABLE AS 'SELECT chk_positive(n) AND n < 1000000';
CREATE FUNCTION chk_note(s text) RETURNS boolean LANGUAGE plpgsql IMMUTABLE AS $$ BEGIN RETURN chk_positive(length(s)); END $$;
CREATE TABLE chk_orders (id int PRIMARY KEY, qty int CHECK (chk_qty(qty)), note text CHECK (chk_note(note)));
CREATE INDEX chk_orders_qty ON chk_orders (qty);
INSERT INTO chk_orders SELECT g, g, 'n' || g FROM generate_series(1, 500) g;
`

// drillDB runs a drill of cfg and returns its result and error.
func drillDB(t *testing.T, cfg *config.Config) (*ops.DrillResult, error) {
	t.Helper()
	return ops.Drill(context.Background(), cfg, ops.DrillOptions{}, nil)
}

// scratchLeft lists the databases of drills (pme2go_drill_*) on the server.
func scratchLeft(t *testing.T, c *pgharness.Cluster) []string {
	t.Helper()
	conn := c.Conn(t, "postgres")
	rows, err := conn.Query(context.Background(), `SELECT datname FROM pg_database WHERE datname LIKE 'pme2go\_drill\_%'`)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for rows.Next() {
		var s string
		rows.Scan(&s)
		out = append(out, s)
	}
	return out
}

// TestDrill: a drill restores the newest backup (full plus change sets)
// into a scratch database, compares counts and checksums, runs amcheck and
// the usability checks, drops the scratch database and keeps the result
// (status, list); a drill of a corrupted archive and one whose restored
// rows differ from the recorded ones fail with a clear error, and leave no
// scratch database either.
func TestDrill(t *testing.T) {
	c := pgharness.Start(t)
	ctx := context.Background()

	t.Run("passes", func(t *testing.T) {
		c.CreateDB(t, "app")
		pgharness.LoadAwkward(t, c, "app")
		c.Exec(t, "app", checkFuncSQL)
		c.Exec(t, "app", `CREATE TABLE plain (id int PRIMARY KEY, v text); INSERT INTO plain SELECT g, md5(g::text) FROM generate_series(1, 300) g;
			CREATE TABLE emptied (id int); INSERT INTO emptied SELECT generate_series(1, 10);
			CREATE VIEW big_orders AS SELECT * FROM chk_orders WHERE chk_qty(qty) AND qty > 100`)
		cfg := loadCfg(t, cfgEnv(t, c, []string{"app"}, "REPLICA_IDENTITY_FIX=full"))
		if _, err := ops.Full(ctx, cfg, ops.FullOptions{}, nil); err != nil {
			t.Fatal(err)
		}
		// Changes after the full backup: the drill replays them and counts them.
		c.Exec(t, "app", `INSERT INTO chk_orders SELECT g, g, 'later' FROM generate_series(501, 650) g;
			DELETE FROM chk_orders WHERE id <= 20; UPDATE chk_orders SET qty = qty + 1 WHERE id BETWEEN 100 AND 120;
			TRUNCATE emptied; INSERT INTO emptied VALUES (1), (2)`)
		if _, err := ops.Incremental(ctx, cfg, ops.IncrementalOptions{}, nil); err != nil {
			t.Fatal(err)
		}
		res, err := drillDB(t, cfg)
		if err != nil {
			t.Fatalf("drill failed: %v\n%s", err, strings.Join(ops.DescribeDrill(res), "\n"))
		}
		t.Logf("drill:\n%s", strings.Join(ops.DescribeDrill(res), "\n"))
		if !res.OK || len(res.Databases) != 1 {
			t.Fatalf("drill result: %+v", res)
		}
		d := res.Databases[0]
		if d.Transactions < 1 || d.Incrementals != 1 || d.Tables < 5 || d.ChecksummedTables < 3 || d.Constraints < 2 || d.Views < 1 || !d.ScratchDropped {
			t.Errorf("drill compared too little: %+v", d)
		}
		if d.Amcheck == "ran" && d.Indexes < 2 {
			t.Errorf("amcheck ran on %d indexes", d.Indexes)
		} else if d.Amcheck != "ran" {
			t.Logf("amcheck: %s", d.Amcheck)
		}
		if left := scratchLeft(t, c); len(left) > 0 {
			t.Errorf("scratch databases left: %v", left)
		}
		// The result is kept (0600) and shown by status and list.
		st, err := os.Stat(filepath.Join(cfg.StateDir(), "drill.json"))
		if err != nil || st.Mode().Perm() != 0o600 {
			t.Errorf("drill.json: %v %v", st, err)
		}
		status, err := ops.Status(ctx, cfg, ops.StatusOptions{NoServer: true}, nil)
		if err != nil || status.LastDrill == nil || !status.LastDrill.OK || status.LastDrill.Database != "app" || status.LastDrill.Duration <= 0 {
			t.Errorf("status last drill: %+v %v", status.LastDrill, err)
		}
		list, err := ops.List(ctx, cfg, ops.ListOptions{}, nil)
		if err != nil {
			t.Fatal(err)
		}
		for _, b := range list {
			if b.Drill == nil || !b.Drill.OK {
				t.Errorf("list: %s not marked as drilled: %+v", b.Name, b.Drill)
			}
		}
		// The functions are as dumped: no temporary search_path is left.
		var n int
		c.Conn(t, "app").QueryRow(ctx, `SELECT count(*) FROM pg_proc WHERE proconfig IS NOT NULL AND pronamespace = 'public'::regnamespace`).Scan(&n)
		if n != 0 {
			t.Errorf("%d source functions have settings", n)
		}

		// A cancelled drill drops its scratch database too, and says so.
		cctx, cancel := context.WithTimeout(ctx, 1500*time.Millisecond)
		defer cancel()
		res, err = ops.Drill(cctx, cfg, ops.DrillOptions{}, nil)
		if err == nil || res == nil || res.OK {
			t.Fatalf("cancelled drill: %v %+v", err, res)
		}
		if left := scratchLeft(t, c); len(left) > 0 {
			t.Errorf("scratch databases left after a cancelled drill: %v", left)
		}
		if st, _ := ops.Status(ctx, cfg, ops.StatusOptions{NoServer: true}, nil); st == nil || st.LastDrill == nil || st.LastDrill.OK || !strings.Contains(st.LastDrill.Error, "cancelled") {
			t.Errorf("status after a cancelled drill: %+v", st.LastDrill)
		}
	})

	t.Run("check-calls-function", func(t *testing.T) {
		// A plain pg_dump | pg_restore fails on it ...
		c.CreateDB(t, "chk")
		c.Exec(t, "chk", checkFuncSQL)
		dir := filepath.Join(t.TempDir(), "dump")
		if out, err := exec.Command(c.Bin("pg_dump"), "-Fd", "-f", dir, "-h", c.SocketDir, "-p", strconv.Itoa(c.Port), "-U", "postgres", "chk").CombinedOutput(); err != nil {
			t.Fatalf("pg_dump: %v %s", err, out)
		}
		c.CreateDB(t, "chk_plain")
		out, err := exec.Command(c.Bin("pg_restore"), "--exit-on-error", "-d", "chk_plain", "-h", c.SocketDir, "-p", strconv.Itoa(c.Port), "-U", "postgres", dir).CombinedOutput()
		if err == nil || !strings.Contains(string(out), "positive") {
			t.Fatalf("a plain pg_restore was expected to fail on the CHECK constraint: %v %s", err, out)
		}
		// ... ours restores it, and the function is as dumped afterwards.
		cfg := loadCfg(t, cfgEnv(t, c, []string{"chk"}))
		if _, err := ops.Full(ctx, cfg, ops.FullOptions{}, nil); err != nil {
			t.Fatal(err)
		}
		c.Exec(t, "chk", `INSERT INTO chk_orders VALUES (9001, 5, 'after')`)
		if _, err := ops.Incremental(ctx, cfg, ops.IncrementalOptions{}, nil); err != nil {
			t.Fatal(err)
		}
		if _, err := ops.Restore(ctx, cfg, ops.RestoreOptions{Target: ops.RestoreTarget{Latest: true}, TargetDB: "chk_restored", NoSafetyBackup: true}, nil); err != nil {
			t.Fatalf("restore: %v", err)
		}
		pgharness.CompareDatabases(t, c, "chk", "chk_restored")
		var n int
		c.Conn(t, "chk_restored").QueryRow(ctx, `SELECT count(*) FROM pg_proc WHERE proconfig IS NOT NULL AND pronamespace = 'public'::regnamespace`).Scan(&n)
		if n != 0 {
			t.Errorf("%d restored functions kept a setting the restore gave them", n)
		}
		res, err := drillDB(t, cfg)
		if err != nil {
			t.Fatalf("drill: %v\n%s", err, strings.Join(ops.DescribeDrill(res), "\n"))
		}
		if d := res.Databases[0]; d.Constraints < 2 || d.Transactions != 1 {
			t.Errorf("drill: %+v", d)
		}
	})

	t.Run("corrupted-archive", func(t *testing.T) {
		c.CreateDB(t, "bad")
		c.Exec(t, "bad", `CREATE TABLE t (id int PRIMARY KEY, v text); INSERT INTO t SELECT g, md5(g::text) FROM generate_series(1, 5000) g`)
		cfg := loadCfg(t, cfgEnv(t, c, []string{"bad"}))
		full, err := ops.Full(ctx, cfg, ops.FullOptions{}, nil)
		if err != nil {
			t.Fatal(err)
		}
		data, err := os.ReadFile(full.Path)
		if err != nil {
			t.Fatal(err)
		}
		data[len(data)/2] ^= 0xff
		if err := os.WriteFile(full.Path, data, 0o600); err != nil {
			t.Fatal(err)
		}
		res, err := drillDB(t, cfg)
		if err == nil || errs.CodeOf(err) != errs.DrillFailed || res == nil || res.OK {
			t.Fatalf("drill of a corrupted archive: %v %+v", err, res)
		}
		if !strings.Contains(err.Error(), "verification") || !strings.Contains(err.Error(), filepath.Base(full.Path)) {
			t.Errorf("error does not say which archive failed verification: %v", err)
		}
		if left := scratchLeft(t, c); len(left) > 0 {
			t.Errorf("scratch databases left: %v", left)
		}
		st, _ := ops.Status(ctx, cfg, ops.StatusOptions{NoServer: true}, nil)
		if st == nil || st.LastDrill == nil || st.LastDrill.OK || st.LastDrill.Error == "" {
			t.Errorf("status last drill: %+v", st.LastDrill)
		}
	})

	t.Run("row-count-mismatch", func(t *testing.T) {
		// A CHECK constraint with a side effect: loading table a inserts
		// into table b, so the restored b holds rows the source never had
		// at the snapshot. The drill must notice.
		c.CreateDB(t, "side")
		c.Exec(t, "side", `CREATE TABLE b (n int);
			CREATE FUNCTION noisy(n int) RETURNS boolean LANGUAGE plpgsql AS $$ BEGIN INSERT INTO b VALUES (n); RETURN true; END $$;
			INSERT INTO b VALUES (0);
			CREATE TABLE a (n int CHECK (noisy(n)));
			INSERT INTO a SELECT generate_series(1, 3);
			TRUNCATE b; INSERT INTO b VALUES (0)`)
		cfg := loadCfg(t, cfgEnv(t, c, []string{"side"}))
		if _, err := ops.Full(ctx, cfg, ops.FullOptions{}, nil); err != nil {
			t.Fatal(err)
		}
		res, err := drillDB(t, cfg)
		if err == nil || res == nil || res.OK {
			t.Fatalf("drill did not notice the extra rows: %v %+v", err, res)
		}
		t.Logf("drill: %v\n%s", err, strings.Join(ops.DescribeDrill(res), "\n"))
		if !strings.Contains(err.Error(), `public.b`) || !strings.Contains(err.Error(), "1 in the full backup") {
			t.Errorf("error does not name the table and the counts: %v", err)
		}
		if left := scratchLeft(t, c); len(left) > 0 {
			t.Errorf("scratch databases left: %v", left)
		}
	})

	t.Run("two-databases-one-fails", func(t *testing.T) {
		// Each database is drilled; one failing does not stop the other,
		// and the error names only the one that failed.
		cfg := loadCfg(t, cfgEnv(t, c, []string{"chk", "side"}))
		if _, err := ops.Full(ctx, cfg, ops.FullOptions{}, nil); err != nil {
			t.Fatal(err)
		}
		res, err := drillDB(t, cfg)
		if err == nil || res == nil || res.OK || len(res.Databases) != 2 {
			t.Fatalf("drill of two databases: %v %+v", err, res)
		}
		if !res.Databases[0].OK || res.Databases[0].Database != "chk" || res.Databases[1].OK || res.Databases[1].Database != "side" {
			t.Errorf("per-database outcome: %+v", res.Databases)
		}
		if strings.Contains(err.Error(), "chk:") || !strings.Contains(err.Error(), "side:") {
			t.Errorf("error: %v", err)
		}
		st, _ := ops.Status(ctx, cfg, ops.StatusOptions{NoServer: true}, nil)
		if st == nil || st.LastDrill == nil || st.LastDrill.Database != "chk,side" || st.LastDrill.OK {
			t.Errorf("status: %+v", st.LastDrill)
		}
		if left := scratchLeft(t, c); len(left) > 0 {
			t.Errorf("scratch databases left: %v", left)
		}
	})
}

// drillPrivSchema: role tom owns a table whose CHECK constraint calls his
// function and a view whose planning folds his IMMUTABLE function; role
// eve, with CREATE on public, plants public.lower(varchar), which a CHECK
// constraint of a superuser's table reaches through an unqualified call
// under the default search_path. Their code tries to become superuser.
// Default privileges of postgres give eve what postgres creates (the
// drill's own functions must not reach her).
const drillPrivSchema = `
CREATE ROLE tom LOGIN NOSUPERUSER;
CREATE ROLE eve LOGIN NOSUPERUSER;
GRANT CREATE ON SCHEMA public TO eve;
ALTER DEFAULT PRIVILEGES FOR ROLE postgres GRANT ALL ON FUNCTIONS TO eve;
ALTER DEFAULT PRIVILEGES FOR ROLE postgres GRANT ALL ON SCHEMAS TO eve;
CREATE SCHEMA t AUTHORIZATION tom;
SET ROLE tom;
CREATE FUNCTION t.esc(n int) RETURNS boolean LANGUAGE plpgsql AS $$
BEGIN
  BEGIN RESET ROLE; EXCEPTION WHEN others THEN NULL; END;
  BEGIN SET SESSION AUTHORIZATION DEFAULT; EXCEPTION WHEN others THEN NULL; END;
  BEGIN ALTER ROLE tom SUPERUSER; EXCEPTION WHEN others THEN NULL; END;
  RETURN n IS NOT NULL;
END $$;
CREATE FUNCTION t.imm(n int) RETURNS int LANGUAGE plpgsql IMMUTABLE AS $$ BEGIN PERFORM t.esc(n); RETURN n; END $$;
CREATE TABLE t.checked (id int PRIMARY KEY, n int CHECK (t.esc(n)));
CREATE VIEW t.v AS SELECT t.imm(1) AS x;
SET ROLE eve;
CREATE FUNCTION public.lower(s varchar) RETURNS text LANGUAGE plpgsql AS $$
BEGIN
  BEGIN ALTER ROLE eve SUPERUSER; EXCEPTION WHEN others THEN NULL; END;
  RETURN pg_catalog.lower(s::text);
END $$;
RESET ROLE;
CREATE FUNCTION public.norm(s varchar) RETURNS text LANGUAGE sql IMMUTABLE AS 'SELECT lower(s)';
CREATE TABLE public.pub_t (id int PRIMARY KEY, s varchar CHECK (public.norm(s) IS NOT NULL));
GRANT ALL ON public.pub_t TO tom;
`

// TestDrillPrivileges: the drill's usability checks (CHECK constraints
// evaluated, views planned) run no role's code with the drill's superuser
// privileges: tom's constraint and view run as tom, and the superuser's
// constraint does not reach eve's overload in public. The drill passes.
func TestDrillPrivileges(t *testing.T) {
	c := pgharness.Start(t)
	ctx := context.Background()
	c.CreateDB(t, "priv")
	c.Exec(t, "priv", drillPrivSchema)
	tom, err := pgx.Connect(ctx, strings.Replace(c.ConnString("priv"), "user=postgres", "user=tom", 1))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tom.Exec(ctx, `INSERT INTO t.checked SELECT g, g FROM generate_series(1, 20) g;
		INSERT INTO public.pub_t SELECT g, 'S' || g FROM generate_series(1, 20) g`); err != nil {
		t.Fatalf("tom's workload: %v", err)
	}
	tom.Close(ctx)
	super := func(role string) bool {
		var s bool
		if err := c.Conn(t, "postgres").QueryRow(ctx, `SELECT rolsuper FROM pg_roles WHERE rolname = $1`, role).Scan(&s); err != nil {
			t.Fatal(err)
		}
		return s
	}
	if super("tom") || super("eve") {
		t.Fatal("tom or eve became superuser on the source: the test's workload is wrong")
	}
	cfg := loadCfg(t, cfgEnv(t, c, []string{"priv"}))
	if _, err := ops.Full(ctx, cfg, ops.FullOptions{}, nil); err != nil {
		t.Fatal(err)
	}
	res, err := drillDB(t, cfg)
	if super("tom") {
		t.Error("tom's code ran as superuser during the drill (restore or checks)")
	}
	if super("eve") {
		t.Error("eve's overload of lower ran as superuser during the drill")
	}
	if err != nil {
		t.Fatalf("drill: %v\n%s", err, strings.Join(ops.DescribeDrill(res), "\n"))
	}
	if d := res.Databases[0]; d.Constraints != 2 || d.Views != 1 {
		t.Errorf("drill checked %d constraints and %d views, want 2 and 1: %+v", d.Constraints, d.Views, d)
	}
}

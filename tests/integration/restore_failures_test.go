package integration

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/pme2go/pme2go-backup/engine/restore"
	"github.com/pme2go/pme2go-backup/tests/pgharness"
)

// databases lists the cluster's databases, comma-joined.
func databases(t *testing.T, c *pgharness.Cluster) string {
	t.Helper()
	var s string
	if err := c.Conn(t, "postgres").QueryRow(context.Background(), `SELECT string_agg(datname, ',' ORDER BY datname) FROM pg_database`).Scan(&s); err != nil {
		t.Fatal(err)
	}
	return s
}

// TestRestoreNamesAndRefusals: database names that need quoting (quotes,
// "=", spaces, multibyte characters filling the 63 bytes of a name) restore
// into --target-db and over the original with --force; a --target-db that
// holds data is refused without --force and left as it was; a pg_restore
// that fails into a new --target-db leaves no database behind.
func TestRestoreNamesAndRefusals(t *testing.T) {
	c := pgharness.Start(t)
	const src = `it's "q"=1`
	c.CreateDB(t, src)
	c.Exec(t, src, `CREATE TABLE items (id int PRIMARY KEY, v text); INSERT INTO items SELECT g, md5(g::text) FROM generate_series(1, 500) g`)
	c.CreateDB(t, "pristine")
	c.Exec(t, "pristine", `CREATE TABLE items (id int PRIMARY KEY, v text); INSERT INTO items SELECT g, md5(g::text) FROM generate_series(1, 500) g`)
	env := cfgEnv(t, c, []string{src})
	path := takeBackup(t, env)

	for _, name := range []string{`copy "x"=y's`, strings.Repeat("é", 31)} {
		t.Run("target-db "+name[:6], func(t *testing.T) {
			if r := runCLI(t, env, "restore", "--backup", path, "--target-db", name); r.code != 0 {
				t.Fatalf("restore into %q: %d\n%s%s", name, r.code, r.stdout, r.stderr)
			}
			pgharness.CompareDatabases(t, c, src, name)
		})
	}
	t.Run("force over a quoted name", func(t *testing.T) {
		c.Exec(t, src, `DELETE FROM items WHERE id > 100`)
		if r := runCLI(t, env, "restore", "--backup", path, "--force"); r.code != 0 {
			t.Fatalf("restore --force: %d\n%s%s", r.code, r.stdout, r.stderr)
		}
		pgharness.CompareDatabases(t, c, "pristine", src)
	})
	t.Run("force over a template database", func(t *testing.T) {
		// The replaced database, a template since the backup, is dropped
		// all the same; the restored one has the backup's flag (not a template).
		c.Exec(t, "postgres", `ALTER DATABASE "it's ""q""=1" IS_TEMPLATE true`)
		before := databases(t, c)
		if r := runCLI(t, env, "restore", "--backup", path, "--force"); r.code != 0 {
			t.Fatalf("restore --force over a template: %d\n%s%s", r.code, r.stdout, r.stderr)
		}
		var tmpl bool
		c.Conn(t, "postgres").QueryRow(context.Background(), `SELECT datistemplate FROM pg_database WHERE datname = $1`, src).Scan(&tmpl)
		if after := databases(t, c); after != before || tmpl {
			t.Fatalf("after restore --force over a template: databases %s (before %s), template %v", after, before, tmpl)
		}
		pgharness.CompareDatabases(t, c, "pristine", src)
	})
	t.Run("non-empty target-db without force", func(t *testing.T) {
		c.Exec(t, "pristine", `INSERT INTO items VALUES (-1, 'mine')`)
		before := databases(t, c)
		expectFailure(t, runCLI(t, env, "restore", "--backup", path, "--target-db", "pristine"), "holds data", "--force", "--target-db")
		var n int
		c.Conn(t, "pristine").QueryRow(context.Background(), `SELECT count(*) FROM items WHERE id = -1`).Scan(&n)
		if n != 1 || databases(t, c) != before {
			t.Fatalf("refused restore changed something: row %d, databases %s (before %s)", n, databases(t, c), before)
		}
	})
	t.Run("pg_restore fails into a new target-db", func(t *testing.T) {
		before := databases(t, c)
		e := map[string]string{}
		for k, v := range env {
			e[k] = v
		}
		e["PG_BINDIR"] = fakeBinDir(t, c, "pg_restore")
		expectFailure(t, runCLI(t, e, "restore", "--backup", path, "--target-db", "never"), "failure provoked", "not changed")
		if after := databases(t, c); after != before {
			t.Fatalf("failed restore left databases: %s (before %s)", after, before)
		}
	})
}

// TestRecoverInterruptedPhases: journals left by dead restore processes in
// each phase are finished or undone: building drops the scratch database,
// locked puts a swapped database back under its name with its connections,
// committed completes the restore; a journal of a live process is left.
func TestRecoverInterruptedPhases(t *testing.T) {
	c := pgharness.Start(t)
	for _, db := range []string{"b_fresh", "l_target", "l_fresh", "c_target", "c_old", "live_fresh"} {
		c.CreateDB(t, db)
	}
	c.Exec(t, "l_target", `CREATE TABLE marker AS SELECT 'restored copy'::text AS what`)
	c.Exec(t, "l_fresh", `CREATE TABLE marker AS SELECT 'original'::text AS what`)
	// locked, after the swap: the original is under its private name.
	c.Exec(t, "postgres", `ALTER DATABASE l_fresh RENAME TO l_old; ALTER DATABASE l_target ALLOW_CONNECTIONS false; ALTER DATABASE c_target ALLOW_CONNECTIONS false`)
	env := cfgEnv(t, c, []string{"postgres"})
	cfg := loadCfg(t, env)
	dir := filepath.Join(cfg.StateDir(), "restores")
	os.MkdirAll(dir, 0o700)
	dead := 999999 // no such process (pid_max is lower by default)
	write := func(name, body string) {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write("1-1.json", fmt.Sprintf(`{"pid": %d, "target": "b_target", "fresh": "b_fresh", "allowConn": true, "phase": "building"}`, dead))
	write("2-1.json", fmt.Sprintf(`{"pid": %d, "target": "l_target", "fresh": "l_fresh", "old": "l_old", "allowConn": true, "phase": "locked"}`, dead))
	write("3-1.json", fmt.Sprintf(`{"pid": %d, "target": "c_target", "fresh": "c_fresh", "old": "c_old", "allowConn": true, "phase": "committed"}`, dead))
	write("4-1.json", fmt.Sprintf(`{"pid": %d, "target": "live", "fresh": "live_fresh", "allowConn": true, "phase": "building"}`, os.Getppid()))
	done, err := restore.RecoverInterrupted(context.Background(), cfg, nil)
	if err != nil || len(done) != 3 {
		t.Fatalf("recovered %d (%v), want 3: %v", len(done), err, done)
	}
	if got := databases(t, c); got != "c_target,l_target,live_fresh,postgres,template0,template1" {
		t.Fatalf("databases after recovery: %s", got)
	}
	var what string
	c.Conn(t, "l_target").QueryRow(context.Background(), `SELECT what FROM marker`).Scan(&what)
	if what != "original" {
		t.Fatalf("l_target holds the %s, want the original put back", what)
	}
	c.Conn(t, "c_target").Close(context.Background()) // accepts connections again
	left, _ := os.ReadDir(dir)
	if len(left) != 1 || left[0].Name() != "4-1.json" {
		t.Fatalf("journals left: %v", left)
	}
}

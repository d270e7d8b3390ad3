package integration

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pme2go/pme2go-backup/tests/pgharness"
)

// writer commits one row every 20 ms into table w of a database, as an
// application would, reconnecting whenever its session is ended, and
// records each id it saw committed.
type writer struct {
	mu        sync.Mutex
	committed []int64
	connects  int
	stop      chan struct{}
	done      chan struct{}
}

func startWriter(t *testing.T, connString string) *writer {
	w := &writer{stop: make(chan struct{}), done: make(chan struct{})}
	cfg, err := pgx.ParseConfig(connString)
	if err != nil {
		t.Fatal(err)
	}
	cfg.RuntimeParams["application_name"] = "test-writer"
	go func() {
		defer close(w.done)
		var conn *pgx.Conn
		defer func() {
			if conn != nil {
				conn.Close(context.Background())
			}
		}()
		id := int64(0)
		for {
			select {
			case <-w.stop:
				return
			case <-time.After(20 * time.Millisecond):
			}
			if conn == nil {
				ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
				c, err := pgx.ConnectConfig(ctx, cfg)
				cancel()
				if err != nil {
					continue
				}
				conn = c
				w.mu.Lock()
				w.connects++
				w.mu.Unlock()
			}
			id++
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			_, err := conn.Exec(ctx, `INSERT INTO w (id) VALUES ($1)`, id) // autocommit: success = committed
			cancel()
			if err != nil {
				conn.Close(context.Background())
				conn = nil
				continue
			}
			w.mu.Lock()
			w.committed = append(w.committed, id)
			w.mu.Unlock()
		}
	}()
	return w
}

func (w *writer) finish() []int64 {
	close(w.stop)
	<-w.done
	w.mu.Lock()
	defer w.mu.Unlock()
	return append([]int64(nil), w.committed...)
}

func (w *writer) count() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return len(w.committed)
}

func ids(t *testing.T, c *pgharness.Cluster, db string) map[int64]bool {
	t.Helper()
	rows, _ := c.Conn(t, db).Query(context.Background(), `SELECT id FROM w`)
	list, err := pgx.CollectRows(rows, pgx.RowTo[int64])
	if err != nil {
		t.Fatalf("ids of %s: %v", db, err)
	}
	m := map[int64]bool{}
	for _, id := range list {
		m[id] = true
	}
	return m
}

// dbState is what a failed restore must leave as it was.
func dbState(t *testing.T, c *pgharness.Cluster, db string) string {
	t.Helper()
	var s string
	err := c.Conn(t, "postgres").QueryRow(context.Background(), `SELECT format('allowconn=%s connlimit=%s databases=%s', d.datallowconn, d.datconnlimit,
		(SELECT string_agg(datname, ',' ORDER BY datname) FROM pg_database))
		FROM pg_database d WHERE d.datname = $1`, db).Scan(&s)
	if err != nil {
		t.Fatalf("state of %s: %v", db, err)
	}
	return s
}

// fakeBinDir is a PG_BINDIR whose program name fails (after answering
// --version, and for pg_restore after listing a table of contents with -l)
// while the others are the real ones.
func fakeBinDir(t *testing.T, c *pgharness.Cluster, failing string) string {
	dir := filepath.Join(t.TempDir(), "bin-"+failing)
	os.MkdirAll(dir, 0o755)
	for _, n := range []string{"pg_dump", "pg_dumpall", "pg_restore", "psql"} {
		real := c.Bin(n)
		if n != failing {
			os.Symlink(real, filepath.Join(dir, n))
			continue
		}
		script := fmt.Sprintf(`#!/bin/sh
for a in "$@"; do case "$a" in --version|-l) exec %q "$@";; esac; done
echo "%s: error: failure provoked by the test" >&2
exit 1
`, real, n)
		os.WriteFile(filepath.Join(dir, n), []byte(script), 0o755)
	}
	return dir
}

// TestForceRestoreLosesNoCommit: an application commits every 20 ms into
// the database while `restore --force` replaces it; every id it saw
// committed is in the safety backup or, committed after the swap, in the
// restored database. Then failures at each step (pg_restore, the safety
// backup, the swap held up by a prepared transaction) leave the database as
// it was: same content, same name, connections allowed again, no database
// left behind.
func TestForceRestoreLosesNoCommit(t *testing.T) {
	c := pgharness.Start(t, pgharness.WithSetting("max_prepared_transactions", "4"))
	c.CreateDB(t, "app")
	c.Exec(t, "app", `CREATE TABLE w (id bigint PRIMARY KEY, at timestamptz NOT NULL DEFAULT clock_timestamp());
		CREATE TABLE pad AS SELECT g, md5(g::text) AS v FROM generate_series(1, 200000) g`)
	env := cfgEnv(t, c, []string{"app"})
	path := takeBackup(t, env)

	t.Run("writer", func(t *testing.T) {
		w := startWriter(t, c.ConnString("app"))
		for deadline := time.Now().Add(10 * time.Second); w.count() < 10 && time.Now().Before(deadline); {
			time.Sleep(20 * time.Millisecond)
		}
		before := w.count()
		r := runCLI(t, env, "restore", "--backup", path, "--force")
		if r.code != 0 {
			w.finish()
			t.Fatalf("restore --force: %d\n%s%s", r.code, r.stdout, r.stderr)
		}
		afterRestore := w.count()
		for deadline := time.Now().Add(10 * time.Second); w.count() < afterRestore+10 && time.Now().Before(deadline); {
			time.Sleep(20 * time.Millisecond)
		}
		committed := w.finish()
		if !strings.Contains(r.stdout, "1 session(s) ended") {
			t.Errorf("output does not say how many sessions were ended:\n%s", r.stdout)
		}
		if !strings.Contains(r.stderr, "session ended") || !strings.Contains(r.stderr, "test-writer") {
			t.Errorf("log lacks the ended session and its application name:\n%s", r.stderr)
		}
		names := listed(t, env)
		if len(names) != 2 {
			t.Fatalf("want the backup and its safety backup, listed %v", names)
		}
		safety := names[0]
		if safety == filepath.Base(path) {
			safety = names[1]
		}
		if r := runCLI(t, env, "restore", "--backup", safety, "--target-db", "safety_copy"); r.code != 0 {
			t.Fatalf("restore the safety backup: %s%s", r.stdout, r.stderr)
		}
		inSafety, inRestored := ids(t, c, "safety_copy"), ids(t, c, "app")
		var lost []int64
		nSafety, nRestored := 0, 0
		for _, id := range committed {
			switch {
			case inSafety[id]:
				nSafety++
			case inRestored[id]:
				nRestored++
			default:
				lost = append(lost, id)
			}
		}
		t.Logf("writer: %d commits (%d before the restore started), %d connections; %d in the safety backup, %d in the restored database after the swap",
			len(committed), before, w.connects, nSafety, nRestored)
		if len(lost) > 0 {
			t.Fatalf("%d committed ids in neither the safety backup nor the restored database: %v", len(lost), lost)
		}
		if nSafety < before || nRestored < 10 {
			t.Fatalf("the test did not exercise both sides: %d ids in the safety backup (want >= %d), %d after the swap", nSafety, before, nRestored)
		}
		// Ids after the swap never precede ids of the safety backup.
		maxSafety := int64(0)
		for id := range inSafety {
			maxSafety = max(maxSafety, id)
		}
		for id := range inRestored {
			if id <= maxSafety {
				t.Fatalf("id %d committed in the restored database before the safety backup's last id %d", id, maxSafety)
			}
		}
		if s := dbState(t, c, "app"); !strings.HasPrefix(s, "allowconn=t connlimit=-1 databases=app,postgres,safety_copy,template0,template1") {
			t.Fatalf("after the restore: %s", s)
		}
	})

	// Failures: the database must stay exactly as it was.
	c.Exec(t, "app", `INSERT INTO w (id) VALUES (-1)`)
	failing := func(t *testing.T, env map[string]string, wants ...string) {
		t.Helper()
		before := dbState(t, c, "app")
		sums, err := pgharness.Checksums(context.Background(), c.ConnString("app"))
		if err != nil {
			t.Fatal(err)
		}
		expectFailure(t, runCLI(t, env, "restore", "--backup", path, "--force"), wants...)
		if after := dbState(t, c, "app"); after != before {
			t.Errorf("database state changed by the failed restore:\n before %s\n after  %s", before, after)
		}
		got, err := pgharness.Checksums(context.Background(), c.ConnString("app"))
		if err != nil {
			t.Fatal(err)
		}
		if d := pgharness.Diff(sums, got); len(d) > 0 {
			t.Errorf("content changed by the failed restore: %v", d)
		}
	}
	withBin := func(bin string) map[string]string {
		e := map[string]string{}
		for k, v := range env {
			e[k] = v
		}
		e["PG_BINDIR"] = bin
		return e
	}
	t.Run("pg_restore fails", func(t *testing.T) {
		// A session of the application is not even disturbed: the
		// database is shut only once the restored copy is complete.
		app := c.Conn(t, "app")
		failing(t, withBin(fakeBinDir(t, c, "pg_restore")), "pg_restore", "failure provoked", "not changed")
		if _, err := app.Exec(context.Background(), `SELECT 1`); err != nil {
			t.Fatalf("the application's session was ended by a restore that failed before replacing anything: %v", err)
		}
	})
	t.Run("safety backup fails", func(t *testing.T) {
		failing(t, withBin(fakeBinDir(t, c, "pg_dump")), "safety backup", "failure provoked")
	})
	t.Run("swap held up by a prepared transaction", func(t *testing.T) {
		c.Exec(t, "app", `BEGIN; INSERT INTO w (id) VALUES (-2); PREPARE TRANSACTION 'held'`)
		defer c.Exec(t, "app", `ROLLBACK PREPARED 'held'`)
		// Refused before anything is done, naming the transaction and the fix.
		app := c.Conn(t, "app")
		failing(t, env, "prepared transaction", "held", "ROLLBACK PREPARED")
		if _, err := app.Exec(context.Background(), `SELECT 1`); err != nil {
			t.Fatalf("a session was ended by a restore refused for a prepared transaction: %v", err)
		}
	})
	t.Run("killed during the safety backup", func(t *testing.T) {
		before := dbState(t, c, "app")
		sums, err := pgharness.Checksums(context.Background(), c.ConnString("app"))
		if err != nil {
			t.Fatal(err)
		}
		bin := fakeBinDir(t, c, "pg_dump")
		os.WriteFile(filepath.Join(bin, "pg_dump"), []byte(fmt.Sprintf("#!/bin/sh\ncase \"$1\" in --version) exec %q --version;; esac\nexec sleep 20\n", c.Bin("pg_dump"))), 0o755)
		cmd := cliCmd(withBin(bin), "restore", "--backup", path, "--force")
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		for deadline := time.Now().Add(60 * time.Second); !strings.Contains(databases(t, c), "app_pme2go_old_"); {
			if time.Now().After(deadline) {
				cmd.Process.Kill()
				cmd.Wait()
				t.Fatalf("the restore never reached its safety backup: %s", databases(t, c))
			}
			time.Sleep(50 * time.Millisecond)
		}
		cmd.Process.Kill()
		cmd.Wait()
		if s := dbState(t, c, "app"); !strings.HasPrefix(s, "allowconn=f") {
			t.Fatalf("killed during its safety backup, yet the database accepts connections: %s", s)
		}
		// The next restore, whatever it restores, puts it right first.
		r := runCLI(t, env, "restore", "--backup", path, "--target-db", "elsewhere")
		if r.code != 0 || !strings.Contains(r.stdout, "interrupted") {
			t.Fatalf("restore after the killed one: %d\n%s%s", r.code, r.stdout, r.stderr)
		}
		c.Exec(t, "postgres", `DROP DATABASE elsewhere`)
		if after := dbState(t, c, "app"); after != before {
			t.Errorf("after recovery:\n %s\nwant\n %s", after, before)
		}
		got, err := pgharness.Checksums(context.Background(), c.ConnString("app"))
		if err != nil {
			t.Fatal(err)
		}
		if d := pgharness.Diff(sums, got); len(d) > 0 {
			t.Errorf("content changed by the killed restore: %v", d)
		}
	})
	if n := len(listed(t, env)); n != 2 {
		t.Errorf("failed restores left backups: %d listed, want 2", n)
	}
}

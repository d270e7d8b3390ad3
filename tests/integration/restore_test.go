package integration

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pme2go/pme2go-backup/tests/pgharness"
)

// TestRestoreOverExistingDatabase: restoring over a database with data needs
// --force, takes a safety backup first, and brings back the backed-up state;
// --dry-run changes nothing; the seed's "--restore-logs true" puts logs back.
func TestRestoreOverExistingDatabase(t *testing.T) {
	c := pgharness.Start(t)
	c.CreateDB(t, "app")
	c.Exec(t, "app", `CREATE TABLE items (id int PRIMARY KEY, name text); INSERT INTO items SELECT g, 'item ' || g FROM generate_series(1, 1000) g`)
	logDir := filepath.Join(t.TempDir(), "applogs")
	os.MkdirAll(logDir, 0o700)
	logFile := filepath.Join(logDir, "app.log")
	os.WriteFile(logFile, []byte("line before backup\n"), 0o600)
	env := cfgEnv(t, c, []string{"app"}, "BACKUP_LOG_PATHS="+logDir)
	path := takeBackup(t, env)
	c.CreateDB(t, "pristine")
	c.Exec(t, "pristine", `CREATE TABLE items (id int PRIMARY KEY, name text); INSERT INTO items SELECT g, 'item ' || g FROM generate_series(1, 1000) g`)

	// The application damages its data afterwards.
	c.Exec(t, "app", `DELETE FROM items WHERE id > 10; UPDATE items SET name = 'oops'`)
	os.Remove(logFile)

	expectFailure(t, runCLI(t, env, "restore", "--backup", path), "holds data", "--force")
	r := runCLI(t, env, "restore", "--backup", path, "--force", "--dry-run")
	if r.code != 0 || !strings.Contains(r.stdout, "Would restore") || !strings.Contains(r.stdout, "safety backup") {
		t.Fatalf("dry run: %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	if n := len(listed(t, env)); n != 1 {
		t.Fatalf("dry run took a backup: %d listed", n)
	}
	r = runCLI(t, env, "restore", "--backup", filepath.Base(path), "--force", "--restore-logs", "true")
	if r.code != 0 {
		t.Fatalf("restore --force: %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	if !strings.Contains(r.stdout, "safety backup:") || len(listed(t, env)) != 2 {
		t.Fatalf("no safety backup taken:\n%s", r.stdout)
	}
	pgharness.CompareDatabases(t, c, "pristine", "app")
	if got, err := os.ReadFile(logFile); err != nil || string(got) != "line before backup\n" {
		t.Fatalf("log not restored: %q %v", got, err)
	}

	// list marks the safety backup as such, in text and in JSON.
	if r := runCLI(t, env, "list"); r.code != 0 || strings.Count(r.stdout, "full (safety)") != 1 {
		t.Fatalf("list does not mark the safety backup:\n%s%s", r.stdout, r.stderr)
	}
	if r := runCLI(t, env, "list", "--json"); !strings.Contains(r.stdout, `"safety": true`) || !strings.Contains(r.stdout, `"trigger": "safety"`) {
		t.Fatalf("list --json does not mark the safety backup:\n%s", r.stdout)
	}

	// The safety backup holds the damaged state: restoring it elsewhere shows it.
	names := listed(t, env)
	r = runCLI(t, env, "restore", "--backup", names[1], "--target-db", "damaged")
	if r.code != 0 {
		t.Fatalf("restore safety backup: %s%s", r.stdout, r.stderr)
	}
	var n int
	if err := c.Conn(t, "damaged").QueryRow(t.Context(), `SELECT count(*) FROM items WHERE name = 'oops'`).Scan(&n); err != nil {
		t.Fatal(err)
	}
	if n != 10 {
		t.Fatalf("safety backup content: %d damaged rows, want 10", n)
	}
}

// TestMultipleDatabasesAndCleanup backs up two databases into one archive,
// restores one of them elsewhere, and checks that cleanup keeps the newest
// full backup whatever its age.
func TestMultipleDatabasesAndCleanup(t *testing.T) {
	c := pgharness.Start(t)
	for _, db := range []string{"one", "two"} {
		c.CreateDB(t, db)
		c.Exec(t, db, `CREATE TABLE x AS SELECT g FROM generate_series(1, 100) g`)
	}
	env := cfgEnv(t, c, []string{"one", "two"})
	path := takeBackup(t, env)
	expectFailure(t, runCLI(t, env, "restore", "--backup", path, "--target-db", "copy"), "exactly one")
	if r := runCLI(t, env, "restore", "--backup", path, "--database", "two", "--target-db", "two_copy"); r.code != 0 {
		t.Fatalf("restore one database: %s%s", r.stdout, r.stderr)
	}
	pgharness.CompareDatabases(t, c, "two", "two_copy")
	newest := takeBackup(t, env)
	env["BACKUP_RETENTION_DAYS"] = "0"
	if r := runCLI(t, env, "cleanup"); r.code != 0 || !strings.Contains(r.stdout, "2 backups kept, 0 removed") {
		t.Fatalf("cleanup with retention 0: %s%s", r.stdout, r.stderr)
	}
	// A retention that deletes: backdate the first backup's manifest past
	// one day; cleanup removes it and keeps the newest full backup, whose
	// age does not matter.
	backdate(t, path, 3*24*time.Hour)
	backdate(t, newest, 2*24*time.Hour)
	env["BACKUP_RETENTION_DAYS"] = "1"
	r := runCLI(t, env, "cleanup")
	if r.code != 0 || !strings.Contains(r.stdout, "removed\t"+filepath.Base(path)) || !strings.Contains(r.stdout, "1 backups kept, 1 removed") {
		t.Fatalf("cleanup with retention 1 day: %s%s", r.stdout, r.stderr)
	}
	if _, err := os.Stat(path); !os.IsNotExist(err) {
		t.Fatalf("removed backup still there: %v", err)
	}
	if _, err := os.Stat(newest); err != nil {
		t.Fatalf("newest full backup removed: %v", err)
	}
}

// backdate moves a backup's recorded time (its sidecar manifest) back by d.
func backdate(t *testing.T, path string, d time.Duration) {
	t.Helper()
	side := path + ".manifest.json"
	b, err := os.ReadFile(side)
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	ts, err := time.Parse(time.RFC3339Nano, m["timestamp"].(string))
	if err != nil {
		t.Fatal(err)
	}
	m["timestamp"] = ts.Add(-d).Format(time.RFC3339Nano)
	out, _ := json.Marshal(m)
	if err := os.WriteFile(side, out, 0o600); err != nil {
		t.Fatal(err)
	}
}

package pgharness

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// recorder is a testing.TB that records Skipf/Fatalf/Errorf instead of
// acting on them, so harness failures can be asserted.
type recorder struct {
	testing.TB
	skipped, fatal bool
	errors         []string
}

func (r *recorder) Helper()                          {}
func (r *recorder) Skipf(format string, args ...any) { r.skipped = true }
func (r *recorder) Fatalf(format string, args ...any) {
	r.fatal = true
	r.errors = append(r.errors, fmt.Sprintf(format, args...))
}
func (r *recorder) Errorf(format string, args ...any) {
	r.errors = append(r.errors, fmt.Sprintf(format, args...))
}

func TestRequireMode(t *testing.T) {
	for _, tc := range []struct {
		env, what string
		want      bool
	}{
		{"", "postgres", false},
		{"all", "postgres", true},
		{"ALL", "pg_dump", true},
		{"pg_dump, postgres", "postgres", true},
		{"pg_dump,postgresx", "postgres", false},
	} {
		t.Setenv(EnvRequire, tc.env)
		if got := requireMode(tc.what); got != tc.want {
			t.Errorf("requireMode(%q) with %s=%q = %v, want %v", tc.what, EnvRequire, tc.env, got, tc.want)
		}
	}
}

func TestRequireSkipsOrFails(t *testing.T) {
	t.Setenv(EnvRequire, "")
	r := &recorder{TB: t}
	Require(r, "postgres", "missing")
	if !r.skipped || r.fatal {
		t.Errorf("env unset: skipped=%v fatal=%v, want skip", r.skipped, r.fatal)
	}
	t.Setenv(EnvRequire, "all")
	r = &recorder{TB: t}
	Require(r, "postgres", "missing")
	if r.skipped || !r.fatal {
		t.Errorf("env=all: skipped=%v fatal=%v, want fatal", r.skipped, r.fatal)
	}
}

func TestDiff(t *testing.T) {
	a := map[string]TableSum{"public.a": {1, "x"}, "public.b": {2, "y"}, "public.c": {3, "z"}}
	b := map[string]TableSum{"public.a": {1, "x"}, "public.b": {2, "Y"}, "public.d": {0, ""}}
	got := Diff(a, b)
	want := []string{"public.b: content hash", "public.c: missing in B", "public.d: missing in A"}
	if len(got) != len(want) {
		t.Fatalf("Diff = %q, want %d lines", got, len(want))
	}
	for i := range want {
		if !strings.HasPrefix(got[i], want[i]) {
			t.Errorf("Diff[%d] = %q, want prefix %q", i, got[i], want[i])
		}
	}
}

func TestClusterRoundTrip(t *testing.T) {
	pgDump, pgRestore := LookTool(t, "pg_dump"), LookTool(t, "pg_restore")
	t0 := time.Now()
	c := Start(t)
	t.Logf("cluster start: %v (port %d, dir %s)", time.Since(t0).Round(time.Millisecond), c.Port, c.DataDir)

	c.CreateDB(t, "src")
	t0 = time.Now()
	LoadAwkward(t, c, "src")
	t.Logf("LoadAwkward: %v", time.Since(t0).Round(time.Millisecond))

	dumpDir := filepath.Join(t.TempDir(), "dump")
	run := func(name string, args ...string) {
		t.Helper()
		cmd := exec.Command(name, args...)
		cmd.Env = append(os.Environ(), c.Env("src")...)
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("%s: %v\n%s", name, err, out)
		}
	}
	t0 = time.Now()
	run(pgDump, "-Fd", "-j", "2", "-f", dumpDir, "-d", c.ConnString("src"))
	c.CreateDB(t, "dst")
	run(pgRestore, "-j", "2", "--exit-on-error", "-d", c.ConnString("dst"), dumpDir)
	t.Logf("pg_dump+pg_restore: %v", time.Since(t0).Round(time.Millisecond))

	t0 = time.Now()
	n := CompareDatabases(t, c, "src", "dst")
	t.Logf("CompareDatabases: %d relations in %v", n, time.Since(t0).Round(time.Millisecond))
	if n < 20 {
		t.Errorf("compared only %d relations", n)
	}

	c.Exec(t, "dst", `UPDATE "Sales Ω"."Kunden Übersicht" SET "Név" = 'changed' WHERE "ID" = 1`)
	ctx := context.Background()
	a, err := Checksums(ctx, c.ConnString("src"))
	if err != nil {
		t.Fatal(err)
	}
	b, err := Checksums(ctx, c.ConnString("dst"))
	if err != nil {
		t.Fatal(err)
	}
	want := `"Sales Ω"."Kunden Übersicht"`
	if d := Diff(a, b); len(d) != 1 || !strings.HasPrefix(d[0], want+": content hash differs") {
		t.Errorf("Diff after update = %q, want exactly %s", d, want)
	}
	r := &recorder{TB: t}
	CompareDatabases(r, c, "src", "dst")
	if len(r.errors) != 1 || !strings.Contains(r.errors[0], want) || r.fatal {
		t.Errorf("CompareDatabases errors = %q, want one mentioning %s", r.errors, want)
	}
}

func TestClusterLifecycle(t *testing.T) {
	c := Start(t, WithPassword("s3cr'et"), WithSetting("work_mem", "'8MB'"))
	ctx := context.Background()
	conn := c.Conn(t, "postgres")
	var wm string
	if err := conn.QueryRow(ctx, "SHOW work_mem").Scan(&wm); err != nil || wm != "8MB" {
		t.Fatalf("work_mem = %q, %v", wm, err)
	}
	tcp := connect(t, c.TCPConnString("postgres", "postgres", "s3cr'et"))
	tcp.Close(ctx)
	if conn, err := pgx.Connect(ctx, c.TCPConnString("postgres", "postgres", "wrong")); err == nil {
		conn.Close(ctx)
		t.Error("TCP login with a wrong password succeeded")
	}

	c.CreateDB(t, "b")
	t0 := time.Now()
	LoadBulk(t, c, "b", 8)
	t.Logf("LoadBulk 8MB: %v", time.Since(t0).Round(time.Millisecond))
	c.Kill(t)
	c.Restart(t)
	sums, err := Checksums(ctx, c.ConnString("b"))
	if err != nil {
		t.Fatal(err)
	}
	if s := sums["bulk.events"]; s.Rows < 10000 {
		t.Errorf("bulk.events = %+v, want many rows", s)
	}
	if tail := c.LogTail(50); !strings.Contains(tail, "database system is ready to accept connections") {
		t.Errorf("LogTail lacks the server's start message:\n%s", tail)
	}
	if b := c.Bin("pg_dump"); b == "" || !filepath.IsAbs(b) {
		t.Errorf("Bin(pg_dump) = %q", b)
	}
}

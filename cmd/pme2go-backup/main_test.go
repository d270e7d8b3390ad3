package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/pme2go/pme2go-backup/engine/errs"
	"github.com/pme2go/pme2go-backup/engine/ops"
)

// run runs the CLI in process and returns stdout, stderr and the exit status.
func run(t *testing.T, args ...string) (string, string, int) {
	t.Helper()
	var out, errb bytes.Buffer
	err := newApp(&out, &errb).RunContext(context.Background(), append([]string{"pme2go-backup"}, args...))
	code := exitCode(&errb, err)
	return out.String(), errb.String(), code
}

func testEnv(t *testing.T) string {
	dir := t.TempDir()
	conf := filepath.Join(dir, "test.conf")
	os.WriteFile(conf, []byte(fmt.Sprintf("BACKUP_DIR=%s\nDB_NAME=app\n", filepath.Join(dir, "backups"))), 0o600)
	return conf
}

func TestUsageErrorsExit2(t *testing.T) {
	conf := testEnv(t)
	for _, args := range [][]string{
		{"no-such-command"},
		{"--config", conf, "list", "--no-such-flag"},
		{"--config", conf, "list", "extra"},
		{"--config", conf, "status", "extra", "args"},
		{"--config", conf, "mark"},
		{"--config", conf, "mark", "a", "b"},
		{"--config", conf, "restore"},
		{"--config", conf, "restore", "--target-time", "x", "--target-lsn", "0/1"},
		{"--config", conf, "restore", "--backup", "b", "surplus"},
		{"--config", conf, "list", "--type", "weekly"},
		{},
	} {
		_, stderr, code := run(t, args...)
		if code != exitUsage {
			t.Errorf("%q: exit %d, want %d\n%s", args, code, exitUsage, stderr)
		}
		if !strings.Contains(stderr, "pme2go-backup: ") {
			t.Errorf("%q: no error message on stderr: %q", args, stderr)
		}
	}
}

func TestConfigAfterCommand(t *testing.T) {
	conf := testEnv(t)
	for _, args := range [][]string{
		{"--config", conf, "list"},
		{"list", "--config", conf},
		{"--config", "/nonexistent/x.conf", "list", "--config", conf},
	} {
		stdout, stderr, code := run(t, args...)
		if code != 0 || !strings.Contains(stdout, "no backups") {
			t.Errorf("%q: exit %d\n%s%s", args, code, stdout, stderr)
		}
	}
	// The command's --config wins; a missing file is an error naming it.
	_, stderr, code := run(t, "--config", conf, "list", "--config", "/nonexistent/y.conf")
	if code != exitFailure || !strings.Contains(stderr, "/nonexistent/y.conf") {
		t.Errorf("missing config after command: exit %d: %s", code, stderr)
	}
}

func TestJSONErrorObject(t *testing.T) {
	conf := testEnv(t)
	stdout, _, code := run(t, "--config", conf, "verify", "--json", "no_such_backup")
	if code != exitFailure {
		t.Fatalf("exit %d", code)
	}
	var e errs.JSON
	if err := json.Unmarshal([]byte(stdout), &e); err != nil {
		t.Fatalf("stdout is not a JSON error object: %v\n%s", err, stdout)
	}
	if e.Error.Code != errs.NotFound || !strings.Contains(e.Error.Message, "no_such_backup") {
		t.Fatalf("error object: %+v", e)
	}
	stdout, _, code = run(t, "--config", conf, "restore", "--json", "--target-lsn", "nope")
	if code != exitUsage || !strings.Contains(stdout, `"code": "USAGE"`) {
		t.Fatalf("restore --json with a bad LSN: exit %d\n%s", code, stdout)
	}
}

func TestExitCodes(t *testing.T) {
	var b bytes.Buffer
	for _, c := range []struct {
		err  error
		want int
	}{
		{nil, exitOK},
		{usageError{"x"}, exitUsage},
		{fmt.Errorf("op: %w", errs.New(errs.Usage, "bad")), exitUsage},
		{fmt.Errorf("op: %w", errs.New(errs.Busy, "backup already running (pid 1)")), exitBusy},
		{errs.New(errs.NotAuthorized, "no"), exitNotAuthorized},
		{differencesError{2}, exitDifferences},
		{errs.New(errs.PgDumpErr, "pg_dump failed"), exitFailure},
		{fmt.Errorf("plain"), exitFailure},
	} {
		if got := exitCode(&b, c.err); got != c.want {
			t.Errorf("exitCode(%v) = %d, want %d", c.err, got, c.want)
		}
	}
}

func TestFixWordedWithFlags(t *testing.T) {
	var b bytes.Buffer
	exitCode(&b, fmt.Errorf("restore failed: %w", errs.New(errs.NeedsForce, "database app holds data").WithFix(errs.ActForce, "")))
	if !strings.Contains(b.String(), "fix: pass --force") {
		t.Fatalf("fix not worded with the flag:\n%s", b.String())
	}
}

func TestListShowsWarningsAndSafety(t *testing.T) {
	var b bytes.Buffer
	printBackups(&b, []ops.Backup{
		{Name: "full_backup_1.tar.xz", Type: "full", Warnings: []string{"wal_level is replica: incremental backups are off"}},
		{Name: "full_backup_2.tar.xz", Type: "full", Safety: true, Trigger: "safety", Warnings: []string{}},
	})
	out := b.String()
	for _, want := range []string{"warning: wal_level is replica", "full (safety)", "full_backup_2.tar.xz"} {
		if !strings.Contains(out, want) {
			t.Errorf("list output lacks %q:\n%s", want, out)
		}
	}
}

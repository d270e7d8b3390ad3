package pitr_test

import (
	"context"
	"errors"
	"strconv"
	"strings"
	"testing"

	"github.com/pme2go/pme2go-backup/engine/apply"
	"github.com/pme2go/pme2go-backup/engine/changeset"
	"github.com/pme2go/pme2go-backup/tests/pgharness"
)

// TestTargets restores to a named mark (inclusive and exclusive), to an
// xid (inclusive and exclusive) and to the latest commit, each compared
// with the source as it was.
func TestTargets(t *testing.T) {
	c := pgharness.Start(t)
	c.CreateDB(t, "app")
	pgharness.LoadAwkward(t, c, "app")
	e := newEnv(t, c, "CAPTURE_DDL=false") // views are refreshed at the end (checked below)
	e.full(t)
	conn := c.Conn(t, "app")
	ctx := context.Background()
	exec := func(sql string) {
		t.Helper()
		if _, err := conn.Exec(ctx, sql); err != nil {
			t.Fatalf("%s: %v", sql, err)
		}
	}
	exec(`UPDATE types.all_types SET c_text = E'changed\ttab\\back\nline', c_json = '{"x": [1,2]}', c_point = '(9,9)' WHERE id = 1`)
	exec(`INSERT INTO types.all_types (id, c_text, c_bytea, c_numeric, c_timestamptz, c_text_arr, c_jsonb)
		VALUES (10, '', '\x005c09', 'NaN', 'infinity', '{"a\\\\b","",NULL}', '{"k": "v\\n"}'), (11, NULL, NULL, NULL, '-infinity', NULL, NULL)`)
	exec(`UPDATE public.toasted SET b = '\xdeadbeef' WHERE id = 1`) // t stays TOASTed and unchanged
	exec(`DELETE FROM public.nopk WHERE ctid = (SELECT ctid FROM public.nopk WHERE a = 1 LIMIT 1)`)
	exec(`UPDATE public.nopk SET c = 2.5 WHERE ctid = (SELECT ctid FROM public.nopk WHERE b = 'twice' LIMIT 1)`)
	before := sums(t, c, "app")
	var markLSN string
	if err := conn.QueryRow(ctx, `SELECT pg_logical_emit_message(true, $1, 'before-damage')::text`, changeset.MarkPrefix).Scan(&markLSN); err != nil {
		t.Fatal(err)
	}
	afterMark := sums(t, c, "app")
	var xid int64
	tx, _ := conn.Begin(ctx)
	tx.Exec(ctx, `DELETE FROM public.orders WHERE id > 500`)
	tx.Exec(ctx, `INSERT INTO public.customers VALUES (1000, 'late')`)
	if err := tx.QueryRow(ctx, `SELECT txid_current()`).Scan(&xid); err != nil {
		t.Fatal(err)
	}
	if err := tx.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	afterXid := sums(t, c, "app")
	exec(`TRUNCATE public.orders, public.customers`)
	latest := sums(t, c, "app")
	e.incremental(t)

	xs := strconv.FormatInt(xid%(1<<32), 10)
	for _, tc := range []struct {
		name string
		spec apply.TargetSpec
		want map[string]pgharness.TableSum
	}{
		{"mark", apply.TargetSpec{Name: "before-damage"}, afterMark},
		{"mark_exclusive", apply.TargetSpec{Name: "before-damage", Exclusive: true}, before},
		{"xid", apply.TargetSpec{Xid: xs}, afterXid},
		{"xid_exclusive", apply.TargetSpec{Xid: xs, Exclusive: true}, afterMark},
		{"latest", apply.TargetSpec{Latest: true}, latest},
	} {
		res, err := e.restoreTo(ctx, mustTarget(t, tc.spec), "r_"+tc.name)
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		sameReplayed(t, tc.name, tc.want, sums(t, c, "r_"+tc.name), res)
		t.Logf("%s: %s; replayed %d transactions, %d rows", tc.name, strings.Join(res.PITR.Describe(), "; "), res.Replay.Applied, res.Replay.Rows)
	}

	// The command line: a dry run prints the plan, a restore by LSN (the
	// LSN pg_logical_emit_message returns is where the mark's commit
	// record starts, so the mark's transaction is included).
	bin := buildCLI(t)
	out, err := e.cli(t, bin, "restore", "--target-name", "before-damage", "--target-exclusive", "--target-db", "r_cli", "--dry-run").CombinedOutput()
	if err != nil || !strings.Contains(string(out), "replay 5 transactions") || !strings.Contains(string(out), "incremental incremental_backup_") {
		t.Fatalf("dry run: %v\n%s", err, out)
	}
	t.Logf("dry run:\n%s", out)
	nothingWritten(t, c)
	// Exit status 5: restored, with named differences (the materialized
	// view refreshed at the end: this chain has no DDL capture).
	out, err = e.cli(t, bin, "restore", "--target-lsn", markLSN, "--target-db", "r_cli").CombinedOutput()
	var ee interface{ ExitCode() int }
	if !errors.As(err, &ee) || ee.ExitCode() != 5 || !strings.Contains(string(out), "replayed 6 transactions") ||
		!strings.Contains(string(out), "materialized view refreshed") {
		t.Fatalf("restore --target-lsn %s: %v\n%s", markLSN, err, out)
	}
	same(t, "cli", withoutMatviews(t, c, "r_cli", before), withoutMatviews(t, c, "r_cli", sums(t, c, "r_cli")))
	out, err = e.cli(t, bin, "restore", "--latest", "--target-time", "2026-01-01T00:00:00Z").CombinedOutput()
	if err == nil || !strings.Contains(string(out), "only one of") {
		t.Fatalf("two targets: %v\n%s", err, out)
	}
}

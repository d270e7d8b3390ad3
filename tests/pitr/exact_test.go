package pitr_test

import (
	"context"
	"errors"
	"os/exec"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/pme2go/pme2go-backup/engine/apply"
	"github.com/pme2go/pme2go-backup/engine/backup"
	"github.com/pme2go/pme2go-backup/engine/capture"
	"github.com/pme2go/pme2go-backup/engine/errs"
	"github.com/pme2go/pme2go-backup/engine/incremental"
	"github.com/pme2go/pme2go-backup/engine/restore"
	"github.com/pme2go/pme2go-backup/tests/pgharness"
)

// schemaOf returns the normalized `pg_dump --schema-only` of db: comments,
// blank lines, SET lines and this program's objects left out.
func schemaOf(t *testing.T, c *pgharness.Cluster, db string) string {
	t.Helper()
	cmd := exec.Command(c.Bin("pg_dump"), "--schema-only", "--no-publications", "--no-subscriptions", "--exclude-schema=pme2go_*", "-d", db)
	cmd.Env = c.Env(db)
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("pg_dump --schema-only %s: %v", db, err)
	}
	var keep []string
	skip := false
	for _, l := range strings.Split(string(out), "\n") {
		switch {
		case strings.HasPrefix(l, "--"), strings.TrimSpace(l) == "", strings.HasPrefix(l, "SET "), strings.HasPrefix(l, "SELECT pg_catalog.set_config"), strings.HasPrefix(l, `\restrict`), strings.HasPrefix(l, `\unrestrict`):
			continue
		case strings.Contains(l, "pme2go"):
			skip = !strings.HasSuffix(strings.TrimSpace(l), ";")
			continue
		case skip:
			skip = !strings.HasSuffix(strings.TrimSpace(l), ";")
			continue
		}
		keep = append(keep, l)
	}
	return strings.Join(keep, "\n")
}

func sameSchema(t *testing.T, what, want, got string) {
	t.Helper()
	if want != got {
		t.Fatalf("%s: restored schema differs from the source:\n--- source\n%s\n--- restored\n%s", what, want, got)
	}
}

func nowText(t *testing.T, c *pgharness.Cluster) string {
	t.Helper()
	var s string
	conn := c.Conn(t, "app")
	defer conn.Close(context.Background())
	if err := conn.QueryRow(context.Background(), `SELECT clock_timestamp()::text`).Scan(&s); err != nil {
		t.Fatal(err)
	}
	return s
}

// refusedAs checks that err is a TargetError with code.
func refusedAs(t *testing.T, err error, code errs.Code) *apply.TargetError {
	t.Helper()
	var te *apply.TargetError
	if !errors.As(err, &te) {
		t.Fatalf("want a refusal %s, got %v", code, err)
	}
	if te.Code != code || te.Fix() == "" {
		t.Fatalf("refusal %q: code %s, fix %q; want code %s with a fix", te, te.Code, te.Fix(), code)
	}
	if errs.CodeOf(err) != code || !errors.Is(err, &errs.Error{Code: code}) {
		t.Fatalf("refusal %q does not carry code %s for the front door (%s)", te, code, errs.CodeOf(err))
	}
	t.Logf("refused (%s): %v", te.Code, te)
	return te
}

// TestCatalogChangeEndsChain: without DDL capture, schema changes that no
// later row change reveals (a column added with a default, an enum label
// added and used) end the chain at the last point the catalog was proven
// unchanged; targets past it are refused with the reason and the fix, and
// --latest restores the state at that point and reports the gap.
func TestCatalogChangeEndsChain(t *testing.T) {
	c := pgharness.Start(t)
	c.CreateDB(t, "app")
	c.Exec(t, "app", `CREATE TYPE mood AS ENUM ('sad', 'ok');
		CREATE TABLE t (id serial PRIMARY KEY, v text);
		CREATE TABLE m (id int PRIMARY KEY, x mood);
		INSERT INTO m VALUES (0, 'ok');`)
	e := newEnv(t, c, "CAPTURE_DDL=false")
	ctx := context.Background()

	t.Run("add column with default", func(t *testing.T) {
		e.full(t)
		c.Exec(t, "app", `INSERT INTO t (v) SELECT 'a' || g FROM generate_series(1, 10) g`)
		e.incremental(t) // proves the catalog unchanged here
		want, wantSchema := sums(t, c, "app"), schemaOf(t, c, "app")
		time.Sleep(20 * time.Millisecond)
		c.Exec(t, "app", `ALTER TABLE t ADD COLUMN status text NOT NULL DEFAULT 'new'`)
		// A transaction past the change (in the change set: its table did
		// not change), targeted by xid, is refused too.
		var xid string
		conn := c.Conn(t, "app")
		if err := conn.QueryRow(ctx, `INSERT INTO m VALUES (1, 'sad') RETURNING (txid_current() % 4294967296)::text`).Scan(&xid); err != nil {
			t.Fatal(err)
		}
		conn.Close(ctx)
		after := nowText(t, c)
		_, err := incremental.Take(ctx, e.cfg, incremental.Options{})
		if !errors.Is(err, capture.ErrChainEnded) {
			t.Fatalf("incremental after the schema change: %v, want the chain ended", err)
		}
		_, err = e.restoreTo(ctx, mustTarget(t, apply.TargetSpec{Time: after}), "r_after")
		te := refusedAs(t, err, apply.CodeChainEnded)
		if !strings.Contains(te.Message, "relation public.t changed") {
			t.Fatalf("refusal does not name the changed table: %v", te)
		}
		nothingWritten(t, c)
		_, err = e.restoreTo(ctx, mustTarget(t, apply.TargetSpec{Xid: xid}), "r_after")
		refusedAs(t, err, apply.CodeChainEnded)
		nothingWritten(t, c)
		res, err := e.restoreTo(ctx, apply.Target{Kind: apply.Latest}, "r_latest1")
		if err != nil {
			t.Fatal(err)
		}
		same(t, "latest before the change", want, sums(t, c, "r_latest1"))
		sameSchema(t, "latest before the change", wantSchema, schemaOf(t, c, "r_latest1"))
		if res.PITR.Gap == nil || !strings.Contains(res.PITR.Gap.Reason, "schema changed") {
			t.Fatalf("--latest reports no gap: %+v", res.PITR.Gap)
		}
		t.Logf("latest: %s", strings.Join(res.PITR.Describe(), "; "))
	})

	t.Run("enum value added and used", func(t *testing.T) {
		e.full(t) // a newer full backup wins over the ended chain
		want, wantSchema := sums(t, c, "app"), schemaOf(t, c, "app")
		res, err := e.restoreTo(ctx, apply.Target{Kind: apply.Latest}, "r_latest2")
		if err != nil {
			t.Fatal(err)
		}
		same(t, "latest = newer full backup", want, sums(t, c, "r_latest2"))
		sameSchema(t, "latest = newer full backup", wantSchema, schemaOf(t, c, "r_latest2"))
		c.Exec(t, "app", `ALTER TYPE mood ADD VALUE 'happy'`)
		c.Exec(t, "app", `INSERT INTO m VALUES (2, 'happy')`)
		after := nowText(t, c)
		_, err = incremental.Take(ctx, e.cfg, incremental.Options{})
		if !errors.Is(err, capture.ErrChainEnded) {
			t.Fatalf("incremental after ALTER TYPE: %v, want the chain ended", err)
		}
		_, err = e.restoreTo(ctx, mustTarget(t, apply.TargetSpec{Time: after}), "r_after")
		te := refusedAs(t, err, apply.CodeChainEnded)
		if !strings.Contains(te.Message, "type public.mood changed") {
			t.Fatalf("refusal does not name the enum: %v", te)
		}
		res, err = e.restoreTo(ctx, apply.Target{Kind: apply.Latest}, "r_latest3")
		if err != nil {
			t.Fatal(err)
		}
		same(t, "latest before ALTER TYPE", want, sums(t, c, "r_latest3"))
		if res.PITR.Gap == nil {
			t.Fatal("--latest reports no gap")
		}
		// The refusal of an LSN past the end, too.
		_, err = e.restoreTo(ctx, apply.Target{Kind: apply.LSN, LSN: lsnOf(t, c)}, "r_after")
		refusedAs(t, err, apply.CodeChainEnded)
		nothingWritten(t, c)
	})

	t.Run("newer full backup without a chain wins", func(t *testing.T) {
		// A full backup that could start no chain is still the newest
		// state a backup holds: --latest restores it.
		noChain := func(context.Context, string) (string, map[string]string, func(bool), error) {
			return "", map[string]string{"warning": "no chain in this test"}, func(bool) {}, nil
		}
		if _, err := backup.Full(ctx, e.cfg, backup.Options{Snapshot: noChain}); err != nil {
			t.Fatal(err)
		}
		want, wantSchema := sums(t, c, "app"), schemaOf(t, c, "app")
		res, err := e.restoreTo(ctx, apply.Target{Kind: apply.Latest}, "r_latest4")
		if err != nil {
			t.Fatal(err)
		}
		same(t, "latest = full backup without a chain", want, sums(t, c, "r_latest4"))
		sameSchema(t, "latest = full backup without a chain", wantSchema, schemaOf(t, c, "r_latest4"))
		if res.PITR.Gap != nil || res.PITR.ChainID != "" {
			t.Fatalf("plan %s, gap %+v", res.PITR.ChainID, res.PITR.Gap)
		}
	})
}

var lsnRE = regexp.MustCompile(`^[0-9A-F]+/[0-9A-F]+$`)

func lsnOf(t *testing.T, c *pgharness.Cluster) uint64 {
	t.Helper()
	conn := c.Conn(t, "app")
	defer conn.Close(context.Background())
	var s string
	conn.QueryRow(context.Background(), `SELECT pg_current_wal_lsn()::text`).Scan(&s)
	if !lsnRE.MatchString(s) {
		t.Fatalf("bad LSN %q", s)
	}
	l, err := apply.ParseLSN(s)
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// TestRecoveryWindowAndLargeObjects: a quiet database whose last commit
// was at T0 and whose incremental ran at T0+N is restorable to T0+N/2
// (equal to the source), a target after the window is refused, and the
// dry run shows the window. Large objects created, changed and unlinked
// after the full backup come back with --latest, equal to the source.
func TestRecoveryWindowAndLargeObjects(t *testing.T) {
	c := pgharness.Start(t)
	c.CreateDB(t, "app")
	c.Exec(t, "app", `CREATE TABLE docs (id int PRIMARY KEY, lo oid);
		INSERT INTO docs VALUES (1, lo_from_bytea(0, 'kept')), (2, lo_from_bytea(0, 'to change')), (3, lo_from_bytea(0, 'to unlink'))`)
	e := newEnv(t, c)
	ctx := context.Background()
	e.full(t)
	c.Exec(t, "app", `INSERT INTO docs VALUES (4, lo_from_bytea(0, decode(repeat('ab', 100000), 'hex')))`)
	c.Exec(t, "app", `SELECT lo_put(lo, 3, 'CHANGED') FROM docs WHERE id = 2`)
	c.Exec(t, "app", `SELECT lo_unlink(lo) FROM docs WHERE id = 3; DELETE FROM docs WHERE id = 3`)
	want := sums(t, c, "app")
	if _, ok := want[pgharness.LargeObjectsKey]; !ok {
		t.Fatal("checksums do not cover large objects")
	}
	var t0 time.Time
	conn := c.Conn(t, "app")
	conn.QueryRow(ctx, `SELECT clock_timestamp()`).Scan(&t0)
	const n = 4 * time.Second
	time.Sleep(n)
	e.incremental(t)
	time.Sleep(1500 * time.Millisecond)
	var late time.Time
	conn.QueryRow(ctx, `SELECT clock_timestamp()`).Scan(&late)

	t.Run("inside the window", func(t *testing.T) {
		mid := apply.Target{Kind: apply.Time, Time: t0.Add(n / 2)}
		res, err := e.restoreTo(ctx, mid, "r_mid", func(o *restore.Options) { o.DryRun = true })
		if err != nil {
			t.Fatalf("dry run at T0+N/2: %v", err)
		}
		if w := res.PITR.Window; w == nil || w.To.Before(t0.Add(n)) {
			t.Fatalf("recovery window %+v does not reach the incremental at T0+N", w)
		}
		if d := strings.Join(res.PITR.Describe(), "\n"); !strings.Contains(d, "recovery window") {
			t.Fatalf("dry run does not show the window:\n%s", d)
		}
		if _, err := e.restoreTo(ctx, mid, "r_mid"); err != nil {
			t.Fatalf("restore to T0+N/2: %v", err)
		}
		same(t, "T0+N/2", want, sums(t, c, "r_mid"))
	})
	t.Run("after the window", func(t *testing.T) {
		_, err := e.restoreTo(ctx, apply.Target{Kind: apply.Time, Time: late}, "r_late")
		refusedAs(t, err, apply.CodeTargetPastWindow)
		nothingWritten(t, c)
	})
	t.Run("shown by list, status and restore --dry-run", func(t *testing.T) {
		bin := buildCLI(t)
		mid := t0.Add(n / 2).UTC().Format(time.RFC3339Nano)
		for _, args := range [][]string{
			{"restore", "--dry-run", "--target-time", mid, "--target-db", "r_cli"},
			{"list"}, {"status"},
		} {
			out, err := e.cli(t, bin, args...).CombinedOutput()
			if err != nil {
				t.Fatalf("%v: %v\n%s", args, err, out)
			}
			want := map[string]string{"restore": "recovery window", "list": "restorable up to", "status": "complete up to"}[args[0]]
			if !strings.Contains(string(out), want) {
				t.Fatalf("%v does not show %q:\n%s", args, want, out)
			}
		}
		out, err := e.cli(t, bin, "restore", "--dry-run", "--json", "--target-time", mid, "--target-db", "r_cli").Output()
		if err != nil || !strings.Contains(string(out), `"recoveryWindow"`) {
			t.Fatalf("restore --dry-run --json: %v\n%s", err, out)
		}
		out, _ = e.cli(t, bin, "restore", "--json", "--target-time", late.UTC().Format(time.RFC3339Nano), "--target-db", "r_late").Output()
		if !strings.Contains(string(out), `"TARGET_UNREACHABLE"`) {
			t.Fatalf("refusal past the window in --json lacks its code:\n%s", out)
		}
	})
	t.Run("large objects", func(t *testing.T) {
		res, err := e.restoreTo(ctx, apply.Target{Kind: apply.Latest}, "r_lo")
		if err != nil {
			t.Fatal(err)
		}
		same(t, "large objects at --latest", want, sums(t, c, "r_lo"))
		lo := res.PITR.LargeObjects
		if lo == nil || lo.Count != 3 || lo.Removed != 1 || lo.Exact || !strings.Contains(lo.Note, "not per transaction") {
			t.Fatalf("large objects report %+v", lo)
		}
		t.Logf("%s", strings.Join(res.PITR.Describe(), "; "))
	})
}

// TestUncapturedDDLEndsChain: with DDL capture, a schema change the event
// trigger cannot see (run with session_replication_role = replica) is
// still caught by the catalog comparison and ends the chain; a captured
// one does not.
func TestUncapturedDDLEndsChain(t *testing.T) {
	c := pgharness.Start(t)
	c.CreateDB(t, "app")
	c.Exec(t, "app", `CREATE TABLE t (id serial PRIMARY KEY, v text)`)
	e := newEnv(t, c, "CAPTURE_DDL=true")
	ctx := context.Background()
	e.full(t)
	c.Exec(t, "app", `ALTER TABLE t ADD COLUMN w int`)
	c.Exec(t, "app", `INSERT INTO t (v, w) VALUES ('captured', 1)`)
	e.incremental(t) // captured DDL: the chain goes on
	want := sums(t, c, "app")
	c.Exec(t, "app", `SET session_replication_role = replica; ALTER TABLE t ADD COLUMN z int DEFAULT 5`)
	_, err := incremental.Take(ctx, e.cfg, incremental.Options{})
	if !errors.Is(err, capture.ErrChainEnded) || !strings.Contains(err.Error(), "did not capture") {
		t.Fatalf("incremental after uncaptured DDL: %v, want the chain ended", err)
	}
	res, err := e.restoreTo(ctx, apply.Target{Kind: apply.Latest}, "r_uncaptured")
	if err != nil {
		t.Fatal(err)
	}
	same(t, "latest before the uncaptured DDL", want, sums(t, c, "r_uncaptured"))
	if res.PITR.Gap == nil {
		t.Fatal("--latest reports no gap")
	}
}

// TestLargeObjectsWhileStreaming: under streaming capture, the large
// objects' state is recorded when it changes; restores by time between
// the changes get the state at their target (exact), and --latest the last.
func TestLargeObjectsWhileStreaming(t *testing.T) {
	c := pgharness.Start(t)
	c.CreateDB(t, "app")
	c.Exec(t, "app", `CREATE TABLE docs (id int PRIMARY KEY, lo oid); INSERT INTO docs VALUES (1, lo_from_bytea(0, 'first'))`)
	e := newEnv(t, c)
	ctx := context.Background()
	e.full(t)
	cctx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() {
		done <- capture.Follow(cctx, e.cfg, "app", capture.Options{HealthInterval: 200 * time.Millisecond, LargeObjectInterval: 200 * time.Millisecond})
	}()
	conn := c.Conn(t, "app")
	defer conn.Close(ctx)
	time.Sleep(time.Second)
	c.Exec(t, "app", `INSERT INTO docs VALUES (2, lo_from_bytea(0, 'created while streaming'))`)
	time.Sleep(time.Second)
	a := record(t, c, conn, "app")
	time.Sleep(time.Second)
	c.Exec(t, "app", `SELECT lo_put(lo, 0, 'CHANGED') FROM docs WHERE id = 2`)
	c.Exec(t, "app", `SELECT lo_unlink(lo) FROM docs WHERE id = 1; UPDATE docs SET lo = NULL WHERE id = 1`)
	time.Sleep(time.Second)
	b := record(t, c, conn, "app")
	time.Sleep(time.Second)
	e.incremental(t)
	stop()
	if err := <-done; err != nil {
		t.Fatalf("capture: %v", err)
	}
	for i, p := range []point{a, b} {
		db := "r_lostream" + string(rune('a'+i))
		res, err := e.restoreTo(ctx, mustTarget(t, apply.TargetSpec{Time: p.time}), db)
		if err != nil {
			t.Fatal(err)
		}
		same(t, db, p.sums, sums(t, c, db))
		if lo := res.PITR.LargeObjects; lo == nil || !lo.Exact {
			t.Fatalf("%s: large objects report %+v", db, lo)
		}
		t.Logf("%s: %s", db, res.PITR.LargeObjects.Note)
	}
}

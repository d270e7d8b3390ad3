package pitr_test

import (
	"context"
	"testing"

	"github.com/pme2go/pme2go-backup/engine/apply"
	"github.com/pme2go/pme2go-backup/engine/incremental"
	"github.com/pme2go/pme2go-backup/tests/pgharness"
)

// TestCapturedDDL: with CAPTURE_DDL=true, ALTER TABLE and CREATE TABLE
// travel in the change set and are replayed in order with the changes
// around them.
func TestCapturedDDL(t *testing.T) {
	c := pgharness.Start(t)
	c.CreateDB(t, "app")
	c.Exec(t, "app", `CREATE TABLE t (id serial PRIMARY KEY, v text)`)
	e := newEnv(t, c, "CAPTURE_DDL=true")
	e.full(t)
	c.Exec(t, "app", `INSERT INTO t (v) SELECT 'a' || g FROM generate_series(1, 100) g`)
	c.Exec(t, "app", `ALTER TABLE t ADD COLUMN w int DEFAULT 7`)
	c.Exec(t, "app", `INSERT INTO t (v, w) VALUES ('b', 1); UPDATE t SET w = id WHERE id % 3 = 0; DELETE FROM t WHERE id % 10 = 0`)
	// One statement per query string: captured DDL is the whole string.
	c.Exec(t, "app", `CREATE TABLE t2 (id int PRIMARY KEY, note text)`)
	c.Exec(t, "app", `INSERT INTO t2 VALUES (1, 'new table')`)
	c.Exec(t, "app", `UPDATE t2 SET note = 'changed'`)
	want := sums(t, c, "app")
	e.incremental(t)
	res, err := e.restoreTo(context.Background(), apply.Target{Kind: apply.Latest}, "r_ddl")
	if err != nil {
		t.Fatal(err)
	}
	same(t, "captured DDL", want, sums(t, c, "r_ddl"))
	t.Logf("replayed %d transactions with captured DDL", res.Replay.Applied)
}

// TestSchemaChangeEndsChain: without DDL capture a schema change ends the
// chain at the last point the catalog was proven unchanged; a restore up
// to it works, a target after the change is refused with the reason.
func TestSchemaChangeEndsChain(t *testing.T) {
	c := pgharness.Start(t)
	c.CreateDB(t, "app")
	c.Exec(t, "app", `CREATE TABLE t (id serial PRIMARY KEY, v text)`)
	e := newEnv(t, c, "CAPTURE_DDL=false")
	e.full(t)
	c.Exec(t, "app", `INSERT INTO t (v) SELECT 'a' || g FROM generate_series(1, 50) g`)
	want := sums(t, c, "app")
	// Without DDL capture the chain ends at the last point where the
	// catalog was proven unchanged: this incremental.
	e.incremental(t)
	c.Exec(t, "app", `ALTER TABLE t ADD COLUMN w int`)
	c.Exec(t, "app", `INSERT INTO t (v, w) VALUES ('after', 1)`)
	// A time after that commit, read from the server's own clock.
	var after string
	if err := c.Conn(t, "app").QueryRow(context.Background(), `SELECT to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"')`).Scan(&after); err != nil {
		t.Fatal(err)
	}
	res, err := incremental.Take(context.Background(), e.cfg, incremental.Options{})
	if len(res) == 0 {
		t.Fatalf("no incremental archived the ended chain: %v", err)
	}
	t.Logf("incremental: %v", err)
	ctx := context.Background()
	_, err = e.restoreTo(ctx, mustTarget(t, apply.TargetSpec{Time: after}), "r_after")
	expectRefusal(t, err, "chain ended before the target", "schema change")
	nothingWritten(t, c)
	if _, err := e.restoreTo(ctx, apply.Target{Kind: apply.Latest}, "r_before"); err != nil {
		t.Fatal(err)
	}
	same(t, "up to the schema change", want, sums(t, c, "r_before"))
}

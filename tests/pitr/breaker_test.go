package pitr_test

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/pme2go/pme2go-backup/engine/apply"
	"github.com/pme2go/pme2go-backup/engine/capture"
	"github.com/pme2go/pme2go-backup/engine/incremental"
	"github.com/pme2go/pme2go-backup/tests/pgharness"
)

// TestChainEdgeCases: what would silently leave the change stream during a
// chain with DDL capture. A partition detached from
// its partitioned table is a table of its own and must be published (its
// later changes are restored); an unlogged table set LOGGED while holding
// rows (written when no change was decoded) ends the chain with the reason,
// and --latest restores what was exact before it; DDL a role runs from a
// function of its own schema named like the program's (pme2go_<8 hex>) is
// not taken for the program's machinery: it ends the chain as any DDL run
// inside a function does.
func TestChainEdgeCases(t *testing.T) {
	c := pgharness.Start(t)
	c.CreateDB(t, "app")
	c.Exec(t, "app", `CREATE TABLE meas (id int, d date, v int, PRIMARY KEY (id, d)) PARTITION BY RANGE (d);
		CREATE TABLE meas_2025 PARTITION OF meas FOR VALUES FROM ('2025-01-01') TO ('2026-01-01');
		CREATE TABLE meas_2026 PARTITION OF meas FOR VALUES FROM ('2026-01-01') TO ('2027-01-01');
		INSERT INTO meas VALUES (1, '2025-05-01', 1), (2, '2026-05-01', 2);
		CREATE TABLE t (id int PRIMARY KEY, v text); INSERT INTO t VALUES (1, 'a')`)
	e := newEnv(t, c, "CAPTURE_DDL=true")
	ctx := context.Background()

	t.Run("detached partition", func(t *testing.T) {
		e.full(t)
		c.Exec(t, "app", `ALTER TABLE meas DETACH PARTITION meas_2025`)
		c.Exec(t, "app", `INSERT INTO meas_2025 VALUES (3, '2025-06-01', 3); UPDATE meas_2025 SET v = 10 WHERE id = 1`)
		c.Exec(t, "app", `INSERT INTO meas VALUES (4, '2026-06-01', 4)`)
		want := sums(t, c, "app")
		e.incremental(t)
		if _, err := e.restoreTo(ctx, apply.Target{Kind: apply.Latest}, "r_detached"); err != nil {
			t.Fatal(err)
		}
		same(t, "after DETACH PARTITION", want, sums(t, c, "r_detached"))
	})

	t.Run("unlogged set logged", func(t *testing.T) {
		e.full(t)
		// Empty when set LOGGED: nothing is lost, the chain goes on.
		c.Exec(t, "app", `CREATE UNLOGGED TABLE staging0 (id int PRIMARY KEY); ALTER TABLE staging0 SET LOGGED; INSERT INTO staging0 VALUES (1)`)
		c.Exec(t, "app", `INSERT INTO t VALUES (2, 'b')`)
		want := sums(t, c, "app")
		e.incremental(t)
		if _, err := e.restoreTo(ctx, apply.Target{Kind: apply.Latest}, "r_logged_empty"); err != nil {
			t.Fatal(err)
		}
		same(t, "after an empty table set LOGGED", want, sums(t, c, "r_logged_empty"))

		c.Exec(t, "app", `CREATE UNLOGGED TABLE staging (id int PRIMARY KEY, v text); INSERT INTO staging VALUES (1, 'a'), (2, 'b')`)
		c.Exec(t, "app", `ALTER TABLE staging SET LOGGED`)
		c.Exec(t, "app", `INSERT INTO staging VALUES (3, 'c')`)
		_, err := incremental.Take(ctx, e.cfg, incremental.Options{})
		if !errors.Is(err, capture.ErrChainEnded) || !strings.Contains(err.Error(), "set LOGGED") {
			t.Fatalf("incremental after SET LOGGED of a table with rows: %v, want the chain ended", err)
		}
		res, err := e.restoreTo(ctx, apply.Target{Kind: apply.Latest}, "r_logged")
		if err != nil {
			t.Fatal(err)
		}
		if res.PITR == nil || res.PITR.Gap == nil {
			t.Fatal("--latest reports no gap after the chain ended")
		}
		var n int
		c.Conn(t, "r_logged").QueryRow(ctx, `SELECT count(*) FROM pg_class WHERE relname = 'staging' AND relpersistence = 'p'`).Scan(&n)
		if n != 0 {
			t.Fatal("the restore holds the logged table staging, which no change set can fill")
		}
	})

	t.Run("ddl hidden in a schema named like ours", func(t *testing.T) {
		c.Exec(t, "app", `CREATE ROLE mallory LOGIN; GRANT CREATE ON DATABASE app TO mallory; GRANT CREATE ON SCHEMA public TO mallory`)
		c.Exec(t, "app", `SET ROLE mallory; CREATE TABLE mt (id int PRIMARY KEY); CREATE SCHEMA pme2go_deadbeef;
			CREATE FUNCTION pme2go_deadbeef.f() RETURNS void LANGUAGE plpgsql AS $$ BEGIN EXECUTE 'ALTER TABLE public.mt ADD COLUMN hidden int DEFAULT 7'; END $$`)
		e.full(t)
		c.Exec(t, "app", `CREATE TABLE other (id int PRIMARY KEY)`) // captured DDL, which must not cover what follows
		c.Exec(t, "app", `SET ROLE mallory; SELECT pme2go_deadbeef.f(); INSERT INTO mt VALUES (1, 8)`)
		_, err := incremental.Take(ctx, e.cfg, incremental.Options{})
		if !errors.Is(err, capture.ErrChainEnded) || !strings.Contains(err.Error(), "inside a function") {
			t.Fatalf("incremental after DDL run from a function in schema pme2go_deadbeef: %v, want the chain ended", err)
		}
	})
}

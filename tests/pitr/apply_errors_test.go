package pitr_test

import (
	"context"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pme2go/pme2go-backup/engine/apply"
	"github.com/pme2go/pme2go-backup/engine/lsn"
	"github.com/pme2go/pme2go-backup/engine/restore"
	"github.com/pme2go/pme2go-backup/tests/pgharness"
)

// TestReplayErrorPaths: replay into a target whose data differs from the
// source fails on the statement that affects other than one row; that
// source transaction is rolled back as a whole, the replication origin is
// not advanced past the last transaction applied, and a resumed replay
// (after the difference is repaired) applies the rest exactly once.
func TestReplayErrorPaths(t *testing.T) {
	c := pgharness.Start(t)
	c.CreateDB(t, "app")
	c.Exec(t, "app", `CREATE TABLE t (id int PRIMARY KEY, v text); INSERT INTO t SELECT g, 'v' || g FROM generate_series(1, 3) g`)
	e := newEnv(t, c)
	full := e.full(t)
	src := c.Conn(t, "app")
	c.Exec(t, "app", `INSERT INTO t VALUES (10, 'first')`) // T1
	var beforeT2 string
	if err := src.QueryRow(context.Background(), `SELECT pg_current_wal_insert_lsn()::text`).Scan(&beforeT2); err != nil {
		t.Fatal(err)
	}
	c.Exec(t, "app", `BEGIN; INSERT INTO t VALUES (11, 'second'); UPDATE t SET v = 'changed' WHERE id = 2; COMMIT`) // T2
	c.Exec(t, "app", `INSERT INTO t VALUES (12, 'third')`)                                                          // T3
	e.incremental(t)
	want := sums(t, c, "app")

	// The target: the full backup restored, then changed outside the chain.
	ctx := context.Background()
	if _, err := restore.Run(ctx, e.cfg, restore.Options{Backup: full.Path, TargetDB: "r", NoSafetyBackup: true}); err != nil {
		t.Fatalf("restore full backup: %v", err)
	}
	c.Exec(t, "r", `DELETE FROM t WHERE id = 2`)
	plan, err := apply.Build(ctx, e.cfg.BackupDir, "app", apply.Target{Kind: apply.Latest}, filepath.Join(t.TempDir(), "work"))
	if err != nil {
		t.Fatal(err)
	}
	if plan.TxCount != 3 {
		t.Fatalf("plan has %d transactions, want 3", plan.TxCount)
	}
	conn := c.Conn(t, "r")
	st, err := apply.Replay(ctx, conn, plan, apply.ReplayOptions{})
	if err == nil || !strings.Contains(err.Error(), "affected 0 rows, want exactly 1") {
		t.Fatalf("replay over changed data: want the row-count error, got %v (%+v)", err, st)
	}
	conn.Close(ctx)
	conn = c.Conn(t, "r")
	ids := func() []int {
		rows, _ := conn.Query(ctx, `SELECT id FROM t ORDER BY id`)
		out, err := pgx.CollectRows(rows, pgx.RowTo[int])
		if err != nil {
			t.Fatal(err)
		}
		return out
	}
	// T1 applied; T2 rolled back whole (its insert of 11 too); T3 not applied.
	if got := ids(); len(got) != 3 || got[0] != 1 || got[1] != 3 || got[2] != 10 {
		t.Fatalf("after the failed replay the target holds ids %v, want [1 3 10]", got)
	}
	var remote string
	if err := conn.QueryRow(ctx, `SELECT coalesce(pg_replication_origin_progress($1, true), '0/0')::text`,
		apply.OriginName(dbOID(t, conn))).Scan(&remote); err != nil {
		t.Fatalf("origin progress: %v", err)
	}
	r, b := lsn.MustParse(remote), lsn.MustParse(beforeT2)
	if r == 0 || r >= b {
		t.Fatalf("origin at %s after the failure; want T1's commit, before %s (T2)", r, b)
	}

	// Repair the difference and resume: T2 and T3 are applied once.
	c.Exec(t, "r", `INSERT INTO t VALUES (2, 'v2')`)
	st, err = apply.Replay(ctx, conn, plan, apply.ReplayOptions{Resume: true})
	if err != nil {
		t.Fatalf("resume: %v", err)
	}
	if st.Applied != 2 || lsn.LSN(st.ResumedAt) != r {
		t.Fatalf("resume applied %d transactions from %s, want 2 from %s", st.Applied, lsn.LSN(st.ResumedAt), r)
	}
	same(t, "resumed replay", want, sums(t, c, "r"))
}

func dbOID(t *testing.T, conn *pgx.Conn) uint32 {
	t.Helper()
	var oid uint32
	if err := conn.QueryRow(context.Background(), `SELECT oid FROM pg_database WHERE datname = current_database()`).Scan(&oid); err != nil {
		t.Fatal(err)
	}
	return oid
}

// TestTimeTargetChoosesFullBackup: with several full backups (each starting
// a chain), a time target is restored from the newest full backup taken
// before it, and the result equals the source at that time.
func TestTimeTargetChoosesFullBackup(t *testing.T) {
	c := pgharness.Start(t)
	c.CreateDB(t, "app")
	c.Exec(t, "app", `CREATE TABLE t (id serial PRIMARY KEY, v text)`)
	e := newEnv(t, c)
	probe := c.Conn(t, "app")
	var fulls []string
	var points []point
	for i := 0; i < 3; i++ {
		fulls = append(fulls, filepath.Base(e.full(t).Path))
		c.Exec(t, "app", `INSERT INTO t (v) SELECT 'round' || g FROM generate_series(1, 20) g`)
		c.Exec(t, "app", `UPDATE t SET v = v || '+' WHERE id % 3 = 0`)
		points = append(points, record(t, c, probe, "app"))
		time.Sleep(10 * time.Millisecond) // distinct commit times; not synchronisation
		c.Exec(t, "app", `DELETE FROM t WHERE id % 5 = 0`)
	}
	e.incremental(t)
	ctx := context.Background()
	for i, p := range points {
		target := mustTarget(t, apply.TargetSpec{Time: p.time})
		plan, err := apply.MakePlan(e.cfg.BackupDir, "app", target)
		if err != nil {
			t.Fatalf("point %d: %v", i, err)
		}
		if plan.Full.Name != fulls[i] {
			t.Fatalf("point %d (%s): plan uses full backup %s, want %s", i, p.time, plan.Full.Name, fulls[i])
		}
		db := "r_point" + string(rune('a'+i))
		if _, err := e.restoreTo(ctx, target, db); err != nil {
			t.Fatalf("point %d: %v", i, err)
		}
		same(t, db, p.sums, sums(t, c, db))
	}
}

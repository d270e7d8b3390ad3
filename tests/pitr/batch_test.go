package pitr_test

import (
	"context"
	"fmt"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/pme2go/pme2go-backup/engine/apply"
	"github.com/pme2go/pme2go-backup/engine/errs"
	"github.com/pme2go/pme2go-backup/engine/progress"
	"github.com/pme2go/pme2go-backup/engine/restore"
	"github.com/pme2go/pme2go-backup/tests/pgharness"
)

// batchSchema: tables whose changes exercise the boundaries of grouped
// statements in merged batches (see engine/apply/group.go).
const batchSchema = `
CREATE TABLE kv (id int PRIMARY KEY, a int, b text);
CREATE TABLE big (id int PRIMARY KEY, n int, doc text);
ALTER TABLE big ALTER doc SET STORAGE EXTERNAL;
CREATE TABLE tt (id int PRIMARY KEY, v text);
CREATE TABLE sw (id int PRIMARY KEY, slot int UNIQUE);
CREATE TABLE nopk (a int, b text);
ALTER TABLE nopk REPLICA IDENTITY FULL;
CREATE TABLE multi (k1 int, k2 text, v numeric, PRIMARY KEY (k1, k2));
CREATE ROLE batch_owner;
CREATE FUNCTION batch_ok(int) RETURNS boolean LANGUAGE plpgsql IMMUTABLE AS 'BEGIN RETURN $1 IS NOT NULL; END';
ALTER FUNCTION batch_ok(int) OWNER TO batch_owner;
CREATE TABLE owned (id int PRIMARY KEY, n int CHECK (batch_ok(n)), note text);
ALTER TABLE owned OWNER TO batch_owner;
CREATE TABLE counters (id int PRIMARY KEY, n bigint NOT NULL);
CREATE TABLE log (i int PRIMARY KEY, at_counter int);
CREATE TABLE bulk (id int PRIMARY KEY, v text);
INSERT INTO kv SELECT g, g, 'kv' || g FROM generate_series(1, 50) g;
INSERT INTO big SELECT g, 0, (SELECT string_agg(md5(g::text || x::text), '') FROM generate_series(1, 100) x) FROM generate_series(1, 20) g;
INSERT INTO sw SELECT g, g FROM generate_series(1, 10) g;
INSERT INTO nopk SELECT g, 'n' || g FROM generate_series(1, 10) g;
INSERT INTO owned SELECT g, g, 'o' FROM generate_series(1, 20) g;
INSERT INTO counters SELECT g, 0 FROM generate_series(1, 20) g;
`

// TestMergedBatches replays a change set whose transactions are merged into
// batches with grouped statements, and checks each kind of group boundary
// against the source: the same key updated twice (last values win), a
// delete and re-insert of a key, an insert then an update of it, updates
// leaving TOASTed values unchanged (pgoutput sends no value; the UPDATE must
// not overwrite it), a TRUNCATE between inserts, key changes, REPLICA
// IDENTITY FULL, composite keys, a table written through its owner's
// function, and a swap of values under a unique constraint. Every
// transaction is small, so they merge; no batch may fail and be retried
// (that would hide a wrong grouped statement behind the row-by-row path).
// Then it kills the replay inside a merged batch, twice (the backend
// terminated from a test hook, and the restore process SIGKILLed while
// frozen inside a batch), and checks that each killed replay left a
// consistent prefix and that --resume applies the rest exactly once.
func TestMergedBatches(t *testing.T) {
	c := pgharness.Start(t)
	c.CreateDB(t, "app")
	c.Exec(t, "app", batchSchema)
	e := newEnv(t, c)
	e.full(t)
	ctx := context.Background()

	// Boundaries, each transaction on its own (they merge on replay).
	var steps []string
	for i := 0; i < 30; i++ {
		steps = append(steps, fmt.Sprintf(`UPDATE kv SET a = a + %d WHERE id = 1`, i)) // same key, many times
		steps = append(steps, fmt.Sprintf(`UPDATE big SET n = n + 1 WHERE id = %d`, i%20+1))
		if i%7 == 0 {
			steps = append(steps, fmt.Sprintf(`UPDATE big SET doc = repeat('z', 3000) || %d, n = -n WHERE id = %d`, i, i%20+1))
		}
	}
	// Alternating column sets on a few keys, in an order that matters
	// (n+1 and n*3 do not commute): updates join earlier groups of their
	// columns only past groups not holding their key.
	for i := 0; i < 40; i++ {
		steps = append(steps, fmt.Sprintf(`UPDATE big SET n = n + 1 WHERE id = %d`, i%5+1))
		if i%3 == 0 {
			steps = append(steps, fmt.Sprintf(`UPDATE big SET doc = repeat('y', 2500) || %d, n = n * 3 WHERE id = %d`, i, (i+1)%5+1))
		}
		if i%4 == 0 {
			steps = append(steps, fmt.Sprintf(`UPDATE kv SET b = 'alt%d' WHERE id = %d`, i, i%3+10), fmt.Sprintf(`UPDATE kv SET a = a * 2 WHERE id = %d`, i%3+10))
		}
	}
	steps = append(steps,
		`DELETE FROM kv WHERE id = 2`, `INSERT INTO kv VALUES (2, -2, 'again')`, `UPDATE kv SET a = 7 WHERE id = 2`,
		`DELETE FROM kv WHERE id = 2`, `INSERT INTO kv VALUES (2, -3, 'third')`,
		`INSERT INTO kv VALUES (100, 100, 'new')`, `UPDATE kv SET b = 'updated' WHERE id = 100`, `UPDATE kv SET b = NULL, a = NULL WHERE id = 100`,
		`INSERT INTO tt SELECT g, 'before' FROM generate_series(1, 80) g`, `UPDATE tt SET v = 'x' WHERE id = 3`,
		`TRUNCATE tt`, `INSERT INTO tt SELECT g, 'after' FROM generate_series(1, 70) g`, `DELETE FROM tt WHERE id = 5`,
		`UPDATE kv SET id = 500 WHERE id = 3`, `UPDATE kv SET a = 5000 WHERE id = 500`, `INSERT INTO kv VALUES (3, 3, 'reused')`,
		`UPDATE sw SET slot = 99 WHERE id = 1`, `UPDATE sw SET slot = 1 WHERE id = 2`, `UPDATE sw SET slot = 2 WHERE id = 1`,
		`UPDATE nopk SET b = 'full' WHERE a = 3`, `DELETE FROM nopk WHERE a = 4`, `INSERT INTO nopk VALUES (4, 'back')`,
		`INSERT INTO multi VALUES (1, 'a', 1.5), (1, 'b', 2.5), (2, 'a', 3.5)`, `UPDATE multi SET v = v * 2 WHERE k1 = 1`,
		`DELETE FROM multi WHERE k1 = 1 AND k2 = 'a'`, `INSERT INTO multi VALUES (1, 'a', 9)`,
		`UPDATE owned SET n = n + 1`, `INSERT INTO owned SELECT g, g, 'late' FROM generate_series(21, 200) g`,
		`DELETE FROM owned WHERE id % 3 = 0`, `UPDATE owned SET n = n * 2, note = 'twice' WHERE id % 5 = 0`,
		`INSERT INTO kv SELECT g, g, repeat('b', g) FROM generate_series(1000, 1300) g`,
		`UPDATE kv SET b = b || '!' WHERE id BETWEEN 1000 AND 1010`, `DELETE FROM kv WHERE id BETWEEN 1100 AND 1200`,
		`UPDATE kv SET a = a + 1 WHERE id = 1`)
	for _, s := range steps {
		c.Exec(t, "app", s)
	}
	e.incremental(t)
	want := sums(t, c, "app")
	res, err := e.restoreTo(ctx, apply.Target{Kind: apply.Latest}, "r_groups")
	if err != nil {
		t.Fatalf("restore: %v", err)
	}
	same(t, "merged batches", want, sums(t, c, "r_groups"))
	st := res.Replay
	t.Logf("replayed %d transactions (%d rows) in %d target transactions, %d retried", st.Applied, st.Rows, st.Batches, st.BatchesRetried)
	if st.BatchesRetried != 0 {
		t.Fatalf("%d batches failed and were applied again row by row: a grouped statement was wrong", st.BatchesRetried)
	}
	if st.Batches >= st.Applied/2 {
		t.Fatalf("%d transactions in %d target transactions: not merged", st.Applied, st.Batches)
	}

	// Many small non-idempotent transactions for the kill tests: each adds
	// 1 to a counter and logs its number, so applying one twice or losing
	// one shows. After the 12000th, one large transaction (more rows than
	// one grouped statement takes), so that the second batch writes to the
	// target before it ends.
	const total, bigAfter = 25000, 12000
	for b := 0; b < total; b += 1000 {
		if b == bigAfter {
			c.Exec(t, "app", `INSERT INTO bulk SELECT g, md5(g::text) FROM generate_series(1, 30000) g`)
		}
		var sb strings.Builder
		for i := b + 1; i <= b+1000; i++ {
			fmt.Fprintf(&sb, "BEGIN; UPDATE counters SET n = n + 1 WHERE id = %d; INSERT INTO log VALUES (%d, %d); COMMIT;\n", i%20+1, i, i%20+1)
		}
		c.Exec(t, "app", sb.String())
	}
	e.incremental(t)
	want = sums(t, c, "app")

	// prefix checks that a killed replay left a whole prefix of the
	// counter transactions (each either wholly there or not at all, in
	// order) and returns its length.
	prefix := func(db string) int64 {
		t.Helper()
		var n, max, sum, big int64
		conn := c.Conn(t, db)
		defer conn.Close(ctx)
		if err := conn.QueryRow(ctx, `SELECT count(*), coalesce(max(i), 0), (SELECT sum(n) FROM counters), (SELECT count(*) FROM bulk) FROM log`).Scan(&n, &max, &sum, &big); err != nil {
			t.Fatal(err)
		}
		if n != max || sum != n || (n >= bigAfter) != (big == 30000) || (big != 0 && big != 30000) {
			t.Fatalf("%s after the kill: %d log rows up to %d, counters sum %d, %d rows of the large transaction: not a whole prefix of the source's transactions", db, n, max, sum, big)
		}
		return n
	}
	resume := func(db string, committed int64) {
		t.Helper()
		res, err := e.restoreTo(ctx, apply.Target{Kind: apply.Latest}, db, func(o *restore.Options) { o.Resume = true })
		if err != nil {
			t.Fatalf("resume %s: %v", db, err)
		}
		same(t, "resumed "+db, want, sums(t, c, db))
		t.Logf("%s: resumed at %x with %d counter transactions committed; applied %d more in %d target transactions",
			db, res.Replay.ResumedAt, committed, res.Replay.Applied, res.Replay.Batches)
		if res.Replay.ResumedAt == 0 {
			t.Fatalf("%s: the resumed replay started from the beginning", db)
		}
	}

	t.Run("backend killed inside a batch", func(t *testing.T) {
		admin := c.Conn(t, "postgres")
		// The kill comes after counter transaction 15000 (and the large
		// one): past the first batch, inside the second, which has written
		// the large transaction's rows already (the boundary steps'
		// transactions, one each, come first).
		const at = 15000
		_, err := e.restoreTo(ctx, apply.Target{Kind: apply.Latest}, "r_killed", func(o *restore.Options) {
			o.Progress = func(ev progress.Event) {
				n := ev.Done // transactions applied (0: not a commit)
				if n != int64(len(steps)+at+1) {
					return
				}
				var killed bool
				if err := admin.QueryRow(ctx, `SELECT coalesce(bool_and(pg_terminate_backend(pid, 10000)), false) FROM pg_stat_activity
					WHERE datname = 'r_killed_pme2go_pitr' AND backend_xid IS NOT NULL`).Scan(&killed); err != nil || !killed {
					t.Errorf("terminate the replay's backend inside its batch: %v (terminated: %v)", err, killed)
				}
			}
		})
		if err == nil || !needsResume(err) {
			t.Fatalf("killed replay: want an error with a fix to resume, got %v", err)
		}
		n := prefix("r_killed_pme2go_pitr")
		if n == 0 || n >= at {
			t.Fatalf("killed at counter transaction %d: %d are committed, want some but not all (the kill must land inside a batch after one committed)", at, n)
		}
		resume("r_killed", n)
	})

	t.Run("restore process SIGKILLed inside a batch", func(t *testing.T) {
		bin := buildCLI(t)
		admin := c.Conn(t, "postgres")
		cmd := e.cli(t, bin, "restore", "--latest", "--target-db", "r_sigkill", "--no-safety-backup")
		var out strings.Builder
		cmd.Stdout, cmd.Stderr = &out, &out
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		exited := make(chan error, 1)
		go func() { exited <- cmd.Wait() }()
		killed := false
		deadline := time.Now().Add(5 * time.Minute)
		for !killed && time.Now().Before(deadline) {
			select {
			case err := <-exited:
				t.Fatalf("the restore ended before it could be killed inside a batch (%v):\n%s", err, out.String())
			case <-time.After(20 * time.Millisecond):
			}
			// Freeze the process, then look at its backend: inside a batch
			// is a transaction that wrote (an xid) with a batch committed
			// before it (origin progress), waiting for the frozen client.
			cmd.Process.Signal(syscall.SIGSTOP)
			var inside bool
			for k := 0; k < 20 && !inside; k++ {
				err := admin.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_stat_activity a
					WHERE a.datname = 'r_sigkill_pme2go_pitr' AND a.backend_xid IS NOT NULL AND a.wait_event = 'ClientRead')
					AND EXISTS (SELECT 1 FROM pg_replication_origin_status s
					WHERE s.external_id LIKE 'pme2go_restore_%' AND s.remote_lsn > '0/0')`).Scan(&inside)
				if err != nil {
					t.Fatal(err)
				}
				if !inside {
					time.Sleep(10 * time.Millisecond)
				}
			}
			if inside {
				cmd.Process.Signal(syscall.SIGKILL)
				killed = true
				break
			}
			cmd.Process.Signal(syscall.SIGCONT)
		}
		if !killed {
			t.Fatal("the restore was never found inside a batch")
		}
		<-exited
		// The server ends the killed client's session and rolls back its
		// open batch.
		for i := 0; i < 100; i++ {
			var n int
			admin.QueryRow(ctx, `SELECT count(*) FROM pg_stat_activity WHERE datname = 'r_sigkill_pme2go_pitr'`).Scan(&n)
			if n == 0 {
				break
			}
			time.Sleep(50 * time.Millisecond)
		}
		n := prefix("r_sigkill_pme2go_pitr")
		resume("r_sigkill", n)
	})
}

// needsResume reports whether err tells to resume.
func needsResume(err error) bool {
	f := errs.FixOf(err)
	return f != nil && f.Action == errs.ActResume
}

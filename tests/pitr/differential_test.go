package pitr_test

import (
	"context"
	"github.com/jackc/pgx/v5"
	"math/rand"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/pme2go/pme2go-backup/engine/apply"
	"github.com/pme2go/pme2go-backup/tests/pgharness"
)

// TestDifferentialPITR drives LoadAwkward's data, pgbench and an own
// workload (unchanged TOAST, deletes, multi-table TRUNCATE, rolled-back
// subtransactions, REPLICA IDENTITY FULL with duplicates, identity and
// generated columns, partition row movement, a 120k-row transaction) while
// a `stream` child captures (SIGKILLed and restarted at random moments)
// and incrementals are taken. At checkpoints (workload paused) it records
// the time, the WAL position and per-table checksums; afterwards it
// restores each checkpoint by time and by LSN, and the end by --latest,
// into fresh databases and compares them exactly.
func TestDifferentialPITR(t *testing.T) {
	pgharness.LookTool(t, "pgbench")
	c := pgharness.Start(t)
	c.CreateDB(t, "app")
	pgharness.LoadAwkward(t, c, "app")
	c.Exec(t, "app", workloadSchema)
	pgb := c.Bin("pgbench")
	if out, err := pgbenchCmd(c, pgb, "-i", "-q", "-s", "1", "app").CombinedOutput(); err != nil {
		t.Fatalf("pgbench -i: %v\n%s", err, out)
	}
	e := newEnv(t, c, "BACKUP_COMPRESSION=zstd")
	bin := buildCLI(t)
	e.full(t)
	ctx := context.Background()
	seed := time.Now().UnixNano()
	rnd := rand.New(rand.NewSource(seed))
	t.Logf("seed %d", seed)

	st := newStreamer(t, e, bin)
	// pgbench runs for a fixed time and must end by itself, successfully.
	bench := pgbenchCmd(c, pgb, "-n", "-c", "2", "-R", "150", "-T", "20", "app")
	var benchOut strings.Builder
	bench.Stdout, bench.Stderr = &benchOut, &benchOut
	if err := bench.Start(); err != nil {
		t.Fatal(err)
	}
	benchDone := make(chan struct{})
	var benchErr error
	go func() { benchErr = bench.Wait(); close(benchDone) }()
	w := &worker{conn: c.Conn(t, "app"), rnd: rand.New(rand.NewSource(seed + 1))}
	wctx, stopWork := context.WithCancel(ctx)
	workDone := make(chan struct{})
	go func() { w.run(wctx); close(workDone) }()
	probe := c.Conn(t, "app")

	var points []point
	incs := 0
	phase := time.Now()
	for round := 0; round < 12; round++ {
		time.Sleep(time.Duration(800+rnd.Intn(1200)) * time.Millisecond)
		if rnd.Intn(2) == 0 || round == 3 || round == 7 {
			st.kill <- struct{}{}
		}
		switch {
		case round%4 == 2:
			// Checkpoint: no commit may run while it is recorded.
			w.mu.Lock()
			bench.Process.Signal(syscall.SIGSTOP)
			waitQuiet(t, probe)
			points = append(points, record(t, c, probe, "app"))
			bench.Process.Signal(syscall.SIGCONT)
			w.mu.Unlock()
		case round%3 == 1:
			e.incremental(t)
			incs++
		}
		if err := w.failure(); err != nil {
			t.Fatal(err)
		}
	}
	<-benchDone
	if benchErr != nil || !strings.Contains(benchOut.String(), "number of transactions actually processed") {
		t.Fatalf("pgbench failed: %v\n%s", benchErr, benchOut.String())
	}
	stopWork()
	<-workDone
	if err := w.failure(); err != nil {
		t.Fatal(err)
	}
	// A checkpoint after the workload went quiet, restored by a time
	// after its last commit: the recovery window reaches it.
	quiet := record(t, c, probe, "app")
	time.Sleep(1500 * time.Millisecond)
	var quietTarget string
	probe.QueryRow(ctx, `SELECT (clock_timestamp() - interval '500 ms')::text`).Scan(&quietTarget)
	e.incremental(t)
	st.stop <- struct{}{}
	<-st.done
	e.incremental(t)
	incs += 2
	end, err := pgharness.Checksums(ctx, c.ConnString("app"))
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("workload: %s, %d own transactions, %d incrementals, stream killed %d times", time.Since(phase).Round(time.Second), w.n, incs, st.kills)
	if st.kills < 2 {
		t.Fatalf("the stream was killed %d times, want at least 2", st.kills)
	}
	if ran := st.captured(); ran < st.kills+1 {
		t.Fatalf("the stream started capturing %d times, want at least %d (once per run)", ran, st.kills+1)
	}
	if sealed := st.sealed(); sealed < 1 {
		t.Fatal("the stream never sealed a segment for an incremental")
	}

	checked := 0
	for i, p := range points {
		for _, spec := range []apply.TargetSpec{{Time: p.time}, {LSN: p.lsn}} {
			db := "r_point" + string(rune('a'+i)) + map[bool]string{true: "_time", false: "_lsn"}[spec.Time != ""]
			start := time.Now()
			res, err := e.restoreTo(ctx, mustTarget(t, spec), db)
			if err != nil {
				t.Fatalf("checkpoint %d (%s %s): %v", i, p.time, p.lsn, err)
			}
			sameReplayed(t, db, p.sums, sums(t, c, db), res)
			rc := c.Conn(t, db)
			// TRUNCATE … RESTART IDENTITY resets these two during the run.
			floor := map[string]int64{}
			for seq, table := range map[string]string{"public.wl_parent_id_seq": "wl_parent", "public.wl_child_id_seq": "wl_child"} {
				var m int64
				rc.QueryRow(ctx, `SELECT coalesce(max(id), 0) FROM `+table).Scan(&m)
				floor[seq] = m
			}
			seqsNotBehind(t, db, p.seqs, seqValues(t, rc), false, floor)
			rc.Close(ctx)
			checked++
			t.Logf("checkpoint %d by %s: %d transactions, %d rows replayed in %s (%.0f rows/s); restore took %s", i, map[bool]string{true: "time " + p.time, false: "LSN " + p.lsn}[spec.Time != ""],
				res.Replay.Applied, res.Replay.Rows, res.Replay.Duration.Round(time.Millisecond), float64(res.Replay.Rows)/res.Replay.Duration.Seconds(), time.Since(start).Round(time.Millisecond))
		}
	}
	// The quiet checkpoint, by a time after its last commit: data and
	// sequences equal.
	qres, err := e.restoreTo(ctx, mustTarget(t, apply.TargetSpec{Time: quietTarget}), "r_quiet")
	if err != nil {
		t.Fatalf("quiet checkpoint by time %s: %v", quietTarget, err)
	}
	sameReplayed(t, "quiet checkpoint", quiet.sums, sums(t, c, "r_quiet"), qres)
	qc := c.Conn(t, "r_quiet")
	// No commit follows the quiet checkpoint and a later archive reaches
	// past the read sealed after it: every sequence is proven at the
	// target, even those TRUNCATE … RESTART IDENTITY set back since an
	// earlier read. A difference fails, named by the restore or not.
	qgot := seqValues(t, qc)
	for k, v := range quiet.seqs {
		if g, ok := qgot[k]; !ok || g != v {
			t.Errorf("quiet checkpoint: sequence %s is %d (present %v), the source had %d (%s)", k, g, ok, v, seqNote(qres, k))
		}
	}
	if t.Failed() {
		t.FailNow()
	}
	qc.Close(ctx)
	res, err := e.restoreTo(ctx, apply.Target{Kind: apply.Latest}, "r_latest")
	if err != nil {
		t.Fatalf("latest: %v", err)
	}
	got, _ := pgharness.Checksums(ctx, c.ConnString("r_latest"))
	sameReplayed(t, "latest (sequences included)", end, got, res)
	t.Logf("latest: %d transactions, %d rows replayed in %s (%.0f rows/s)", res.Replay.Applied, res.Replay.Rows,
		res.Replay.Duration.Round(time.Millisecond), float64(res.Replay.Rows)/res.Replay.Duration.Seconds())
	t.Logf("checked %d checkpoints (%d restores by time and LSN) and the latest state", len(points), checked)
	if len(points) < 3 {
		t.Fatalf("only %d checkpoints", len(points))
	}
}

// waitQuiet waits until no pgbench session runs a statement: the stopped
// client's last statement has finished, so nothing commits until SIGCONT
// (a transaction left open commits later, past the checkpoint).
func waitQuiet(t *testing.T, conn *pgx.Conn) {
	t.Helper()
	for deadline := time.Now().Add(time.Minute); ; time.Sleep(10 * time.Millisecond) {
		var n int
		if err := conn.QueryRow(context.Background(), `SELECT count(*) FROM pg_stat_activity WHERE application_name = 'pgbench' AND state = 'active'`).Scan(&n); err != nil {
			t.Fatal(err)
		}
		if n == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("pgbench sessions still active a minute after SIGSTOP")
		}
	}
}

func pgbenchCmd(c *pgharness.Cluster, bin string, args ...string) *exec.Cmd {
	cmd := exec.Command(bin, args...)
	cmd.Env = c.Env("app")
	return cmd
}

package capture_test

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/pme2go/pme2go-backup/engine/capture"
	"github.com/pme2go/pme2go-backup/engine/chain"
	"github.com/pme2go/pme2go-backup/engine/changeset"
	"github.com/pme2go/pme2go-backup/engine/incremental"
	"github.com/pme2go/pme2go-backup/tests/pgharness"
)

// writer commits single-row transactions until stop is closed. collect
// waits for it to stop and returns their xids in commit order (failing the
// test, from the test goroutine, if a commit failed); count says how many
// have committed so far.
func writer(t *testing.T, c *pgharness.Cluster, stop <-chan struct{}) (collect func() []uint32, count func() int) {
	conn := c.Conn(t, "app")
	var mu sync.Mutex
	var xids []uint32
	var werr error
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			var xid int64
			err := conn.QueryRow(context.Background(), `INSERT INTO t (v, n) VALUES ($1, 1.5) RETURNING txid_current()`, "row"+strconv.Itoa(i)).Scan(&xid)
			mu.Lock()
			if err != nil {
				werr = err
				mu.Unlock()
				return
			}
			xids = append(xids, uint32(xid))
			mu.Unlock()
			time.Sleep(2 * time.Millisecond) // pacing, not synchronisation
		}
	}()
	collect = func() []uint32 {
		<-done
		mu.Lock()
		defer mu.Unlock()
		if werr != nil {
			t.Fatalf("writer: %v", werr)
		}
		return xids
	}
	count = func() int { mu.Lock(); defer mu.Unlock(); return len(xids) }
	return collect, count
}

// allTxs returns the transactions of every incremental of the chain, in
// archive order.
func allTxs(t *testing.T, paths []string) []*changeset.Tx {
	var all []*changeset.Tx
	for _, p := range paths {
		_, txs := archiveTxs(t, p)
		all = append(all, txs...)
	}
	return all
}

// TestCancelledCaptureResumes cancels an in-process capture mid-stream,
// restarts it, takes an incremental while it runs (the streamer seals on
// request) and finds every transaction exactly once.
func TestCancelledCaptureResumes(t *testing.T) {
	c := setup(t, "app")
	cfg := loadCfg(t, cfgEnv(t, c, "app"))
	full(t, cfg)
	st := openChain(t, cfg, "app")
	stop := make(chan struct{})
	collect, count := writer(t, c, stop)
	conn := c.Conn(t, "app")
	// stored waits until capture has stored everything committed so far and
	// at least n more of the writer's transactions.
	stored := func(what string, n int) {
		t.Helper()
		target := count() + n
		waitFor(t, what+": more transactions committed", func() bool { return count() >= target })
		lsn := currentLSN(t, conn)
		waitFor(t, what+": capture stored them", func() bool { return flushedPast(t, conn, st.Slot, lsn) })
	}

	run := func(ctx context.Context) chan error {
		ch := make(chan error, 1)
		go func() { ch <- capture.Run(ctx, cfg, st, capture.Options{}) }()
		return ch
	}
	ctx1, cancel1 := context.WithCancel(context.Background())
	r1 := run(ctx1)
	waitFor(t, "the first capture to stream", func() bool { return slotActivePID(t, conn, st.Slot) != 0 })
	stored("first capture", 20)
	if _, err := capture.Drain(context.Background(), cfg, st, capture.Options{}); err == nil || !strings.Contains(err.Error(), "capture already running (pid") {
		t.Fatalf("second capture: %v", err)
	}
	cancel1()
	if err := <-r1; err != nil {
		t.Fatalf("cancelled capture: %v", err)
	}
	waitFor(t, "the server to release the slot", func() bool { return slotActivePID(t, conn, st.Slot) == 0 })
	ctx2, cancel2 := context.WithCancel(context.Background())
	r2 := run(ctx2)
	waitFor(t, "the second capture to stream", func() bool { return slotActivePID(t, conn, st.Slot) != 0 })
	stored("second capture", 20)
	res1, err := incremental.Take(context.Background(), cfg, incremental.Options{})
	if err != nil {
		t.Fatalf("incremental while streaming: %v", err)
	}
	stored("after the seal", 20)
	close(stop)
	want := collect()
	stored("after the writer stopped", 0)
	cancel2()
	if err := <-r2; err != nil {
		t.Fatalf("capture: %v", err)
	}
	res2, err := incremental.Take(context.Background(), cfg, incremental.Options{})
	if err != nil {
		t.Fatalf("incremental: %v", err)
	}
	got := allTxs(t, []string{res1[0].Path, res2[0].Path})
	checkXids(t, got, want, st.Start())
	t.Logf("%d transactions, %d in the archive taken while streaming", len(want), res1[0].TxCount)
}

// TestKilledStreamResumes SIGKILLs a `pme2go-backup stream` process while
// transactions commit, restarts it, checks that a second stream is refused,
// takes an incremental with the CLI while streaming, and finds every
// transaction exactly once.
func TestKilledStreamResumes(t *testing.T) {
	gobin, err := exec.LookPath("go")
	if err != nil {
		pgharness.Require(t, "go", "go toolchain not found")
	}
	c := setup(t, "app")
	env := cfgEnv(t, c, "app")
	cfg := loadCfg(t, env)
	full(t, cfg)
	st := openChain(t, cfg, "app")

	bin := filepath.Join(t.TempDir(), "pme2go-backup")
	if out, err := exec.Command(gobin, "build", "-o", bin, "github.com/pme2go/pme2go-backup/cmd/pme2go-backup").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	conf := filepath.Join(t.TempDir(), "empty.conf")
	os.WriteFile(conf, nil, 0o600)
	cmdEnv := os.Environ()
	for k, v := range env {
		cmdEnv = append(cmdEnv, k+"="+v)
	}
	command := func(args ...string) *exec.Cmd {
		cmd := exec.Command(bin, append([]string{"--config", conf}, args...)...)
		cmd.Env = cmdEnv
		return cmd
	}
	logDir := t.TempDir()
	t.Cleanup(func() {
		if t.Failed() {
			logs, _ := filepath.Glob(filepath.Join(logDir, "*"))
			for _, l := range logs {
				b, _ := os.ReadFile(l)
				t.Logf("%s:\n%s", l, b)
			}
		}
	})
	start := func() *exec.Cmd {
		cmd := command("stream")
		logf, _ := os.CreateTemp(logDir, "stream-*.log")
		cmd.Stdout, cmd.Stderr = logf, logf
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		return cmd
	}
	conn := c.Conn(t, "app")
	waitActive := func() {
		for i := 0; i < 100; i++ {
			var active bool
			if err := conn.QueryRow(context.Background(), `SELECT active FROM pg_replication_slots WHERE slot_name = $1`, st.Slot).Scan(&active); err != nil {
				t.Fatal(err)
			}
			if active {
				return
			}
			time.Sleep(100 * time.Millisecond)
		}
		t.Fatal("stream never became active")
	}

	stop := make(chan struct{})
	collect, count := writer(t, c, stop)
	stored := func(what string, n int) {
		t.Helper()
		target := count() + n
		waitFor(t, what+": more transactions committed", func() bool { return count() >= target })
		lsn := currentLSN(t, conn)
		waitFor(t, what+": the stream stored them", func() bool { return flushedPast(t, conn, st.Slot, lsn) })
	}
	s1 := start()
	waitActive()
	stored("first stream", 20)
	s1.Process.Signal(syscall.SIGKILL)
	s1.Wait()

	// Restart; the server may still see the killed session for a moment.
	var s2 *exec.Cmd
	for i := 0; i < 20; i++ {
		s2 = start()
		done := make(chan error, 1)
		go func() { done <- s2.Wait() }()
		select {
		case <-done:
			time.Sleep(300 * time.Millisecond)
			continue
		case <-time.After(1500 * time.Millisecond):
		}
		defer func() { s2.Process.Signal(syscall.SIGTERM); <-done }()
		break
	}
	waitActive()
	out, err := command("stream").CombinedOutput()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || !strings.Contains(string(out), "capture already running (pid") {
		t.Fatalf("second stream: %v\n%s", err, out)
	}
	stored("second stream", 20)
	close(stop)
	want := collect()
	out, err = command("incremental").CombinedOutput()
	if err != nil {
		t.Fatalf("incremental while streaming: %v\n%s", err, out)
	}
	path := strings.Fields(string(out))[0]
	for _, line := range strings.Split(string(out), "\n") {
		if strings.HasPrefix(line, cfg.IncrementalDir()) {
			path = strings.Fields(line)[0]
		}
	}
	got := allTxs(t, []string{path})
	checkXids(t, got, want, st.Start())
	t.Logf("%d transactions captured across a SIGKILL", len(want))

	// mark and show-changes through the CLI.
	out, err = command("mark", "after-kill").CombinedOutput()
	if err != nil || !strings.HasPrefix(string(out), "app\tafter-kill\t") {
		t.Fatalf("mark: %v\n%s", err, out)
	}
	out, err = command("show-changes", path).CombinedOutput()
	if err != nil || strings.Count(string(out), "INSERT INTO") != len(want) {
		t.Fatalf("show-changes: %v, %d INSERTs, want %d", err, strings.Count(string(out), "INSERT INTO"), len(want))
	}

	// A new full backup while the stream runs: the old chain is sealed into
	// a final incremental (holding the mark) and the stream follows the new chain.
	late := txs(t, conn, 3)
	f2 := full(t, cfg)
	old, _ := chain.Load(cfg, st.ID)
	if old.Status != chain.StatusSealed {
		t.Fatalf("old chain %+v", old)
	}
	_, final := archiveTxs(t, filepath.Join(cfg.IncrementalDir(), old.LastArchive))
	if len(final) != 4 {
		t.Fatalf("final incremental holds %d transactions, want the mark and 3 inserts", len(final))
	}
	// The mark's transaction carries the mark and, before it, the
	// sequences read for it; nothing else.
	var marks []string
	for _, m := range final[0].Messages {
		switch m.Prefix {
		case changeset.MarkPrefix:
			marks = append(marks, string(m.Content))
		case changeset.SequencesPrefix:
		default:
			t.Fatalf("mark's transaction holds an unexpected message %q", m.Prefix)
		}
	}
	if len(marks) != 1 || marks[0] != "after-kill" {
		t.Fatalf("mark's transaction holds marks %q, want [after-kill]", marks)
	}
	checkXids(t, final[1:], late, 0)
	st = openChain(t, cfg, "app")
	if st.ID != f2.Manifest.ChainID {
		t.Fatalf("open chain %s, full backup started %s", st.ID, f2.Manifest.ChainID)
	}
	waitActive()
}

// TestIdleCaptureReleasesWAL: WAL written in another database is confirmed
// by an idle capture, so the slot does not hold it back.
func TestIdleCaptureReleasesWAL(t *testing.T) {
	c := setup(t, "app")
	cfg := loadCfg(t, cfgEnv(t, c, "app"))
	full(t, cfg)
	st := openChain(t, cfg, "app")
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- capture.Run(ctx, cfg, st, capture.Options{StatusInterval: 300 * time.Millisecond}) }()
	c.Exec(t, "postgres", `CREATE TABLE unrelated AS SELECT repeat('x', 100) AS v FROM generate_series(1, 50000)`)
	var lag *capture.SlotLag
	for i := 0; i < 50; i++ {
		time.Sleep(200 * time.Millisecond)
		var err error
		if lag, err = capture.Lag(context.Background(), cfg, st); err != nil {
			t.Fatal(err)
		}
		if lag.Bytes < 64<<10 {
			break
		}
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if lag.Bytes >= 64<<10 || !lag.Active {
		t.Fatalf("idle capture still holds back %d bytes (%+v)", lag.Bytes, lag)
	}
}

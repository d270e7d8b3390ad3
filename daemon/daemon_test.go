package daemon

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pme2go/pme2go-backup/dbusapi"
)

func TestLoggerRedactsSecrets(t *testing.T) {
	var buf bytes.Buffer
	log, closeLog, err := NewLogger(LogOptions{Stderr: &buf, Secrets: []string{"s3cr3t-pw"}})
	if err != nil {
		t.Fatal(err)
	}
	defer closeLog()
	log.Info("connect to host=db password=s3cr3t-pw failed", "password", "anything", "dsn", "postgres://u:s3cr3t-pw@h/db",
		"err", os.ErrNotExist, slog.Group("g", "token", "abc", "x", "s3cr3t-pw"))
	log.With("db_password", "p").Warn("with attrs")
	out := buf.String()
	if strings.Contains(out, "s3cr3t-pw") || strings.Contains(out, "anything") || strings.Contains(out, `"abc"`) || strings.Contains(out, `"p"`) {
		t.Fatalf("a secret reached the log:\n%s", out)
	}
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		var m map[string]any
		if err := json.Unmarshal([]byte(line), &m); err != nil {
			t.Fatalf("not a JSON line: %q", line)
		}
	}
}

func TestDailyFilesAndRetention(t *testing.T) {
	dir := t.TempDir()
	old := filepath.Join(dir, "combined-2000-01-01.log")
	if err := os.WriteFile(old, []byte("old\n"), 0o640); err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	log, closeLog, err := NewLogger(LogOptions{Stderr: &buf, LogDir: dir, RetentionDays: 30})
	if err != nil {
		t.Fatal(err)
	}
	log.Info("plain")
	log.Info("job started", "admin", true)
	log.Error("job failed", "error_code", "CONN_ERR")
	closeLog()
	day := time.Now().Format("2006-01-02")
	read := func(prefix string) string {
		b, _ := os.ReadFile(filepath.Join(dir, prefix+"-"+day+".log"))
		return string(b)
	}
	if c := read("combined"); strings.Count(c, "\n") != 3 {
		t.Fatalf("combined:\n%s", c)
	}
	if e := read("error"); strings.Count(e, "\n") != 1 || !strings.Contains(e, "CONN_ERR") {
		t.Fatalf("error:\n%s", e)
	}
	if a := read("admin"); strings.Count(a, "\n") != 1 || !strings.Contains(a, "job started") {
		t.Fatalf("admin:\n%s", a)
	}
	if _, err := os.Stat(old); !os.IsNotExist(err) {
		t.Fatalf("a file older than the retention was kept: %v", err)
	}
}

func TestJournalFieldNames(t *testing.T) {
	for in, want := range map[string]string{"backup_type": "BACKUP_TYPE", "duration_ms": "DURATION_MS", "caller-uid": "CALLER_UID",
		"message": "PME2GO_MESSAGE", "9x": "F_9X", "g_a.b": "G_A_B"} {
		if got := JournalField(in); got != want {
			t.Errorf("JournalField(%q) = %q, want %q", in, got, want)
		}
	}
}

// TestWatchdogFedOnlyWhileLoopsAlive uses the Notifier's replaceable fields.
func TestWatchdogFedOnlyWhileLoopsAlive(t *testing.T) {
	var mu sync.Mutex
	var sent []time.Time
	n := &Notifier{
		Send: func(_ bool, state string) (bool, error) {
			if state == "WATCHDOG=1" {
				mu.Lock()
				sent = append(sent, time.Now())
				mu.Unlock()
			}
			return true, nil
		},
		WatchdogEnabled: func(bool) (time.Duration, error) { return 200 * time.Millisecond, nil },
	}
	hb := &Heartbeats{}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	stop := make(chan struct{})
	go func() { // a live loop
		for {
			select {
			case <-stop:
				return
			case <-time.After(20 * time.Millisecond):
				hb.Beat("loop")
			}
		}
	}()
	go n.Watchdog(ctx, hb)
	time.Sleep(550 * time.Millisecond)
	mu.Lock()
	alive := len(sent)
	mu.Unlock()
	if alive < 4 || alive > 6 {
		t.Fatalf("%d pings in 550 ms at a 200 ms watchdog, want about 5 (every 100 ms)", alive)
	}
	close(stop) // the loop is stuck from now on
	time.Sleep(300 * time.Millisecond)
	mu.Lock()
	mark := len(sent)
	mu.Unlock()
	time.Sleep(400 * time.Millisecond)
	mu.Lock()
	defer mu.Unlock()
	if len(sent) != mark {
		t.Fatalf("watchdog still fed while a loop is stuck (%d -> %d)", mark, len(sent))
	}
}

func TestHistoryPersistsAndSurvivesDamage(t *testing.T) {
	dir := t.TempDir()
	h, err := OpenHistory(dir, 3)
	if err != nil {
		t.Fatal(err)
	}
	for i := 1; i <= 5; i++ {
		now := time.Now()
		if err := h.Add(recordOf(dbusapi.JobInfo{ID: uint64(i), Kind: "full", State: dbusapi.JobSucceeded, StartedAt: now, FinishedAt: now})); err != nil {
			t.Fatal(err)
		}
	}
	h2, err := OpenHistory(dir, 3)
	if err != nil || len(h2.Records()) != 3 || h2.MaxID() != 5 {
		t.Fatalf("reloaded: %v %+v", err, h2.Records())
	}
	if fi, _ := os.Stat(filepath.Join(dir, HistoryFile)); fi.Mode().Perm() != 0o600 {
		t.Fatalf("history mode %v", fi.Mode().Perm())
	}
	os.WriteFile(filepath.Join(dir, HistoryFile), []byte("{torn"), 0o600)
	h3, err := OpenHistory(dir, 3)
	if err == nil || len(h3.Records()) != 0 {
		t.Fatalf("damaged history: %v %+v", err, h3.Records())
	}
	if _, err := os.Stat(filepath.Join(dir, HistoryFile+".damaged")); err != nil {
		t.Fatal("the damaged file was not kept aside")
	}
}

// blockingEngine runs every job until its context is cancelled (the
// daemon's own Engine interface; PostgreSQL is exercised in tests/daemon).
type blockingEngine struct{ dbs []string }

func (e blockingEngine) Validate(dbusapi.JobRequest) error { return nil }
func (e blockingEngine) Run(ctx context.Context, _ dbusapi.JobRequest, p func(Progress)) (Outcome, error) {
	p(Progress{Phase: "working"})
	<-ctx.Done()
	return Outcome{}, ctx.Err()
}
func (e blockingEngine) ListBackups(context.Context) ([]dbusapi.BackupEntry, error) { return nil, nil }
func (e blockingEngine) Status(context.Context) (any, error)                        { return nil, nil }
func (e blockingEngine) Mark(context.Context, string, []string) (string, error)     { return "", nil }
func (e blockingEngine) Databases() []string                                        { return e.dbs }
func (e blockingEngine) Stream(ctx context.Context, _ string, _ func(Progress)) error {
	<-ctx.Done()
	return nil
}
func (e blockingEngine) Window(context.Context) (Window, error) { return Window{}, nil }

func TestJobLimitsAndBusy(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	m := NewJobs(ctx, blockingEngine{dbs: []string{"a", "b"}}, nil, slog.New(slog.NewTextHandler(&bytes.Buffer{}, nil)))
	m.MaxRunning = 3
	if _, err := m.StartJob(dbusapi.JobRequest{Kind: "full", Databases: []string{"a"}}); err != nil {
		t.Fatal(err)
	}
	_, err := m.StartJob(dbusapi.JobRequest{Kind: "restore", Restore: dbusapi.RestoreOptions{TargetDB: "a"}})
	if dbusapi.AsError(err).Code != dbusapi.CodeBusy || !strings.Contains(err.Error(), "job 1") {
		t.Fatalf("restore into a database being backed up: %v", err)
	}
	if _, err := m.StartJob(dbusapi.JobRequest{Kind: "full", Databases: []string{"b"}}); err != nil {
		t.Fatalf("another database: %v", err)
	}
	if _, err := m.StartJob(dbusapi.JobRequest{Kind: "cleanup"}); dbusapi.AsError(err).Code != dbusapi.CodeBusy {
		t.Fatalf("cleanup during backups: %v", err)
	}
	if _, err := m.StartJob(dbusapi.JobRequest{Kind: "verify"}); err != nil {
		t.Fatal(err)
	}
	_, err = m.StartJob(dbusapi.JobRequest{Kind: "verify"})
	if dbusapi.AsError(err).Code != dbusapi.CodeBusy || !strings.Contains(err.Error(), "3 jobs") {
		t.Fatalf("a fourth job: %v", err)
	}
	if _, err := m.StartJob(dbusapi.JobRequest{Kind: "weekly"}); dbusapi.AsError(err).Code != dbusapi.CodeInvalidArgs {
		t.Fatalf("unknown kind: %v", err)
	}
	if err := m.CancelJob(1, dbusapi.Caller{}); err != nil {
		t.Fatal(err)
	}
	info, ok := m.Wait(context.Background(), 1)
	if !ok || info.State != dbusapi.JobCancelled || info.Error.Code != dbusapi.CodeCancelled {
		t.Fatalf("cancelled job: %+v", info)
	}
	if err := m.CancelJob(1, dbusapi.Caller{}); dbusapi.AsError(err).Code != dbusapi.CodeNoSuchJob {
		t.Fatalf("cancelling it again: %v", err)
	}
	cancel() // the daemon stops: every job ends as cancelled
	m.WaitAll()
	if len(m.Running()) != 0 {
		t.Fatal("jobs left running")
	}
	if _, err := m.StartJob(dbusapi.JobRequest{Kind: "verify"}); dbusapi.AsError(err).Code != dbusapi.CodeUnavailable {
		t.Fatalf("a job while stopping: %v", err)
	}
}

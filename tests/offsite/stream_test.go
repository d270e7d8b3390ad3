package offsite_test

import (
	"context"
	"errors"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pme2go/pme2go-backup/engine/offsite"
	"github.com/pme2go/pme2go-backup/engine/ops"
)

// TestStreamingRPO: with streaming on, committed transactions reach the
// repository within OFFSITE_SYNC_INTERVAL, and a point-in-time restore
// from the repository alone (an empty BACKUP_DIR) reaches the last synced
// transaction, equal to the source (sequences included). An incremental
// taken afterwards is copied and replaces the streamed change set.
func TestStreamingRPO(t *testing.T) {
	c, s := setup(t)
	ctx := context.Background()
	e := newEnv(t, c, s, "rpo", "OFFSITE_SYNC_INTERVAL=1s")
	if _, err := ops.Full(ctx, e.cfg, ops.FullOptions{}, nil); err != nil {
		t.Fatalf("full: %v", err)
	}
	sctx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() {
		_, err := ops.Stream(sctx, e.cfg, ops.StreamOptions{}, nil)
		done <- err
	}()
	defer func() {
		stop()
		if err := <-done; err != nil && !errors.Is(err, context.Canceled) {
			t.Errorf("stream: %v", err)
		}
	}()
	streamed := func() int64 {
		var n int64
		for k, v := range s.Objects("rpo/stream") {
			if strings.Count(k, "/") == 5 { // rpo/stream/<chain>/<segment>/<gen>/<offset>
				n += v
			}
		}
		return n
	}
	var worst time.Duration
	for round := 0; round < 3; round++ {
		before := streamed()
		exec(t, c, "app",
			"INSERT INTO items (name, qty) SELECT 'stream ' || g, g FROM generate_series(1, 300) g",
			"UPDATE items SET qty = qty * 2 WHERE id % 11 = 0",
			"DELETE FROM items WHERE id % 13 = 0")
		committed := time.Now()
		for streamed() <= before {
			if time.Since(committed) > 15*time.Second {
				t.Fatalf("round %d: nothing reached the repository 15 s after the commit", round)
			}
			time.Sleep(50 * time.Millisecond)
		}
		lag := time.Since(committed)
		worst = max(worst, lag)
		t.Logf("round %d: commit visible off-site after %.2fs", round, lag.Seconds())
	}
	// The server down for a few passes: streaming goes on once it is back.
	s.Stop()
	before := streamed()
	exec(t, c, "app", "INSERT INTO items (name, qty) SELECT 'while down ' || g, g FROM generate_series(1, 200) g")
	time.Sleep(2500 * time.Millisecond)
	s.Restart()
	back := time.Now()
	for streamed() <= before {
		if time.Since(back) > 15*time.Second {
			t.Fatal("streaming did not resume after the server came back")
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Logf("streaming resumed %.2fs after the server came back", time.Since(back).Seconds())
	// Let the last pass include the whole last transaction, then take the
	// source's state: the machine is "lost" without stopping the stream.
	time.Sleep(2500 * time.Millisecond)
	want := sums(t, c, "app")
	empty := e.with(t, "BACKUP_DIR="+filepath.Join(t.TempDir(), "empty"))
	rr, err := ops.Restore(ctx, empty.cfg, ops.RestoreOptions{Target: ops.RestoreTarget{Latest: true}, TargetDB: "app_rpo", NoSafetyBackup: true}, nil)
	if err != nil {
		t.Fatalf("PITR from the repository alone: %v", err)
	}
	same(t, "PITR from streamed change sets", want, sums(t, c, "app_rpo"))
	t.Logf("worst commit-to-off-site delay %.2fs with OFFSITE_SYNC_INTERVAL=1s; replayed %d transactions", worst.Seconds(), rr.Replay.Transactions)
	if worst > 3*time.Second {
		t.Errorf("commit-to-off-site delay %.2fs exceeds the interval by far", worst.Seconds())
	}
	// An incremental while streaming: copied, and the streamed segment it
	// holds is removed from the repository by the next sync.
	inc, err := ops.Incremental(ctx, e.cfg, ops.IncrementalOptions{}, nil)
	if err != nil || len(inc.Offsite) == 0 || !inc.Offsite[0].Copied {
		t.Fatalf("incremental while streaming: %v %+v", err, inc)
	}
	r, _ := offsite.Open(e.cfg)
	res, err := r.Sync(ctx, e.cfg, time.Now(), nil)
	if err != nil || res.StreamsRemoved == 0 {
		t.Fatalf("sync after the incremental: %v removed %d streamed objects", err, res.StreamsRemoved)
	}
}

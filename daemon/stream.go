package daemon

import (
	"context"
	"os"
	"strings"
	"time"

	"github.com/pme2go/pme2go-backup/dbusapi"
)

// Streaming supervision: with BACKUP_STREAMING=true the daemon runs one
// continuous capture per configured database. The engine reconnects a lost
// replication connection by itself; when a capture stops for good it is
// restarted with backoff (1 s doubling to 5 min, back to 1 s after it ran
// for 5 min), and when it stopped because the database has no open chain
// (never started, or ended: a schema change, the lag cap, a lost slot) a new
// full backup is taken first unless AutoFull is off.

const (
	streamBackoffMin = time.Second
	streamBackoffMax = 5 * time.Minute
	streamStableRun  = 5 * time.Minute
)

func (d *Daemon) superviseStreams(ctx context.Context) {
	d.mu.Lock()
	d.state.Streaming = true
	d.mu.Unlock()
	d.poke()
	done := make(chan struct{})
	dbs := d.Engine.Databases()
	for _, db := range dbs {
		go func() {
			defer func() { done <- struct{}{} }()
			d.superviseStream(ctx, db)
		}()
	}
	for range dbs {
		<-done
	}
	d.mu.Lock()
	d.state.Streaming = false
	d.mu.Unlock()
}

func (d *Daemon) superviseStream(ctx context.Context, db string) {
	backoff := streamBackoffMin
	for ctx.Err() == nil {
		started := time.Now()
		d.Log.Info("streaming started", "database", db)
		err := d.Engine.Stream(ctx, db, func(Progress) {})
		if ctx.Err() != nil {
			return
		}
		if time.Since(started) >= streamStableRun {
			backoff = streamBackoffMin
		}
		code := dbusapi.CodeFailed
		if err != nil {
			code = dbusapi.AsError(err).Code
		}
		d.Log.Error("streaming stopped", "database", db, "error_code", code, "error", err, "retry_in", backoff.String())
		// The engine's capture reports a database without any chain with
		// a plain message (no code yet): recognise it too.
		noChain := code == "CHAIN_ENDED" || code == "NOT_FOUND" ||
			(code == dbusapi.CodeFailed && err != nil && strings.Contains(err.Error(), "has no open chain"))
		if noChain && d.AutoFull {
			if d.fullBackupFor(ctx, db) {
				backoff = streamBackoffMin
				continue
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(backoff):
		}
		backoff = min(backoff*2, streamBackoffMax)
	}
}

// fullBackupFor takes a full backup of db as a job (a new chain) and waits
// for it; it reports whether the backup succeeded. A busy database (another
// backup of it running) is waited for.
func (d *Daemon) fullBackupFor(ctx context.Context, db string) bool {
	for ctx.Err() == nil {
		j, err := d.jobs.StartJob(dbusapi.JobRequest{Kind: dbusapi.KindFull, Databases: []string{db}, Trigger: "chain-ended",
			Caller: dbusapi.Caller{UID: uint32(os.Getuid())}})
		if err != nil {
			if dbusapi.AsError(err).Code != dbusapi.CodeBusy {
				d.Log.Error("new full backup for streaming not started", "database", db, "error", err)
				return false
			}
			select {
			case <-ctx.Done():
				return false
			case <-time.After(5 * time.Second):
			}
			continue
		}
		d.Log.Info("new full backup for streaming", "database", db, "job", j.ID)
		info, ok := d.jobs.Wait(ctx, j.ID)
		return ok && info.State == dbusapi.JobSucceeded
	}
	return false
}

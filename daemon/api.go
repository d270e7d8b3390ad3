package daemon

import (
	"context"
	"encoding/json"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/pme2go/pme2go-backup/daemon/events"
	"github.com/pme2go/pme2go-backup/daemon/rest"
	"github.com/pme2go/pme2go-backup/dbusapi"
)

// This file wires the event broadcaster (the seed's notifications for
// D-Bus signals, WebSocket and server-sent events), the REST API and the
// metrics to the job manager.

// jobEvents turns job transitions into events: backup_started and
// backup_completed or backup_failed for full and incremental backups,
// backup_failed for a failed drill, and backup_failed with backup type
// "offsite" for a backup whose off-site copy failed (after its
// backup_completed: the backup itself succeeded). It also counts failures
// for /metrics (kind "offsite" for failed off-site copies). A failed
// off-site sync job is a backup_failed with backup type "offsite" too.
type jobEvents struct {
	b *events.Broadcaster

	mu       sync.Mutex
	failures map[string]uint64
}

func eventKind(kind string) bool { return kind == dbusapi.KindFull || kind == dbusapi.KindIncremental }

func (o *jobEvents) JobStarted(j dbusapi.JobInfo) {
	if eventKind(j.Kind) {
		o.b.Publish(events.Event{Type: events.BackupStarted, BackupType: j.Kind, Timestamp: j.StartedAt, JobID: j.ID, Databases: j.Databases})
	}
}

func (o *jobEvents) JobUpdated(dbusapi.JobInfo) {}

// OffsiteKind is the backup type of the events and the failure counter of
// failed off-site copies.
const OffsiteKind = "offsite"

func (o *jobEvents) count(kind string) {
	o.mu.Lock()
	if o.failures == nil {
		o.failures = map[string]uint64{}
	}
	o.failures[kind]++
	o.mu.Unlock()
}

func (o *jobEvents) JobFinished(j dbusapi.JobInfo) {
	if j.State != dbusapi.JobSucceeded {
		o.count(j.Kind)
	}
	defer func() {
		if e := j.OffsiteError; e != nil && j.State == dbusapi.JobSucceeded {
			o.count(OffsiteKind)
			o.b.Publish(events.Event{Type: events.BackupFailed, BackupType: OffsiteKind, Timestamp: j.FinishedAt, JobID: j.ID,
				Databases: j.Databases, BackupPath: j.Result, ErrorCode: e.Code, Error: e.Message, Fix: e.Fix})
		}
	}()
	if !eventKind(j.Kind) && j.Kind != dbusapi.KindDrill && j.Kind != dbusapi.KindOffsiteSync {
		return
	}
	ev := events.Event{BackupType: j.Kind, Timestamp: j.FinishedAt, JobID: j.ID, Databases: j.Databases}
	if j.Kind == dbusapi.KindOffsiteSync {
		ev.BackupType, ev.Databases = OffsiteKind, nil
	}
	switch {
	case j.State == dbusapi.JobSucceeded && !eventKind(j.Kind):
		return
	case j.State == dbusapi.JobSucceeded:
		ev.Type, ev.BackupPath, ev.Duration, ev.Size = events.BackupCompleted, j.Result, j.Duration().Milliseconds(), int64(j.Bytes)
	default:
		ev.Type, ev.ErrorCode, ev.Error = events.BackupFailed, dbusapi.CodeFailed, "the job "+j.State
		if j.Error != nil {
			ev.ErrorCode, ev.Error, ev.Fix = j.Error.Code, j.Error.Message, j.Error.Fix
		}
	}
	o.b.Publish(ev)
}

func (o *jobEvents) failureCounts() map[string]uint64 {
	o.mu.Lock()
	defer o.mu.Unlock()
	out := map[string]uint64{}
	for k, v := range o.failures {
		out[k] = v
	}
	return out
}

// signalOf converts an event to the Manager's D-Bus signal.
func signalOf(ev events.Event) dbusapi.BackupSignal {
	msg := ev.Error
	if ev.Fix != "" {
		msg += "\nFix: " + ev.Fix
	}
	return dbusapi.BackupSignal{Type: ev.Type, Kind: ev.BackupType, Time: ev.Timestamp, Result: ev.BackupPath,
		Duration: time.Duration(ev.Duration) * time.Millisecond, Bytes: uint64(max(ev.Size, 0)), ErrorCode: ev.ErrorCode,
		Message: msg, JobID: ev.JobID}
}

// figuresEngine is implemented by engines that report the figures of
// /metrics (the engine's front door does; test engines need not).
type figuresEngine interface {
	Figures(ctx context.Context) (rest.Snapshot, error)
}

// restBackend implements rest.Backend over the daemon.
type restBackend struct{ d *Daemon }

func (b restBackend) StartJob(req dbusapi.JobRequest) (dbusapi.JobInfo, error) {
	return b.d.jobs.StartJob(req)
}

func (b restBackend) CancelJob(id uint64, by dbusapi.Caller) error { return b.d.jobs.CancelJob(id, by) }

func (b restBackend) ListBackups(ctx context.Context) ([]dbusapi.BackupEntry, error) {
	return b.d.Engine.ListBackups(ctx)
}

// Job finds a running or recent job, else a finished one in the history.
func (b restBackend) Job(id uint64) (dbusapi.JobInfo, bool) {
	if j, ok := b.d.jobs.Job(id); ok {
		return j, true
	}
	if b.d.jobs.History == nil {
		return dbusapi.JobInfo{}, false
	}
	for _, r := range b.d.jobs.History.Records() {
		if r.ID != id {
			continue
		}
		j := dbusapi.JobInfo{ID: r.ID, Kind: r.Kind, State: r.State, Phase: r.State, StartedByUID: r.StartedByUID,
			Databases: r.Databases, StartedAt: r.StartedAt, FinishedAt: r.FinishedAt, Result: r.Result, Trigger: r.Trigger, Bytes: r.Bytes}
		if r.ErrorCode != "" || r.Error != "" {
			msg, fix, _ := strings.Cut(r.Error, "\nFix: ")
			j.Error = &dbusapi.Error{Code: r.ErrorCode, Message: msg, Fix: fix}
		}
		return j, true
	}
	return dbusapi.JobInfo{}, false
}

// Status is GetStatus's map with the engine's status as an object and the
// running jobs as job resources.
func (b restBackend) Status(ctx context.Context) (map[string]any, error) {
	st, err := backend(b).Status(ctx)
	if err != nil {
		return nil, err
	}
	if s, ok := st["engine"].(string); ok && json.Valid([]byte(s)) {
		st["engine"] = json.RawMessage(s)
	}
	jobs := []map[string]any{}
	for _, j := range b.d.jobs.Running() {
		jobs = append(jobs, map[string]any{"id": j.ID, "kind": j.Kind, "state": j.State, "phase": j.Phase,
			"url": rest.Base + "/jobs/" + itoa(j.ID), "startedAt": j.StartedAt})
	}
	st["jobs"] = jobs
	return st, nil
}

func itoa(n uint64) string { return strconv.FormatUint(n, 10) }

// Snapshot gathers the figures of /metrics.
func (b restBackend) Snapshot(ctx context.Context) (rest.Snapshot, error) { return b.d.snapshot(ctx) }

func (d *Daemon) snapshot(ctx context.Context) (rest.Snapshot, error) {
	var snap rest.Snapshot
	if fe, ok := d.Engine.(figuresEngine); ok {
		var err error
		if snap, err = fe.Figures(ctx); err != nil {
			return snap, err
		}
	}
	snap.Version = d.Version
	snap.Failures = d.jobEvents.failureCounts()
	snap.Subscribers = d.Events.Subscribers()
	snap.JobsRunning = map[string]int{}
	for _, j := range d.jobs.Running() {
		snap.JobsRunning[j.Kind]++
	}
	snap.LastFailure, snap.LastJobOK = map[string]time.Time{}, map[string]bool{}
	if d.jobs.History != nil {
		recs := d.jobs.History.Records()
		// The duration of the job that wrote each newest archive: the
		// newest succeeded job of that kind naming the archive or the
		// database.
		for i := range snap.Backups {
			fig := &snap.Backups[i]
			for k := len(recs) - 1; k >= 0; k-- {
				r := recs[k]
				if r.Kind == fig.Kind && r.State == dbusapi.JobSucceeded && containsStr(r.Databases, fig.Database) {
					fig.Duration = r.Duration
					break
				}
			}
		}
		for _, r := range recs {
			if r.State != dbusapi.JobSucceeded {
				if r.FinishedAt.After(snap.LastFailure[r.Kind]) {
					snap.LastFailure[r.Kind] = r.FinishedAt
				}
			}
			snap.LastJobOK[r.Kind] = r.State == dbusapi.JobSucceeded
		}
	}
	return snap, nil
}

func containsStr(l []string, s string) bool {
	for _, x := range l {
		if x == s {
			return true
		}
	}
	return false
}

// textfileLoop writes METRICS_TEXTFILE once at start and after each job
// (coalesced), until ctx ends.
func (d *Daemon) textfileLoop(ctx context.Context, kick <-chan struct{}) {
	write := func() {
		cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		snap, err := d.snapshot(cctx)
		if err != nil {
			d.Log.Warn("metrics textfile not written", "file", d.MetricsTextfile, "error", err)
			return
		}
		if err := rest.WriteTextfile(d.MetricsTextfile, snap); err != nil {
			d.Log.Warn("metrics textfile not written", "file", d.MetricsTextfile, "error", err)
		}
	}
	write()
	for {
		select {
		case <-ctx.Done():
			return
		case <-kick:
			write()
		}
	}
}

// jobFinishedHook calls f after each finished job.
type jobFinishedHook func()

func (jobFinishedHook) JobStarted(dbusapi.JobInfo)    {}
func (jobFinishedHook) JobUpdated(dbusapi.JobInfo)    {}
func (f jobFinishedHook) JobFinished(dbusapi.JobInfo) { f() }

package daemon

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/pme2go/pme2go-backup/dbusapi"
)

// Observer is told about jobs: the D-Bus server, later the REST event
// stream. JobStarted is called before StartJob returns; the calls for one
// job come in order (started, updated..., finished) from one goroutine at a
// time.
type Observer interface {
	JobStarted(dbusapi.JobInfo)
	JobUpdated(dbusapi.JobInfo)
	JobFinished(dbusapi.JobInfo)
}

// Jobs runs operations as jobs: one goroutine and one cancellable context
// per job, at most one backup or restore per database at a time, progress
// published at most every ProgressInterval, and a persisted history.
type Jobs struct {
	Engine           Engine
	History          *History
	Log              *slog.Logger
	ProgressInterval time.Duration // default 250 ms
	// MaxRunning caps the jobs running at once (default MaxRunningJobs), so
	// that no caller can start verify jobs without end.
	MaxRunning int

	ctx       context.Context
	mu        sync.Mutex
	nextID    uint64
	running   map[uint64]*job
	dbOwner   map[string]uint64 // database -> job holding it
	observers []Observer
	finished  []dbusapi.JobInfo // the last KeepFinished finished jobs, oldest first
	wg        sync.WaitGroup
	onChange  func()
}

type job struct {
	mu       sync.Mutex // serializes observer calls and guards info
	info     dbusapi.JobInfo
	cancel   context.CancelFunc
	lastEmit time.Time
	done     chan struct{}
	keys     []string
}

// NewJobs creates the job manager; ctx is the root of every job's context
// (cancelling it cancels all jobs).
func NewJobs(ctx context.Context, eng Engine, hist *History, log *slog.Logger) *Jobs {
	if log == nil {
		log = slog.Default()
	}
	j := &Jobs{Engine: eng, History: hist, Log: log, ctx: ctx, running: map[uint64]*job{}, dbOwner: map[string]uint64{}}
	if hist != nil {
		j.nextID = hist.MaxID()
	}
	return j
}

// Observe adds an observer. Call before starting jobs.
func (m *Jobs) Observe(o Observer) { m.observers = append(m.observers, o) }

// OnChange sets a function called (without locks held) whenever a job starts
// or finishes; the daemon refreshes its properties and idle timer with it.
func (m *Jobs) OnChange(f func()) { m.onChange = f }

var kindNames = map[string]string{
	dbusapi.KindFull: "full backup", dbusapi.KindIncremental: "incremental backup", dbusapi.KindRestore: "restore",
	dbusapi.KindVerify: "verify", dbusapi.KindCleanup: "cleanup", dbusapi.KindDrill: "restore drill",
	dbusapi.KindOffsiteSync: "off-site sync", dbusapi.KindRekey: "rekey",
}

// lockKeys are the databases a request needs to itself: backups their
// databases, a restore its target databases, cleanup every database (it may
// remove archives a backup or restore is using); verify and dry runs none.
func (m *Jobs) lockKeys(req dbusapi.JobRequest) []string {
	dbs := req.Databases
	if len(dbs) == 0 {
		dbs = m.Engine.Databases()
	}
	switch req.Kind {
	case dbusapi.KindFull, dbusapi.KindIncremental:
		return dbs
	case dbusapi.KindRestore:
		if req.DryRun {
			return nil
		}
		if req.Restore.TargetDB != "" {
			return []string{req.Restore.TargetDB}
		}
		return dbs
	case dbusapi.KindCleanup:
		if req.DryRun {
			return nil
		}
		return append(append([]string(nil), m.Engine.Databases()...), "\x00cleanup", "\x00offsite")
	case dbusapi.KindOffsiteSync:
		// Sync prunes local copies as cleanup does.
		return []string{"\x00offsite"}
	case dbusapi.KindRekey:
		// Rekey replaces archives and their off-site copies: nothing else
		// that writes or removes archives runs meanwhile.
		if req.DryRun {
			return nil
		}
		return append(append([]string(nil), m.Engine.Databases()...), "\x00cleanup", "\x00offsite", "\x00drill")
	case dbusapi.KindDrill:
		// Scratch databases of its own: one drill at a time, and not
		// while cleanup may remove the archives it restores.
		return []string{"\x00drill", "\x00cleanup"}
	}
	return nil
}

// MaxRunningJobs is the default cap on jobs running at once.
const MaxRunningJobs = 8

// StartJob starts req as a job (dbusapi.Backend). A database already held by
// a running backup or restore refuses it with CodeBusy naming that job.
func (m *Jobs) StartJob(req dbusapi.JobRequest) (dbusapi.JobInfo, error) {
	if _, ok := kindNames[req.Kind]; !ok {
		return dbusapi.JobInfo{}, dbusapi.Errorf(dbusapi.CodeInvalidArgs, "", fmt.Sprintf("unknown job kind %q", req.Kind))
	}
	if err := m.Engine.Validate(req); err != nil {
		return dbusapi.JobInfo{}, err
	}
	if m.ctx.Err() != nil {
		return dbusapi.JobInfo{}, dbusapi.Errorf(dbusapi.CodeUnavailable, "try again once the daemon has restarted", "the daemon is stopping")
	}
	keys := m.lockKeys(req)
	m.mu.Lock()
	limit := m.MaxRunning
	if limit <= 0 {
		limit = MaxRunningJobs
	}
	if len(m.running) >= limit {
		m.mu.Unlock()
		return dbusapi.JobInfo{}, dbusapi.Errorf(dbusapi.CodeBusy, "wait for a running job to finish",
			fmt.Sprintf("%d jobs are running, the most the daemon runs at once", limit))
	}
	for _, k := range keys {
		if id, held := m.dbOwner[k]; held {
			other := m.running[id]
			other.mu.Lock()
			oi := other.info
			other.mu.Unlock()
			m.mu.Unlock()
			what := "database " + k
			if strings.HasPrefix(k, "\x00") {
				what = kindNames[oi.Kind]
			}
			return dbusapi.JobInfo{}, dbusapi.Errorf(dbusapi.CodeBusy,
				fmt.Sprintf("wait for job %d to finish (busctl get-property %s %s %s State), or cancel it", oi.ID, dbusapi.BusName, oi.Path(), dbusapi.JobIface),
				fmt.Sprintf("%s is busy: job %d (%s, started by uid %d at %s) is %s", what, oi.ID, kindNames[oi.Kind],
					oi.StartedByUID, oi.StartedAt.UTC().Format(time.RFC3339), oi.State))
		}
	}
	m.nextID++
	id := m.nextID
	ctx, cancel := context.WithCancel(m.ctx)
	dbs := req.Databases
	if len(dbs) == 0 && req.Kind != dbusapi.KindVerify {
		dbs = m.Engine.Databases()
	}
	if req.Kind == dbusapi.KindRestore && req.Restore.TargetDB != "" {
		dbs = []string{req.Restore.TargetDB}
	}
	j := &job{cancel: cancel, done: make(chan struct{}), keys: keys, info: dbusapi.JobInfo{
		ID: id, Kind: req.Kind, State: dbusapi.JobRunning, StartedByUID: req.Caller.UID, Databases: dbs,
		Cancelable: true, StartedAt: time.Now().UTC(), Trigger: req.Trigger, Phase: "starting",
	}}
	for _, k := range keys {
		m.dbOwner[k] = id
	}
	m.running[id] = j
	m.wg.Add(1)
	j.mu.Lock()
	info := j.info
	for _, o := range m.observers {
		o.JobStarted(info)
	}
	j.mu.Unlock()
	m.mu.Unlock()
	m.Log.Info("job started", "job", id, "backup_type", req.Kind, "databases", dbs, "trigger", req.Trigger, "caller_uid", req.Caller.UID)
	m.changed()
	go m.run(ctx, j, req)
	return info, nil
}

func (m *Jobs) changed() {
	if m.onChange != nil {
		m.onChange()
	}
}

func (m *Jobs) interval() time.Duration {
	if m.ProgressInterval > 0 {
		return m.ProgressInterval
	}
	return 250 * time.Millisecond
}

func (m *Jobs) run(ctx context.Context, j *job, req dbusapi.JobRequest) {
	defer m.wg.Done()
	defer close(j.done)
	progress := func(p Progress) {
		j.mu.Lock()
		defer j.mu.Unlock()
		if dbusapi.Finished(j.info.State) {
			return
		}
		phaseChanged := p.Phase != "" && p.Phase != j.info.Phase
		if p.Phase != "" {
			j.info.Phase = p.Phase
		}
		j.info.ProgressValid = p.Valid
		if p.Valid {
			j.info.Progress = min(max(p.Fraction, 0), 1)
		}
		if p.Bytes > 0 {
			j.info.Bytes = p.Bytes
		}
		if now := time.Now(); phaseChanged || now.Sub(j.lastEmit) >= m.interval() {
			j.lastEmit = now
			for _, o := range m.observers {
				o.JobUpdated(j.info)
			}
		}
	}
	out, err := m.runEngine(ctx, req, progress)

	j.mu.Lock()
	j.info.FinishedAt = time.Now().UTC()
	j.info.Cancelable = false
	switch {
	case err == nil:
		j.info.State = dbusapi.JobSucceeded
		j.info.Phase = "done"
		j.info.Progress, j.info.ProgressValid = 1, true
		j.info.Result = out.Path
		j.info.OffsiteError = out.OffsiteError
		if out.Size > 0 {
			j.info.Bytes = uint64(out.Size)
		}
	case ctx.Err() != nil && (errors.Is(err, context.Canceled) || j.info.State == dbusapi.JobCancelling || m.ctx.Err() != nil):
		j.info.State = dbusapi.JobCancelled
		j.info.Phase = "cancelled"
		why := "the job was cancelled"
		if m.ctx.Err() != nil && j.info.Error == nil {
			why = "the daemon is stopping"
		}
		j.info.Error = dbusapi.Errorf(dbusapi.CodeCancelled, "start it again when wanted", why+"; nothing it had written was kept")
	default:
		j.info.State = dbusapi.JobFailed
		j.info.Phase = "failed"
		j.info.Error = dbusapi.AsError(err)
	}
	if out.Result != nil && j.info.State != dbusapi.JobCancelled {
		if b, jerr := json.Marshal(out.Result); jerr == nil && string(b) != "null" {
			j.info.ResultJSON = string(b)
		}
	}
	info := j.info
	for _, o := range m.observers {
		o.JobFinished(info)
	}
	j.mu.Unlock()

	m.mu.Lock()
	for _, k := range j.keys {
		if m.dbOwner[k] == j.info.ID {
			delete(m.dbOwner, k)
		}
	}
	delete(m.running, info.ID)
	m.finished = append(m.finished, info)
	if len(m.finished) > KeepFinished {
		m.finished = m.finished[len(m.finished)-KeepFinished:]
	}
	m.mu.Unlock()

	rec := recordOf(info)
	attrs := []any{"job", info.ID, "backup_type", info.Kind, "databases", info.Databases, "duration_ms", info.FinishedAt.Sub(info.StartedAt).Milliseconds(),
		"size_bytes", info.Bytes, "backup_name", info.Result, "state", info.State}
	if info.Error != nil {
		m.Log.Error("job "+info.State, append(attrs, "error_code", info.Error.Code, "error", info.Error.Message)...)
	} else {
		m.Log.Info("job succeeded", attrs...)
	}
	if m.History != nil {
		if err := m.History.Add(rec); err != nil {
			m.Log.Error("job history not saved", "error", err)
		}
	}
	m.changed()
}

// runEngine calls the engine, turning a panic into a failure.
func (m *Jobs) runEngine(ctx context.Context, req dbusapi.JobRequest, progress func(Progress)) (out Outcome, err error) {
	defer func() {
		if r := recover(); r != nil {
			m.Log.Error("panic in job", "panic", fmt.Sprint(r))
			err = dbusapi.Errorf(dbusapi.CodeFailed, "report this as a bug", fmt.Sprintf("internal error: %v", r))
		}
	}()
	return m.Engine.Run(ctx, req, progress)
}

// CancelJob cancels a running job (dbusapi.Backend).
func (m *Jobs) CancelJob(id uint64, by dbusapi.Caller) error {
	m.mu.Lock()
	j, ok := m.running[id]
	m.mu.Unlock()
	if !ok {
		return dbusapi.Errorf(dbusapi.CodeNoSuchJob, "", fmt.Sprintf("job %d is not running", id))
	}
	j.mu.Lock()
	if j.info.State == dbusapi.JobRunning {
		j.info.State = dbusapi.JobCancelling
		j.info.Cancelable = false
		j.info.Phase = "cancelling"
		for _, o := range m.observers {
			o.JobUpdated(j.info)
		}
		m.Log.Info("job cancelled", "job", id, "caller_uid", by.UID)
	}
	j.mu.Unlock()
	j.cancel()
	return nil
}

// Running lists the running jobs, by id.
func (m *Jobs) Running() []dbusapi.JobInfo {
	m.mu.Lock()
	jobs := make([]*job, 0, len(m.running))
	for _, j := range m.running {
		jobs = append(jobs, j)
	}
	m.mu.Unlock()
	out := make([]dbusapi.JobInfo, 0, len(jobs))
	for _, j := range jobs {
		j.mu.Lock()
		out = append(out, j.info)
		j.mu.Unlock()
	}
	sort.Slice(out, func(a, b int) bool { return out[a].ID < out[b].ID })
	return out
}

// KeepFinished is how many finished jobs Job still finds in memory (older
// ones are found in the history, with less detail).
const KeepFinished = 64

// Job returns a running or recently finished job.
func (m *Jobs) Job(id uint64) (dbusapi.JobInfo, bool) {
	m.mu.Lock()
	j, running := m.running[id]
	if !running {
		defer m.mu.Unlock()
		for i := len(m.finished) - 1; i >= 0; i-- {
			if m.finished[i].ID == id {
				return m.finished[i], true
			}
		}
		return dbusapi.JobInfo{}, false
	}
	m.mu.Unlock()
	j.mu.Lock()
	defer j.mu.Unlock()
	return j.info, true
}

// WaitAll waits for every job to end (after the root context was cancelled).
func (m *Jobs) WaitAll() { m.wg.Wait() }

// Wait waits for job id to end and returns its final state (at once for
// a job that has already ended); ok is false when ctx ended first or the
// job is unknown.
func (m *Jobs) Wait(ctx context.Context, id uint64) (info dbusapi.JobInfo, ok bool) {
	m.mu.Lock()
	j, running := m.running[id]
	m.mu.Unlock()
	if !running {
		if info, ok := m.Job(id); ok && dbusapi.Finished(info.State) {
			return info, true
		}
		return info, false
	}
	select {
	case <-j.done:
	case <-ctx.Done():
		return info, false
	}
	j.mu.Lock()
	defer j.mu.Unlock()
	return j.info, true
}

package daemon

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"sort"
	"strings"
	"sync"
	"time"

	sd "github.com/coreos/go-systemd/v22/daemon"
	"github.com/godbus/dbus/v5"

	"github.com/pme2go/pme2go-backup/daemon/events"
	"github.com/pme2go/pme2go-backup/daemon/rest"
	"github.com/pme2go/pme2go-backup/dbusapi"
)

// Daemon is pme2go-backupd: it owns org.pme2go.Backup1 on the system bus
// and runs jobs. Fill the fields, then call Run.
type Daemon struct {
	Engine   Engine
	Version  string
	StateDir string // BACKUP_DIR/state: the job history lives here
	Log      *slog.Logger
	Notify   *Notifier
	Beats    *Heartbeats

	BusAddress string // empty: the system bus (DBUS_SYSTEM_BUS_ADDRESS or the default socket)
	Group      string // group allowed without polkit (dbusapi.DefaultGroup)
	Polkit     string // "auto", "on", "off"

	// IdleTimeout, when positive, makes the daemon exit after that long
	// with no job, no call, no streaming and no scheduler (bus activation
	// starts it again).
	IdleTimeout time.Duration
	HistorySize int

	// Streaming runs continuous capture of every database (BACKUP_STREAMING);
	// AutoFull takes a new full backup when a database has no open chain.
	Streaming bool
	AutoFull  bool

	// Schedules maps a job kind (full, incremental, cleanup) to a cron
	// schedule; non-empty runs the built-in scheduler (--scheduler).
	Schedules map[string]Schedule

	// Events is the one source of the seed's notifications (D-Bus
	// signals, WebSocket, server-sent events); Run creates it when nil.
	Events *events.Broadcaster
	// Listeners serve the REST API (sockets passed by systemd, or
	// REST_LISTEN); a TCP one needs RESTToken. Run closes them.
	Listeners []net.Listener
	// RESTToken is the bearer token TCP callers of the REST API send.
	RESTToken string
	// MetricsTextfile, when set, receives the metrics in the text format
	// after each job (METRICS_TEXTFILE).
	MetricsTextfile string
	// Secrets are never sent in a REST response or event (the database
	// password).
	Secrets []string

	jobs      *Jobs
	jobEvents *jobEvents
	rest      *rest.Server
	server    *dbusapi.Server
	conn      *dbus.Conn
	timers    map[string]time.Time // next runs of the systemd timers
	beat      time.Duration        // how often the loops beat (well under the watchdog interval)
	mu        sync.Mutex
	lastCall  time.Time
	state     dbusapi.ManagerState
	nudge     chan struct{}
}

// Schedule computes the next activation after a time (engine/schedule's
// *Cron satisfies it).
type Schedule interface {
	Next(time.Time) time.Time
	String() string
}

// ErrNameTaken is returned when another process owns the bus name.
var ErrNameTaken = errors.New("the bus name " + dbusapi.BusName + " is already owned (is another pme2go-backupd running?)")

func (d *Daemon) connect(ctx context.Context) (*dbus.Conn, error) {
	opts := []dbus.ConnOption{dbus.WithIncomingInterceptor(func(m *dbus.Message) {
		if m.Type == dbus.TypeMethodCall {
			d.mu.Lock()
			d.lastCall = time.Now()
			d.mu.Unlock()
		}
	})}
	if d.BusAddress != "" {
		return dbus.Connect(d.BusAddress, opts...)
	}
	return dbus.ConnectSystemBus(opts...)
}

// Run runs the daemon until ctx is cancelled (SIGTERM), the idle timeout
// passes, or the bus connection is lost. Running jobs are cancelled at the
// end and waited for.
func (d *Daemon) Run(ctx context.Context) error {
	if d.Log == nil {
		d.Log = slog.Default()
	}
	if d.Notify == nil {
		d.Notify = &Notifier{Log: d.Log}
	}
	if d.Beats == nil {
		d.Beats = &Heartbeats{}
	}
	if d.Events == nil {
		d.Events = &events.Broadcaster{}
	}
	defer func() {
		for _, l := range d.Listeners {
			_ = l.Close()
		}
	}()
	d.nudge = make(chan struct{}, 1)
	d.lastCall = time.Now()
	d.beat = time.Second
	if f := d.Notify.WatchdogEnabled; f != nil || os.Getenv("WATCHDOG_USEC") != "" {
		if f == nil {
			f = sd.SdWatchdogEnabled
		}
		if iv, err := f(false); err == nil && iv > 0 && iv/4 < d.beat {
			d.beat = iv / 4
		}
	}

	hist, err := OpenHistory(d.StateDir, d.HistorySize)
	if err != nil {
		d.Log.Warn("job history", "error", err)
	}
	conn, err := d.connect(ctx)
	if err != nil {
		// A container without D-Bus still runs its scheduler and streaming
		// (issue: the daemon in the foreground running its own scheduler).
		if len(d.Schedules) == 0 && !d.Streaming && len(d.Listeners) == 0 {
			return fmt.Errorf("connect to the system bus: %w", err)
		}
		d.Log.Warn("no system bus: running without the D-Bus API", "error", err)
		conn = nil
	} else {
		defer conn.Close()
	}
	d.conn = conn

	// Jobs get their own context: cancelled when the daemon stops, after
	// the name is released, so that their last signals still go out.
	jobCtx, cancelJobs := context.WithCancel(context.Background())
	defer cancelJobs()
	d.jobs = NewJobs(jobCtx, d.Engine, hist, d.Log)
	d.jobs.OnChange(d.poke)
	auth := &dbusapi.Authorizer{Conn: conn, Group: d.Group, Polkit: d.Polkit, Log: d.Log}
	if conn != nil {
		d.server = dbusapi.NewServer(jobCtx, conn, backend{d}, auth, d.Log)
		d.jobs.Observe(d.server)
		if err := d.server.Export(d.Version); err != nil {
			return err
		}
		srv := d.server
		d.Events.Hook(func(ev events.Event) { srv.EmitBackupSignal(signalOf(ev)) })
	}
	// After the D-Bus server: a job's object exists before its event.
	d.jobEvents = &jobEvents{b: d.Events}
	d.jobs.Observe(d.jobEvents)
	if len(d.Listeners) > 0 {
		srv, err := rest.New(rest.Options{Backend: restBackend{d}, Auth: auth, Events: d.Events, Token: d.RESTToken,
			Log: d.Log, Activity: d.touch, Secrets: d.Secrets}, d.Listeners)
		if err != nil {
			return err
		}
		d.rest = srv
	}
	textfileKick := make(chan struct{}, 1)
	if d.MetricsTextfile != "" {
		d.jobs.Observe(jobFinishedHook(func() {
			select {
			case textfileKick <- struct{}{}:
			default:
			}
		}))
	}
	d.refresh(ctx)
	if conn != nil {
		reply, err := conn.RequestName(dbusapi.BusName, dbus.NameFlagDoNotQueue)
		if err != nil {
			return fmt.Errorf("request bus name %s: %w", dbusapi.BusName, err)
		}
		if reply != dbus.RequestNameReplyPrimaryOwner && reply != dbus.RequestNameReplyAlreadyOwner {
			return ErrNameTaken
		}
		d.Log.Info("ready", "bus_name", dbusapi.BusName, "version", d.Version)
	} else {
		d.Log.Info("ready", "version", d.Version)
	}
	if d.rest != nil {
		d.rest.Start()
	}
	d.Notify.Ready(d.statusLine())

	loopCtx, stopLoops := context.WithCancel(ctx)
	defer stopLoops()
	textfileDone := make(chan struct{})
	if d.MetricsTextfile != "" {
		go func() {
			defer close(textfileDone)
			d.textfileLoop(loopCtx, textfileKick)
		}()
	} else {
		close(textfileDone)
	}
	go d.Notify.Watchdog(loopCtx, d.Beats)
	if len(d.Schedules) > 0 {
		go d.scheduler(loopCtx)
	}
	streamsDone := make(chan struct{})
	if d.Streaming {
		go func() {
			defer close(streamsDone)
			d.superviseStreams(loopCtx)
		}()
	} else {
		close(streamsDone)
	}
	why := d.mainLoop(loopCtx, conn)
	stopLoops()
	<-streamsDone
	<-textfileDone

	d.Log.Info("stopping", "reason", why)
	d.setState("stopping")
	d.Notify.Stopping("stopping: " + why)
	if conn != nil {
		_, _ = conn.ReleaseName(dbusapi.BusName)
	}
	// The jobs end first, while the REST API still serves: their
	// backup_failed events reach the WebSocket and SSE subscribers (and
	// new jobs are refused as the daemon is stopping).
	cancelJobs()
	d.jobs.WaitAll()
	if d.rest != nil {
		// New requests are refused and event streams end (after the
		// events already queued); requests in progress get a few seconds.
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		_ = d.rest.Shutdown(sctx)
		cancel()
	}
	if d.MetricsTextfile != "" {
		// The jobs cancelled above ended as failures: the file says so.
		cctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		if snap, err := d.snapshot(cctx); err == nil {
			_ = rest.WriteTextfile(d.MetricsTextfile, snap)
		}
		cancel()
	}
	d.Log.Info("stopped")
	if why == "bus connection lost" {
		return errors.New("the bus connection was lost")
	}
	return nil
}

// mainLoop refreshes the properties and status line, watches the bus
// connection and the idle timer; it returns why it stopped.
func (d *Daemon) mainLoop(ctx context.Context, conn *dbus.Conn) string {
	tick := time.NewTicker(d.beat)
	defer tick.Stop()
	refreshEvery := 30 * time.Second
	lastRefresh := time.Now()
	for {
		d.Beats.Beat("main")
		select {
		case <-ctx.Done():
			return "signal"
		case <-d.nudge:
			d.refresh(ctx)
			lastRefresh = time.Now()
		case <-tick.C:
			if conn != nil && !conn.Connected() {
				return "bus connection lost"
			}
			if time.Since(lastRefresh) >= refreshEvery {
				d.refresh(ctx)
				lastRefresh = time.Now()
			} else {
				d.updateRunning()
			}
			if d.idle() {
				return "idle"
			}
		}
	}
}

// touch records activity (a REST request) for the idle timer.
func (d *Daemon) touch() {
	d.mu.Lock()
	d.lastCall = time.Now()
	d.mu.Unlock()
}

func (d *Daemon) poke() {
	select {
	case d.nudge <- struct{}{}:
	default:
	}
}

func (d *Daemon) idle() bool {
	if d.IdleTimeout <= 0 || len(d.Schedules) > 0 || len(d.jobs.Running()) > 0 || d.Events.Subscribers() > 0 {
		return false
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	return !d.state.Streaming && time.Since(d.lastCall) >= d.IdleTimeout
}

// refresh recomputes the Manager's properties from the archives and jobs.
func (d *Daemon) refresh(ctx context.Context) {
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	list, err := d.Engine.ListBackups(cctx)
	d.mu.Lock()
	if err == nil {
		d.state.LastFull, d.state.LastFullTime, d.state.LastIncremental, d.state.LastIncrTime = "", time.Time{}, "", time.Time{}
		for _, b := range list {
			if b.Type == "full" && !b.Time.Before(d.state.LastFullTime) {
				d.state.LastFull, d.state.LastFullTime = b.Path, b.Time
			}
			if b.Type == "incremental" && !b.Time.Before(d.state.LastIncrTime) {
				d.state.LastIncremental, d.state.LastIncrTime = b.Path, b.Time
			}
		}
	}
	d.mu.Unlock()
	if err != nil {
		d.Log.Warn("list backups", "error", err)
	}
	if dr, ok := d.Engine.(drillReporter); ok {
		if s, ok := dr.LastDrill(cctx); ok {
			d.mu.Lock()
			d.state.LastDrillTime, d.state.LastDrillOK, d.state.LastDrillDatabases = s.Time, s.OK, s.Databases
			d.state.LastDrillDuration, d.state.LastDrillError = s.Duration, s.Error
			d.mu.Unlock()
		}
	}
	if len(d.Schedules) == 0 {
		t := systemdTimers(cctx, d.conn)
		d.mu.Lock()
		d.timers = t
		d.mu.Unlock()
	}
	if d.Streaming {
		if w, err := d.Engine.Window(cctx); err == nil {
			d.mu.Lock()
			d.state.StreamingLagBytes, d.state.WindowStart, d.state.WindowEnd = w.LagBytes, w.Start, w.End
			d.mu.Unlock()
		} else {
			d.Log.Warn("recovery window", "error", err)
		}
	}
	d.updateRunning()
}

// updateRunning refreshes the job list, State and the status line.
func (d *Daemon) updateRunning() {
	running := d.jobs.Running()
	d.mu.Lock()
	d.state.Jobs = d.state.Jobs[:0]
	for _, j := range running {
		d.state.Jobs = append(d.state.Jobs, j.ID)
	}
	if d.state.State != "stopping" {
		switch {
		case len(running) > 0:
			d.state.State = "running"
		case d.state.Streaming:
			d.state.State = "streaming"
		default:
			d.state.State = "idle"
		}
	}
	d.state.NextScheduled = d.nextRuns(time.Now())
	st := d.state
	st.Jobs = append([]uint64(nil), d.state.Jobs...)
	d.mu.Unlock()
	if d.server != nil {
		d.server.SetManagerState(st)
	}
	d.Notify.Status(d.statusLine())
}

func (d *Daemon) setState(s string) {
	d.mu.Lock()
	d.state.State = s
	st := d.state
	d.mu.Unlock()
	if d.server != nil {
		d.server.SetManagerState(st)
	}
}

// statusLine is the STATUS= text: what the daemon is doing.
func (d *Daemon) statusLine() string {
	running := d.jobs.Running()
	if len(running) > 0 {
		var parts []string
		for _, j := range running {
			p := fmt.Sprintf("job %d %s: %s", j.ID, j.Kind, j.Phase)
			if j.ProgressValid {
				p += fmt.Sprintf(" %.0f%%", j.Progress*100)
			}
			parts = append(parts, p)
		}
		return "running " + strings.Join(parts, "; ")
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	s := "idle"
	if d.state.Streaming {
		s = "streaming"
	}
	if d.state.LastFull != "" {
		s += "; last full backup " + d.state.LastFullTime.UTC().Format(time.RFC3339)
	}
	return s
}

// nextRuns is the NextScheduled property: the built-in scheduler's next
// activations, or the systemd timers' when the scheduler is off. d.mu may
// be held.
func (d *Daemon) nextRuns(now time.Time) map[string]time.Time {
	out := map[string]time.Time{}
	for kind, s := range d.Schedules {
		out[kind] = s.Next(now)
	}
	if len(d.Schedules) == 0 {
		for kind, t := range d.timers {
			out[kind] = t
		}
	}
	return out
}

// scheduler starts the scheduled jobs (hosts without systemd timers). A
// run that finds its databases busy is skipped and logged.
func (d *Daemon) scheduler(ctx context.Context) {
	defer d.Beats.Forget("scheduler")
	next := d.nextRuns(time.Now())
	for kind, t := range next {
		d.Log.Info("scheduled", "backup_type", kind, "schedule", d.Schedules[kind].String(), "next", t.Format(time.RFC3339))
	}
	tick := time.NewTicker(d.beat)
	defer tick.Stop()
	for {
		d.Beats.Beat("scheduler")
		select {
		case <-ctx.Done():
			return
		case now := <-tick.C:
			kinds := make([]string, 0, len(next))
			for k := range next {
				kinds = append(kinds, k)
			}
			sort.Strings(kinds) // cleanup, full, incremental: a stable order
			for _, kind := range kinds {
				if t := next[kind]; t.IsZero() || now.Before(t) {
					continue
				}
				next[kind] = d.Schedules[kind].Next(now)
				req := dbusapi.JobRequest{Kind: kind, Trigger: "scheduled", Caller: dbusapi.Caller{UID: uint32(os.Getuid())}}
				if j, err := d.jobs.StartJob(req); err != nil {
					d.Log.Warn("scheduled job skipped", "backup_type", kind, "error_code", dbusapi.AsError(err).Code, "error", err)
				} else {
					d.Log.Info("scheduled job started", "backup_type", kind, "job", j.ID)
				}
			}
		}
	}
}

// backend implements dbusapi.Backend over the daemon.
type backend struct{ d *Daemon }

func (b backend) StartJob(req dbusapi.JobRequest) (dbusapi.JobInfo, error) {
	return b.d.jobs.StartJob(req)
}

func (b backend) CancelJob(id uint64, by dbusapi.Caller) error { return b.d.jobs.CancelJob(id, by) }

func (b backend) ListBackups(ctx context.Context) ([]dbusapi.BackupEntry, error) {
	return b.d.Engine.ListBackups(ctx)
}

func (b backend) Mark(ctx context.Context, name string, databases []string) (string, error) {
	return b.d.Engine.Mark(ctx, name, databases)
}

func (b backend) Status(ctx context.Context) (map[string]any, error) {
	d := b.d
	eng, err := d.Engine.Status(ctx)
	if err != nil {
		return nil, err
	}
	engJSON, _ := json.Marshal(eng)
	d.mu.Lock()
	st := d.state
	d.mu.Unlock()
	var jobs []dbus.ObjectPath
	for _, j := range d.jobs.Running() {
		jobs = append(jobs, j.Path())
	}
	if jobs == nil {
		jobs = []dbus.ObjectPath{}
	}
	var hist []map[string]any
	if d.jobs.History != nil {
		for _, r := range d.jobs.History.Records() {
			m := map[string]any{"id": r.ID, "kind": r.Kind, "state": r.State, "startedAt": r.StartedAt,
				"finishedAt": r.FinishedAt, "duration": r.Duration, "bytes": r.Bytes, "result": r.Result,
				"errorCode": r.ErrorCode, "error": r.Error, "trigger": r.Trigger, "startedByUid": r.StartedByUID}
			if len(r.Databases) > 0 {
				m["databases"] = r.Databases
			}
			hist = append(hist, m)
		}
	}
	if hist == nil {
		hist = []map[string]any{}
	}
	return map[string]any{
		"version":             d.Version,
		"state":               st.State,
		"databases":           d.Engine.Databases(),
		"jobs":                jobs,
		"history":             hist,
		"nextScheduled":       st.NextScheduled,
		"streaming":           st.Streaming,
		"streamingLagBytes":   st.StreamingLagBytes,
		"lastFullBackup":      st.LastFull,
		"lastIncremental":     st.LastIncremental,
		"recoveryWindowStart": st.WindowStart,
		"recoveryWindowEnd":   st.WindowEnd,
		"engine":              string(engJSON),
	}, nil
}

package rest

import (
	"context"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/pme2go/pme2go-backup/dbusapi"
)

// Snapshot is the set of figures /metrics and the textfile show. Times are
// exported as seconds since the epoch; a zero time is left out.
type Snapshot struct {
	Version string
	// Backups: the newest usable archive per kind and database.
	Backups []BackupFigure
	// Failures counts the failed jobs per kind since the daemon started
	// (a counter: it starts again at 0 when the daemon restarts).
	Failures map[string]uint64
	// LastFailure is the end of the newest failed job per kind in the
	// job history (BACKUP_DIR/state/daemon-history.json).
	LastFailure map[string]time.Time
	// LastJobOK is whether the newest job of each kind in the history
	// succeeded.
	LastJobOK map[string]bool
	// SlotLag: WAL held back by each open chain's slot.
	SlotLag []SlotLagFigure
	// WindowStart and WindowEnd bound the recovery window (oldest full
	// backup; the change stream known complete up to).
	WindowStart, WindowEnd time.Time
	// JobsRunning counts the running jobs per kind.
	JobsRunning map[string]int
	// Subscribers is the number of open event streams.
	Subscribers int
	// ServerUp is whether PostgreSQL answered (nil: not checked).
	ServerUp *bool
	// LastDrill is the last restore drill's outcome (nil: none recorded).
	LastDrill *DrillFigure
	// Offsite is the off-site repository's state (nil: none configured).
	Offsite *OffsiteFigure
}

// OffsiteFigure is the state of the off-site copies.
type OffsiteFigure struct {
	Copied    int       // backups with a verified off-site copy
	NotCopied int       // local backups without one yet
	LastSync  time.Time // end of the last successful copy run (zero: none yet)
	// Ran is whether a copy run ever ended; LastOK whether the last one
	// copied everything it tried.
	Ran, LastOK bool
}

// BackupFigure is the newest archive of a kind holding a database.
type BackupFigure struct {
	Kind     string
	Database string
	Time     time.Time
	Size     int64   // bytes
	Duration float64 // seconds the job took; negative when unknown
}

// SlotLagFigure is one slot's retained WAL.
type SlotLagFigure struct {
	Database string
	Slot     string
	Bytes    int64
}

// DrillFigure is the last restore drill.
type DrillFigure struct {
	Time      time.Time
	OK        bool
	Databases string  // the databases drilled, comma-separated
	Duration  float64 // seconds
}

// JobKinds are the kinds jobs_running is always reported for.
var JobKinds = []string{dbusapi.KindFull, dbusapi.KindIncremental, dbusapi.KindRestore, dbusapi.KindVerify, dbusapi.KindCleanup,
	dbusapi.KindDrill, dbusapi.KindOffsiteSync, dbusapi.KindRekey}

func epoch(t time.Time) float64 { return float64(t.UnixNano()) / 1e9 }

// collector turns a Snapshot into metrics (an unchecked collector: the
// label values depend on the snapshot).
type collector struct{ s Snapshot }

func (collector) Describe(chan<- *prometheus.Desc) {}

func desc(name, help string, labels ...string) *prometheus.Desc {
	return prometheus.NewDesc("pme2go_backup_"+name, help, labels, nil)
}

var (
	descInfo        = desc("info", "Version of pme2go-backupd (always 1).", "version")
	descLastTime    = desc("last_success_timestamp_seconds", "Time of the newest usable archive, per backup kind and database.", "kind", "database")
	descLastSize    = desc("last_success_size_bytes", "Size of the newest usable archive, per backup kind and database.", "kind", "database")
	descLastDur     = desc("last_success_duration_seconds", "How long the job that wrote the newest archive ran, per backup kind and database.", "kind", "database")
	descFailures    = desc("failures_total", "Jobs that failed or were cancelled since the daemon started, per kind.", "kind")
	descLastFail    = desc("last_failure_timestamp_seconds", "End of the newest failed job in the job history, per kind.", "kind")
	descLastJobOK   = desc("last_job_success", "1 when the newest job of a kind in the job history succeeded, else 0.", "kind")
	descSlotLag     = desc("slot_lag_bytes", "WAL held back by an open chain's replication slot.", "database", "slot")
	descWinStart    = desc("recovery_window_start_timestamp_seconds", "Start of the recovery window (the oldest usable full backup).")
	descWinEnd      = desc("recovery_window_end_timestamp_seconds", "End of the recovery window (changes known captured up to this time).")
	descJobsRunning = desc("jobs_running", "Jobs running now, per kind.", "kind")
	descSubscribers = desc("event_subscribers", "Open WebSocket and server-sent-event streams.")
	descServerUp    = desc("server_up", "1 when the PostgreSQL server answered the last status check, else 0.")
	descOffCopied   = desc("offsite_copied_backups", "Backups with a verified copy in the off-site repository.")
	descOffPending  = desc("offsite_not_copied_backups", "Local backups not yet copied to the off-site repository.")
	descOffSync     = desc("offsite_last_sync_timestamp_seconds", "Time of the last successful off-site sync.")
	descOffSyncOK   = desc("offsite_last_sync_success", "1 when the last off-site copy run (after a backup, or a sync) copied everything it tried, else 0.")
	descDrillTime   = desc("last_drill_timestamp_seconds", "Time of the last restore drill.", "databases")
	descDrillOK     = desc("last_drill_success", "1 when the last restore drill succeeded, else 0.", "databases")
	descDrillDur    = desc("last_drill_duration_seconds", "How long the last restore drill took.", "databases")
)

func (c collector) Collect(ch chan<- prometheus.Metric) {
	s := c.s
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	gauge(descInfo, 1, s.Version)
	for _, b := range s.Backups {
		if b.Time.IsZero() {
			continue
		}
		gauge(descLastTime, epoch(b.Time), b.Kind, b.Database)
		gauge(descLastSize, float64(b.Size), b.Kind, b.Database)
		if b.Duration >= 0 {
			gauge(descLastDur, b.Duration, b.Kind, b.Database)
		}
	}
	kinds := append([]string{}, JobKinds...)
	for k := range s.Failures {
		if !contains(kinds, k) {
			kinds = append(kinds, k)
		}
	}
	for _, k := range kinds {
		ch <- prometheus.MustNewConstMetric(descFailures, prometheus.CounterValue, float64(s.Failures[k]), k)
		gauge(descJobsRunning, float64(s.JobsRunning[k]), k)
	}
	for k, t := range s.LastFailure {
		if !t.IsZero() {
			gauge(descLastFail, epoch(t), k)
		}
	}
	for k, ok := range s.LastJobOK {
		gauge(descLastJobOK, b2f(ok), k)
	}
	for _, l := range s.SlotLag {
		gauge(descSlotLag, float64(l.Bytes), l.Database, l.Slot)
	}
	if !s.WindowStart.IsZero() {
		gauge(descWinStart, epoch(s.WindowStart))
	}
	if !s.WindowEnd.IsZero() {
		gauge(descWinEnd, epoch(s.WindowEnd))
	}
	gauge(descSubscribers, float64(s.Subscribers))
	if s.ServerUp != nil {
		gauge(descServerUp, b2f(*s.ServerUp))
	}
	if o := s.Offsite; o != nil {
		gauge(descOffCopied, float64(o.Copied))
		gauge(descOffPending, float64(o.NotCopied))
		if !o.LastSync.IsZero() {
			gauge(descOffSync, epoch(o.LastSync))
		}
		if o.Ran {
			gauge(descOffSyncOK, b2f(o.LastOK))
		}
	}
	if d := s.LastDrill; d != nil && !d.Time.IsZero() {
		gauge(descDrillTime, epoch(d.Time), d.Databases)
		gauge(descDrillOK, b2f(d.OK), d.Databases)
		gauge(descDrillDur, d.Duration, d.Databases)
	}
}

func contains(l []string, s string) bool {
	for _, x := range l {
		if x == s {
			return true
		}
	}
	return false
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

// Registry returns a private registry holding the figures of s (no Go
// runtime or process metrics: those belong to node_exporter).
func Registry(s Snapshot) *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collector{s})
	return reg
}

// WriteTextfile writes the figures of s to path in the text format for
// node_exporter's textfile collector, atomically (a temporary file renamed
// over path).
func WriteTextfile(path string, s Snapshot) error {
	return prometheus.WriteToTextfile(path, Registry(s))
}

func (s *Server) metrics(w http.ResponseWriter, r *http.Request, _ dbusapi.Caller) {
	ctx, cancel := context.WithTimeout(r.Context(), 20*time.Second)
	defer cancel()
	snap, err := s.o.Backend.Snapshot(ctx)
	if err != nil {
		s.fail(w, r, 0, err)
		return
	}
	snap.Subscribers = s.o.Events.Subscribers()
	promhttp.HandlerFor(Registry(snap), promhttp.HandlerOpts{ErrorHandling: promhttp.HTTPErrorOnError}).ServeHTTP(w, r)
}

// Package daemon is the machinery of pme2go-backupd: the job manager (one job
// per operation, cancellation, progress, persisted history), sd_notify and
// the watchdog, structured logging, the built-in scheduler, streaming
// supervision, and the wiring of the D-Bus objects of package dbusapi.
//
// The daemon reaches the engine only through the Engine interface declared
// here; engine_ops.go adapts the engine's front door to it.
package daemon

import (
	"context"
	"time"

	"github.com/pme2go/pme2go-backup/dbusapi"
)

// Progress is a job's progress as the engine reports it.
type Progress struct {
	Phase    string  // what is being done, e.g. "dump app"
	Fraction float64 // 0-1, meaningful when Valid
	Valid    bool
	Bytes    uint64 // bytes written or read so far
}

// Outcome is what a finished operation produced.
type Outcome struct {
	Path   string // archive written or checked ("" when none)
	Size   int64  // bytes of that archive
	Result any    // the front door's result, marshalled to JSON for ResultJSON
	// OffsiteError: the backup succeeded, its off-site copy failed.
	OffsiteError *dbusapi.Error
}

// Engine is the part of the engine's front door the daemon uses. Errors
// should be *dbusapi.Error (code, message, fix); others are reported with
// code FAILED. Run must return promptly once ctx is cancelled, having removed
// whatever it had half-written.
type Engine interface {
	// Validate checks a request's arguments before a job is created (a bad
	// target time is refused at once, not as a failed job).
	Validate(req dbusapi.JobRequest) error
	// Run performs one job (full, incremental, restore, verify, cleanup).
	Run(ctx context.Context, req dbusapi.JobRequest, progress func(Progress)) (Outcome, error)
	// ListBackups lists the archives, oldest first.
	ListBackups(ctx context.Context) ([]dbusapi.BackupEntry, error)
	// Status returns the engine's status (JSON-marshallable).
	Status(ctx context.Context) (any, error)
	// Mark writes a named restore point in databases (empty: every
	// configured database) and returns "X/Y", or "db=X/Y,db2=X/Y" for
	// several databases. A database not configured is INVALID_ARGS.
	Mark(ctx context.Context, name string, databases []string) (string, error)
	// Databases lists the configured databases.
	Databases() []string
	// Stream captures the changes of database db continuously until ctx is
	// cancelled (then it returns nil); it reconnects by itself and returns
	// an error when the capture stops for good (code CHAIN_ENDED or
	// NOT_FOUND when the database has no open chain).
	Stream(ctx context.Context, db string, progress func(Progress)) error
	// Window reports what continuous capture has reached: the WAL its
	// slots hold back and the span a point-in-time restore can reach.
	Window(ctx context.Context) (Window, error)
}

// DrillSummary is the last restore drill, for the Manager's properties.
type DrillSummary struct {
	Time      time.Time
	OK        bool
	Databases string
	Duration  float64 // seconds
	Error     string
}

// drillReporter is implemented by engines that keep restore drill results.
type drillReporter interface {
	LastDrill(ctx context.Context) (DrillSummary, bool)
}

// Window is the state of the recovery window.
type Window struct {
	LagBytes uint64    // WAL held back by the open chains' slots, summed
	Start    time.Time // the oldest full backup
	End      time.Time // the stream is known complete up to here (the oldest of the open chains)
}

// Package capture streams a chain's logical replication slot (pgoutput) into
// change-set segments in the chain's state directory. A transaction is
// acknowledged to the server only once it is fsynced; after a restart,
// transactions at or below the last stored commit are skipped. The package
// also measures slot lag, ends chains that exceed MAX_SLOT_LAG, lose their
// slot or meet a schema change, and seals segments for incremental archives
// (see docs/capture.md for the seal protocol).
package capture

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"path/filepath"
	"time"

	"github.com/pme2go/pme2go-backup/engine/chain"
	"github.com/pme2go/pme2go-backup/engine/config"
	"github.com/pme2go/pme2go-backup/engine/errs"
	"github.com/pme2go/pme2go-backup/engine/lock"
)

// ErrChainEnded is wrapped by the error returned when the chain had to end
// (broken: schema change, lag cap, lost slot). A new full backup is needed.
var ErrChainEnded = errors.New("chain ended")

// chainEnded is the error of a chain that had to end: its text is "chain
// ended: <reason>", it matches ErrChainEnded (errors.Is), and it carries
// the code CHAIN_ENDED with the fix (a new full backup) for errs.CodeOf and
// errs.FixOf.
type chainEnded struct{ msg string }

func (e *chainEnded) Error() string { return e.msg }

func (e *chainEnded) Unwrap() []error {
	return []error{ErrChainEnded, &errs.Error{Code: errs.ChainEnded, Message: e.msg,
		Fix: &errs.Fix{Action: errs.ActFullBackup, Text: "take a new full backup; it starts a new chain"}}}
}

// endedf returns a chainEnded error whose text is "chain ended: " and the
// formatted reason.
func endedf(format string, args ...any) error {
	return &chainEnded{msg: "chain ended: " + fmt.Sprintf(format, args...)}
}

// ErrStreamLost is wrapped when the replication connection broke (server
// restart, network, a terminated session); Follow retries after it.
var ErrStreamLost = errors.New("replication stream lost")

// Options tune a capture run.
type Options struct {
	Log *slog.Logger
	// StatusInterval is the standby status update period (default 10s).
	StatusInterval time.Duration
	// SyncInterval and SyncBytes batch fsyncs under load: a commit is synced
	// at the latest after this time or this much data, and always when the
	// stream goes idle (defaults 200ms, 4 MiB). No flush position beyond
	// what is synced is ever reported.
	SyncInterval time.Duration
	SyncBytes    int64
	// HealthInterval is how often slot lag is measured, the catalog
	// compared and the recovery window extended while streaming (default
	// 10s).
	HealthInterval time.Duration
	// LargeObjectInterval is how often, while streaming, the large objects
	// are read and their state recorded when it changed (default 30s).
	LargeObjectInterval time.Duration
	// Progress, when set, is called after each fsync with the totals so far.
	Progress func(Progress)
}

// Progress reports what a capture run stored.
type Progress struct {
	Chain    string
	Database string
	Position string // confirmed flush position
	TxCount  int64  // transactions stored by this run
}

// Result describes a finished Drain.
type Result struct {
	Position string // confirmed position at the end
	TxCount  int64  // transactions stored by this run
	Sealed   string // path of the segment sealed, if any
}

func (o *Options) defaults() {
	if o.Log == nil {
		o.Log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if o.StatusInterval <= 0 {
		o.StatusInterval = 10 * time.Second
	}
	if o.SyncInterval <= 0 {
		o.SyncInterval = 200 * time.Millisecond
	}
	if o.SyncBytes <= 0 {
		o.SyncBytes = 4 << 20
	}
	if o.HealthInterval <= 0 {
		o.HealthInterval = 10 * time.Second
	}
	if o.LargeObjectInterval <= 0 {
		o.LargeObjectInterval = 30 * time.Second
	}
}

// LockPath is the chain's capture lock file.
func LockPath(st *chain.State) string { return filepath.Join(st.Dir(), "capture.lock") }

// Lock takes the chain's capture lock: one writer per chain.
func Lock(st *chain.State) (*lock.Lock, error) {
	return lock.TryAcquire(LockPath(st), "capture")
}

// Run captures the chain's changes until ctx is cancelled (then it returns
// nil after syncing what it has) or the chain ends (an error wrapping
// ErrChainEnded). It takes the chain's capture lock; a second Run gets
// "capture already running (pid N)". Seal requests from `incremental` are
// served at the next transaction boundary.
func Run(ctx context.Context, cfg *config.Config, st *chain.State, opts Options) error {
	opts.defaults()
	l, err := Lock(st)
	if err != nil {
		return err
	}
	defer l.Release()
	s, err := open(ctx, cfg, st, opts)
	if err != nil {
		return err
	}
	defer s.close()
	err = s.stream(ctx, 0, "")
	if ctx.Err() != nil && !errors.Is(err, ErrChainEnded) {
		return nil
	}
	return err
}

// Follow captures the changes of database db until ctx is cancelled,
// following its open chain: when a newer full backup seals the chain being
// captured, it continues with the new one, and a lost replication
// connection is re-established with backoff. It returns when the database has
// no open chain (never started, or ended: the error wraps ErrChainEnded).
func Follow(ctx context.Context, cfg *config.Config, db string, opts Options) error {
	opts.defaults()
	var last error
	prev := ""
	for ctx.Err() == nil {
		st, err := chain.OpenFor(cfg, db)
		if err != nil {
			return err
		}
		if st == nil || st.ID == prev {
			if last != nil {
				return last
			}
			return fmt.Errorf("database %s has no open chain; take a full backup first (wal_level=logical, a role with REPLICATION)", db)
		}
		if last != nil {
			opts.Log.Info("following the new chain", "database", db, "chain", st.ID)
		}
		prev = st.ID
		err = runRetrying(ctx, cfg, st, opts)
		if err == nil || !errors.Is(err, ErrChainEnded) {
			return err
		}
		last = err
	}
	return nil
}

// runRetrying runs the capture of one chain, reconnecting with backoff
// (1s doubling to 30s) when the replication stream is lost.
func runRetrying(ctx context.Context, cfg *config.Config, st *chain.State, opts Options) error {
	backoff := time.Second
	for {
		started := time.Now()
		err := Run(ctx, cfg, st, opts)
		if err == nil || !errors.Is(err, ErrStreamLost) || ctx.Err() != nil {
			return err
		}
		if time.Since(started) > time.Minute {
			backoff = time.Second
		}
		opts.Log.Warn("replication stream lost; reconnecting", "database", st.Database, "in", backoff, "error", err)
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 30*time.Second)
	}
}

// Drain captures up to the server's current WAL position and returns, with
// the open segment still open. It needs the capture lock (no stream running).
func Drain(ctx context.Context, cfg *config.Config, st *chain.State, opts Options) (*Result, error) {
	return drainLocked(ctx, cfg, st, opts, false)
}

func drainLocked(ctx context.Context, cfg *config.Config, st *chain.State, opts Options, seal bool) (*Result, error) {
	opts.defaults()
	l, err := Lock(st)
	if err != nil {
		return nil, err
	}
	defer l.Release()
	return drain(ctx, cfg, st, opts, seal)
}

func drain(ctx context.Context, cfg *config.Config, st *chain.State, opts Options, seal bool) (*Result, error) {
	s, err := open(ctx, cfg, st, opts)
	if err != nil {
		return nil, err
	}
	defer s.close()
	// The catalog is read before the drain position, so that once the
	// stream reaches it, every DDL message committed before the read has
	// arrived; the seal decides (proveCatalog).
	if seal {
		if s.pendingPrint, err = chain.ReadCatalog(ctx, s.conn, s.st.Publication); err != nil {
			if ctx.Err() != nil {
				return nil, err
			}
			s.pendingPrint = nil // read again at the seal
		}
	}
	target, token, t0, err := s.drainTarget(ctx)
	if err != nil {
		return nil, err
	}
	if err := s.stream(ctx, target, token); err != nil {
		return nil, err
	}
	// Read up to the present: the publication and the event triggers must
	// still be there (a drop the event trigger did not see, run with
	// session_replication_role = replica or its triggers disabled).
	if err := s.checkMachinery(ctx); err != nil {
		return nil, err
	}
	s.noteComplete(target, t0)
	res := &Result{TxCount: s.stored}
	if seal {
		if res.Sealed, err = s.seal(ctx); err != nil {
			return nil, err
		}
	}
	res.Position = chain.FormatLSN(s.pos)
	return res, nil
}

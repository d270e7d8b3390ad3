// Package incremental takes incremental backups: it seals each open chain's
// change-set segment at a transaction boundary (draining the slot itself, or
// asking a running `stream` to seal) and packs the sealed segments, the
// sequence values and recent logs into incremental/incremental_backup_<ts>
// archives whose manifests link them into the chain (Previous, StartLSN =
// the previous archive's EndLSN).
package incremental

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"path/filepath"

	"github.com/pme2go/pme2go-backup/engine/backupdir"
	"github.com/pme2go/pme2go-backup/engine/capture"
	"github.com/pme2go/pme2go-backup/engine/chain"
	"github.com/pme2go/pme2go-backup/engine/config"
	"github.com/pme2go/pme2go-backup/engine/fsutil"
	"github.com/pme2go/pme2go-backup/engine/progress"
)

// Options tune Take.
type Options struct {
	Databases []string // default: DB_NAME
	Trigger   string   // recorded in the manifest: manual, scheduled, …
	Log       *slog.Logger
	// Locked says the caller holds the backup directory lock.
	Locked bool
	// Progress is told phase "seal" as each database starts (Object; Done
	// of Total databases) and "archive" for each archive written (Object:
	// its name).
	Progress progress.Func
}

// Result describes one written incremental archive.
type Result struct {
	Database string
	Chain    string
	Path     string
	TxCount  int64
	StartLSN string
	EndLSN   string
}

// ErrNoChain is wrapped when a database has no open chain.
var ErrNoChain = errors.New("no open chain")

// Take seals and archives the changes of every configured database's open
// chain, and first archives whatever sealed segments older (sealed or broken)
// chains still hold. An interval without transactions still produces a small
// archive, so that the chain has no gap and each run is visible.
func Take(ctx context.Context, cfg *config.Config, opts Options) ([]*Result, error) {
	if opts.Log == nil {
		opts.Log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	dbs := opts.Databases
	if len(dbs) == 0 {
		dbs = cfg.DBNames
	}
	if !opts.Locked {
		for _, d := range []string{cfg.BackupDir, cfg.StateDir(), cfg.IncrementalDir()} {
			if err := fsutil.EnsurePrivateDir(d); err != nil {
				return nil, fmt.Errorf("backup directory %s is not usable (check BACKUP_DIR): %w", d, err)
			}
		}
		l, err := backupdir.Lock(cfg)
		if err != nil {
			return nil, err
		}
		defer l.Release()
		if _, err := fsutil.RemoveLeftovers(cfg.IncrementalDir()); err != nil {
			return nil, err
		}
	}
	all, err := chain.List(cfg)
	if err != nil {
		return nil, err
	}
	var out []*Result
	var errs []error
	for i, db := range dbs {
		opts.Progress.Report(progress.Event{Phase: "seal", Object: db, Done: int64(i), Total: int64(len(dbs)), Unit: progress.Databases})
		var open *chain.State
		for _, st := range all {
			if st.Database != db {
				continue
			}
			if st.Status == chain.StatusOpen {
				open = st
				continue
			}
			if st.Status == chain.StatusPending {
				continue
			}
			res, err := archiveSealed(ctx, cfg, st, opts)
			if err != nil {
				errs = append(errs, err)
			} else if res != nil {
				out = append(out, res)
				opts.Progress.Report(progress.Event{Phase: "archive", Object: filepath.Base(res.Path)})
			}
		}
		if open == nil {
			errs = append(errs, fmt.Errorf("database %s: %w; take a full backup first (needs wal_level=logical and a role with REPLICATION)", db, ErrNoChain))
			continue
		}
		res, err := TakeChain(ctx, cfg, open, opts)
		if err != nil {
			errs = append(errs, fmt.Errorf("incremental backup of database %s: %w", db, err))
		}
		if res != nil {
			out = append(out, res)
			opts.Progress.Report(progress.Event{Phase: "archive", Object: filepath.Base(res.Path)})
		}
	}
	return out, errors.Join(errs...)
}

// TakeChain seals the chain's open segment and archives its sealed
// segments. The caller holds the backup directory lock.
func TakeChain(ctx context.Context, cfg *config.Config, st *chain.State, opts Options) (*Result, error) {
	if opts.Log == nil {
		opts.Log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	_, err := capture.SealChain(ctx, cfg, st, capture.Options{Log: opts.Log})
	if err != nil && !errors.Is(err, capture.ErrChainEnded) {
		return nil, err
	}
	res, aerr := archiveSealed(ctx, cfg, st, opts)
	if aerr != nil {
		return nil, aerr
	}
	if err != nil {
		return res, err
	}
	return res, nil
}

// NewChainStarter returns the chain starter full backups use: older chains
// of a database are drained into a final incremental before they are sealed.
func NewChainStarter(cfg *config.Config, log *slog.Logger) *chain.Starter {
	s := chain.NewStarter(cfg, log)
	s.SealOld = func(ctx context.Context, old *chain.State) error {
		_, err := TakeChain(ctx, cfg, old, Options{Trigger: "chain sealed by a new full backup", Log: log, Locked: true})
		return err
	}
	s.DrainOld = func(ctx context.Context, old *chain.State) error {
		_, err := TakeChain(ctx, cfg, old, Options{Trigger: "a full backup refused to start a new chain", Log: log, Locked: true})
		return err
	}
	return s
}

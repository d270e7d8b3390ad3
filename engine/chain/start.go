package chain

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pglogrepl"
	pgc "github.com/jackc/pgx/v5/pgconn"

	"github.com/pme2go/pme2go-backup/engine/config"
	"github.com/pme2go/pme2go-backup/engine/fsutil"
	"github.com/pme2go/pme2go-backup/engine/pgclient"
)

// DefaultSlotTimeout bounds the creation of a slot, which waits for every
// transaction running at that moment to end.
const DefaultSlotTimeout = 2 * time.Minute

// WarningKey is the Snapshotter meta key carrying why no chain was started;
// the full backup records it among the manifest's warnings.
const WarningKey = "warning"

// SequencesKey is the key of Snapshot's metadata holding the sequences
// read as the chain started (a changeset.Sequences as JSON).
const SequencesKey = "sequences"

// Starter starts one chain per database during a full backup. Pass its
// Snapshot method as backup.Options.Snapshot, and call Finish once the
// backup archive is written (or has failed).
type Starter struct {
	Cfg *config.Config
	Log *slog.Logger
	// SlotTimeout bounds slot creation (DefaultSlotTimeout when zero).
	SlotTimeout time.Duration
	// SealOld ends an older open chain of the same database once the new
	// chain's full backup exists, typically by draining it into a final
	// incremental. It runs before the old slot is dropped; nil skips it.
	SealOld func(ctx context.Context, old *State) error
	// DrainOld archives what an open chain holds so far (an incremental);
	// it is called when a full backup refuses to start a new chain of the
	// database, so that a chain end the event trigger recorded in the
	// stream takes effect at once (its slot, publication and triggers
	// dropped). nil skips it.
	DrainOld func(ctx context.Context, old *State) error

	mu      sync.Mutex
	started []*started
}

type started struct {
	st   *State
	repl *pgc.PgConn
}

// NewStarter returns a Starter for cfg.
func NewStarter(cfg *config.Config, log *slog.Logger) *Starter {
	if log == nil {
		log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	return &Starter{Cfg: cfg, Log: log}
}

// Chains returns the chains started so far.
func (s *Starter) Chains() []*State {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]*State, 0, len(s.started))
	for _, x := range s.started {
		out = append(out, x.st)
	}
	return out
}

// Snapshot implements backup.Snapshotter: it checks the database's tables
// for replica identity, creates the chain's publication and slot and returns
// the snapshot the slot exported. The exporting connection stays open until
// release is called, after pg_dump has exited. When no chain can be started
// (tables without replica identity, no free slot, a slot creation blocked
// by a long transaction, …) the backup goes on without a snapshot and
// meta[WarningKey] says why; only a cancelled ctx is an error.
func (s *Starter) Snapshot(ctx context.Context, db string) (string, map[string]string, func(bool), error) {
	st, snapshot, repl, err := s.start(ctx, db)
	if err != nil {
		if ctx.Err() != nil {
			return "", nil, nil, err
		}
		// The full backup goes on without a chain: a backup matters more
		// than incrementals. The reason lands in the manifest's warnings.
		s.Log.Error("no change capture for this full backup; incremental backups of the database stay unavailable until fixed", "database", db, "error", err)
		s.drainOld(ctx, db)
		return "", map[string]string{WarningKey: "incremental backups are off for database " + db + ": " + err.Error()}, func(bool) {}, nil
	}
	s.mu.Lock()
	s.started = append(s.started, &started{st: st, repl: repl})
	s.mu.Unlock()
	// startTime is taken after the slot became consistent: every commit in
	// the dump is older, so a time target at or after it may use this backup.
	meta := map[string]string{"chainId": st.ID, "slotName": st.Slot, "startLsn": st.StartLSN, "publication": st.Publication,
		"ddlCapture": st.CaptureMode,
		"startTime":  time.Now().UTC().Format(time.RFC3339Nano)}
	if st.startSequences != "" {
		meta[SequencesKey] = st.startSequences
	}
	release := func(ok bool) {
		repl.Close(context.Background())
		if !ok {
			s.abort(context.WithoutCancel(ctx), st)
		}
	}
	return snapshot, meta, release, nil
}

// drainOld runs DrainOld on the open chain of db, if any: a full backup
// refused to start a new one.
func (s *Starter) drainOld(ctx context.Context, db string) {
	old, err := OpenFor(s.Cfg, db)
	if err != nil || old == nil || s.DrainOld == nil {
		return
	}
	if err := s.DrainOld(ctx, old); err != nil {
		s.Log.Warn("the open chain was drained after the new chain was refused", "database", db, "chain", old.ID, "result", err)
	}
}

func (s *Starter) start(ctx context.Context, db string) (*State, string, *pgc.PgConn, error) {
	conn, err := pgclient.FromConfig(s.Cfg).Connect(ctx, db)
	if err != nil {
		return nil, "", nil, err
	}
	defer conn.Close(context.Background())
	srv, err := pgclient.Inspect(ctx, conn)
	if err != nil {
		return nil, "", nil, err
	}
	fixed, err := checkSafety(ctx, conn, db, s.Cfg.ReplicaIdentFix)
	if err != nil {
		return nil, "", nil, err
	}
	for _, t := range fixed {
		s.Log.Warn("REPLICA_IDENTITY_FIX=full: table given REPLICA IDENTITY FULL", "database", db, "table", t)
	}
	if err := fsutil.EnsurePrivateDir(ChainsDir(s.Cfg)); err != nil {
		return nil, "", nil, fmt.Errorf("chain state directory: %w", err)
	}
	id8, err := config.InstallationShortID(s.Cfg)
	if err != nil {
		return nil, "", nil, err
	}
	st := newState(s.Cfg, id8, db, time.Now(), func(name string) bool {
		var taken bool
		err := conn.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_replication_slots WHERE slot_name = $1)
		     OR EXISTS (SELECT 1 FROM pg_publication WHERE pubname = $1)`, name).Scan(&taken)
		return err == nil && taken
	})
	st.SystemIdentifier, st.Timeline, st.ServerVersion = srv.SystemIdentifier, srv.Timeline, srv.VersionNum
	if err := os.Mkdir(st.dir, 0o700); err != nil {
		return nil, "", nil, fmt.Errorf("create chain directory: %w", err)
	}
	fail := func(err error) (*State, string, *pgc.PgConn, error) {
		s.abort(context.WithoutCancel(ctx), st)
		return nil, "", nil, err
	}
	// DDL capture and the safety triggers: installed before the
	// publication exists, so that no table created from then on is missed.
	can, capture, mode, err := CaptureModeFor(ctx, conn, s.Cfg)
	if err != nil {
		return fail(err)
	}
	st.CaptureDDL, st.CaptureMode = capture, mode
	if can {
		if err := InstallTriggers(ctx, conn, TriggerOptions{ID8: id8, CaptureDDL: st.CaptureDDL, FixFull: s.Cfg.ReplicaIdentFix == "full"}); err != nil {
			if s.Cfg.CaptureDDLMode == "true" {
				return fail(err)
			}
			st.CaptureDDL = false
			st.CaptureMode = "off: " + err.Error()
		} else {
			st.Triggers = true
		}
	}
	if !st.Triggers {
		// Without event triggers nothing takes a table that loses its key
		// out of the publication: only REPLICA IDENTITY FULL everywhere
		// keeps its UPDATE and DELETE working.
		if s.Cfg.ReplicaIdentFix != "full" {
			return fail(&NoTriggersError{Database: db, Why: strings.TrimPrefix(st.CaptureMode, "off: ")})
		}
		all, err := fullIdentityWithoutTriggers(ctx, conn, db)
		for _, t := range all {
			s.Log.Warn("REPLICA_IDENTITY_FIX=full without event triggers: table given REPLICA IDENTITY FULL", "database", db, "table", t)
		}
		if err != nil {
			return fail(err)
		}
		st.CaptureMode += "; REPLICA_IDENTITY_FIX=full: every published table has REPLICA IDENTITY FULL, so that a table losing its key breaks no write"
	}
	s.Log.Info("DDL capture", "database", db, "mode", st.CaptureMode)
	if err := createPublication(ctx, conn, st.Publication); err != nil {
		return fail(err)
	}
	repl, err := ReplicationConn(ctx, s.Cfg, db)
	if err != nil {
		return fail(err)
	}
	timeout := s.SlotTimeout
	if timeout <= 0 {
		timeout = DefaultSlotTimeout
	}
	cctx, cancel := context.WithTimeout(ctx, timeout)
	res, err := pglogrepl.CreateReplicationSlot(cctx, repl, st.Slot, "pgoutput",
		pglogrepl.CreateReplicationSlotOptions{Mode: pglogrepl.LogicalReplication, SnapshotAction: "EXPORT_SNAPSHOT"})
	timedOut := errors.Is(cctx.Err(), context.DeadlineExceeded) && ctx.Err() == nil
	cancel()
	if err != nil {
		pid := repl.PID()
		repl.Close(context.Background())
		if timedOut {
			return fail(fmt.Errorf("create replication slot %s: still waiting after %s for running transactions to end; in the way: %s; end or commit them (or raise the timeout) and retry",
				st.Slot, timeout, blockers(context.WithoutCancel(ctx), conn, pid)))
		}
		return fail(fmt.Errorf("create replication slot %s (check max_replication_slots and wal_level=logical): %w", st.Slot, err))
	}
	st.StartLSN, st.NextSegmentLSN = res.ConsistentPoint, res.ConsistentPoint
	// The sequences as the chain starts: the first values a restore can
	// place among the chain's commits (the dump reads them later, at no
	// known position). Without them a restore names more sequences as
	// unknown; no reason to refuse the chain.
	if seq, err := ReadSequences(ctx, conn); err != nil {
		s.Log.Warn("could not read the sequences at the chain's start", "database", db, "error", err)
	} else if b, err := json.Marshal(seq); err == nil {
		st.startSequences = string(b)
	}
	if err := st.Save(); err != nil {
		repl.Close(context.Background())
		return fail(err)
	}
	missing, err := unpublishedAt(ctx, conn, res.SnapshotName, st.Publication)
	if err == nil && len(missing) > 0 {
		err = fmt.Errorf("tables created while the chain was starting are not in its publication (%s); retry the full backup", strings.Join(missing, ", "))
	}
	if err != nil {
		repl.Close(context.Background())
		return fail(err)
	}
	sc, err := snapshotSchema(ctx, conn, res.SnapshotName)
	if err == nil {
		err = st.SaveSchema(sc)
	}
	if err == nil {
		err = st.snapshotExtras(ctx, conn, res.SnapshotName, res.ConsistentPoint)
	}
	if err != nil {
		repl.Close(context.Background())
		return fail(err)
	}
	s.Log.Info("change capture chain started", "database", db, "chain", st.ID, "slot", st.Slot, "startLsn", st.StartLSN)
	return st, res.SnapshotName, repl, nil
}

// abort drops what a failed start or backup created.
func (s *Starter) abort(ctx context.Context, st *State) {
	if err := DropServerObjects(ctx, s.Cfg, st); err != nil {
		s.Log.Warn("could not drop the slot of a failed backup; `pme2go-backup cleanup` drops it", "slot", st.Slot, "error", err)
	}
	os.RemoveAll(st.dir)
}

// Finish completes the chains after the full backup: with ok, each new
// chain becomes open with fullName as its full backup, and the older open
// chains of the same databases are sealed (SealOld, then their slots and
// publications dropped). Without ok, the new chains' slots, publications and
// state are removed.
func (s *Starter) Finish(ctx context.Context, ok bool, fullName string) error {
	s.mu.Lock()
	list := s.started
	s.started = nil
	s.mu.Unlock()
	var errs []error
	for _, x := range list {
		x.repl.Close(context.Background())
		if !ok {
			s.abort(ctx, x.st)
			continue
		}
		x.st.Status, x.st.FullBackup, x.st.LastArchive = StatusOpen, fullName, fullName
		if err := x.st.Save(); err != nil {
			errs = append(errs, err)
			continue
		}
		errs = append(errs, s.sealOlder(ctx, x.st))
	}
	return errors.Join(errs...)
}

func (s *Starter) sealOlder(ctx context.Context, cur *State) error {
	all, err := List(s.Cfg)
	if err != nil {
		return err
	}
	var errs []error
	for _, old := range all {
		if old.ID == cur.ID || old.Database != cur.Database || old.Status != StatusOpen {
			continue
		}
		reason := "replaced by chain " + cur.ID + " (full backup " + cur.FullBackup + ")"
		if s.SealOld != nil {
			if err := s.SealOld(ctx, old); err != nil {
				s.Log.Warn("could not seal the older chain into a final incremental", "chain", old.ID, "error", err)
				reason += "; final incremental failed: " + err.Error()
			}
		}
		if err := old.Reload(); err == nil && old.Status == StatusOpen {
			if err := old.MarkEnded(StatusSealed, reason); err != nil {
				errs = append(errs, err)
			}
		}
		if err := DropServerObjects(ctx, s.Cfg, old); err != nil {
			errs = append(errs, fmt.Errorf("chain %s sealed but its slot could not be dropped; run `pme2go-backup cleanup`: %w", old.ID, err))
		}
		s.Log.Info("older chain sealed", "chain", old.ID, "database", old.Database)
	}
	return errors.Join(errs...)
}

package capture

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	pgc "github.com/jackc/pgx/v5/pgconn"

	"github.com/pme2go/pme2go-backup/engine/chain"
	"github.com/pme2go/pme2go-backup/engine/changeset"
	"github.com/pme2go/pme2go-backup/engine/config"
	"github.com/pme2go/pme2go-backup/engine/pgclient"
)

// SlotLag describes how much WAL a chain's slot holds back.
type SlotLag struct {
	Chain    string `json:"chain"`
	Database string `json:"database"`
	Slot     string `json:"slot"`
	Exists   bool   `json:"exists"`
	Active   bool   `json:"active"` // a capture streams from it now
	Bytes    int64  `json:"bytes"`  // pg_current_wal_lsn() - confirmed_flush_lsn
	// RetainedBytes is the WAL the server keeps for the slot:
	// pg_current_wal_lsn() - restart_lsn. It exceeds Bytes while a
	// transaction that began long ago is still running (decoding must
	// restart from its first record), whatever the capture confirmed.
	RetainedBytes  int64  `json:"retainedBytes"`
	WalStatus      string `json:"walStatus,omitempty"`   // reserved, extended, unreserved, lost
	SafeWalSize    *int64 `json:"safeWalSize,omitempty"` // bytes before the slot is invalidated (NULL: unlimited)
	ConfirmedFlush string `json:"confirmedFlush,omitempty"`
}

// Lag measures the chain's slot; `status` shows it.
func Lag(ctx context.Context, cfg *config.Config, st *chain.State) (*SlotLag, error) {
	conn, err := pgclient.FromConfig(cfg).Connect(ctx, st.Database)
	if err != nil {
		return nil, err
	}
	defer conn.Close(context.Background())
	return slotLag(ctx, conn, st)
}

func slotLag(ctx context.Context, conn *pgx.Conn, st *chain.State) (*SlotLag, error) {
	l := &SlotLag{Chain: st.ID, Database: st.Database, Slot: st.Slot}
	var flush *string
	err := conn.QueryRow(ctx, `SELECT active, coalesce((pg_current_wal_lsn() - confirmed_flush_lsn)::bigint, 0),
	        coalesce((pg_current_wal_lsn() - restart_lsn)::bigint, 0),
	        coalesce(wal_status, ''), safe_wal_size, confirmed_flush_lsn::text
	   FROM pg_replication_slots WHERE slot_name = $1`, st.Slot).Scan(&l.Active, &l.Bytes, &l.RetainedBytes, &l.WalStatus, &l.SafeWalSize, &flush)
	if errors.Is(err, pgx.ErrNoRows) {
		return l, nil
	}
	if err != nil {
		return nil, fmt.Errorf("measure lag of slot %s: %w", st.Slot, err)
	}
	l.Exists = true
	if flush != nil {
		l.ConfirmedFlush = *flush
	}
	return l, nil
}

// checkHealth ends the chain when its slot is gone, invalidated or past
// MAX_SLOT_LAG (WAL not yet confirmed, or WAL the server retains for the
// slot because an old transaction is still running), or when its
// publication or event triggers were dropped or disabled by someone else.
func (s *session) checkHealth(ctx context.Context) error {
	if err := s.checkSlot(ctx); err != nil {
		return err
	}
	return s.checkMachinery(ctx)
}

// checkMachinery ends the chain when its publication, or the event
// triggers its start installed, were dropped or disabled by someone else
// (chain.MachineryProblem). It is not run before the stream has been read
// up to the present (at the start of a capture): the event trigger's own
// end message, on the way in the stream, names the statement and the
// exact position.
func (s *session) checkMachinery(ctx context.Context) error {
	why, err := chain.MachineryProblem(ctx, s.conn, s.st)
	if err != nil {
		return err
	}
	if why != "" {
		return s.endChain(ctx, why+"; take a new full backup")
	}
	return nil
}

// checkSlot ends the chain when its slot is gone, invalidated or past
// MAX_SLOT_LAG.
func (s *session) checkSlot(ctx context.Context) error {
	l, err := slotLag(ctx, s.conn, s.st)
	if err != nil {
		return err
	}
	switch {
	case !l.Exists:
		return s.endChain(ctx, fmt.Sprintf("replication slot %s no longer exists; take a new full backup", s.st.Slot))
	case l.WalStatus == "lost":
		return s.endChain(ctx, fmt.Sprintf("replication slot %s was invalidated (wal_status lost: the server removed WAL the slot needed, see max_slot_wal_keep_size); take a new full backup", s.st.Slot))
	case s.cfg.MaxSlotLag > 0 && l.Bytes > s.cfg.MaxSlotLag:
		return s.endChain(ctx, fmt.Sprintf("replication slot %s holds back %d bytes of WAL, more than MAX_SLOT_LAG (%d); chain ended to protect the server's disk; take a new full backup", s.st.Slot, l.Bytes, s.cfg.MaxSlotLag))
	case s.cfg.MaxSlotLag > 0 && l.RetainedBytes > s.cfg.MaxSlotLag:
		return s.endChain(ctx, fmt.Sprintf("the server retains %d bytes of WAL for replication slot %s, more than MAX_SLOT_LAG (%d): a transaction that began %d bytes of WAL ago is still running (see pg_stat_activity: backend_xid, xact_start), and decoding must restart from its beginning; chain ended to protect the server's disk; take a new full backup", l.RetainedBytes, s.st.Slot, s.cfg.MaxSlotLag, l.RetainedBytes))
	}
	return nil
}

// startFailed turns a START_REPLICATION error into a chain end when the
// slot is gone or invalidated.
func (s *session) startFailed(ctx context.Context, err error) error {
	var pgErr *pgc.PgError
	if errors.As(err, &pgErr) {
		if pgErr.Code == "42704" {
			return s.endChain(context.WithoutCancel(ctx), fmt.Sprintf("replication slot %s no longer exists; take a new full backup", s.st.Slot))
		}
		if strings.Contains(pgErr.Message, "invalidated") || strings.Contains(pgErr.Detail, "invalidated") || strings.Contains(pgErr.Message, "can no longer get changes") {
			return s.endChain(context.WithoutCancel(ctx), fmt.Sprintf("replication slot %s was invalidated (%s); take a new full backup", s.st.Slot, pgErr.Message))
		}
		if pgErr.Code == "55006" {
			return fmt.Errorf("slot %s is in use by another process (pid in pg_replication_slots.active_pid); stop it first: %w", s.st.Slot, err)
		}
	}
	return fmt.Errorf("start streaming slot %s: %w", s.st.Slot, err)
}

// streamFailed explains a broken replication stream.
func (s *session) streamFailed(ctx context.Context, err error) error {
	if rerr := s.st.Reload(); rerr == nil && s.st.Status != chain.StatusOpen {
		return endedf("chain %s of database %s is %s (%s); take a new full backup", s.st.ID, s.st.Database, s.st.Status, s.st.Reason)
	}
	if herr := s.checkHealth(context.WithoutCancel(ctx)); herr != nil {
		return herr
	}
	return fmt.Errorf("replication stream of %s ended (the capture resumes where it stopped when restarted): %w: %w", s.st.Database, ErrStreamLost, err)
}

// endChain seals what the segment holds (whole transactions only), marks
// the chain broken with reason and drops its slot and publication.
func (s *session) endChain(ctx context.Context, reason string) error {
	ctx = context.WithoutCancel(ctx)
	s.ending = true
	if s.repl != nil {
		s.repl.Close(ctx)
		s.repl = nil
	}
	if err := s.st.Reload(); err == nil && s.st.Status != chain.StatusOpen {
		// Ended elsewhere, typically sealed by a newer full backup that
		// dropped the slot under us.
		return endedf("chain %s of database %s is %s (%s); take a new full backup", s.st.ID, s.st.Database, s.st.Status, s.st.Reason)
	}
	if s.w != nil {
		if err := s.reopenWhole(); err == nil {
			if _, err := s.sealSegment(ctx, false); err != nil {
				s.opts.Log.Warn("could not seal the segment of an ending chain", "chain", s.st.ID, "error", err)
			}
		}
	}
	// Unless the cause named an earlier point, the change sets are exact
	// up to what was stored.
	endTime := s.completeAt(s.pos)
	if endTime.IsZero() || endTime.Before(s.lastCommitTime) {
		endTime = s.lastCommitTime
	}
	if err := s.st.SetEnd(s.pos, endTime); err != nil {
		s.opts.Log.Warn("could not record where the chain ends", "chain", s.st.ID, "error", err)
	}
	if err := chain.End(ctx, s.cfg, s.st, reason); err != nil {
		s.opts.Log.Warn("chain ended but its slot could not be dropped; run `pme2go-backup cleanup`", "chain", s.st.ID, "error", err)
	}
	s.opts.Log.Error("chain ended", "database", s.st.Database, "chain", s.st.ID, "reason", reason)
	return endedf("%s (chain %s of database %s)", reason, s.st.ID, s.st.Database)
}

// reopenWhole closes the writer and reopens the segment, cutting any
// transaction that was not committed.
func (s *session) reopenWhole() error {
	segs, err := Segments(s.st)
	if err != nil || len(segs) == 0 {
		return fmt.Errorf("no open segment: %v", err)
	}
	s.w.Close()
	s.w = nil
	w, _, err := changeset.OpenAppend(segs[len(segs)-1])
	if err != nil {
		return err
	}
	s.w, s.inTx, s.skip, s.dirty = w, false, false, false
	s.pos = max(s.segStart, s.pos, w.LastEndLSN())
	return nil
}

// drainTarget returns the position Drain must reach: the LSN of a drain
// message emitted now (PostgreSQL 14+, with its token) or the current WAL
// insert position.
//
// It also returns the server's clock read in a statement before: every
// transaction that committed at or before that time has a commit record
// before the returned position (its commit time is taken just before its
// commit record is written), so once the stream has passed the position,
// the stream is complete up to that time.
func (s *session) drainTarget(ctx context.Context) (uint64, string, time.Time, error) {
	var lsn string
	var now time.Time
	if err := s.conn.QueryRow(ctx, `SELECT clock_timestamp()`).Scan(&now); err != nil {
		return 0, "", now, fmt.Errorf("read the server's clock: %w", err)
	}
	if s.version >= 140000 {
		var b [8]byte
		rand.Read(b[:])
		token := hex.EncodeToString(b[:])
		if err := s.conn.QueryRow(ctx, `SELECT pg_logical_emit_message(false, $1, $2)::text`, drainPrefix, token).Scan(&lsn); err != nil {
			return 0, "", now, fmt.Errorf("mark the drain position: %w", err)
		}
		l, err := chain.ParseLSN(lsn)
		return l, token, now, err
	}
	if err := s.conn.QueryRow(ctx, `SELECT pg_current_wal_insert_lsn()::text`).Scan(&lsn); err != nil {
		return 0, "", now, fmt.Errorf("read the current WAL position: %w", err)
	}
	l, err := chain.ParseLSN(lsn)
	return l, "", now, err
}

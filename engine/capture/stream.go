package capture

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/jackc/pglogrepl"
	pgc "github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/pme2go/pme2go-backup/engine/chain"
)

// drainPrefix is the prefix of the non-transactional message Drain emits to
// learn when everything before it has been received. It is not stored.
const drainPrefix = "pme2go.drain"

// stream runs the replication loop. With target > 0 it returns once the
// position reached target (or the drain message token was received) with
// nothing pending; otherwise it runs until ctx ends.
func (s *session) stream(ctx context.Context, target uint64, token string) error {
	repl, err := chain.ReplicationConn(ctx, s.cfg, s.st.Database)
	if err != nil {
		return err
	}
	s.repl = repl
	args := []string{fmt.Sprintf("proto_version '%d'", s.proto), "publication_names '" + s.st.Publication + "'"}
	if s.version >= 140000 {
		args = append(args, "messages 'true'")
	}
	if err := pglogrepl.StartReplication(ctx, repl, s.st.Slot, pglogrepl.LSN(s.pos),
		pglogrepl.StartReplicationOptions{Mode: pglogrepl.LogicalReplication, PluginArgs: args}); err != nil {
		return s.startFailed(ctx, err)
	}
	s.opts.Log.Info("capturing changes", "database", s.st.Database, "chain", s.st.ID, "from", chain.FormatLSN(s.pos))
	nextStatus := time.Now()
	var reported uint64
	var lastStatus time.Time
	nextHealth := time.Now().Add(s.opts.HealthInterval)
	nextSealCheck := time.Now()
	reached := false
	// While streaming, the catalog is first proven once the stream has
	// caught up with the position at start (the first probe), so that the
	// changes before a schema change are stored before the chain ends.
	proofDue, firstProof := false, target == 0
	nextLO := time.Now().Add(s.opts.LargeObjectInterval)
	if target == 0 {
		if err := s.startProbe(ctx); err != nil {
			return err
		}
		if s.probe == nil {
			proofDue, firstProof = true, false
		}
	}
	for {
		now := time.Now()
		if !s.inTx {
			if target > 0 && (reached || s.pos >= target) {
				if err := s.sync(); err != nil {
					return err
				}
				return s.sendStatus(ctx, false)
			}
			if target == 0 && now.After(nextSealCheck) {
				nextSealCheck = now.Add(200 * time.Millisecond)
				if err := s.serveSealRequest(ctx); err != nil {
					return err
				}
			}
		}
		if s.dirty && (now.Sub(s.dirtySince) >= s.opts.SyncInterval || s.w.Offset()-s.dirtyFrom >= s.opts.SyncBytes) {
			if err := s.sync(); err != nil {
				return err
			}
		}
		// Report progress every StatusInterval, and within a second of a
		// newly synced position, so that the slot releases WAL promptly and
		// its measured lag reflects what is really stored.
		if now.After(nextStatus) || (s.pos > reported && now.Sub(lastStatus) >= time.Second) {
			if err := s.sendStatus(ctx, false); err != nil {
				return err
			}
			reported, lastStatus = s.pos, now
			nextStatus = now.Add(s.opts.StatusInterval)
		}
		if now.After(nextHealth) {
			if err := s.checkHealth(ctx); err != nil {
				return err
			}
			nextHealth = now.Add(s.opts.HealthInterval)
			proofDue = true
		}
		if target == 0 && !s.inTx && now.After(nextLO) {
			nextLO = now.Add(s.opts.LargeObjectInterval)
			if err := s.streamLargeObjects(ctx); err != nil {
				s.opts.Log.Warn("large objects not captured", "database", s.st.Database, "error", err)
			}
		}
		if s.checkProbe() && firstProof {
			proofDue, firstProof = true, false
		}
		if proofDue && !s.inTx && target == 0 {
			// While streaming: prove the catalog unchanged and extend the
			// recovery window every HealthInterval.
			proofDue = false
			if err := s.proveCatalog(ctx, "streaming"); err != nil {
				return err
			}
			if err := s.saveComplete(); err != nil {
				return err
			}
			if s.probe == nil {
				if err := s.startProbe(ctx); err != nil {
					return err
				}
			}
		}
		wait := 500 * time.Millisecond
		if s.dirty {
			wait = 50 * time.Millisecond
		}
		rctx, cancel := context.WithTimeout(ctx, wait)
		msg, err := repl.ReceiveMessage(rctx)
		cancel()
		if err != nil {
			if pgc.Timeout(err) && ctx.Err() == nil {
				if err := s.sync(); err != nil {
					return err
				}
				continue
			}
			if ctx.Err() != nil {
				if s.inTx {
					s.opts.Log.Info("capture stopped inside a transaction; it is received again on restart", "database", s.st.Database)
				}
				s.inTx = false
				if err := s.sync(); err != nil {
					return err
				}
				s.sendStatus(context.Background(), false)
				return ctx.Err()
			}
			return s.streamFailed(ctx, err)
		}
		switch m := msg.(type) {
		case *pgproto3.CopyData:
			r, err := s.handleCopy(ctx, m.Data, token)
			if err != nil {
				return err
			}
			reached = reached || r
		case *pgproto3.ErrorResponse:
			return s.streamFailed(ctx, pgc.ErrorResponseToPgError(m))
		}
	}
}

// handleCopy processes one CopyData message of the replication stream. It
// reports whether the drain token was received.
func (s *session) handleCopy(ctx context.Context, data []byte, token string) (bool, error) {
	if len(data) == 0 {
		return false, nil
	}
	switch data[0] {
	case pglogrepl.PrimaryKeepaliveMessageByteID:
		ka, err := pglogrepl.ParsePrimaryKeepaliveMessage(data[1:])
		if err != nil {
			return false, fmt.Errorf("parse keepalive: %w", err)
		}
		if !s.inTx {
			if err := s.sync(); err != nil {
				return false, err
			}
			// Nothing is pending: every transaction before the server's
			// position was received and stored, so confirm it and let the
			// server release unrelated WAL.
			s.pos = max(s.pos, uint64(ka.ServerWALEnd))
		}
		if ka.ReplyRequested {
			return false, s.sendStatus(ctx, false)
		}
		return false, nil
	case pglogrepl.XLogDataByteID:
		xld, err := pglogrepl.ParseXLogData(data[1:])
		if err != nil {
			return false, fmt.Errorf("parse XLogData: %w", err)
		}
		return s.handleWAL(ctx, xld, token)
	}
	return false, nil
}

// sendStatus sends a standby status update with the synced position.
func (s *session) sendStatus(ctx context.Context, reply bool) error {
	p := pglogrepl.LSN(s.pos)
	err := pglogrepl.SendStandbyStatusUpdate(ctx, s.repl, pglogrepl.StandbyStatusUpdate{
		WALWritePosition: p, WALFlushPosition: p, WALApplyPosition: p, ClientTime: time.Now(), ReplyRequested: reply})
	if err != nil {
		return fmt.Errorf("send standby status to the server: %w", err)
	}
	return nil
}

// serveSealRequest seals the open segment when `incremental` asked for it,
// once the position the request names has been received.
func (s *session) serveSealRequest(ctx context.Context) error {
	if s.req == nil {
		b, err := os.ReadFile(sealRequestPath(s.st))
		if err != nil {
			return nil
		}
		var req sealRequest
		if err := json.Unmarshal(b, &req); err != nil {
			return nil // being written; read it next time
		}
		target, _ := chain.ParseLSN(req.LSN)
		s.req = &pendingSeal{target: target, token: req.Token, since: time.Now(), time: req.Time}
	}
	if !s.req.reached && s.pos < s.req.target && time.Since(s.req.since) < SealWait {
		return nil
	}
	if (s.req.reached || s.pos >= s.req.target) && !s.req.time.IsZero() {
		s.noteComplete(s.req.target, s.req.time)
	}
	s.req = nil
	path, err := s.seal(ctx)
	if err != nil {
		return err
	}
	s.opts.Log.Info("segment sealed for an incremental backup", "database", s.st.Database, "segment", path, "next", chain.FormatLSN(s.pos))
	if err := os.Remove(sealRequestPath(s.st)); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("remove seal request: %w", err)
	}
	return nil
}

// pendingSeal is a seal request waiting for its position.
type pendingSeal struct {
	target  uint64
	token   string
	reached bool
	since   time.Time
	time    time.Time // server clock before the drain message
}

// writeRelations writes the definitions of the given relations into the
// current segment unless already there.
func (s *session) writeRelations(oids []uint32) error {
	for _, oid := range oids {
		if s.inSeg[oid] {
			continue
		}
		rel := s.rels[oid]
		if rel == nil {
			return fmt.Errorf("change refers to relation OID %d that the server never described; restart the capture", oid)
		}
		if err := s.w.WriteRelation(rel); err != nil {
			return err
		}
		s.inSeg[oid] = true
	}
	return nil
}

// relIDs returns the relation OIDs a raw change message refers to.
func relIDs(raw []byte) []uint32 {
	be := func(b []byte) uint32 { return uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3]) }
	switch {
	case len(raw) >= 5 && (raw[0] == 'I' || raw[0] == 'U' || raw[0] == 'D'):
		return []uint32{be(raw[1:])}
	case len(raw) >= 6 && raw[0] == 'T':
		n := int(be(raw[1:]))
		var out []uint32
		for i := 0; i < n && 6+4*i+4 <= len(raw); i++ {
			out = append(out, be(raw[6+4*i:]))
		}
		return out
	}
	return nil
}

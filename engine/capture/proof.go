package capture

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/pme2go/pme2go-backup/engine/chain"
)

// probe is a position whose server time is known: the server's clock was
// read, then a drain message emitted at lsn. Once the stream has passed lsn,
// every transaction that committed at or before time has been received.
type probe struct {
	lsn  uint64
	time time.Time
}

// noteComplete records that the stream is complete up to lsn and server
// time t.
func (s *session) noteComplete(lsn uint64, t time.Time) {
	if t.After(s.completeTime) && lsn >= s.completeLSN {
		s.completeLSN, s.completeTime = lsn, t.UTC()
	}
}

// completeAt returns the server time up to which the stream is complete
// when sealed at at, or the zero time when unknown.
func (s *session) completeAt(at uint64) time.Time {
	if s.completeLSN != 0 && s.completeLSN <= at {
		return s.completeTime
	}
	return time.Time{}
}

// saveComplete writes the recovery window's end into chain.json (for
// `status`).
func (s *session) saveComplete() error {
	if s.completeTime.IsZero() {
		return nil
	}
	if err := s.st.Reload(); err != nil {
		return err
	}
	if s.st.CompleteTime.Equal(s.completeTime) {
		return nil
	}
	s.st.CompleteLSN, s.st.CompleteTime = chain.FormatLSN(s.completeLSN), s.completeTime
	return s.st.Save()
}

// startProbe emits a drain message whose arrival will prove the stream
// complete up to the server time read just before it.
func (s *session) startProbe(ctx context.Context) error {
	if s.version < 140000 {
		return nil
	}
	lsn, token, t, err := s.drainTarget(ctx)
	if err != nil {
		return err
	}
	s.probe = &probe{lsn: lsn, time: t}
	s.probeToken = token
	return nil
}

// checkProbe completes a probe the stream has passed and reports it.
func (s *session) checkProbe() bool {
	if s.probe != nil && !s.inTx && s.pos >= s.probe.lsn {
		s.noteComplete(s.probe.lsn, s.probe.time)
		s.probe = nil
		return true
	}
	return false
}

// proveCatalog reads the catalog and compares it with the last proven
// print. Without DDL capture, a difference ends the chain at the last
// point where the catalog was proven unchanged. With DDL capture, a
// difference is explained when a DDL message was captured since that
// point; the verdict waits until the stream has passed the position read
// with the print, so that every DDL message committed before it arrived.
func (s *session) proveCatalog(ctx context.Context, when string) error {
	if s.ending {
		return nil
	}
	if s.pendingPrint == nil {
		now, err := chain.ReadCatalog(ctx, s.conn, s.st.Publication)
		if err != nil {
			if ctx.Err() != nil {
				return err
			}
			// Not proven this time: the proof stays where it was, which
			// only makes a later chain end earlier, never wrong.
			s.opts.Log.Warn("could not read the catalog; the schema is compared again later", "database", s.st.Database, "error", err)
			return nil
		}
		s.pendingPrint = now
	}
	now := s.pendingPrint
	prev := s.catalog
	if prev != nil && !prev.Same(now) && s.st.CaptureDDL && s.pos < now.Position() {
		return nil // decided once the stream passed now's position
	}
	s.pendingPrint = nil
	var diff []string
	if prev != nil && !prev.Same(now) {
		diff = s.unexplained(prev, now)
	}
	if len(diff) == 0 {
		if prev != nil && now.Position() < prev.Position() {
			return nil
		}
		s.catalog = now
		return s.st.SaveCatalog(now)
	}
	mode := "without DDL capture"
	if s.st.CaptureDDL {
		mode = "by DDL the event trigger did not capture"
	}
	reason := fmt.Sprintf("schema changed %s (%s), noticed at %s; the change sets are exact up to LSN %s (%s), the last point where the schema was proven unchanged; take a new full backup (and set CAPTURE_DDL so that schema changes travel in the change sets)",
		mode, strings.Join(diff, "; "), when, prev.LSN, prev.Time.UTC().Format(time.RFC3339Nano))
	return s.endChainAt(ctx, reason, prev.Position(), prev.Time)
}

// unexplained names the differences between the proven print prev and
// now that no DDL captured since prev explains (all of them without DDL
// capture), at most six. With DDL capture, a difference is explained only
// by captured DDL that touched that object (see
// chain.CatalogPrint.Unexplained): other DDL captured in the same
// interval does not explain it. Prints of older versions, which do not
// record which objects their entries cover, are explained by any DDL
// captured since, as those versions did.
func (s *session) unexplained(prev, now *chain.CatalogPrint) []string {
	if !s.st.CaptureDDL {
		return prev.Diff(now, 6)
	}
	since := prev.Position()
	if !prev.Matchable() || !now.Matchable() {
		if s.schema.DDLAt > since {
			return nil
		}
		return prev.Diff(now, 6)
	}
	return prev.Unexplained(now, chain.Explains{
		Touched:    func(oid uint32) bool { return s.schema.TouchedSince(oid, since) },
		Privileges: func(kind string) bool { return s.schema.PrivilegesSince(kind, since) },
	}, 6)
}

// endChainAt ends the chain, recording that its change sets are exact for
// commits below lsn and time targets up to t.
func (s *session) endChainAt(ctx context.Context, reason string, lsn uint64, t time.Time) error {
	ctx = context.WithoutCancel(ctx)
	if err := s.st.Reload(); err == nil && s.st.Status == chain.StatusOpen {
		if err := s.st.SetEnd(lsn, t); err != nil {
			return err
		}
	}
	return s.endChain(ctx, reason)
}

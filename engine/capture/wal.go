package capture

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/jackc/pglogrepl"

	"github.com/pme2go/pme2go-backup/engine/chain"
	"github.com/pme2go/pme2go-backup/engine/changeset"
)

// handleWAL stores one pgoutput message. It reports whether the drain
// message carrying token was received.
func (s *session) handleWAL(ctx context.Context, xld pglogrepl.XLogData, token string) (bool, error) {
	data := xld.WALData
	if len(data) == 0 {
		return false, nil
	}
	switch data[0] {
	case 'B':
		var b pglogrepl.BeginMessage
		if err := b.Decode(data[1:]); err != nil {
			return false, fmt.Errorf("decode Begin: %w", err)
		}
		s.inTx = true
		s.begin = changeset.Begin{Xid: b.Xid, FinalLSN: uint64(b.FinalLSN), CommitTime: b.CommitTime}
		s.txPos = uint64(xld.WALStart) // the transaction's first LSN (0 when not sent)
		last := s.w.LastCommitLSN()
		// The server may resend transactions after a restart: skip those
		// already stored (here or in an earlier segment).
		s.skip = s.begin.FinalLSN < s.segStart || (last != 0 && s.begin.FinalLSN <= last)
		if s.skip {
			return false, nil
		}
		return false, s.w.BeginTx(s.begin)
	case 'C':
		var c pglogrepl.CommitMessage
		if err := c.Decode(data[1:]); err != nil {
			return false, fmt.Errorf("decode Commit: %w", err)
		}
		if !s.skip {
			if err := s.w.CommitTx(changeset.Commit{CommitLSN: uint64(c.CommitLSN), EndLSN: uint64(c.TransactionEndLSN),
				CommitTime: c.CommitTime, Xid: s.begin.Xid}); err != nil {
				return false, err
			}
			s.stored++
			s.lastCommitTime = c.CommitTime
		}
		s.inTx, s.skip = false, false
		s.pendingEnd = max(s.pendingEnd, uint64(c.TransactionEndLSN))
		if !s.dirty {
			s.dirty, s.dirtySince, s.dirtyFrom = true, time.Now(), s.w.Offset()
		}
		return false, nil
	case 'R':
		var m pglogrepl.RelationMessage
		if err := m.Decode(data[1:]); err != nil {
			return false, fmt.Errorf("decode Relation: %w", err)
		}
		return false, s.relation(ctx, &m)
	case 'I', 'U', 'D', 'T':
		if !s.inTx {
			return false, fmt.Errorf("change message outside a transaction at %s", xld.WALStart)
		}
		if s.skip {
			return false, nil
		}
		if xld.WALStart != 0 {
			s.txPos = max(s.txPos, uint64(xld.WALStart))
		}
		if err := s.writeRelations(relIDs(data)); err != nil {
			return false, err
		}
		return false, s.w.WriteChange(changeset.Change{LSN: uint64(xld.WALStart), Raw: data})
	case 'M':
		var m pglogrepl.LogicalDecodingMessage
		if err := m.Decode(data[1:]); err != nil {
			return false, fmt.Errorf("decode logical message: %w", err)
		}
		return s.message(ctx, &m, token)
	}
	return false, nil // Origin, Type: nothing to store
}

// message stores a logical decoding message; the drain marker is consumed.
// DDL and chain-end messages of other installations (their prefix carries
// another short id) are ignored: each installation replays only what its own
// trigger captured. The event trigger's DDL payload is resolved into the
// one statement that ran (changeset.ResolveDDL); a chain-end message, or a
// statement that cannot be replayed exactly, ends the chain at that LSN.
func (s *session) message(ctx context.Context, m *pglogrepl.LogicalDecodingMessage, token string) (bool, error) {
	if m.Prefix == drainPrefix {
		if !m.Transactional && !s.inTx {
			s.pos = max(s.pos, uint64(m.LSN))
		}
		if s.req != nil && s.req.token != "" && string(m.Content) == s.req.token {
			s.req.reached = true
		}
		return token != "" && string(m.Content) == token, nil
	}
	ours := s.st.Installation != ""
	if ours && m.Prefix == s.st.EndPrefix() {
		if s.skip || (m.Transactional && !s.inTx) {
			return false, nil
		}
		return false, s.triggerEnd(ctx, string(m.Content), uint64(m.LSN))
	}
	if (changeset.IsDDLPrefix(m.Prefix) || strings.HasPrefix(m.Prefix, changeset.EndPrefix+".")) && m.Prefix != s.st.DDLPrefix() {
		return false, nil // another installation's
	}
	content := m.Content
	if m.Transactional && s.inTx {
		s.txPos = max(s.txPos, uint64(m.LSN))
	}
	if m.Prefix == s.st.DDLPrefix() && !s.skip {
		known, touched, grants := false, []uint32(nil), []string(nil)
		if ours {
			r, err := changeset.ResolveDDL(m.Content)
			if err != nil {
				return false, s.triggerEnd(ctx, err.Error(), uint64(m.LSN))
			}
			if r.End != "" {
				return false, s.triggerEnd(ctx, r.End, uint64(m.LSN))
			}
			if content, err = json.Marshal(r.DDL); err != nil {
				return false, fmt.Errorf("encode captured DDL: %w", err)
			}
			if len(r.Unlogged) > 0 {
				s.notCovered(r.Unlogged)
			}
			known, touched, grants = r.Known, r.Objects, r.Grants
			if largeObjectDDL(r.DDL.Statement) {
				// Restored with the large objects' captured state.
				s.schema.Touch(uint64(m.LSN), known, touched, grants)
				return false, s.st.SaveSchema(s.schema)
			}
		}
		s.schema.Touch(uint64(m.LSN), known, touched, grants)
		if err := s.st.SaveSchema(s.schema); err != nil {
			return false, err
		}
	}
	if s.skip || (m.Transactional && !s.inTx) {
		return false, nil
	}
	return false, s.w.WriteMessage(changeset.Message{LSN: uint64(m.LSN), Transactional: m.Transactional || s.inTx,
		Prefix: m.Prefix, Content: content})
}

// triggerEnd ends the chain at lsn (a message of the event trigger, or a
// captured statement that cannot be replayed exactly): the transaction
// holding it is not kept, every one before it is.
func (s *session) triggerEnd(ctx context.Context, why string, lsn uint64) error {
	// Exact for every transaction committed before the one holding lsn.
	end, t := lsn, time.Time{}
	if s.inTx {
		end, t = min(lsn, s.begin.FinalLSN), s.begin.CommitTime.Add(-time.Microsecond)
	}
	return s.endChainAt(ctx, fmt.Sprintf("chain ended at %s: %s; take a new full backup", chain.FormatLSN(lsn), why), end, t)
}

// notCovered records unlogged tables created during the chain: they are
// not published, so incrementals do not cover them (a point-in-time restore
// leaves them empty, as PostgreSQL's own recovery does).
func (s *session) notCovered(tables []string) {
	if err := s.st.Reload(); err != nil {
		return
	}
	for _, t := range tables {
		if !slices.Contains(s.st.NotCovered, t) {
			s.st.NotCovered = append(s.st.NotCovered, t)
		}
	}
	if err := s.st.Save(); err != nil {
		s.opts.Log.Warn("could not record unlogged tables in the chain state", "chain", s.st.ID, "error", err)
	}
	s.opts.Log.Warn("unlogged tables created: not covered by incremental backups", "chain", s.st.ID, "tables", tables)
}

// relation records a relation definition and detects schema changes: a
// definition that differs from the one known (from the snapshot or an
// earlier message), or a table the snapshot did not have, ends the chain,
// unless CAPTURE_DDL is on and a captured DDL statement came after the
// known definition.
func (s *session) relation(ctx context.Context, m *pglogrepl.RelationMessage) error {
	typeName, err := s.typeNames(ctx, m)
	if err != nil {
		return err
	}
	rel := changeset.RelationFromMessage(m, typeName)
	key := chain.TableKey(rel.Schema, rel.Name)
	// The definition holds from just after the last position seen in the
	// transaction (its first LSN, a change, a DDL message): pgoutput sends
	// Relation messages without a position. So DDL earlier in the same
	// transaction (a query string mixing DDL and DML) counts as before it.
	def := chain.TableDef{Since: s.begin.FinalLSN}
	if s.txPos != 0 {
		def.Since = s.txPos + 1
	}
	for _, c := range m.Columns {
		def.Columns = append(def.Columns, chain.Column{Name: c.Name, TypeOID: c.DataType, TypMod: c.TypeModifier})
	}
	prev, known := s.schema.Tables[key]
	if old := s.rels[rel.OID]; old != nil && (old.Schema != rel.Schema || old.Name != rel.Name) && !s.skip {
		// Renamed (or moved, or its schema renamed): explained only by
		// captured DDL that touched the table or its schema.
		if !s.explainedRelation(ctx, rel, prev.Since, true) {
			return s.schemaChange(ctx, fmt.Sprintf("%s (renamed to %s)", old.QualifiedName(), rel.QualifiedName()))
		}
	}
	if !known && !s.skip && !s.explainedRelation(ctx, rel, 0, true) {
		// Not in the snapshot the full backup dumped: created since,
		// without captured DDL that created it (or renamed it).
		return s.schemaChange(ctx, key+" (table created after the full backup)")
	}
	if known && !prev.Same(def) && !s.skip {
		// Explained only by captured DDL that touched this table since
		// its known definition: other DDL captured meanwhile does not
		// explain it.
		if !s.explainedRelation(ctx, rel, prev.Since, false) {
			return s.schemaChange(ctx, key)
		}
		s.opts.Log.Info("table definition changed by captured DDL", "table", key, "lsn", chain.FormatLSN(s.begin.FinalLSN))
	}
	if !known || !prev.Same(def) {
		s.schema.Tables[key] = def
		if err := s.st.SaveSchema(s.schema); err != nil {
			return err
		}
	}
	s.rels[rel.OID] = rel
	delete(s.inSeg, rel.OID)
	return nil
}

// explainedRelation reports whether captured DDL after LSN since explains
// a changed description of the relation rel: DDL that touched the table
// itself (by OID: created, altered, renamed, moved), an inheritance parent
// or partitioned ancestor of it, the composite type of a typed table, or,
// with renamed, its schema (ALTER SCHEMA … RENAME). Without DDL capture
// nothing explains it.
func (s *session) explainedRelation(ctx context.Context, rel *changeset.Relation, since uint64, renamed bool) bool {
	if !s.st.CaptureDDL {
		return false
	}
	if s.schema.TouchedSince(rel.OID, since) {
		return true
	}
	// Its columns also change with DDL on an inheritance parent or
	// partitioned ancestor (ALTER TABLE parent ADD COLUMN reaches every
	// child) and on the composite type of a typed table (ALTER TYPE …
	// CASCADE).
	var related []uint32
	if err := s.conn.QueryRow(ctx, `WITH RECURSIVE anc(oid) AS (
	     SELECT i.inhparent FROM pg_catalog.pg_inherits i WHERE i.inhrelid = $1
	     UNION SELECT i.inhparent FROM pg_catalog.pg_inherits i JOIN anc ON i.inhrelid = anc.oid)
	   SELECT pg_catalog.array_agg(o) FROM (SELECT oid AS o FROM anc
	     UNION SELECT c.reloftype FROM pg_catalog.pg_class c WHERE c.oid = $1 AND c.reloftype <> 0) x`, rel.OID).Scan(&related); err == nil {
		for _, o := range related {
			if s.schema.TouchedSince(o, since) {
				return true
			}
		}
	}
	if !renamed {
		return false
	}
	var nsp uint32
	if err := s.conn.QueryRow(ctx, `SELECT oid FROM pg_catalog.pg_namespace WHERE nspname = $1`, rel.Schema).Scan(&nsp); err != nil {
		return false
	}
	return s.schema.TouchedSince(nsp, since)
}

// schemaChange ends the chain: the segment keeps every whole transaction
// before the change and is sealed there, so a final incremental can still
// archive it.
//
// The change may be older than this transaction (without DDL capture, or
// DDL the event trigger did not see): the chain is then exact only up to
// the last point where the catalog was proven unchanged.
func (s *session) schemaChange(ctx context.Context, table string) error {
	lsn, t := s.begin.FinalLSN, s.begin.CommitTime.Add(-time.Microsecond)
	// The change was not captured (or not explained by captured DDL): it
	// happened at some point since the catalog was last proven unchanged,
	// maybe well before this transaction.
	if s.catalog != nil && s.catalog.Position() < lsn {
		lsn, t = s.catalog.Position(), s.catalog.Time
	}
	reason := fmt.Sprintf("schema change of %s at %s (change sets exact up to LSN %s); take a new full backup (and set CAPTURE_DDL so that schema changes travel in the change sets)",
		table, chain.FormatLSN(s.begin.FinalLSN), chain.FormatLSN(lsn))
	return s.endChainAt(ctx, reason, lsn, t)
}

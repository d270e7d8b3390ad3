package apply

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"sort"

	"github.com/jackc/pgx/v5"

	"github.com/pme2go/pme2go-backup/engine/changeset"
)

// Sequences at the target.
//
// PostgreSQL 15's pgoutput carries no sequence changes, so the chain holds
// reads of every sequence instead: one as the chain starts (in the full
// backup's manifest) and one at each seal (the Sequences record before a
// segment's Seal), each between two WAL insert positions (FromLSN,
// ToLSN). A restore to a target whose last applied commit is C and whose
// first commit not applied is N uses them so:
//
//   - a read that began after C and ended before N saw the source exactly as
//     it was at the target (no commit in between): every sequence is set to
//     it (exact). Without an N in the chain, a read that began after C and
//     ended before the end of the chain's archives is exact too: those
//     archives hold every commit before their end, and none came after C.
//     With --latest and nothing committed after the chain's last seal, the
//     last read is the target by definition.
//   - otherwise, per sequence: the last read that began at or before C and
//     the first that began after it; equal values mean the sequence did
//     not move across the target (exact), unless a TRUNCATE … RESTART
//     IDENTITY committed between the two reads. Different or missing values
//     mean its value at the target is unknown: it is set to the one of the
//     two that is further along (a sequence is never set behind a value it
//     handed out), then raised to the largest value its owning column
//     holds, and the restore names it as a difference with both reads.
//
// A sequence moved and set back to the same value between two reads looks
// unchanged; nextval calls of transactions still open at the target are in
// a read taken then, as in PostgreSQL's own recovery (which logs sequences
// ahead).

// seqRead is one read of the source's sequences.
type seqRead struct {
	from, to uint64 // WAL insert positions around the read; to 0: unknown
	where    string // "the start of chain X", "incremental Y"
	values   map[string]changeset.SequenceValue
	// own is the commit LSN of the transaction that carried the read (a
	// mark's), 0 for a seal's; clean: no other transaction committed
	// between the read and own, so the read is the state at own.
	own   uint64
	clean bool
}

// exactFor reports whether the read holds the sequences' values at a
// target whose last applied commit is last and whose first commit not
// applied is next (0: none in the chain's archives up to reach, the end
// of those archives, 0 when unknown; latest: none counts).
func (r *seqRead) exactFor(last, next, reach uint64, latest bool) bool {
	if r.own != 0 {
		return r.clean && (last == r.own || (last < r.own && next == r.own))
	}
	switch {
	case last >= r.from:
		return false
	case next == 0 && latest:
		return true
	case r.to == 0:
		return false
	case next != 0:
		return r.to < next
	}
	return reach != 0 && r.to <= reach
}

// SequenceChoice is what a restore knows about one sequence at its target.
type SequenceChoice struct {
	Exact bool
	// Value is the value at the target when Exact.
	Value changeset.SequenceValue
	// Before and After are the reads around the target when not Exact
	// (nil: not recorded there), BeforeAt and AfterAt where they come from.
	Before, After     *changeset.SequenceValue
	BeforeAt, AfterAt string
}

// SequenceNote names a sequence whose value at the target is unknown:
// what it was set to and why.
type SequenceNote struct {
	Sequence string `json:"sequence"`
	Value    int64  `json:"value"`
	Message  string `json:"message"`
}

// seqCollector gathers the sequence reads a walk passes, and the commit
// LSN of the first transaction past the target.
type seqCollector struct {
	reads []seqRead
	// restarts are the commit LSNs of the transactions with a TRUNCATE …
	// RESTART IDENTITY the walk passed.
	restarts []uint64
	next     uint64 // first commit LSN past the target, 0 until seen
	prev     uint64 // last commit LSN seen before the current transaction
}

// seqMessage records a read carried by a transaction (b) as a message;
// clean when the walk saw every commit before it (not past the stop).
func (c *seqCollector) seqMessage(b *changeset.Begin, m *changeset.Message, archive string, seen bool) {
	if m.Prefix != changeset.SequencesPrefix || b == nil {
		return
	}
	var q changeset.Sequences
	if json.Unmarshal(m.Content, &q) != nil || q.FromLSN == 0 {
		return
	}
	c.reads = append(c.reads, seqRead{from: q.FromLSN, to: q.ToLSN, where: "the mark in incremental " + archive, values: q.Values,
		own: b.FinalLSN, clean: seen && c.prev < q.FromLSN})
}

func (c *seqCollector) sequences(s *changeset.Sequences, seal *changeset.Seal, archive string) {
	r := seqRead{from: s.FromLSN, to: s.ToLSN, where: "incremental " + archive, values: s.Values}
	if r.from == 0 && seal != nil {
		r.from, r.to = seal.NextLSN, 0 // read after the drain to NextLSN, end unknown
	}
	c.reads = append(c.reads, r)
}

// seqChange records a TRUNCATE … RESTART IDENTITY of transaction b: it
// sets sequences back, so reads on either side of it that agree prove
// nothing.
func (c *seqCollector) seqChange(b *changeset.Begin, ch *changeset.Change) {
	if b == nil || len(ch.Raw) == 0 || ch.Raw[0] != byte(changeset.OpTruncate) {
		return
	}
	if d, err := ch.Decode(); err != nil || d.RestartIdentity {
		c.restarts = append(c.restarts, b.FinalLSN)
	}
}

func (c *seqCollector) nextCommit(lsn uint64) {
	if c.next == 0 {
		c.next = lsn
	}
}

// startRead returns the read taken as the chain started, from the full
// backup's manifest, if recorded.
func (p *Plan) startRead() *seqRead {
	if p.Full.Manifest == nil {
		return nil
	}
	s, _ := p.Full.Manifest.Metadata["chainSequences:"+p.Database].(string)
	if s == "" {
		return nil
	}
	var q changeset.Sequences
	if json.Unmarshal([]byte(s), &q) != nil || q.FromLSN == 0 {
		return nil
	}
	return &seqRead{from: q.FromLSN, to: q.ToLSN, where: "the start of chain " + p.ChainID + " (full backup " + p.Full.Name + ")", values: q.Values}
}

// scanAfter reads the segments after index i up to their first commit,
// passing the sequence reads met on the way and that commit's LSN to c.
func (p *Plan) scanAfter(ctx context.Context, i int, c *seqCollector) error {
	for _, seg := range p.segments[i+1:] {
		if c.next != 0 {
			return nil
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		r, err := changeset.Open(seg.path)
		if err != nil {
			return fmt.Errorf("incremental %s: %w", seg.archive, err)
		}
		var pending *changeset.Sequences
		for c.next == 0 {
			rec, err := r.Next()
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				r.Close()
				return fmt.Errorf("incremental %s: %w", seg.archive, err)
			}
			switch v := rec.(type) {
			case *changeset.Begin:
				c.nextCommit(v.FinalLSN)
			case *changeset.Sequences:
				pending = v
			case *changeset.Seal:
				if pending != nil {
					c.sequences(pending, v, seg.archive)
				}
			}
		}
		r.Close()
	}
	return nil
}

// placeSequences fills SequenceChoices after Prepare's walk collected the
// sequence reads up to the stop (and the rest of the segment it stopped
// in).
func (p *Plan) placeSequences(ctx context.Context, c *seqCollector) error {
	if len(p.segments) == 0 {
		return nil
	}
	if p.stoppedIn >= 0 && c.next == 0 {
		if err := p.scanAfter(ctx, p.stoppedIn, c); err != nil {
			return err
		}
	}
	// The first commit past the target: in the plan's change sets, else
	// in the chain's later archives.
	next := c.next
	if next == 0 {
		next = p.nextAfter
	}
	reads := c.reads
	if r := p.startRead(); r != nil {
		reads = append([]seqRead{*r}, reads...)
	}
	last := p.LastCommitLSN
	if p.TxCount == 0 {
		last = p.Full.StartLSN
	}
	// --latest of a chain that ended stops at the end, with transactions
	// after it that no change set holds: the last read comes after them.
	latest := p.Target.Kind == Latest && p.ChainEnd == nil
	p.SequenceChoices = chooseSequences(reads, c.restarts, last, next, p.reach, latest)
	return nil
}

// chooseSequences decides, from the reads and the stop point, what is
// known of each sequence at the target (see the comment at the top).
// last is the commit LSN of the last transaction applied (the chain's
// start when none is), next the first commit past the target (0: none
// known), reach the end of the chain's archives when next is 0 (every
// commit before it is in them; 0: unknown), latest whether nothing past
// the chain's end counts.
//
// restarts are the commit LSNs of TRUNCATE … RESTART IDENTITY: two reads
// that agree with one of them between do not prove the value.
func chooseSequences(reads []seqRead, restarts []uint64, last, next, reach uint64, latest bool) map[string]SequenceChoice {
	if len(reads) == 0 {
		return nil
	}
	sort.SliceStable(reads, func(i, j int) bool { return reads[i].from < reads[j].from })
	var before, after *seqRead
	for i := range reads {
		r := &reads[i]
		if r.own != 0 && r.clean {
			r.from = r.own // the state at its transaction's commit
		}
		if r.from <= last {
			before = r
		} else if after == nil {
			after = r
		}
	}
	out := map[string]SequenceChoice{}
	for i := range reads {
		if r := &reads[i]; r.exactFor(last, next, reach, latest) {
			for name, v := range r.values {
				out[name] = SequenceChoice{Exact: true, Value: v}
			}
			return out
		}
	}
	restarted := false
	if before != nil && after != nil {
		for _, l := range restarts {
			if l > before.from && l <= max(after.from, after.to) {
				restarted = true
			}
		}
	}
	names := map[string]bool{}
	for _, r := range []*seqRead{before, after} {
		if r != nil {
			for n := range r.values {
				names[n] = true
			}
		}
	}
	for name := range names {
		var ch SequenceChoice
		if before != nil {
			if v, ok := before.values[name]; ok {
				ch.Before, ch.BeforeAt = &v, fmt.Sprintf("%s (read at %s)", before.where, changeset.FormatLSN(before.from))
			}
		}
		if after != nil {
			if v, ok := after.values[name]; ok {
				ch.After, ch.AfterAt = &v, fmt.Sprintf("%s (read at %s)", after.where, changeset.FormatLSN(after.from))
			}
		}
		if ch.Before != nil && ch.After != nil && *ch.Before == *ch.After && !restarted {
			ch = SequenceChoice{Exact: true, Value: *ch.Before}
		}
		out[name] = ch
	}
	return out
}

// SetSequencesAt sets the sequences of the database conn is connected to
// (the scratch database after replay) to what the plan knows of them at
// its target (Plan.SequenceChoices): exact values as they are; for the
// others the read further along in the sequence's direction. It returns how
// many were set, the sequences set exactly, and a note for each whose
// value at the target is unknown (its message is completed by the caller
// after RaiseOwnedSequences). Without choices (a plan without incremental
// archives) it sets the last archive's values, as SetSequences does.
func SetSequencesAt(ctx context.Context, conn *pgx.Conn, p *Plan) (int, map[string]bool, []SequenceNote, error) {
	if p.SequenceChoices == nil {
		n, err := SetSequences(ctx, conn, p.Sequences)
		return n, nil, nil, err
	}
	rows, _ := conn.Query(ctx, `SELECT format('%I.%I', n.nspname, c.relname), q.seqincrement > 0, c.relpersistence = 'u'
		FROM pg_catalog.pg_sequence q JOIN pg_catalog.pg_class c ON c.oid = q.seqrelid
		JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace WHERE c.relpersistence IN ('p', 'u') ORDER BY 1`)
	type seq struct {
		Name     string
		Up       bool
		Unlogged bool
	}
	present, err := pgx.CollectRows(rows, pgx.RowToStructByPos[seq])
	if err != nil {
		return 0, nil, nil, fmt.Errorf("list sequences: %w", err)
	}
	exact := map[string]bool{}
	var notes []SequenceNote
	n := 0
	for _, s := range present {
		if s.Unlogged {
			if p.TxCount == 0 {
				continue // the full backup's state, as its unlogged tables
			}
			// Never captured; PostgreSQL's own recovery resets unlogged
			// relations to their initial state.
			var start int64
			if err := conn.QueryRow(ctx, `SELECT pg_catalog.setval($1::pg_catalog.regclass, q.seqstart, false), q.seqstart
				FROM pg_catalog.pg_sequence q WHERE q.seqrelid = $1::pg_catalog.regclass`, s.Name).Scan(nil, &start); err != nil {
				return n, exact, notes, fmt.Errorf("reset unlogged sequence %s: %w", s.Name, err)
			}
			n++
			notes = append(notes, SequenceNote{Sequence: s.Name, Value: start,
				Message: "unlogged sequence reset to its start value, as after PostgreSQL's own point-in-time recovery (its changes are never captured)"})
			continue
		}
		ch, ok := p.SequenceChoices[s.Name]
		var v *changeset.SequenceValue
		switch {
		case ok && ch.Exact:
			v = &ch.Value
			exact[s.Name] = true
		case ok:
			v = further(ch.Before, ch.After, s.Up)
		}
		if v != nil {
			if _, err := conn.Exec(ctx, `SELECT pg_catalog.setval($1::pg_catalog.regclass, $2, $3)`, s.Name, v.LastValue, v.IsCalled); err != nil {
				return n, exact, notes, fmt.Errorf("set sequence %s to %d: %w", s.Name, v.LastValue, err)
			}
			n++
		}
		if exact[s.Name] {
			continue
		}
		var msg string
		switch {
		case !ok || (ch.Before == nil && ch.After == nil):
			msg = "not recorded around the target (created after the last read, or not readable by the backup role); left as the replay made it"
		case ch.Before == nil:
			msg = fmt.Sprintf("recorded %s after the target at %s, and not before it", valueText(*ch.After), ch.AfterAt)
		case ch.After == nil:
			msg = fmt.Sprintf("recorded %s before the target at %s, and not after it", valueText(*ch.Before), ch.BeforeAt)
		case *ch.Before == *ch.After:
			msg = fmt.Sprintf("the reads around the target agree, %s at %s and at %s, but a TRUNCATE … RESTART IDENTITY committed between them", valueText(*ch.Before), ch.BeforeAt, ch.AfterAt)
		default:
			msg = fmt.Sprintf("it moved between the reads around the target: %s at %s, %s at %s", valueText(*ch.Before), ch.BeforeAt, valueText(*ch.After), ch.AfterAt)
		}
		var cur int64
		if err := conn.QueryRow(ctx, `SELECT last_value FROM `+s.Name).Scan(&cur); err != nil {
			return n, exact, notes, fmt.Errorf("read sequence %s: %w", s.Name, err)
		}
		notes = append(notes, SequenceNote{Sequence: s.Name, Value: cur,
			Message: "its value at the target is unknown (sequence changes are not in the change stream; " + msg + ")"})
	}
	return n, exact, notes, nil
}

// further returns the read further along in the sequence's direction (up:
// increasing), either when one is missing.
func further(a, b *changeset.SequenceValue, up bool) *changeset.SequenceValue {
	switch {
	case a == nil:
		return b
	case b == nil:
		return a
	}
	pos := func(v *changeset.SequenceValue) (int64, int) {
		c := 0
		if v.IsCalled {
			c = 1
		}
		if !up {
			return -v.LastValue, c
		}
		return v.LastValue, c
	}
	av, ac := pos(a)
	bv, bc := pos(b)
	if bv > av || (bv == av && bc > ac) {
		return b
	}
	return a
}

func valueText(v changeset.SequenceValue) string {
	if v.IsCalled {
		return fmt.Sprintf("%d", v.LastValue)
	}
	return fmt.Sprintf("%d (not yet called)", v.LastValue)
}

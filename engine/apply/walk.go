package apply

import (
	"context"
	"errors"
	"fmt"
	"io"
	"path/filepath"

	"github.com/pme2go/pme2go-backup/engine/changeset"
)

var errEOF = io.EOF

// errStop ends a walk early without error.
var errStop = errors.New("stop")

// canceledAt is the error of a walk whose context was canceled: it
// stopped between two transactions, before the one it would have begun.
type canceledAt struct{ err error }

func (e *canceledAt) Error() string { return e.err.Error() }
func (e *canceledAt) Unwrap() error { return e.err }

// action is what a walk does with a transaction.
type action int

const (
	doApply action = iota
	doSkip         // already applied (resume)
	doStop         // past the target: the walk ends
)

// visitor receives the records of the transactions a walk applies.
type visitor interface {
	begin(b *changeset.Begin) error
	change(c *changeset.Change) error
	message(b *changeset.Begin, m *changeset.Message) error
	commit(c *changeset.Commit) error
}

// seqVisitor is a visitor that also wants the sequence reads (each
// segment's Sequences record, with its Seal) and the commit LSN of the
// first transaction past the stop: the walk then reads the rest of the
// segment it stopped in for them.
type seqVisitor interface {
	sequences(s *changeset.Sequences, seal *changeset.Seal, archive string)
	seqMessage(b *changeset.Begin, m *changeset.Message, archive string, seen bool)
	seqChange(b *changeset.Begin, ch *changeset.Change)
	nextCommit(lsn uint64)
}

// walk streams the plan's segments in order with a TxScanner (one change in
// memory at a time), checks each segment's header and seal, refuses schema
// changes not preceded by captured DDL, and hands the records of the
// transactions decide selects to v. v may return errStop to end the walk.
func (p *Plan) walk(ctx context.Context, decide func(b *changeset.Begin) action, v visitor) error {
	expect := p.Full.StartLSN
	ddlSeen := false
	p.stoppedIn = -1
	for i, seg := range p.segments {
		err := p.walkSegment(ctx, seg, &expect, &ddlSeen, decide, v)
		if errors.Is(err, errStop) {
			p.stoppedIn = i
			return nil
		}
		if err != nil {
			return err
		}
	}
	return nil
}

func (p *Plan) walkSegment(ctx context.Context, seg segment, expect *uint64, ddlSeen *bool, decide func(b *changeset.Begin) action, v visitor) error {
	r, err := changeset.Open(seg.path)
	if err != nil {
		return fmt.Errorf("incremental %s: %w", seg.archive, err)
	}
	defer r.Close()
	if err := p.checkHeader(seg, r.Header(), *expect); err != nil {
		return err
	}
	s := changeset.NewTxScanner(r)
	skipping := false
	var open *changeset.Begin // the transaction being read
	sv, _ := v.(seqVisitor)
	var seqs *changeset.Sequences
	stopped := false // past the stop: only sequence reads and the next commit are looked at
	for s.Scan() {
		ev := s.Event()
		if stopped {
			switch rec := ev.Record.(type) {
			case *changeset.Begin:
				sv.nextCommit(rec.FinalLSN)
			case *changeset.Change:
				sv.seqChange(ev.Tx, rec)
			case *changeset.Message:
				sv.seqMessage(ev.Tx, rec, seg.archive, false)
			case *changeset.Sequences:
				seqs = rec
			case *changeset.Seal:
				if seqs != nil {
					sv.sequences(seqs, rec, seg.archive)
				}
			}
			continue
		}
		switch rec := ev.Record.(type) {
		case *changeset.Relation:
			// Past a chain's end nothing is replayed: a schema change there
			// is the reason it ended (targets past it are refused by name).
			pastEnd := p.ChainEnd != nil && open != nil && open.FinalLSN >= p.ChainEnd.lsn
			if rec.Changed && !*ddlSeen && !pastEnd {
				return fmt.Errorf("the chain holds a schema change of %s (was %d columns, now %d) in %s without captured DDL: replay cannot go past it; choose a target before it or restore from a newer full backup; nothing was restored",
					rec.QualifiedName(), len(rec.Previous.Columns), len(rec.Columns), seg.archive)
			}
		case *changeset.Begin:
			open = rec
			if err := ctx.Err(); err != nil {
				return &canceledAt{err: err}
			}
			switch decide(rec) {
			case doStop:
				if sv == nil {
					return errStop
				}
				sv.nextCommit(rec.FinalLSN)
				stopped = true
				continue
			case doSkip:
				skipping = true
				continue
			}
			if err := v.begin(rec); err != nil {
				return err
			}
		case *changeset.Change:
			if sv != nil {
				sv.seqChange(ev.Tx, rec)
			}
			if !skipping {
				if err := v.change(rec); err != nil {
					return err
				}
			}
		case *changeset.Message:
			if changeset.IsDDLPrefix(rec.Prefix) {
				*ddlSeen = true
			}
			if !skipping && rec.Transactional && ev.Tx != nil {
				if err := v.message(ev.Tx, rec); err != nil {
					return err
				}
			}
		case *changeset.Commit:
			if skipping {
				skipping = false
				continue
			}
			if err := v.commit(rec); err != nil {
				if sv == nil || !errors.Is(err, errStop) {
					return err
				}
				stopped = true
			}
		case *changeset.Sequences:
			seqs = rec
		case *changeset.Seal:
			*expect = rec.NextLSN
			if sv != nil && seqs != nil {
				sv.sequences(seqs, rec, seg.archive)
			}
		}
	}
	if err := s.Err(); err != nil {
		return fmt.Errorf("incremental %s: change set %s: %w", seg.archive, filepath.Base(seg.path), err)
	}
	if stopped {
		return errStop
	}
	if _, ok := r.Sealed(); !ok {
		return fmt.Errorf("incremental %s: change set %s has no Seal record; it was archived incomplete: run pme2go-backup verify", seg.archive, filepath.Base(seg.path))
	}
	return nil
}

// decider returns the function that places a transaction against the
// target; xid and name targets must have been resolved to StopLSN by
// Prepare. Transactions at or below resumeLSN are skipped.
func (p *Plan) decider(resumeLSN uint64) func(b *changeset.Begin) action {
	t := p.Target
	return func(b *changeset.Begin) action {
		if b.FinalLSN <= resumeLSN {
			return doSkip
		}
		if e := p.ChainEnd; e != nil && b.FinalLSN >= e.lsn {
			return doStop // the chain is exact only before its end
		}
		switch t.Kind {
		case Time:
			if b.CommitTime.After(t.Time) || (t.Exclusive && b.CommitTime.Equal(t.Time)) {
				return doStop
			}
		case LSN, Xid, Name:
			l := t.LSN
			if t.Kind != LSN {
				l = p.StopLSN
			}
			if b.FinalLSN > l || (t.Exclusive && b.FinalLSN == l) {
				return doStop
			}
		}
		return doApply
	}
}

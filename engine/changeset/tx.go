package changeset

import (
	"errors"
	"fmt"
	"io"
	"time"
)

// Tx is one whole transaction. Changes and Messages are each in LSN order;
// merge them by LSN to recover their interleaving.
type Tx struct {
	Xid        uint32
	CommitLSN  uint64
	EndLSN     uint64
	CommitTime time.Time
	Changes    []Change
	Messages   []Message
}

// Scan calls fn for every whole transaction, in order. It holds one
// transaction at a time, so memory grows with the largest transaction; use
// TxScanner to stream changes one by one. Records outside transactions
// update the relation map and are otherwise skipped. Scan returns nil at
// the clean end, fn's error, or the reader's error: with ErrTornTail every
// whole transaction before the tail has been passed to fn.
func (r *Reader) Scan(fn func(tx *Tx) error) error {
	var tx *Tx
	for {
		rec, err := r.Next()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
		switch v := rec.(type) {
		case *Begin:
			tx = &Tx{Xid: v.Xid}
		case *Change:
			tx.Changes = append(tx.Changes, *v)
		case *Message:
			if tx != nil {
				tx.Messages = append(tx.Messages, *v)
			}
		case *Commit:
			tx.CommitLSN, tx.EndLSN, tx.CommitTime = v.CommitLSN, v.EndLSN, v.CommitTime
			if err := fn(tx); err != nil {
				return err
			}
			tx = nil
		}
	}
}

// Transactions reads every whole transaction into memory. On a torn tail
// it returns the whole transactions before it together with the error
// (test with errors.Is(err, ErrTornTail)).
func (r *Reader) Transactions() ([]*Tx, error) {
	var txs []*Tx
	err := r.Scan(func(tx *Tx) error {
		txs = append(txs, tx)
		return nil
	})
	return txs, err
}

// ReadAll opens the segment at path and reads its header and every whole
// transaction, as Transactions does.
func ReadAll(path string) (Header, []*Tx, error) {
	r, err := Open(path)
	if err != nil {
		return Header{}, nil, err
	}
	defer r.Close()
	txs, err := r.Transactions()
	if err != nil {
		err = fmt.Errorf("changeset: read %s: %w", path, err)
	}
	return r.Header(), txs, err
}

// Event is one record seen by a TxScanner, with its transaction context.
type Event struct {
	// Record is *Relation, *Begin, *Change, *Message, *Commit, *Sequences
	// or *Seal. A *Relation with Changed set is a schema change.
	Record Record
	// Tx is the Begin of the transaction the record belongs to (Begin,
	// Change, transactional Message and Commit), or nil.
	Tx *Begin
}

// TxScanner streams a segment record by record with transaction
// boundaries, never holding more than one change in memory. A consumer
// applies changes as they arrive and makes them final only at the Commit
// event; when Err reports ErrTornTail the open transaction must be
// discarded (rolled back).
type TxScanner struct {
	r   *Reader
	tx  *Begin
	ev  Event
	err error
}

// NewTxScanner returns a TxScanner reading from r.
func NewTxScanner(r *Reader) *TxScanner { return &TxScanner{r: r} }

// Scan advances to the next event and reports whether there is one.
func (s *TxScanner) Scan() bool {
	if s.err != nil {
		return false
	}
	rec, err := s.r.Next()
	if err != nil {
		s.err, s.ev = err, Event{}
		return false
	}
	switch v := rec.(type) {
	case *Begin:
		s.tx = v
	}
	s.ev = Event{Record: rec, Tx: s.tx}
	if _, ok := rec.(*Commit); ok {
		s.tx = nil
	}
	return true
}

// Event returns the current event.
func (s *TxScanner) Event() Event { return s.ev }

// InTx reports whether a transaction is open after the current event.
func (s *TxScanner) InTx() bool { return s.tx != nil }

// Err returns the error that stopped Scan, or nil at the clean end.
func (s *TxScanner) Err() error {
	if errors.Is(s.err, io.EOF) {
		return nil
	}
	return s.err
}

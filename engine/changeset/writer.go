package changeset

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"
)

// writeBuffer is the size of the Writer's buffer; it bounds the memory a
// Writer holds, independent of transaction size.
const writeBuffer = 256 << 10

// Writer appends records to one segment. Every record is streamed to the
// file through a fixed-size buffer; nothing is durable until Sync returns.
// A Writer is not safe for concurrent use.
type Writer struct {
	f       segFile
	w       *bufio.Writer
	path    string
	hdr     Header
	scratch [8]byte
	prefix  [13]byte
	off     int64
	err     error // sticky write error

	inTx     bool
	xid      uint32
	sealed   bool
	txCount  int64
	first    Commit
	last     Commit
	hasFirst bool
}

// Create creates a new segment at path (mode 0600; it must not exist),
// writes the header and fsyncs it. h.FormatVersion is set to FormatVersion
// and a zero h.Created to the current time.
func Create(path string, h Header) (*Writer, error) {
	h.FormatVersion = FormatVersion
	if h.Created.IsZero() {
		h.Created = time.Now().UTC()
	}
	hj, err := json.Marshal(h)
	if err != nil {
		return nil, fmt.Errorf("changeset: encode header for %s: %w", path, err)
	}
	f, err := createFile(path)
	if err != nil {
		return nil, fmt.Errorf("changeset: create segment (to continue an existing segment use OpenAppend): %w", err)
	}
	w := &Writer{f: f, w: bufio.NewWriterSize(f, writeBuffer), path: path, hdr: h}
	var pre [len(Magic) + 2]byte
	copy(pre[:], Magic)
	be.PutUint16(pre[len(Magic):], FormatVersion)
	_, err = w.w.Write(pre[:])
	w.off = int64(len(pre))
	if err == nil {
		err = w.frame(TypeHeader, hj)
	}
	if err == nil {
		err = w.Sync()
	}
	if err == nil {
		err = syncDir(filepath.Dir(path))
	}
	if err != nil {
		f.Close()
		os.Remove(path)
		return nil, fmt.Errorf("changeset: write header of new segment %s (check free space and permissions): %w", path, err)
	}
	return w, nil
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// Header returns the segment header.
func (w *Writer) Header() Header { return w.hdr }

// Offset returns the size of the segment including buffered records.
func (w *Writer) Offset() int64 { return w.off }

// InTx reports whether a transaction is open.
func (w *Writer) InTx() bool { return w.inTx }

// TxCount returns the number of whole transactions in the segment.
func (w *Writer) TxCount() int64 { return w.txCount }

// LastCommitLSN returns the commit LSN of the last transaction written, or
// 0. After a restart the capture skips transactions whose commit LSN is at
// or below it.
func (w *Writer) LastCommitLSN() uint64 { return w.last.CommitLSN }

// LastEndLSN returns the end LSN of the last transaction written, or 0.
func (w *Writer) LastEndLSN() uint64 { return w.last.EndLSN }

// frame writes one record and latches any write error.
func (w *Writer) frame(t RecordType, parts ...[]byte) error {
	n, err := writeFrame(w.w, &w.scratch, t, parts...)
	if err != nil {
		w.err = fmt.Errorf("changeset: write %s record to %s: %w", t, w.path, err)
		return w.err
	}
	w.off += n
	return nil
}

// usable returns why the writer cannot accept a record, if it cannot.
func (w *Writer) usable(what string, wantTx bool) error {
	switch {
	case w.err != nil:
		return fmt.Errorf("changeset: %s: writer failed earlier; close it and reopen the segment with OpenAppend: %w", what, w.err)
	case w.sealed:
		return fmt.Errorf("changeset: %s: %s is sealed; create a new segment: %w", what, w.path, ErrSealed)
	case wantTx && !w.inTx:
		return fmt.Errorf("changeset: %s: no open transaction; call BeginTx first", what)
	case !wantTx && w.inTx:
		return fmt.Errorf("changeset: %s: transaction xid %d is still open; call CommitTx first", what, w.xid)
	}
	return nil
}

// WriteRelation writes a relation definition. Write it before the first
// change that uses it and again whenever the server re-sends it; inside or
// outside a transaction.
func (w *Writer) WriteRelation(rel *Relation) error {
	if err := w.usable("write relation", w.inTx); err != nil {
		return err
	}
	j, err := json.Marshal(relationJSON{OID: rel.OID, Schema: rel.Schema, Name: rel.Name,
		ReplicaIdentity: string(rune(rel.ReplicaIdentity)), Columns: rel.Columns, QualifiedTypes: rel.QualifiedTypes})
	if err != nil {
		return fmt.Errorf("changeset: encode relation %s: %w", rel.QualifiedName(), err)
	}
	return w.frame(TypeRelation, j)
}

// BeginTx opens a transaction. b.FinalLSN must be above LastCommitLSN.
func (w *Writer) BeginTx(b Begin) error {
	if err := w.usable("begin transaction", false); err != nil {
		return err
	}
	if w.hasFirst && b.FinalLSN <= w.last.CommitLSN {
		return fmt.Errorf("changeset: begin transaction xid %d: commit LSN %s is not after the last written commit %s; skip transactions at or below LastCommitLSN()",
			b.Xid, FormatLSN(b.FinalLSN), FormatLSN(w.last.CommitLSN))
	}
	be.PutUint32(w.prefix[:], b.Xid)
	be.PutUint64(w.prefix[4:], b.FinalLSN)
	var t [8]byte
	putTime(t[:], b.CommitTime)
	if err := w.frame(TypeBegin, w.prefix[:12], t[:]); err != nil {
		return err
	}
	w.inTx, w.xid = true, b.Xid
	return nil
}

// WriteChange streams one raw pgoutput Insert, Update, Delete or Truncate
// message of the open transaction to the file.
func (w *Writer) WriteChange(c Change) error {
	if err := w.usable("write change", true); err != nil {
		return err
	}
	if len(c.Raw) == 0 || (c.Raw[0] != 'I' && c.Raw[0] != 'U' && c.Raw[0] != 'D' && c.Raw[0] != 'T') {
		return errors.New("changeset: write change: payload is not a pgoutput Insert, Update, Delete or Truncate message; write Relation, Message, Begin and Commit with their own methods")
	}
	be.PutUint64(w.prefix[:], c.LSN)
	w.prefix[8] = 0
	if c.Streamed {
		w.prefix[8] = 1
	}
	return w.frame(TypeChange, w.prefix[:9], c.Raw)
}

// WriteMessage writes a logical decoding message. Transactional messages
// need an open transaction.
func (w *Writer) WriteMessage(m Message) error {
	if err := w.usable("write message", m.Transactional || w.inTx); err != nil {
		return err
	}
	be.PutUint64(w.prefix[:], m.LSN)
	w.prefix[8] = 0
	if m.Transactional {
		w.prefix[8] = 1
	}
	be.PutUint32(w.prefix[9:], uint32(len(m.Prefix)))
	return w.frame(TypeMessage, w.prefix[:13], []byte(m.Prefix), m.Content)
}

// CommitTx closes the open transaction. A zero c.Xid takes BeginTx's xid.
// The transaction is durable once Sync returns.
func (w *Writer) CommitTx(c Commit) error {
	if err := w.usable("commit transaction", true); err != nil {
		return err
	}
	if c.Xid == 0 {
		c.Xid = w.xid
	}
	if c.Xid != w.xid {
		return fmt.Errorf("changeset: commit transaction: xid %d does not match the open transaction xid %d", c.Xid, w.xid)
	}
	if w.hasFirst && c.CommitLSN <= w.last.CommitLSN {
		return fmt.Errorf("changeset: commit transaction xid %d: commit LSN %s is not after the last commit %s", c.Xid, FormatLSN(c.CommitLSN), FormatLSN(w.last.CommitLSN))
	}
	var p [28]byte
	be.PutUint64(p[:], c.CommitLSN)
	be.PutUint64(p[8:], c.EndLSN)
	putTime(p[16:], c.CommitTime)
	be.PutUint32(p[24:], c.Xid)
	if err := w.frame(TypeCommit, p[:]); err != nil {
		return err
	}
	w.inTx = false
	w.noteCommit(c)
	return nil
}

func (w *Writer) noteCommit(c Commit) {
	if !w.hasFirst {
		w.first, w.hasFirst = c, true
	}
	w.last = c
	w.txCount++
}

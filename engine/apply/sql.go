package apply

import (
	"bytes"
	"context"
	"fmt"
	"strconv"
	"strings"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/pme2go/pme2go-backup/engine/changeset"
)

const (
	// copyFlushBytes bounds the COPY buffer of one batch of inserts.
	copyFlushBytes = 4 << 20
	// copyMinRows is the row of a run of inserts into one table (with one
	// column list) from which on the run is batched with COPY; the rows
	// before it are sent as prepared single-row INSERTs in the pipeline.
	copyMinRows = 100
	// syncStatements and syncBytes bound what is queued in the pipeline
	// before it is synchronized and its results read and checked.
	syncStatements = 1000
	syncBytes      = 4 << 20
)

// writer turns decoded changes into statements on one connection, sent in
// pipeline mode. A transaction's BEGIN, updates, deletes, truncates and
// short runs of inserts (prepared single-row INSERTs) are built into a
// batch while the previous batch is executing in the target; at the
// transaction's end the previous batch's results are read and checked in
// order, and the new batch — led by the previous transaction's progress
// record and COMMIT — is sent with a synchronization point. A small
// transaction thus costs one network round trip, overlapped with the
// decoding of the next one. Long runs of inserts go with COPY and captured
// DDL with the simple protocol, after everything before them has run.
//
// A transaction's COMMIT is sent only after all its statements were checked
// (each update, delete and insert touched exactly one row), at the end of
// the next transaction (or by finish); until then the transaction is open
// in the target, and an error rolls it back. At most one batch is in
// flight, and a batch is sent early when it grows past syncStatements
// statements or syncBytes bytes of parameters, which bounds memory.
type writer struct {
	conn  *pgconn.PgConn
	stmts map[string]string // statement text -> prepared name
	seq   int               // statements prepared so far, for names

	next      []request        // batch being built
	nextBytes int              // bytes of its parameters
	pipe      *pgconn.Pipeline // the batch in flight; nil if none
	inflight  []expect         // results it owes, in order
	ends      *commitRef
	// ends is the target transaction whose statements end in the batch in
	// flight.

	tx  txRef  // transaction being written
	lsn uint64 // LSN of the change being written; 0 outside changes

	runRel  string // qualified name of the relation of the run of inserts
	runCols string // its column list
	runRows int    // rows in the run so far

	copyBuf  bytes.Buffer // rows of the run batched for COPY
	copyRows int64
	copyRel  string // their relation
	copyCols string // and column list
	copyLSN  uint64 // LSN of the first of them

	pending *pendingCopy // the COPY in flight (copyIn); nil if none
	spare   []byte       // backing array of the last COPY's rows, for the next

	toCommit  *commitRef  // checked transaction whose COMMIT is not sent yet
	chain     bool        // that COMMIT starts the next transaction (AND CHAIN)
	committed []commitRef // commits confirmed by the last batch read
	onCommit  func(c commitRef)

	rows          int64 // rows written and checked
	rowsCommitted int64 // of them, rows of committed transactions

	// Catalog knowledge of the target, looked up on first use and
	// forgotten after DDL (see safety.go).
	types   map[typeKey]typeInfo             // column types: cast and key comparison
	rels    map[*changeset.Relation]*relInfo // per Relation record
	tables  map[string]*tableInfo            // tables whose changes run as their owner; nil: not loaded
	uniques map[string]bool                  // tables whose updates are not grouped (loaded with tables)
	dbPath  string                           // the database's own search_path, for old change sets
	setup   *sessionSettings                 // replay session settings, re-set after owner code ran
}

// commitRef is the end of a target transaction: the last source
// transaction it holds (whose commit LSN and time the replication origin
// records) and how many source transactions it holds.
type commitRef struct {
	changeset.Commit
	n int64
}

// txRef names a transaction in errors.
type txRef struct {
	xid       uint32
	commitLSN uint64
}

// request is a statement of the batch being built.
type request struct {
	q        string
	params   [][]byte
	prepared bool // through a prepared statement; else the unnamed one, without parameters
	exp      expect
}

// expectKind says how to check the result of a request.
type expectKind uint8

const (
	expPrepare  expectKind = iota // statement prepared
	expAny                        // any successful result
	expOneRow                     // an update, delete or insert of exactly want rows (1 when 0)
	expCommit                     // COMMIT of a transaction
	expOneRowFn                   // an owner's-privileges call returning want (1 when 0): the rows changed
)

// expect is a result the pipeline owes, with what to name in an error.
type expect struct {
	kind   expectKind
	q      string // statement text
	name   string // prepared statement name (expPrepare)
	tx     txRef
	lsn    uint64    // change LSN, 0 if none
	commit commitRef // expCommit
	want   int64     // rows expOneRow and expOneRowFn must change; 0 means 1
}

// rows returns the number of rows the request must change.
func (e *expect) rows() int64 {
	if e.want == 0 {
		return 1
	}
	return e.want
}

// newWriter returns a writer on conn that calls onCommit, in commit order,
// for each transaction the target confirmed committed.
func newWriter(conn *pgconn.PgConn, onCommit func(c commitRef)) *writer {
	return &writer{conn: conn, stmts: map[string]string{}, onCommit: onCommit, types: map[typeKey]typeInfo{},
		rels: map[*changeset.Relation]*relInfo{}}
}

// fail names the transaction and change (if any) of err.
func fail(tx txRef, lsn uint64, err error) error {
	if lsn != 0 {
		err = fmt.Errorf("change at LSN %s: %w", changeset.FormatLSN(lsn), err)
	}
	return fmt.Errorf("transaction xid %d, commit LSN %s: %w", tx.xid, changeset.FormatLSN(tx.commitLSN), err)
}

// failf is fail for the transaction and change being written.
func (w *writer) failf(format string, a ...any) error {
	return fail(w.tx, w.lsn, fmt.Errorf(format, a...))
}

// begin starts transaction b: with BEGIN, or, when the previous
// transaction's COMMIT is still to send, by sending it as COMMIT AND CHAIN.
func (w *writer) begin(ctx context.Context, b *changeset.Begin) error {
	w.tx, w.lsn = txRef{xid: b.Xid, commitLSN: b.FinalLSN}, 0
	if w.ends != nil || w.toCommit != nil {
		w.chain = true
		return nil
	}
	return w.queue(ctx, request{q: "BEGIN", prepared: true}, expAny)
}

// commit ends the target transaction, which holds n source transactions,
// the last of them c: the batch in flight is read, then the transaction's
// batch is sent; its COMMIT follows once that was checked.
func (w *writer) commit(ctx context.Context, c *changeset.Commit, n int64) error {
	w.lsn = 0
	if err := w.wait(); err != nil {
		return err
	}
	return w.send(ctx, &commitRef{Commit: *c, n: n})
}

// finish sends the last transaction's COMMIT and reads everything.
func (w *writer) finish(ctx context.Context) error {
	if err := w.wait(); err != nil {
		return err
	}
	return w.drain(ctx)
}

// abort reads the batch in flight, if any, after an error (a previous
// transaction's COMMIT in it still counts) and drops everything not sent:
// a checked transaction whose COMMIT was not sent is not committed. The
// connection is then idle, possibly in a failed transaction; the caller
// rolls back.
func (w *writer) abort() {
	w.waitCopy()
	w.wait()
	w.rows = w.rowsCommitted
	w.next, w.nextBytes, w.toCommit, w.chain = nil, 0, nil, false
	w.copyBuf.Reset()
	w.copyRows, w.runRows, w.runRel, w.runCols = 0, 0, "", ""
}

// queue adds a request, with its check, to the batch being built, sending
// the batch early when it grew large.
func (w *writer) queue(ctx context.Context, r request, k expectKind) error {
	return w.queueNamed(ctx, r, k, r.q, 1)
}

// queueNamed is queue naming the statement as name in errors, with a
// request that must change want rows (expOneRow, expOneRowFn).
func (w *writer) queueNamed(ctx context.Context, r request, k expectKind, name string, want int64) error {
	r.exp = expect{kind: k, q: name, tx: w.tx, lsn: w.lsn, want: want}
	w.next = append(w.next, r)
	for _, p := range r.params {
		w.nextBytes += len(p)
	}
	if len(w.next) >= syncStatements || w.nextBytes >= syncBytes {
		if err := w.wait(); err != nil {
			return err
		}
		return w.send(ctx, nil)
	}
	return nil
}

// drain runs everything built so far and reads its results: afterwards the
// connection is out of pipeline mode and idle (inside the transaction).
func (w *writer) drain(ctx context.Context) error {
	if err := w.waitCopy(); err != nil {
		return err
	}
	if err := w.wait(); err != nil {
		return err
	}
	if err := w.send(ctx, nil); err != nil {
		return err
	}
	return w.wait()
}

// send sends the batch being built, led by the progress record and COMMIT
// of the transaction waiting for them, with a synchronization point. No
// batch may be in flight. ends is the transaction the batch ends, if any.
func (w *writer) send(ctx context.Context, ends *commitRef) error {
	if err := w.waitCopy(); err != nil {
		return err
	}
	if len(w.next) == 0 && w.toCommit == nil {
		if ends != nil {
			w.toCommit = ends // its statements were all read already
		}
		return nil
	}
	p := w.conn.StartPipeline(ctx)
	w.pipe, w.ends = p, ends
	if c := w.toCommit; c != nil {
		w.toCommit = nil
		tx := txRef{xid: c.Xid, commitLSN: c.CommitLSN}
		p.SendQueryPrepared(w.prepare("SELECT pg_catalog.pg_replication_origin_xact_setup($1::pg_catalog.pg_lsn, $2::pg_catalog.timestamptz)", tx, 0), [][]byte{
			[]byte(changeset.FormatLSN(c.CommitLSN)),
			[]byte(c.CommitTime.UTC().Format("2006-01-02 15:04:05.999999-07")),
		}, nil, nil)
		w.inflight = append(w.inflight, expect{kind: expAny, q: "record progress", tx: tx})
		q := "COMMIT"
		if w.chain {
			q, w.chain = "COMMIT AND CHAIN", false
		}
		p.SendQueryPrepared(w.prepare(q, tx, 0), nil, nil, nil)
		w.inflight = append(w.inflight, expect{kind: expCommit, q: q, tx: tx, commit: *c})
	}
	for i := range w.next {
		r := &w.next[i]
		if r.prepared {
			p.SendQueryPrepared(w.prepare(r.q, r.exp.tx, r.exp.lsn), r.params, nil, nil)
		} else {
			p.SendQueryParams(r.q, nil, nil, nil, nil)
		}
		w.inflight = append(w.inflight, r.exp)
		*r = request{}
	}
	w.next, w.nextBytes = w.next[:0], 0
	if err := p.Sync(); err != nil {
		p.Close()
		w.done(err)
		return fail(w.tx, 0, fmt.Errorf("send to the target: %w", err))
	}
	return nil
}

// prepare returns the name of the prepared statement for q, queueing its
// preparation in the pipeline if it is new.
func (w *writer) prepare(q string, tx txRef, lsn uint64) string {
	if name, ok := w.stmts[q]; ok {
		return name
	}
	w.seq++
	name := "pme2go_apply_" + strconv.Itoa(w.seq)
	w.pipe.SendPrepare(name, q, nil)
	w.stmts[q] = name
	w.inflight = append(w.inflight, expect{kind: expPrepare, q: q, name: name, tx: tx, lsn: lsn})
	return name
}

// wait reads and checks the results of the batch in flight, if any, in
// order, and leaves pipeline mode; then the transaction the batch ended
// awaits its COMMIT and the commits confirmed are reported.
func (w *writer) wait() error {
	if w.pipe == nil {
		return nil
	}
	p := w.pipe
	err := w.read(p)
	if cerr := p.Close(); err == nil && cerr != nil {
		err = fail(w.tx, 0, fmt.Errorf("pipeline: %w", cerr))
	}
	if err == nil && w.ends != nil {
		w.toCommit = w.ends
	}
	return w.done(err)
}

// done forgets the batch in flight after it was read (err nil) or failed,
// reports the commits confirmed and returns err.
func (w *writer) done(err error) error {
	if err != nil {
		for _, e := range w.inflight {
			if e.kind == expPrepare && w.stmts[e.q] == e.name {
				delete(w.stmts, e.q) // perhaps never prepared
			}
		}
	}
	w.pipe, w.ends = nil, nil
	clear(w.inflight)
	w.inflight = w.inflight[:0]
	for _, c := range w.committed {
		w.onCommit(c)
	}
	w.committed = w.committed[:0]
	return err
}

// read reads the results of the synchronized pipeline up to the first
// failure; the pipeline's Close reads the rest.
func (w *writer) read(p *pgconn.Pipeline) error {
	for i := range w.inflight {
		e := &w.inflight[i]
		res, err := p.GetResults()
		if err != nil {
			return e.fail(err)
		}
		if e.kind == expPrepare {
			if _, ok := res.(*pgconn.StatementDescription); !ok {
				return e.fail(fmt.Errorf("pipeline: got %T, want a statement description", res))
			}
			continue
		}
		rr, ok := res.(*pgconn.ResultReader)
		if !ok {
			return e.fail(fmt.Errorf("pipeline: got %T, want a result", res))
		}
		if e.kind == expOneRowFn {
			var n []byte
			for rr.NextRow() {
				if v := rr.Values(); len(v) == 1 {
					n = append(n[:0], v[0]...)
				}
			}
			if _, err := rr.Close(); err != nil {
				return e.fail(err)
			}
			if want := strconv.FormatInt(e.rows(), 10); string(n) != want {
				return fail(e.tx, e.lsn, fmt.Errorf("%s affected %s rows, want exactly %s: the restored data differs from the source (was it changed outside the chain?)",
					strings.SplitN(e.q, " WHERE", 2)[0], n, want))
			}
			w.rows += e.rows()
			continue
		}
		tag, err := rr.Close()
		if err != nil {
			return e.fail(err)
		}
		switch e.kind {
		case expOneRow:
			if n := tag.RowsAffected(); n != e.rows() {
				return fail(e.tx, e.lsn, fmt.Errorf("%s affected %d rows, want exactly %d: the restored data differs from the source (was it changed outside the chain?)",
					strings.SplitN(e.q, " WHERE", 2)[0], n, e.rows()))
			}
			w.rows += e.rows()
		case expCommit:
			if tag.String() != "COMMIT" {
				return fail(e.tx, 0, fmt.Errorf("commit: the target answered %q", tag.String()))
			}
			w.committed = append(w.committed, e.commit)
			w.rowsCommitted = w.rows
		}
	}
	res, err := p.GetResults()
	if err != nil {
		return fail(w.tx, 0, fmt.Errorf("pipeline: %w", err))
	}
	if _, ok := res.(*pgconn.PipelineSync); !ok {
		return fail(w.tx, 0, fmt.Errorf("pipeline: got %T, want the synchronization point", res))
	}
	return nil
}

// fail names the statement, change and transaction of the failed request.
func (e *expect) fail(err error) error {
	switch e.kind {
	case expPrepare:
		err = fmt.Errorf("prepare %s: %w", e.q, err)
	case expCommit:
		err = fmt.Errorf("commit: %w", err)
	default:
		err = fmt.Errorf("%s: %w", e.q, err)
	}
	return fail(e.tx, e.lsn, err)
}

// apply writes one decoded change, at LSN lsn.
func (w *writer) apply(ctx context.Context, d *changeset.DecodedChange, lsn uint64) error {
	w.lsn = lsn
	defer func() { w.lsn = 0 }()
	if d.Op == changeset.OpInsert {
		return w.insert(ctx, d)
	}
	if err := w.flush(ctx); err != nil {
		return err
	}
	switch d.Op {
	case changeset.OpUpdate, changeset.OpDelete:
		return w.modify(ctx, d)
	case changeset.OpTruncate:
		// ONLY: the source's TRUNCATE named each table it emptied
		// (pgoutput lists the children of an inheritance parent too).
		names := make([]string, len(d.TruncateRelationIDs))
		for i, oid := range d.TruncateRelationIDs {
			if i >= len(d.Truncated) || d.Truncated[i] == nil {
				return w.failf("TRUNCATE refers to relation OID %d with no Relation record in its change set; the change set is incomplete", oid)
			}
			names[i] = d.Truncated[i].QualifiedName()
		}
		q := "TRUNCATE ONLY " + strings.Join(names, ", ")
		if d.RestartIdentity {
			q += " RESTART IDENTITY"
		}
		return w.queue(ctx, request{q: q}, expAny)
	}
	return w.failf("unknown change %s", d.Op)
}

// insert writes a row: the first rows of a run of inserts into one
// relation with one column list as prepared INSERTs in the pipeline, the
// rest batched for COPY.
func (w *writer) insert(ctx context.Context, d *changeset.DecodedChange) error {
	var cols []string
	for _, v := range d.New {
		cols = append(cols, changeset.QuoteIdent(v.Column))
	}
	rel, colList := d.Relation.QualifiedName(), strings.Join(cols, ", ")
	if rel != w.runRel || colList != w.runCols {
		if err := w.flush(ctx); err != nil {
			return err
		}
		w.runRel, w.runCols = rel, colList
	}
	w.runRows++
	for _, v := range d.New {
		if v.Kind != changeset.ValueNull && v.Kind != changeset.ValueText {
			return w.failf("insert into %s: column %s was sent in %q format, which replay does not support", rel, v.Column, rune(v.Kind))
		}
	}
	t, err := w.table(ctx, d.Relation)
	if err != nil {
		return err
	}
	if w.runRows < copyMinRows || t != nil {
		return w.insertRow(ctx, d, t, rel, colList)
	}
	if w.copyRows == 0 {
		w.copyRel, w.copyCols, w.copyLSN = rel, colList, w.lsn
	}
	for i, v := range d.New {
		if i > 0 {
			w.copyBuf.WriteByte('\t')
		}
		if v.Kind == changeset.ValueNull {
			w.copyBuf.WriteString(`\N`)
		} else {
			copyEscape(&w.copyBuf, v.Data)
		}
	}
	w.copyBuf.WriteByte('\n')
	w.copyRows++
	if w.copyBuf.Len() >= copyFlushBytes {
		return w.copy(ctx)
	}
	return nil
}

// insertRow queues a prepared single-row INSERT of d. The values, in
// pgoutput text form, are cast to their column types; OVERRIDING SYSTEM
// VALUE lets identity columns GENERATED ALWAYS take the source's values,
// as COPY does.
//
// t, when not nil, makes the insert run with the privileges of the
// table's owner (see safety.go).
func (w *writer) insertRow(ctx context.Context, d *changeset.DecodedChange, t *tableInfo, rel, colList string) error {
	var q strings.Builder
	q.WriteString("INSERT INTO " + rel + " (" + colList + ") OVERRIDING SYSTEM VALUE VALUES (")
	b := stmtBuilder{wrapped: t != nil}
	for i, v := range d.New {
		if i > 0 {
			q.WriteString(", ")
		}
		var data []byte
		if v.Kind == changeset.ValueText {
			data = v.Data
			if data == nil {
				data = []byte{}
			}
		}
		ti, err := w.typeOf(ctx, d.Relation, i)
		if err != nil {
			return err
		}
		q.WriteString(b.param(data) + ti.castSuffix())
	}
	q.WriteString(")")
	return w.queueDML(ctx, t, q.String(), &b)
}

// copyEscape writes b in COPY text format: backslash, newline, carriage
// return and tab escaped, runs of other bytes copied as they are.
func copyEscape(buf *bytes.Buffer, b []byte) {
	start := 0
	for i, c := range b {
		var esc string
		switch c {
		case '\\':
			esc = `\\`
		case '\n':
			esc = `\n`
		case '\r':
			esc = `\r`
		case '\t':
			esc = `\t`
		default:
			continue
		}
		buf.Write(b[start:i])
		buf.WriteString(esc)
		start = i + 1
	}
	buf.Write(b[start:])
}

// flush ends the run of inserts, sending its COPY batch.
func (w *writer) flush(ctx context.Context) error {
	w.runRel, w.runCols, w.runRows = "", "", 0
	return w.copy(ctx)
}

// copy sends the pending COPY batch, after everything before it.
func (w *writer) copy(ctx context.Context) error {
	if w.copyRows == 0 {
		return nil
	}
	if err := w.copyIn(ctx, w.copyRel, w.copyCols, &w.copyBuf, w.copyRows, w.copyLSN); err != nil {
		return err
	}
	w.copyRows = 0
	return nil
}

// copyIn starts COPY rel (cols) FROM STDIN with the n rows in buf (COPY
// text format), after everything queued before it, and hands buf a fresh
// backing array: the COPY runs in the target while the caller decodes and
// groups the next changes (one COPY in flight at most; waitCopy reads its
// result, and everything else that uses the connection waits for it
// first). lsn names the first row's change in errors.
func (w *writer) copyIn(ctx context.Context, rel, cols string, buf *bytes.Buffer, n int64, lsn uint64) error {
	if err := w.drain(ctx); err != nil {
		return err
	}
	q := "COPY " + rel + " (" + cols + ") FROM STDIN"
	c := &pendingCopy{done: make(chan struct{}), q: q, n: n, tx: w.tx, lsn: lsn, data: buf.Bytes()}
	*buf = *bytes.NewBuffer(w.spare[:0])
	w.spare = nil
	w.pending = c
	// Not canceled with ctx: pgconn would break the connection, and a
	// canceled replay commits the open batch (which waits for this COPY,
	// bounded by groupMaxRows and groupFlushBytes).
	cctx := context.WithoutCancel(ctx)
	go func() {
		defer close(c.done)
		c.tag, c.err = w.conn.CopyFrom(cctx, bytes.NewReader(c.data), q)
	}()
	return nil
}

// pendingCopy is a COPY running in the target (copyIn).
type pendingCopy struct {
	done chan struct{} // closed when CopyFrom returned
	tag  pgconn.CommandTag
	err  error
	q    string
	n    int64  // rows sent
	tx   txRef  // transaction and change of the first row, for errors
	lsn  uint64 // …
	data []byte // the rows, reused for the next COPY
}

// waitCopy waits for the COPY in flight, if any, and checks that it
// copied every row.
func (w *writer) waitCopy() error {
	c := w.pending
	if c == nil {
		return nil
	}
	<-c.done
	w.pending = nil
	w.spare = c.data[:0]
	if c.err != nil {
		return fail(c.tx, c.lsn, fmt.Errorf("%s (%d rows): %w", c.q, c.n, c.err))
	}
	if c.tag.RowsAffected() != c.n {
		return fail(c.tx, c.lsn, fmt.Errorf("%s copied %d rows, want %d", c.q, c.tag.RowsAffected(), c.n))
	}
	w.rows += c.n
	return nil
}

// modify queues an update or delete that must touch exactly one row.
// Every operator is schema-qualified (OPERATOR(pg_catalog.=), or the
// equality of the key type's default B-tree operator class), and ONLY
// keeps the statement off the table's inheritance children.
func (w *writer) modify(ctx context.Context, d *changeset.DecodedChange) error {
	rel := d.Relation.QualifiedName()
	t, err := w.table(ctx, d.Relation)
	if err != nil {
		return err
	}
	b := stmtBuilder{wrapped: t != nil}
	param := func(v changeset.Value, ti typeInfo) string {
		data := v.Data
		if v.Kind == changeset.ValueText && data == nil {
			data = []byte{}
		}
		return b.param(data) + ti.castSuffix()
	}
	var set []string
	if d.Op == changeset.OpUpdate {
		for i, v := range d.New {
			if v.Kind == changeset.ValueUnchangedToast || unchanged(d, i) {
				continue
			}
			if v.Kind == changeset.ValueBinary {
				return w.failf("update of %s: column %s was sent in binary format, which replay does not support", rel, v.Column)
			}
			ti, err := w.typeOf(ctx, d.Relation, i)
			if err != nil {
				return err
			}
			set = append(set, changeset.QuoteIdent(v.Column)+" = "+param(v, ti))
		}
		if len(set) == 0 {
			return nil // nothing changed that was sent
		}
	}
	full := d.OldKind == 'O'
	src := d.New
	if d.OldKind != 0 {
		src = d.Old
	}
	var conds []string
	for i, v := range src {
		if v.Kind == changeset.ValueUnchangedToast || (!full && !v.Key) {
			continue
		}
		col := changeset.QuoteIdent(v.Column)
		ti, err := w.typeOf(ctx, d.Relation, i)
		if err != nil {
			return err
		}
		switch {
		case full:
			// Compared as text, so that types without equality (json,
			// point) work too; NULL matches NULL (IS NOT DISTINCT FROM,
			// spelt out so that its operator is pg_catalog's).
			p := "(" + param(v, ti) + ")::pg_catalog.text"
			conds = append(conds, "("+col+"::pg_catalog.text OPERATOR(pg_catalog.=) "+p+" OR ("+col+" IS NULL AND "+p+" IS NULL))")
		case v.Kind == changeset.ValueNull:
			conds = append(conds, col+" IS NULL")
		case ti.eqType != "":
			p := param(v, typeInfo{cast: ti.eqType})
			conds = append(conds, col+"::"+ti.eqType+" "+ti.eqOp+" "+p)
		default:
			conds = append(conds, col+" "+ti.eqOp+" "+param(v, ti))
		}
	}
	if len(conds) == 0 {
		return w.failf("%s on %s carries no replica identity to find the row (REPLICA IDENTITY NOTHING?)", d.Op, rel)
	}
	where := strings.Join(conds, " AND ")
	if full {
		where = "ctid OPERATOR(pg_catalog.=) (SELECT ctid FROM ONLY " + rel + " WHERE " + where + " LIMIT 1)"
	}
	var q string
	if d.Op == changeset.OpUpdate {
		q = "UPDATE ONLY " + rel + " SET " + strings.Join(set, ", ") + " WHERE " + where
	} else {
		q = "DELETE FROM ONLY " + rel + " WHERE " + where
	}
	return w.queueDML(ctx, t, q, &b)
}

// unchanged reports whether column i of an update keeps its value: a key
// column when no old key was sent, or a column equal in the full old tuple.
// Such columns stay out of SET (identity columns GENERATED ALWAYS may not
// be assigned).
func unchanged(d *changeset.DecodedChange, i int) bool {
	switch d.OldKind {
	case 0:
		return d.New[i].Key
	case 'O':
		o, n := d.Old[i], d.New[i]
		return o.Kind == n.Kind && bytes.Equal(o.Data, n.Data)
	}
	return false
}

// afterDDL runs after a captured DDL statement (the writer drained): the
// session's role is put back (the DDL may have run as its recorded role),
// prepared statements and catalog knowledge are dropped, and triggers,
// rules and event triggers the DDL created or switched on are recorded
// and switched off.
func (w *writer) afterDDL(ctx context.Context) error {
	if err := w.conn.Exec(ctx, "RESET ROLE").Close(); err != nil {
		return w.failf("reset role after DDL: %w", err)
	}
	w.tables = nil
	clear(w.types)
	clear(w.rels)
	if err := syncUserCode(ctx, w.conn); err != nil {
		return w.failf("%w", err)
	}
	return w.forget(ctx)
}

// forget drops the prepared statements, after DDL changed the tables. The
// writer must have been drained.
func (w *writer) forget(ctx context.Context) error {
	for q, name := range w.stmts {
		if err := w.conn.Deallocate(ctx, name); err != nil {
			return w.failf("deallocate statement %s: %w", name, err)
		}
		delete(w.stmts, q)
	}
	return nil
}

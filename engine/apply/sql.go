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
// pipeline mode: a transaction's BEGIN, updates, deletes and short runs of
// inserts (prepared statements), truncates and, at its end, the previous
// transaction's progress record and COMMIT are queued and sent together,
// then synchronized and their results read and checked in order, so that a
// small transaction costs one network round trip. Long runs of inserts go
// with COPY, captured DDL with the simple protocol; the pipeline is
// synchronized before either.
//
// A transaction's COMMIT is sent only after all its statements were checked
// (each update and delete touched exactly one row): it waits, with the
// progress record, for the next pipeline (see commit and finish). Until
// then the transaction is open in the target, and an error rolls it back.
type writer struct {
	conn  *pgconn.PgConn
	stmts map[string]string // statement text -> prepared name
	seq   int               // statements prepared so far, for names

	pipe    *pgconn.Pipeline // nil when not in pipeline mode
	pending []expect         // results expected from the pipeline, in order
	queued  int              // bytes of parameters queued

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

	toCommit  *changeset.Commit  // checked transaction whose COMMIT is not sent yet
	committed []changeset.Commit // commits confirmed by the last synchronization
	onCommit  func(c changeset.Commit)

	rows int64 // rows written and checked
}

// txRef names a transaction in errors.
type txRef struct {
	xid       uint32
	commitLSN uint64
}

// expectKind says how to check the result of a queued request.
type expectKind uint8

const (
	expPrepare expectKind = iota // statement prepared
	expAny                       // any successful result
	expOneRow                    // an update, delete or insert of exactly one row
	expCommit                    // COMMIT of a transaction
)

// expect is a result the pipeline owes, with what to name in an error.
type expect struct {
	kind   expectKind
	q      string // statement text
	name   string // prepared statement name (expPrepare)
	tx     txRef
	lsn    uint64           // change LSN, 0 if none
	commit changeset.Commit // expCommit
}

// newWriter returns a writer on conn that calls onCommit, in commit order,
// for each transaction the target confirmed committed.
func newWriter(conn *pgconn.PgConn, onCommit func(c changeset.Commit)) *writer {
	return &writer{conn: conn, stmts: map[string]string{}, onCommit: onCommit}
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

// begin starts transaction b: the previous transaction's progress record
// and COMMIT, if still to send, then BEGIN.
func (w *writer) begin(ctx context.Context, b *changeset.Begin) error {
	w.tx, w.lsn = txRef{xid: b.Xid, commitLSN: b.FinalLSN}, 0
	return w.exec(ctx, "BEGIN", expAny)
}

// commit ends the transaction: its statements are synchronized and checked;
// its COMMIT then waits for the next pipeline or finish.
func (w *writer) commit(ctx context.Context, c *changeset.Commit) error {
	w.lsn = 0
	if err := w.sync(ctx); err != nil {
		return err
	}
	cc := *c
	w.toCommit = &cc
	return nil
}

// finish commits the last transaction, if its COMMIT is still to send.
func (w *writer) finish(ctx context.Context) error {
	if w.toCommit == nil {
		return nil
	}
	if err := w.open(ctx); err != nil {
		return err
	}
	return w.sync(ctx)
}

// abort ends pipeline mode after an error: what is queued is synchronized
// and read (a previous transaction's COMMIT queued first still counts).
// The connection is then idle, possibly in a failed transaction; the
// caller rolls back. A checked transaction whose COMMIT was not queued yet
// is not committed.
func (w *writer) abort() {
	if w.pipe != nil {
		w.sync(context.Background())
	}
	w.toCommit = nil
	w.copyBuf.Reset()
	w.copyRows, w.runRows, w.runRel, w.runCols = 0, 0, "", ""
}

// open enters pipeline mode if not in it, queueing first the progress
// record and COMMIT of the transaction waiting for them.
func (w *writer) open(ctx context.Context) error {
	if w.pipe != nil {
		return nil
	}
	w.pipe = w.conn.StartPipeline(ctx)
	if c := w.toCommit; c != nil {
		w.toCommit = nil
		tx := txRef{xid: c.Xid, commitLSN: c.CommitLSN}
		name := w.prepared("SELECT pg_replication_origin_xact_setup($1::pg_lsn, $2::timestamptz)", tx, 0)
		w.pipe.SendQueryPrepared(name, [][]byte{
			[]byte(changeset.FormatLSN(c.CommitLSN)),
			[]byte(c.CommitTime.UTC().Format("2006-01-02 15:04:05.999999-07")),
		}, nil, nil)
		w.pending = append(w.pending, expect{kind: expAny, q: "record progress", tx: tx})
		w.pipe.SendQueryParams("COMMIT", nil, nil, nil, nil)
		w.pending = append(w.pending, expect{kind: expCommit, q: "COMMIT", tx: tx, commit: *c})
	}
	return nil
}

// prepared returns the name of the prepared statement for q, queueing its
// preparation if it is new. The pipeline must be open.
func (w *writer) prepared(q string, tx txRef, lsn uint64) string {
	if name, ok := w.stmts[q]; ok {
		return name
	}
	w.seq++
	name := "pme2go_apply_" + strconv.Itoa(w.seq)
	w.pipe.SendPrepare(name, q, nil)
	w.stmts[q] = name
	w.pending = append(w.pending, expect{kind: expPrepare, q: q, name: name, tx: tx, lsn: lsn})
	return name
}

// exec queues q, without parameters, through the unnamed statement.
func (w *writer) exec(ctx context.Context, q string, k expectKind) error {
	if err := w.open(ctx); err != nil {
		return err
	}
	w.pipe.SendQueryParams(q, nil, nil, nil, nil)
	w.pending = append(w.pending, expect{kind: k, q: q, tx: w.tx, lsn: w.lsn})
	return w.limit(ctx)
}

// execPrepared queues the prepared statement q with params.
func (w *writer) execPrepared(ctx context.Context, q string, params [][]byte, k expectKind) error {
	if err := w.open(ctx); err != nil {
		return err
	}
	name := w.prepared(q, w.tx, w.lsn)
	w.pipe.SendQueryPrepared(name, params, nil, nil)
	w.pending = append(w.pending, expect{kind: k, q: q, tx: w.tx, lsn: w.lsn})
	for _, p := range params {
		w.queued += len(p)
	}
	return w.limit(ctx)
}

// limit synchronizes the pipeline when much is queued, bounding memory in
// huge transactions.
func (w *writer) limit(ctx context.Context) error {
	if len(w.pending) >= syncStatements || w.queued >= syncBytes {
		return w.sync(ctx)
	}
	return nil
}

// sync synchronizes the pipeline, reads and checks every queued result in
// order and leaves pipeline mode. Commits confirmed are then reported.
func (w *writer) sync(ctx context.Context) error {
	if w.pipe == nil {
		return nil
	}
	p := w.pipe
	err := p.Sync()
	if err == nil {
		err = w.read(p)
	}
	if cerr := p.Close(); err == nil && cerr != nil {
		err = fail(w.tx, 0, fmt.Errorf("pipeline: %w", cerr))
	}
	w.pipe, w.queued = nil, 0
	if err != nil {
		for _, e := range w.pending {
			if e.kind == expPrepare && w.stmts[e.q] == e.name {
				delete(w.stmts, e.q) // perhaps never prepared
			}
		}
	}
	w.pending = w.pending[:0]
	for _, c := range w.committed {
		w.onCommit(c)
	}
	w.committed = w.committed[:0]
	return err
}

// read reads the results of the synchronized pipeline up to the first
// failure; the pipeline's Close reads the rest.
func (w *writer) read(p *pgconn.Pipeline) error {
	for i := range w.pending {
		e := &w.pending[i]
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
		tag, err := rr.Close()
		if err != nil {
			return e.fail(err)
		}
		switch e.kind {
		case expOneRow:
			if n := tag.RowsAffected(); n != 1 {
				return fail(e.tx, e.lsn, fmt.Errorf("%s affected %d rows, want exactly 1: the restored data differs from the source (was it changed outside the chain?)",
					strings.SplitN(e.q, " WHERE", 2)[0], n))
			}
			w.rows++
		case expCommit:
			if tag.String() != "COMMIT" {
				return fail(e.tx, 0, fmt.Errorf("commit: the target answered %q", tag.String()))
			}
			w.committed = append(w.committed, e.commit)
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
		names := make([]string, len(d.TruncateRelationIDs))
		for i, oid := range d.TruncateRelationIDs {
			if i >= len(d.Truncated) || d.Truncated[i] == nil {
				return w.failf("TRUNCATE refers to relation OID %d with no Relation record in its change set; the change set is incomplete", oid)
			}
			names[i] = d.Truncated[i].QualifiedName()
		}
		q := "TRUNCATE " + strings.Join(names, ", ")
		if d.RestartIdentity {
			q += " RESTART IDENTITY"
		}
		return w.exec(ctx, q, expAny)
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
	if w.runRows < copyMinRows {
		return w.insertRow(ctx, d, rel, colList)
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
func (w *writer) insertRow(ctx context.Context, d *changeset.DecodedChange, rel, colList string) error {
	var q strings.Builder
	q.WriteString("INSERT INTO " + rel + " (" + colList + ") OVERRIDING SYSTEM VALUE VALUES (")
	params := make([][]byte, len(d.New))
	for i, v := range d.New {
		if i > 0 {
			q.WriteString(", ")
		}
		q.WriteString("$" + strconv.Itoa(i+1))
		if v.TypeName != "" {
			q.WriteString("::" + v.TypeName)
		}
		if v.Kind == changeset.ValueText {
			params[i] = v.Data
			if params[i] == nil {
				params[i] = []byte{}
			}
		}
	}
	q.WriteString(")")
	return w.execPrepared(ctx, q.String(), params, expOneRow)
}

// copyEscape writes b in COPY text format.
func copyEscape(buf *bytes.Buffer, b []byte) {
	for _, c := range b {
		switch c {
		case '\\':
			buf.WriteString(`\\`)
		case '\n':
			buf.WriteString(`\n`)
		case '\r':
			buf.WriteString(`\r`)
		case '\t':
			buf.WriteString(`\t`)
		default:
			buf.WriteByte(c)
		}
	}
}

// flush ends the run of inserts, sending its COPY batch.
func (w *writer) flush(ctx context.Context) error {
	w.runRel, w.runCols, w.runRows = "", "", 0
	return w.copy(ctx)
}

// copy sends the pending COPY batch, synchronizing the pipeline first.
func (w *writer) copy(ctx context.Context) error {
	if w.copyRows == 0 {
		return nil
	}
	if err := w.sync(ctx); err != nil {
		return err
	}
	q := "COPY " + w.copyRel + " (" + w.copyCols + ") FROM STDIN"
	tag, err := w.conn.CopyFrom(ctx, bytes.NewReader(w.copyBuf.Bytes()), q)
	if err != nil {
		return fail(w.tx, w.copyLSN, fmt.Errorf("%s (%d rows): %w", q, w.copyRows, err))
	}
	if tag.RowsAffected() != w.copyRows {
		return fail(w.tx, w.copyLSN, fmt.Errorf("%s copied %d rows, want %d", q, tag.RowsAffected(), w.copyRows))
	}
	w.rows += w.copyRows
	w.copyBuf.Reset()
	w.copyRows = 0
	return nil
}

// modify queues an update or delete that must touch exactly one row.
func (w *writer) modify(ctx context.Context, d *changeset.DecodedChange) error {
	rel := d.Relation.QualifiedName()
	var params [][]byte
	param := func(v changeset.Value) string {
		data := v.Data
		if v.Kind == changeset.ValueText && data == nil {
			data = []byte{}
		}
		params = append(params, data)
		p := "$" + strconv.Itoa(len(params))
		if v.TypeName != "" {
			p += "::" + v.TypeName
		}
		return p
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
			set = append(set, changeset.QuoteIdent(v.Column)+" = "+param(v))
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
	for _, v := range src {
		if v.Kind == changeset.ValueUnchangedToast || (!full && !v.Key) {
			continue
		}
		col := changeset.QuoteIdent(v.Column)
		switch {
		case full && v.TypeName != "":
			conds = append(conds, col+"::text IS NOT DISTINCT FROM ("+param(v)+")::text")
		case full:
			conds = append(conds, col+"::text IS NOT DISTINCT FROM "+param(v))
		case v.Kind == changeset.ValueNull:
			conds = append(conds, col+" IS NULL")
		default:
			conds = append(conds, col+" = "+param(v))
		}
	}
	if len(conds) == 0 {
		return w.failf("%s on %s carries no replica identity to find the row (REPLICA IDENTITY NOTHING?)", d.Op, rel)
	}
	where := strings.Join(conds, " AND ")
	if full {
		where = "ctid = (SELECT ctid FROM " + rel + " WHERE " + where + " LIMIT 1)"
	}
	var q string
	if d.Op == changeset.OpUpdate {
		q = "UPDATE " + rel + " SET " + strings.Join(set, ", ") + " WHERE " + where
	} else {
		q = "DELETE FROM " + rel + " WHERE " + where
	}
	return w.execPrepared(ctx, q, params, expOneRow)
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

// forget drops the prepared statements, after DDL changed the tables. The
// pipeline must have been synchronized.
func (w *writer) forget(ctx context.Context) error {
	for q, name := range w.stmts {
		if err := w.conn.Deallocate(ctx, name); err != nil {
			return w.failf("deallocate statement %s: %w", name, err)
		}
		delete(w.stmts, q)
	}
	return nil
}

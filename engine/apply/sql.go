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

// copyFlushBytes bounds the COPY buffer of one batch of inserts.
const copyFlushBytes = 4 << 20

// writer turns decoded changes into statements on one connection: inserts
// batched with COPY, updates and deletes as prepared statements.
type writer struct {
	conn  *pgconn.PgConn
	stmts map[string]string // statement text -> prepared name
	seq   int               // statements prepared so far, for names

	copyRel  string // qualified name of the batched relation
	copyCols string
	copyBuf  bytes.Buffer
	copyRows int64

	rows int64
}

func newWriter(conn *pgconn.PgConn) *writer {
	return &writer{conn: conn, stmts: map[string]string{}}
}

// apply writes one decoded change.
func (w *writer) apply(ctx context.Context, d *changeset.DecodedChange) error {
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
				return fmt.Errorf("TRUNCATE refers to relation OID %d with no Relation record in its change set; the change set is incomplete", oid)
			}
			names[i] = d.Truncated[i].QualifiedName()
		}
		q := "TRUNCATE " + strings.Join(names, ", ")
		if d.RestartIdentity {
			q += " RESTART IDENTITY"
		}
		if err := w.conn.Exec(ctx, q).Close(); err != nil {
			return fmt.Errorf("%s: %w", q, err)
		}
		return nil
	}
	return fmt.Errorf("unknown change %s", d.Op)
}

// insert appends a row to the COPY batch, starting a new batch when the
// relation or column list differs.
func (w *writer) insert(ctx context.Context, d *changeset.DecodedChange) error {
	var cols []string
	for _, v := range d.New {
		cols = append(cols, changeset.QuoteIdent(v.Column))
	}
	rel, colList := d.Relation.QualifiedName(), strings.Join(cols, ", ")
	if w.copyRows > 0 && (rel != w.copyRel || colList != w.copyCols) {
		if err := w.flush(ctx); err != nil {
			return err
		}
	}
	w.copyRel, w.copyCols = rel, colList
	for i, v := range d.New {
		if i > 0 {
			w.copyBuf.WriteByte('\t')
		}
		switch v.Kind {
		case changeset.ValueNull:
			w.copyBuf.WriteString(`\N`)
		case changeset.ValueText:
			copyEscape(&w.copyBuf, v.Data)
		default:
			return fmt.Errorf("insert into %s: column %s was sent in %q format, which replay does not support", rel, v.Column, rune(v.Kind))
		}
	}
	w.copyBuf.WriteByte('\n')
	w.copyRows++
	if w.copyBuf.Len() >= copyFlushBytes {
		return w.flush(ctx)
	}
	return nil
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

// flush sends the pending COPY batch.
func (w *writer) flush(ctx context.Context) error {
	if w.copyRows == 0 {
		return nil
	}
	q := "COPY " + w.copyRel + " (" + w.copyCols + ") FROM STDIN"
	tag, err := w.conn.CopyFrom(ctx, bytes.NewReader(w.copyBuf.Bytes()), q)
	if err != nil {
		return fmt.Errorf("%s (%d rows): %w", q, w.copyRows, err)
	}
	if tag.RowsAffected() != w.copyRows {
		return fmt.Errorf("%s copied %d rows, want %d", q, tag.RowsAffected(), w.copyRows)
	}
	w.rows += w.copyRows
	w.copyBuf.Reset()
	w.copyRows = 0
	return nil
}

// modify runs an update or delete that must touch exactly one row.
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
				return fmt.Errorf("update of %s: column %s was sent in binary format, which replay does not support", rel, v.Column)
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
		return fmt.Errorf("%s on %s carries no replica identity to find the row (REPLICA IDENTITY NOTHING?)", d.Op, rel)
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
	name, err := w.prepare(ctx, q)
	if err != nil {
		return err
	}
	res := w.conn.ExecPrepared(ctx, name, params, nil, nil).Read()
	if res.Err != nil {
		return fmt.Errorf("%s: %w", q, res.Err)
	}
	if n := res.CommandTag.RowsAffected(); n != 1 {
		return fmt.Errorf("%s affected %d rows, want exactly 1: the restored data differs from the source (was it changed outside the chain?)", strings.SplitN(q, " WHERE", 2)[0], n)
	}
	w.rows++
	return nil
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

// prepare returns the name of the prepared statement for q.
func (w *writer) prepare(ctx context.Context, q string) (string, error) {
	if name, ok := w.stmts[q]; ok {
		return name, nil
	}
	w.seq++
	name := "pme2go_apply_" + strconv.Itoa(w.seq)
	if _, err := w.conn.Prepare(ctx, name, q, nil); err != nil {
		return "", fmt.Errorf("prepare %s: %w", q, err)
	}
	w.stmts[q] = name
	return name, nil
}

// forget drops the prepared statements, after DDL changed the tables.
func (w *writer) forget(ctx context.Context) error {
	for q, name := range w.stmts {
		if err := w.conn.Deallocate(ctx, name); err != nil {
			return fmt.Errorf("deallocate statement %s: %w", name, err)
		}
		delete(w.stmts, q)
	}
	return nil
}

package apply

import (
	"bytes"
	"context"
	"slices"
	"strconv"
	"strings"

	"github.com/pme2go/pme2go-backup/engine/changeset"
)

// Replay in batches ("fast mode"): consecutive source transactions are
// applied in one target transaction (see applier and the bounds below), and
// their row changes are not written one statement per row: each table has
// a queue of groups, a group being a run of changes of one kind into that
// table, written as one statement when the queues are flushed:
//
//   - inserts: one COPY (or, for short runs and tables written through
//     their owner's function, one INSERT … SELECT … FROM unnest(text[]…));
//   - updates that keep the row's key (no old key sent) and send the same
//     columns (unchanged TOAST values are not sent and never written):
//     UPDATE ONLY … FROM unnest(text[]…) joined on the key once, the same
//     key updated twice keeping only its last values (the group sets whole
//     sent columns, so the last update's values are the row's state);
//   - deletes by key: DELETE FROM ONLY … USING unnest(text[]…).
//
// Within a table the groups keep the order of the changes (a change of
// another kind, another column set or another Relation record starts a new
// group, and a delete of a key already in the group too), so a delete
// followed by an insert of the same key, or an insert followed by an update
// of it, run in that order. One exception keeps updates with alternating
// column sets (a TOASTed value sent in some, not in others) from becoming
// one statement each: an update may join an earlier update group with its
// columns when only update groups not holding its key lie between
// (tableQueue.earlierUpdate). Across tables the order may change: replay
// runs no triggers and no foreign-key checks (session_replication_role =
// replica), so the final state of each table depends only on its own
// changes. Every grouped statement must change exactly as many rows as it
// has keys (or rows, for inserts), as single-row statements must change one.
//
// Not grouped (written one by one, in order, after the table's queue):
// updates that change the key or carry an old row (REPLICA IDENTITY FULL),
// deletes with a full old row, changes with a NULL or binary key or a
// column whose type replay could not name, and updates of tables with a
// unique index or exclusion constraint besides the replica identity (two
// rows' values swapped in one statement would violate it, although each
// source statement did not). TRUNCATE and captured DDL flush every queue
// first.
//
// A grouped statement that fails (or any failure inside a batch) does not
// end the replay: the batch is rolled back and its source transactions are
// applied again one target transaction each, row by row ("exact mode", the
// way replay worked before batching), so that the error, if it is real,
// names its transaction and change exactly and everything before it is
// committed; then batching resumes (see Replay).

const (
	// batchMaxTx, batchMaxRows and batchMaxBytes bound a target
	// transaction: it ends after the source transaction during which one
	// of them was reached (a source transaction is never split).
	batchMaxTx    = 10000
	batchMaxRows  = 200000
	batchMaxBytes = 64 << 20
	// groupFlushBytes bounds the change data held in the queues before
	// they are written; groupMaxRows bounds one grouped statement.
	groupFlushBytes = 8 << 20
	groupMaxRows    = 20000
	// copyMinGroup is the size from which on a group of inserts goes with
	// COPY rather than INSERT … SELECT … FROM unnest(…).
	copyMinGroup = 50
)

type groupKind uint8

const (
	gInsert groupKind = iota
	gUpdate
	gDelete
)

// group is a run of changes of one kind into one table, with one column
// list, written as one statement.
type group struct {
	kind groupKind
	rel  *changeset.Relation
	cols []int // column indexes: all (insert); keys then set columns (update); keys (delete)
	nkey int   // key columns at the start of cols (update, delete)
	rows [][][]byte
	keys map[string]int // key -> index in rows (update, delete)
	lsn  uint64         // LSN of the first change, for errors
}

// tableQueue is the queue of groups of one table.
type tableQueue struct {
	groups []*group
}

// grouper holds the queues of the open batch.
type grouper struct {
	w      *writer
	tables map[string]*tableQueue
	order  []string // tables in order of first change
	bytes  int      // change data held
	buf    bytes.Buffer
}

func newGrouper(w *writer) *grouper {
	return &grouper{w: w, tables: map[string]*tableQueue{}}
}

// reset drops everything queued (after a failure).
func (g *grouper) reset() {
	clear(g.tables)
	g.order, g.bytes = g.order[:0], 0
	g.buf.Reset()
}

// add queues one change at LSN lsn, or writes it directly (in order after
// its table's queue) when it cannot be grouped.
func (g *grouper) add(ctx context.Context, d *changeset.DecodedChange, lsn uint64) error {
	w := g.w
	if d.Op == changeset.OpTruncate {
		if err := g.flushAll(ctx); err != nil {
			return err
		}
		return w.apply(ctx, d, lsn)
	}
	rel := d.Relation
	name := rel.QualifiedName()
	kind, cols, nkey, ok, err := g.shape(ctx, d)
	if err != nil {
		return err
	}
	if !ok {
		if err := g.flushTable(ctx, name); err != nil {
			return err
		}
		return w.apply(ctx, d, lsn)
	}
	if kind == gUpdate && len(cols) == nkey {
		return nil // nothing changed that was sent, as modify
	}
	src := d.New
	if kind == gDelete {
		src = d.Old
	}
	vals := make([][]byte, len(cols))
	size := 0
	for i, c := range cols {
		v := src[c]
		if v.Kind == changeset.ValueText {
			vals[i] = v.Data
			if vals[i] == nil {
				vals[i] = []byte{}
			}
		}
		size += len(v.Data) + 24
	}
	q := g.tables[name]
	if q == nil {
		q = &tableQueue{}
		g.tables[name] = q
		g.order = append(g.order, name)
	}
	var last *group
	if n := len(q.groups); n > 0 {
		last = q.groups[n-1]
	}
	key := ""
	if kind != gInsert {
		key = keyString(vals[:nkey])
	}
	if kind == gUpdate && last != nil && (last.rel != rel || !slices.Equal(last.cols, cols)) {
		if gr := q.earlierUpdate(rel, cols, key); gr != nil {
			last = gr
		}
	}
	if last == nil || last.kind != kind || last.rel != rel || !slices.Equal(last.cols, cols) ||
		(kind == gDelete && hasKey(last, key)) || len(last.rows) >= groupMaxRows {
		last = &group{kind: kind, rel: rel, cols: cols, nkey: nkey, lsn: lsn}
		if kind != gInsert {
			last.keys = map[string]int{}
		}
		q.groups = append(q.groups, last)
	}
	if i, dup := last.keys[key]; dup && kind == gUpdate {
		last.rows[i] = vals // the same key updated again: its last values win
	} else {
		if kind != gInsert {
			last.keys[key] = len(last.rows)
		}
		last.rows = append(last.rows, vals)
	}
	g.bytes += size
	if len(last.rows) >= groupMaxRows {
		return g.flushTable(ctx, name)
	}
	if g.bytes >= groupFlushBytes {
		return g.flushAll(ctx)
	}
	return nil
}

// earlierUpdate returns an update group of the queue, before its last
// group, that an update of rel's key with columns cols may join: the
// nearest one with the same Relation record and columns, with room, when
// every group after it is an update group not holding key. The update then
// runs before those groups, which is exact: they update other rows of the
// same table (each row's state depends only on its own updates; replay
// runs no triggers, and tables with another unique index are not grouped),
// and no insert or delete of any key lies between. Updates with
// alternating column sets (a TOASTed value sent or not) thus share a few
// statements instead of starting a new one at each switch. Only the
// last searchGroups groups are searched.
func (q *tableQueue) earlierUpdate(rel *changeset.Relation, cols []int, key string) *group {
	const searchGroups = 8
	n := len(q.groups)
	for i := n - 2; i >= 0 && i >= n-1-searchGroups; i-- {
		after := q.groups[i+1]
		if after.kind != gUpdate || hasKey(after, key) {
			return nil
		}
		gr := q.groups[i]
		if gr.kind != gUpdate {
			return nil
		}
		if gr.rel == rel && slices.Equal(gr.cols, cols) {
			if len(gr.rows) >= groupMaxRows {
				return nil
			}
			return gr
		}
	}
	return nil
}

func hasKey(gr *group, key string) bool {
	_, ok := gr.keys[key]
	return ok
}

// keyString renders key values as a map key.
func keyString(vals [][]byte) string {
	var b strings.Builder
	for _, v := range vals {
		b.WriteString(strconv.Itoa(len(v)))
		b.WriteByte(':')
		b.Write(v)
	}
	return b.String()
}

// shape decides whether and how change d is grouped: its kind, the
// column indexes its group writes (keys first) and the number of keys.
func (g *grouper) shape(ctx context.Context, d *changeset.DecodedChange) (groupKind, []int, int, bool, error) {
	w := g.w
	rel := d.Relation
	typed := func(i int) (bool, error) {
		ti, err := w.typeOf(ctx, rel, i)
		return ti.cast != "", err
	}
	var cols []int
	switch d.Op {
	case changeset.OpInsert:
		for i, v := range d.New {
			if v.Kind != changeset.ValueNull && v.Kind != changeset.ValueText {
				return 0, nil, 0, false, nil // modify names the problem
			}
			if ok, err := typed(i); !ok || err != nil {
				return 0, nil, 0, false, err
			}
			cols = append(cols, i)
		}
		return gInsert, cols, 0, true, nil
	case changeset.OpUpdate:
		if d.OldKind != 0 || len(d.New) != len(rel.Columns) {
			return 0, nil, 0, false, nil
		}
		ri := w.rel(rel)
		if !ri.groupKnown {
			if _, err := w.table(ctx, rel); err != nil {
				return 0, nil, 0, false, err
			}
			ri.noGroup, ri.groupKnown = w.uniques[rel.QualifiedName()], true
		}
		if ri.noGroup {
			return 0, nil, 0, false, nil
		}
		var set []int
		for i, v := range d.New {
			switch {
			case v.Key:
				if v.Kind != changeset.ValueText {
					return 0, nil, 0, false, nil
				}
				cols = append(cols, i)
			case v.Kind == changeset.ValueUnchangedToast:
				continue // left as it is
			case v.Kind != changeset.ValueText && v.Kind != changeset.ValueNull:
				return 0, nil, 0, false, nil
			default:
				set = append(set, i)
			}
			if ok, err := typed(i); !ok || err != nil {
				return 0, nil, 0, false, err
			}
		}
		if len(cols) == 0 {
			return 0, nil, 0, false, nil
		}
		return gUpdate, append(cols, set...), len(cols), true, nil
	case changeset.OpDelete:
		if d.OldKind != 'K' {
			return 0, nil, 0, false, nil
		}
		for i, v := range d.Old {
			if !v.Key {
				continue
			}
			if v.Kind != changeset.ValueText {
				return 0, nil, 0, false, nil
			}
			if ok, err := typed(i); !ok || err != nil {
				return 0, nil, 0, false, err
			}
			cols = append(cols, i)
		}
		if len(cols) == 0 {
			return 0, nil, 0, false, nil
		}
		return gDelete, cols, len(cols), true, nil
	}
	return 0, nil, 0, false, nil
}

// flushAll writes every queue, table after table.
func (g *grouper) flushAll(ctx context.Context) error {
	for _, name := range g.order {
		if err := g.flushTable(ctx, name); err != nil {
			return err
		}
	}
	clear(g.tables)
	g.order, g.bytes = g.order[:0], 0
	return nil
}

// flushTable writes the queue of one table, group after group.
func (g *grouper) flushTable(ctx context.Context, name string) error {
	q := g.tables[name]
	if q == nil {
		return nil
	}
	for i, gr := range q.groups {
		if err := g.write(ctx, gr); err != nil {
			return err
		}
		q.groups[i] = nil
	}
	q.groups = q.groups[:0]
	return nil
}

// write writes one group.
func (g *grouper) write(ctx context.Context, gr *group) error {
	w := g.w
	rel := gr.rel
	t, err := w.table(ctx, rel)
	if err != nil {
		return err
	}
	for _, r := range gr.rows {
		for _, v := range r {
			g.bytes -= len(v) + 24
		}
	}
	n := int64(len(gr.rows))
	name := func(i int) string { return changeset.QuoteIdent(rel.Columns[gr.cols[i]].Name) }
	if gr.kind == gInsert && t == nil && n >= copyMinGroup {
		names := make([]string, len(gr.cols))
		for i := range gr.cols {
			names[i] = name(i)
		}
		g.buf.Reset()
		for _, r := range gr.rows {
			for i, v := range r {
				if i > 0 {
					g.buf.WriteByte('\t')
				}
				if v == nil {
					g.buf.WriteString(`\N`)
				} else {
					copyEscape(&g.buf, v)
				}
			}
			g.buf.WriteByte('\n')
		}
		gr.rows = nil
		w.lsn = gr.lsn
		defer func() { w.lsn = 0 }()
		return w.copyIn(ctx, rel.QualifiedName(), strings.Join(names, ", "), &g.buf, n, gr.lsn)
	}
	b := stmtBuilder{wrapped: t != nil}
	// One text[] parameter per column: pme2go_v(p1, p2, …).
	var arrays, vcols []string
	col := make([][]byte, len(gr.rows))
	for i := range gr.cols {
		for k, r := range gr.rows {
			col[k] = r[i]
		}
		arrays = append(arrays, "pg_catalog.unnest("+b.param(textArray(col))+"::pg_catalog.text[])")
		vcols = append(vcols, "p"+strconv.Itoa(i+1))
	}
	gr.rows = nil
	// ROWS FROM zips the arrays (the multi-argument unnest shorthand
	// exists only for the unqualified name).
	from := "ROWS FROM (" + strings.Join(arrays, ", ") + ") AS pme2go_v(" + strings.Join(vcols, ", ") + ")"
	cast := func(i int) (string, error) {
		ti, err := w.typeOf(ctx, rel, gr.cols[i])
		return "pme2go_v." + vcols[i] + ti.castSuffix(), err
	}
	var conds []string
	for i := 0; i < gr.nkey; i++ {
		ti, err := w.typeOf(ctx, rel, gr.cols[i])
		if err != nil {
			return err
		}
		if ti.eqType != "" {
			conds = append(conds, "pme2go_t."+name(i)+"::"+ti.eqType+" "+ti.eqOp+" pme2go_v."+vcols[i]+"::"+ti.eqType)
		} else {
			conds = append(conds, "pme2go_t."+name(i)+" "+ti.eqOp+" pme2go_v."+vcols[i]+ti.castSuffix())
		}
	}
	var q strings.Builder
	switch gr.kind {
	case gInsert:
		var names, vals []string
		for i := range gr.cols {
			c, err := cast(i)
			if err != nil {
				return err
			}
			names, vals = append(names, name(i)), append(vals, c)
		}
		q.WriteString("INSERT INTO " + rel.QualifiedName() + " (" + strings.Join(names, ", ") + ") OVERRIDING SYSTEM VALUE SELECT " +
			strings.Join(vals, ", ") + " FROM " + from)
	case gUpdate:
		var set []string
		for i := gr.nkey; i < len(gr.cols); i++ {
			c, err := cast(i)
			if err != nil {
				return err
			}
			set = append(set, name(i)+" = "+c)
		}
		q.WriteString("UPDATE ONLY " + rel.QualifiedName() + " AS pme2go_t SET " + strings.Join(set, ", ") + " FROM " + from +
			" WHERE " + strings.Join(conds, " AND "))
	case gDelete:
		q.WriteString("DELETE FROM ONLY " + rel.QualifiedName() + " AS pme2go_t USING " + from + " WHERE " + strings.Join(conds, " AND "))
	}
	w.lsn = gr.lsn
	defer func() { w.lsn = 0 }()
	return w.queueRows(ctx, t, q.String(), b.params, n)
}

package apply

import (
	"context"
	"fmt"
	"testing"

	"github.com/pme2go/pme2go-backup/engine/changeset"
)

// TestEarlierUpdateGroup checks which group an update joins: an earlier
// update group of its columns only past update groups not holding its key,
// never past an insert or delete group.
func TestEarlierUpdateGroup(t *testing.T) {
	rel := &changeset.Relation{OID: 1, Schema: "public", Name: "t", QualifiedTypes: true, Columns: []changeset.Column{
		{Name: "id", TypeName: "integer", Key: true}, {Name: "n", TypeName: "integer"}, {Name: "doc", TypeName: "text"}}}
	val := func(i int, kind changeset.ValueKind, data string) changeset.Value {
		c := rel.Columns[i]
		v := changeset.Value{Column: c.Name, TypeName: c.TypeName, Key: c.Key, Kind: kind}
		if kind == changeset.ValueText {
			v.Data = []byte(data)
		}
		return v
	}
	// A: doc not sent (unchanged TOAST); B: doc sent.
	upd := func(set string, id, n int) *changeset.DecodedChange {
		doc := val(2, changeset.ValueUnchangedToast, "")
		if set == "B" {
			doc = val(2, changeset.ValueText, "doc")
		}
		return &changeset.DecodedChange{Op: changeset.OpUpdate, Relation: rel,
			New: []changeset.Value{val(0, changeset.ValueText, fmt.Sprint(id)), val(1, changeset.ValueText, fmt.Sprint(n)), doc}}
	}
	ins := func(id int) *changeset.DecodedChange {
		return &changeset.DecodedChange{Op: changeset.OpInsert, Relation: rel,
			New: []changeset.Value{val(0, changeset.ValueText, fmt.Sprint(id)), val(1, changeset.ValueText, "0"), val(2, changeset.ValueNull, "")}}
	}
	del := func(id int) *changeset.DecodedChange {
		return &changeset.DecodedChange{Op: changeset.OpDelete, Relation: rel, OldKind: 'K',
			Old: []changeset.Value{val(0, changeset.ValueText, fmt.Sprint(id)), val(1, changeset.ValueNull, ""), val(2, changeset.ValueNull, "")}}
	}
	// shape renders the queue: per group its kind, columns and rows (id=n).
	shape := func(q *tableQueue) string {
		out := ""
		for _, gr := range q.groups {
			out += fmt.Sprintf("%d%v[", gr.kind, gr.cols)
			for i, r := range gr.rows {
				if i > 0 {
					out += " "
				}
				out += string(r[0])
				if gr.kind == gUpdate {
					out += "=" + string(r[1])
				}
			}
			out += "] "
		}
		return out
	}
	for _, tc := range []struct {
		name    string
		changes []*changeset.DecodedChange
		want    string
	}{
		{"joins past another key", []*changeset.DecodedChange{upd("A", 1, 1), upd("B", 2, 2), upd("A", 3, 3)},
			"1[0 1][1=1 3=3] 1[0 1 2][2=2] "},
		{"same key again, last wins", []*changeset.DecodedChange{upd("A", 1, 1), upd("B", 2, 2), upd("A", 1, 5)},
			"1[0 1][1=5] 1[0 1 2][2=2] "},
		{"not past its own key", []*changeset.DecodedChange{upd("A", 1, 1), upd("B", 1, 2), upd("A", 1, 3)},
			"1[0 1][1=1] 1[0 1 2][1=2] 1[0 1][1=3] "},
		{"not past a delete", []*changeset.DecodedChange{upd("A", 1, 1), del(5), upd("A", 2, 2)},
			"1[0 1][1=1] 2[0][5] 1[0 1][2=2] "},
		{"not past an insert", []*changeset.DecodedChange{upd("A", 1, 1), ins(9), upd("A", 2, 2)},
			"1[0 1][1=1] 0[0 1 2][9] 1[0 1][2=2] "},
		{"past several groups", []*changeset.DecodedChange{upd("A", 1, 1), upd("B", 2, 2), upd("A", 3, 3), upd("B", 4, 4), upd("B", 2, 6), upd("A", 2, 7)},
			"1[0 1][1=1 3=3] 1[0 1 2][2=6 4=4] 1[0 1][2=7] "},
	} {
		w := newWriter(nil, func(commitRef) {})
		ri := w.rel(rel)
		ri.groupKnown = true
		g := newGrouper(w)
		for i, d := range tc.changes {
			if err := g.add(context.Background(), d, uint64(i+1)); err != nil {
				t.Fatalf("%s: %v", tc.name, err)
			}
		}
		if got := shape(g.tables[rel.QualifiedName()]); got != tc.want {
			t.Errorf("%s:\n got %s\nwant %s", tc.name, got, tc.want)
		}
	}
}

package changeset

import (
	"bytes"
	"errors"
	"flag"
	"os"
	"path/filepath"
	"testing"
)

var update = flag.Bool("update", false, "rewrite testdata golden files")

func TestDecodeChange(t *testing.T) {
	rel := relT()
	d, err := DecodeChange(rel, updateMsg(16384, 'K', []col{txt("1"), null, null, null}, txt("2"), toast, txt("1.5"), null), false)
	must(t, err)
	if d.Op != OpUpdate || d.OldKind != 'K' || len(d.Old) != 4 || d.New[1].Kind != ValueUnchangedToast ||
		string(d.New[2].Data) != "1.5" || d.New[2].TypeName != "numeric" || d.New[3].Kind != ValueNull || !d.Old[0].Key {
		t.Fatalf("decoded %+v", d)
	}
	// The same insert sent inside a protocol v2 stream block carries an xid.
	streamed := append(u32([]byte{'I'}, 999), insertMsg(16384, txt("1"), txt("x"), null, null)[1:]...)
	d, err = DecodeChange(rel, streamed, true)
	must(t, err)
	if d.Op != OpInsert || string(d.New[1].Data) != "x" {
		t.Fatalf("streamed insert decoded %+v", d)
	}
	d, err = DecodeChange(nil, truncateMsg(3, 1, 2), false)
	must(t, err)
	if d.Op != OpTruncate || !d.Cascade || !d.RestartIdentity || len(d.TruncateRelationIDs) != 2 {
		t.Fatalf("truncate decoded %+v", d)
	}
	bad := map[string][]byte{
		"wrong relation": insertMsg(1, txt("1"), txt("x"), null, null),
		"column count":   insertMsg(16384, txt("1")),
		"cut short":      insertMsg(16384, txt("1"), txt("x"), null, null)[:12],
		"not a change":   {'B', 0, 0},
		"bad tuple kind": insertMsg(16384, col{kind: 'z'}, txt("x"), null, null),
		"huge truncate":  {'T', 0xff, 0xff, 0xff, 0xff, 0},
	}
	for name, raw := range bad {
		if _, err := DecodeChange(rel, raw, false); err == nil {
			t.Errorf("%s: decoded without error", name)
		}
	}
}

// goldenSegment writes a segment exercising every rendering rule.
func goldenSegment(t testing.TB, torn bool) string {
	path := segPath(t)
	w, err := Create(path, testHeader())
	must(t, err)
	must(t, w.WriteMessage(Message{LSN: 0x900, Prefix: MarkPrefix, Content: []byte("before-load")}))
	must(t, w.BeginTx(Begin{Xid: 740, FinalLSN: 0x1A00, CommitTime: t0}))
	must(t, w.WriteRelation(relT()))
	must(t, w.WriteRelation(relSales()))
	for i, raw := range [][]byte{
		insertMsg(16384, txt("1"), txt("it's"), txt("3.14"), txt(`{a,"b c"}`)),
		insertMsg(16384, txt("2"), null, null, null),
		updateMsg(16384, 0, nil, txt("1"), toast, txt("2.71"), null),
		updateMsg(16384, 'K', []col{txt("2"), null, null, null}, txt("3"), txt("moved"), null, null),
		deleteMsg(16384, 'K', txt("3"), null, null, null),
		insertMsg(16400, txt("7"), txt("happy"), txt("x")),
		updateMsg(16400, 'O', []col{txt("7"), txt("happy"), txt("x")}, txt("7"), txt("sad"), null),
		deleteMsg(16400, 'O', txt("7"), txt("sad"), null),
	} {
		must(t, w.WriteChange(Change{LSN: 0x1000 + uint64(i), Raw: raw}))
	}
	must(t, w.WriteMessage(Message{LSN: 0x1100, Transactional: true, Prefix: MarkPrefix, Content: []byte("after-load")}))
	must(t, w.WriteMessage(Message{LSN: 0x1101, Transactional: true, Prefix: "app", Content: []byte("hello\n")}))
	must(t, w.CommitTx(Commit{CommitLSN: 0x1A00, EndLSN: 0x1A30, CommitTime: t0}))

	must(t, w.BeginTx(Begin{Xid: 741, FinalLSN: 0x2A00, CommitTime: t0}))
	must(t, w.WriteMessage(Message{LSN: 0x2000, Transactional: true, Prefix: DDLPrefix, Content: []byte("ALTER TABLE public.t ADD COLUMN extra boolean")}))
	rel2 := relT()
	rel2.Columns = append(rel2.Columns, Column{Name: "extra", TypeOID: 16, TypeName: "boolean", TypeMod: -1})
	must(t, w.WriteRelation(rel2))
	must(t, w.WriteChange(Change{LSN: 0x2001, Raw: insertMsg(16384, txt("9"), txt("new"), null, null, txt("t"))}))
	must(t, w.WriteChange(Change{LSN: 0x2002, Raw: truncateMsg(3, 16400, 16384)}))
	must(t, w.CommitTx(Commit{CommitLSN: 0x2A00, EndLSN: 0x2A30, CommitTime: t0}))
	if torn {
		must(t, w.BeginTx(Begin{Xid: 742, FinalLSN: 0x3A00, CommitTime: t0}))
		must(t, w.WriteChange(Change{LSN: 0x3001, Raw: deleteMsg(16384, 'K', txt("9"), null, null, null, null)}))
		must(t, w.Close())
		return path
	}
	must(t, w.WriteSequences(Sequences{Taken: t0, Values: map[string]SequenceValue{
		"public.t_id_seq": {LastValue: 9, IsCalled: true}, `"Sales Ω".seq`: {LastValue: 1}}}))
	must(t, w.Seal(0x2A30))
	must(t, w.Close())
	return path
}

func TestRenderSQLGolden(t *testing.T) {
	for _, tc := range []struct {
		name string
		torn bool
	}{{"render.golden", false}, {"render_torn.golden", true}} {
		r, err := Open(goldenSegment(t, tc.torn))
		must(t, err)
		var buf bytes.Buffer
		err = RenderSQL(&buf, r)
		r.Close()
		if tc.torn != errors.Is(err, ErrTornTail) || (!tc.torn && err != nil) {
			t.Fatalf("%s: RenderSQL: %v", tc.name, err)
		}
		golden := filepath.Join("testdata", tc.name)
		if *update {
			must(t, os.WriteFile(golden, buf.Bytes(), 0o644))
		}
		want, err := os.ReadFile(golden)
		must(t, err)
		if !bytes.Equal(buf.Bytes(), want) {
			t.Errorf("%s mismatch (run go test -update to accept):\n%s", tc.name, buf.String())
		}
	}
}

package changeset

import (
	"bytes"
	"errors"
	"io"
	"os"
	"reflect"
	"testing"
)

func TestRoundTripAllRecords(t *testing.T) {
	path := segPath(t)
	w, err := Create(path, testHeader())
	must(t, err)
	if st, _ := os.Stat(path); st.Mode().Perm() != 0o600 {
		t.Fatalf("mode %v, want 0600", st.Mode().Perm())
	}
	must(t, w.WriteRelation(relT()))
	must(t, w.WriteMessage(Message{LSN: 10, Prefix: MarkPrefix, Content: []byte("before")}))
	must(t, w.BeginTx(Begin{Xid: 700, FinalLSN: 0x2000, CommitTime: t0}))
	ins := insertMsg(16384, txt("1"), txt("a'b"), txt("3.14"), null)
	must(t, w.WriteChange(Change{LSN: 0x1000, Raw: ins}))
	must(t, w.WriteMessage(Message{LSN: 0x1001, Transactional: true, Prefix: DDLPrefix, Content: []byte("ALTER TABLE t ADD c int")}))
	rel2 := relT()
	rel2.Columns = append(rel2.Columns, Column{Name: "c", TypeOID: 23, TypeName: "integer", TypeMod: -1})
	must(t, w.WriteRelation(rel2))
	must(t, w.WriteChange(Change{LSN: 0x1002, Raw: truncateMsg(3, 16384)}))
	must(t, w.CommitTx(Commit{CommitLSN: 0x2000, EndLSN: 0x2028, CommitTime: t0}))
	seqs := Sequences{Taken: t0, Values: map[string]SequenceValue{"public.t_id_seq": {LastValue: 42, IsCalled: true}}}
	must(t, w.WriteSequences(seqs))
	must(t, w.Seal(0x2028))
	if err := w.WriteRelation(relT()); !errors.Is(err, ErrSealed) {
		t.Fatalf("write after seal: %v, want ErrSealed", err)
	}
	must(t, w.Close())

	r, err := Open(path)
	must(t, err)
	defer r.Close()
	wantH := testHeader()
	wantH.FormatVersion = FormatVersion
	if got := r.Header(); !reflect.DeepEqual(got, wantH) {
		t.Fatalf("header %+v, want %+v", got, wantH)
	}
	var recs []Record
	for {
		rec, err := r.Next()
		if err == io.EOF {
			break
		}
		must(t, err)
		recs = append(recs, rec)
	}
	kinds := ""
	for _, rec := range recs {
		kinds += string(rune(rec.RecordType()))
	}
	if kinds != "RMBXMRXCSE" {
		t.Fatalf("record kinds %q", kinds)
	}
	if rel := recs[0].(*Relation); !reflect.DeepEqual(rel, relT()) {
		t.Fatalf("relation %+v", rel)
	}
	if b := recs[2].(*Begin); b.Xid != 700 || b.FinalLSN != 0x2000 || !b.CommitTime.Equal(t0) {
		t.Fatalf("begin %+v", b)
	}
	c := recs[3].(*Change)
	if c.LSN != 0x1000 || !bytes.Equal(c.Raw, ins) || len(c.Relations) != 1 || c.Relations[0].OID != 16384 {
		t.Fatalf("change %+v", c)
	}
	if m := recs[4].(*Message); !m.Transactional || m.Prefix != DDLPrefix || string(m.Content) != "ALTER TABLE t ADD c int" || m.LSN != 0x1001 {
		t.Fatalf("message %+v", m)
	}
	if rel := recs[5].(*Relation); !rel.Changed || len(rel.Previous.Columns) != 4 {
		t.Fatalf("schema change not flagged: %+v", rel)
	}
	if got, _ := r.Relation(16384); len(got.Columns) != 5 {
		t.Fatalf("Relation(16384) has %d columns, want the new definition", len(got.Columns))
	}
	if _, ok := r.RelationByName("public", "t"); !ok {
		t.Fatal("RelationByName missed public.t")
	}
	if cm := recs[7].(*Commit); cm.Xid != 700 || cm.CommitLSN != 0x2000 || cm.EndLSN != 0x2028 {
		t.Fatalf("commit %+v", cm)
	}
	if s := recs[8].(*Sequences); !reflect.DeepEqual(s.Values, seqs.Values) || !s.Taken.Equal(t0) {
		t.Fatalf("sequences %+v", s)
	}
	seal, ok := r.Sealed()
	if !ok || seal.NextLSN != 0x2028 || seal.TxCount != 1 || seal.FirstCommitLSN != 0x2000 || seal.LastCommitLSN != 0x2000 || !seal.LastCommitTime.Equal(t0) {
		t.Fatalf("seal %+v", seal)
	}

	_, txs, err := ReadAll(path)
	must(t, err)
	if len(txs) != 1 || len(txs[0].Changes) != 2 || len(txs[0].Messages) != 1 || txs[0].Xid != 700 || txs[0].EndLSN != 0x2028 {
		t.Fatalf("transactions %+v", txs)
	}
}

func TestWriterRejectsMisuse(t *testing.T) {
	w, err := Create(segPath(t), testHeader())
	must(t, err)
	defer w.Close()
	if err := w.WriteChange(Change{Raw: insertMsg(1, txt("1"))}); err == nil {
		t.Fatal("change outside a transaction accepted")
	}
	if err := w.WriteMessage(Message{Transactional: true}); err == nil {
		t.Fatal("transactional message outside a transaction accepted")
	}
	writeTx(t, w, 5, 100, 1)
	if err := w.BeginTx(Begin{Xid: 6, FinalLSN: 101}); err == nil {
		t.Fatal("commit LSN below LastCommitLSN accepted")
	}
	must(t, w.BeginTx(Begin{Xid: 6, FinalLSN: 500}))
	if err := w.WriteChange(Change{Raw: []byte("Bxxxx")}); err == nil {
		t.Fatal("non-change payload accepted")
	}
	if err := w.Seal(600); err == nil {
		t.Fatal("seal inside a transaction accepted")
	}
	if err := w.CommitTx(Commit{Xid: 9, CommitLSN: 500}); err == nil {
		t.Fatal("commit with another xid accepted")
	}
	if _, err := Create(w.path, testHeader()); err == nil {
		t.Fatal("Create overwrote an existing segment")
	}
}

func TestTxScannerStreams(t *testing.T) {
	path := segPath(t)
	w, err := Create(path, testHeader())
	must(t, err)
	must(t, w.WriteRelation(relT()))
	writeTx(t, w, 1, 100, 3)
	writeTx(t, w, 2, 200, 2)
	must(t, w.BeginTx(Begin{Xid: 3, FinalLSN: 400}))
	must(t, w.WriteChange(Change{LSN: 300, Raw: insertMsg(16384, txt("1"), txt("x"), null, null)}))
	must(t, w.Close()) // transaction 3 stays open: a torn tail

	r, err := Open(path)
	must(t, err)
	defer r.Close()
	s := NewTxScanner(r)
	changes, commits := 0, 0
	for s.Scan() {
		switch ev := s.Event(); ev.Record.(type) {
		case *Change:
			if ev.Tx == nil {
				t.Fatal("change without transaction context")
			}
			changes++
		case *Commit:
			commits++
		}
	}
	if changes != 6 || commits != 2 || !s.InTx() || !errors.Is(s.Err(), ErrTornTail) {
		t.Fatalf("changes=%d commits=%d inTx=%v err=%v", changes, commits, s.InTx(), s.Err())
	}
	_, txs, err := ReadAll(path)
	if len(txs) != 2 || !errors.Is(err, ErrTornTail) {
		t.Fatalf("ReadAll: %d txs, %v; want 2 whole transactions and ErrTornTail", len(txs), err)
	}
}

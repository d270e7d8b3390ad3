package changeset

import (
	"errors"
	"os"
	"testing"
)

// buildTwoTx writes a segment with one whole transaction, then a second
// one, and returns the file bytes and the offset where the first ends.
func buildTwoTx(t *testing.T) ([]byte, int64) {
	t.Helper()
	path := segPath(t)
	w, err := Create(path, testHeader())
	must(t, err)
	must(t, w.WriteRelation(relT()))
	writeTx(t, w, 10, 0x1000, 2)
	end1 := w.Offset()
	must(t, w.BeginTx(Begin{Xid: 11, FinalLSN: 0x3000, CommitTime: t0}))
	must(t, w.WriteRelation(relSales()))
	must(t, w.WriteChange(Change{LSN: 0x2000, Raw: insertMsg(16400, txt("7"), txt("happy"), null)}))
	must(t, w.WriteMessage(Message{LSN: 0x2001, Transactional: true, Prefix: MarkPrefix, Content: []byte("m1")}))
	must(t, w.WriteChange(Change{LSN: 0x2002, Raw: deleteMsg(16400, 'O', txt("7"), txt("happy"), null)}))
	must(t, w.CommitTx(Commit{CommitLSN: 0x3000, EndLSN: 0x3010, CommitTime: t0}))
	must(t, w.Close())
	data, err := os.ReadFile(path)
	must(t, err)
	return data, end1
}

func TestTornTailEveryOffset(t *testing.T) {
	data, end1 := buildTwoTx(t)
	path := segPath(t)
	for cut := end1 + 1; cut < int64(len(data)); cut++ {
		must(t, os.WriteFile(path, data[:cut], 0o600))
		w, rec, err := OpenAppend(path)
		if err != nil {
			t.Fatalf("cut at %d: OpenAppend: %v", cut, err)
		}
		if rec.Size != end1 || rec.TxCount != 1 || rec.LastCommitLSN != 0x1003 || rec.Cut == nil || w.LastCommitLSN() != 0x1003 {
			t.Fatalf("cut at %d: recovery %+v", cut, rec)
		}
		if st, _ := os.Stat(path); st.Size() != end1 {
			t.Fatalf("cut at %d: file is %d bytes, want %d", cut, st.Size(), end1)
		}
		writeTx(t, w, 12, 0x4000, 1)
		must(t, w.Seal(0x5000))
		must(t, w.Close())
		_, txs, err := ReadAll(path)
		if err != nil || len(txs) != 2 || txs[0].Xid != 10 || txs[1].Xid != 12 {
			t.Fatalf("cut at %d: read back %d txs, %v", cut, len(txs), err)
		}
	}
}

func TestOpenAppendCleanAndZeroTail(t *testing.T) {
	data, _ := buildTwoTx(t)
	path := segPath(t)
	withZeros := append(append([]byte(nil), data...), make([]byte, 8192)...)
	for name, content := range map[string][]byte{"clean": data, "zeros": withZeros} {
		must(t, os.WriteFile(path, content, 0o600))
		w, rec, err := OpenAppend(path)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if rec.Size != int64(len(data)) || rec.TxCount != 2 || rec.LastCommitLSN != 0x3000 || (rec.Cut == nil) != (name == "clean") {
			t.Fatalf("%s: recovery %+v", name, rec)
		}
		must(t, w.Close())
	}
}

func TestFlippedByteIsCorrupt(t *testing.T) {
	data, end1 := buildTwoTx(t)
	r, err := NewReader(bytesReader(data))
	must(t, err)
	start := r.Offset() // first record after the header
	path := segPath(t)
	for off := start; off < end1; off++ {
		bad := append([]byte(nil), data...)
		bad[off] ^= 0x5a
		r, err := NewReader(bytesReader(bad))
		must(t, err)
		_, err = r.Transactions()
		var fe *FormatError
		if !errors.Is(err, ErrCorrupt) || !errors.As(err, &fe) || fe.Offset > off || fe.Offset < start {
			t.Fatalf("flip at %d: %v, want ErrCorrupt at or before the offset", off, err)
		}
		must(t, os.WriteFile(path, bad, 0o600))
		if _, _, err := OpenAppend(path); !errors.Is(err, ErrCorrupt) {
			t.Fatalf("flip at %d: OpenAppend: %v, want ErrCorrupt", off, err)
		}
	}
}

func TestHeaderDamage(t *testing.T) {
	data, _ := buildTwoTx(t)
	bad := append([]byte(nil), data...)
	bad[0] = 'X'
	if _, err := NewReader(bytesReader(bad)); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("bad magic: %v", err)
	}
	bad = append([]byte(nil), data...)
	bad[len(Magic)+1] = 2
	if _, err := NewReader(bytesReader(bad)); !errors.Is(err, ErrVersion) {
		t.Fatalf("version 2: %v", err)
	}
	if _, err := NewReader(bytesReader(data[:20])); !errors.Is(err, ErrTornTail) {
		t.Fatalf("short header: %v", err)
	}
}

func TestOpenAppendRefusesSealed(t *testing.T) {
	path := segPath(t)
	w, err := Create(path, testHeader())
	must(t, err)
	must(t, w.Seal(0x900))
	must(t, w.Close())
	if _, _, err := OpenAppend(path); !errors.Is(err, ErrSealed) {
		t.Fatalf("OpenAppend of sealed segment: %v, want ErrSealed", err)
	}
}

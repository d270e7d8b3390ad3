package changeset

import (
	"os"
	"testing"
)

// TestBoundedMemory writes a 200k-change transaction and checks that the
// changes reach the file before CommitTx and that WriteChange allocates
// nothing, i.e. the writer never holds the transaction.
func TestBoundedMemory(t *testing.T) {
	if testing.Short() {
		t.Skip("writes about 10 MB")
	}
	path := segPath(t)
	w, err := Create(path, testHeader())
	must(t, err)
	defer w.Close()
	must(t, w.WriteRelation(relT()))
	must(t, w.BeginTx(Begin{Xid: 1, FinalLSN: 1 << 40, CommitTime: t0}))
	raw := insertMsg(16384, txt("123456"), txt("some text"), txt("3.14"), null)
	const n = 200_000
	for i := range n {
		must(t, w.WriteChange(Change{LSN: uint64(0x1000 + i), Raw: raw}))
	}
	st, err := os.Stat(path)
	must(t, err)
	perChange := int64(frameOverhead + 9 + len(raw))
	if min := n*perChange - writeBuffer; st.Size() < min {
		t.Fatalf("before CommitTx the file is %d bytes, want at least %d: changes are held in memory", st.Size(), min)
	}
	allocs := testing.AllocsPerRun(1000, func() {
		if err := w.WriteChange(Change{LSN: 1 << 39, Raw: raw}); err != nil {
			t.Fatal(err)
		}
	})
	if allocs != 0 {
		t.Fatalf("WriteChange allocates %.1f times per call, want 0", allocs)
	}
	must(t, w.CommitTx(Commit{CommitLSN: 1 << 40, EndLSN: 1<<40 + 8, CommitTime: t0}))
	must(t, w.Close())

	r, err := Open(path)
	must(t, err)
	defer r.Close()
	s, count := NewTxScanner(r), 0
	for s.Scan() {
		if _, ok := s.Event().Record.(*Change); ok {
			count++
		}
	}
	must(t, s.Err())
	if count != n+1001 {
		t.Fatalf("read %d changes, want %d", count, n+1001)
	}
}

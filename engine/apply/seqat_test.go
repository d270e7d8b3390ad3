package apply

import (
	"testing"

	"github.com/pme2go/pme2go-backup/engine/changeset"
)

func TestChooseSequences(t *testing.T) {
	v := func(n int64) map[string]changeset.SequenceValue {
		return map[string]changeset.SequenceValue{"public.s": {LastValue: n, IsCalled: true}, "public.k": {LastValue: 7, IsCalled: true}}
	}
	seal1 := seqRead{from: 100, to: 110, values: v(5)}
	seal2 := seqRead{from: 300, to: 310, values: v(9)}
	mark := seqRead{from: 200, to: 205, values: v(8), own: 220, clean: true}
	for _, tc := range []struct {
		name             string
		reads            []seqRead
		last, next       uint64
		reach            uint64
		latest           bool
		exactS           bool
		wantS            int64
		exactK, beforeOK bool
		restarts         []uint64
	}{
		{"read between last and next", []seqRead{seal1, seal2}, 90, 150, 0, false, true, 5, true, true, nil},
		{"next inside the read, nothing before", []seqRead{seal1, seal2}, 90, 105, 0, false, false, 0, false, false, nil},
		{"between seals", []seqRead{seal1, seal2}, 150, 250, 0, false, false, 0, true, true, nil},
		{"latest past the last read", []seqRead{seal1, seal2}, 250, 0, 0, true, true, 9, true, true, nil},
		{"no next known, not latest", []seqRead{seal1, seal2}, 250, 0, 0, false, false, 0, true, true, nil},
		// A time target after the last commit: the archives reach past
		// the read and hold no commit after last (a TRUNCATE … RESTART
		// IDENTITY between the reads set the sequence back).
		{"no next, archives reach past the read", []seqRead{seal1, seal2}, 250, 0, 400, false, true, 9, true, true, nil},
		{"no next, archives end inside the read", []seqRead{seal1, seal2}, 250, 0, 305, false, false, 0, true, true, nil},
		{"no next, reach ignored when a next is known", []seqRead{seal1, seal2}, 250, 305, 400, false, false, 0, true, true, nil},
		{"no next, read end unknown", []seqRead{seal1, {from: 300, values: v(9)}}, 250, 0, 400, false, false, 0, true, true, nil},
		// Equal reads with a TRUNCATE … RESTART IDENTITY between them:
		// set back and moved on to the same value, not proven.
		{"equal reads around a restart", []seqRead{seal1, {from: 300, to: 310, values: v(5)}}, 150, 250, 0, false, false, 0, false, true, []uint64{280}},
		{"equal reads, restart before them", []seqRead{seal1, {from: 300, to: 310, values: v(5)}}, 150, 250, 0, false, true, 5, true, true, []uint64{90}},
		{"at a clean mark", []seqRead{seal1, mark, seal2}, 220, 250, 0, false, true, 8, true, true, nil},
		{"before a clean mark (exclusive)", []seqRead{seal1, mark, seal2}, 190, 220, 0, false, true, 8, true, true, nil},
		{"after a mark", []seqRead{seal1, mark, seal2}, 230, 250, 0, false, false, 0, true, true, nil},
		{"unclean mark", []seqRead{seal1, {from: 200, to: 205, values: v(8), own: 220}, seal2}, 220, 250, 0, false, false, 0, true, true, nil},
	} {
		got := chooseSequences(append([]seqRead(nil), tc.reads...), tc.restarts, tc.last, tc.next, tc.reach, tc.latest)
		s, k := got["public.s"], got["public.k"]
		if s.Exact != tc.exactS || (s.Exact && s.Value.LastValue != tc.wantS) {
			t.Errorf("%s: public.s = %+v, want exact %v value %d", tc.name, s, tc.exactS, tc.wantS)
		}
		if k.Exact != tc.exactK || (k.Exact && k.Value.LastValue != 7) {
			t.Errorf("%s: public.k (unchanged) = %+v, want exact 7", tc.name, k)
		}
		if !s.Exact && tc.beforeOK && (s.Before == nil || s.After == nil) {
			t.Errorf("%s: public.s not exact without both reads: %+v", tc.name, s)
		}
	}
	a, b := &changeset.SequenceValue{LastValue: 3, IsCalled: true}, &changeset.SequenceValue{LastValue: 1, IsCalled: true}
	if further(a, b, true) != a || further(a, b, false) != b || further(nil, b, true) != b {
		t.Error("further picks the wrong read")
	}
}

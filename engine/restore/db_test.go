package restore

import "testing"

// TestHasFunctions: only restored FUNCTION and PROCEDURE entries count (a
// restore with one pins function paths and runs pg_restore twice); a
// comment or ACL on a function, and entries commented out of the list
// (our machinery), do not.
func TestHasFunctions(t *testing.T) {
	for _, c := range []struct {
		listing string
		want    bool
	}{
		{"; Archive created at 2026-11-30\n215; 1259 16390 TABLE public t postgres\n", false},
		{"215; 1259 16390 TABLE public t postgres\n216; 1255 16391 FUNCTION public f(integer) postgres\n", true},
		{"216; 1255 16391 PROCEDURE public p() postgres\n", true},
		{"3390; 0 0 COMMENT public FUNCTION f(integer) postgres\n3391; 0 0 ACL public FUNCTION f(integer) postgres\n", false},
		{"; pme2go: 216; 1255 16391 FUNCTION pme2go_abc ddl_capture() postgres\n", false},
		{"", false},
	} {
		if got := hasFunctions(c.listing); got != c.want {
			t.Errorf("hasFunctions(%q) = %v, want %v", c.listing, got, c.want)
		}
	}
}

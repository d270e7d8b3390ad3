package schedule

import (
	"testing"
	"time"
)

func TestNext(t *testing.T) {
	base := time.Date(2026, 11, 25, 18, 40, 0, 0, time.UTC) // a Wednesday
	cases := []struct{ expr, want string }{
		{"0 2 * * *", "2026-11-26T02:00:00Z"},
		{"0 */6 * * *", "2026-11-26T00:00:00Z"},
		{"0 3 * * 0", "2026-11-29T03:00:00Z"},
		{"0 3 * * 7", "2026-11-29T03:00:00Z"},
		{"*/15 * * * *", "2026-11-25T18:45:00Z"},
		{"30 1 1 1 *", "2027-01-01T01:30:00Z"},
		{"0 0 1 * 1", "2026-11-30T00:00:00Z"},
	}
	for _, c := range cases {
		cr, err := Parse(c.expr)
		if err != nil {
			t.Fatalf("Parse(%q): %v", c.expr, err)
		}
		if got := cr.Next(base).Format(time.RFC3339); got != c.want {
			t.Errorf("Next(%q) = %s, want %s", c.expr, got, c.want)
		}
	}
}

func TestParseErrors(t *testing.T) {
	for _, expr := range []string{"", "* * * *", "60 * * * *", "* 24 * * *", "* * 0 * *", "a * * * *", "*/0 * * * *", "5-1 * * * *"} {
		if _, err := Parse(expr); err == nil {
			t.Errorf("Parse(%q) accepted a bad expression", expr)
		}
	}
}

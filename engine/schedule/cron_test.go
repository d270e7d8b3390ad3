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

func mustLoad(t *testing.T, name string) *time.Location {
	t.Helper()
	loc, err := time.LoadLocation(name)
	if err != nil {
		t.Fatalf("time zone %s: %v (install tzdata)", name, err)
	}
	return loc
}

// TestNextInTimeZones: fields match the local wall clock, including zones
// with half-hour and 45-minute offsets.
func TestNextInTimeZones(t *testing.T) {
	for _, c := range []struct {
		zone, expr, from, want string
	}{
		{"Asia/Kolkata", "0 2 * * *", "2026-11-25T18:40:00+05:30", "2026-11-26T02:00:00+05:30"},
		{"Asia/Kolkata", "0 2 * * *", "2026-11-26T01:59:00+05:30", "2026-11-26T02:00:00+05:30"},
		{"Asia/Kolkata", "0 */6 * * *", "2026-11-26T01:00:00+05:30", "2026-11-26T06:00:00+05:30"},
		{"Asia/Kathmandu", "15 3 * * *", "2026-11-26T03:00:00+05:45", "2026-11-26T03:15:00+05:45"},
		{"Australia/Adelaide", "0 2 * * *", "2026-06-01T12:00:00+09:30", "2026-06-02T02:00:00+09:30"},
		{"America/St_Johns", "0 * * * *", "2026-11-25T10:10:00-03:30", "2026-11-25T11:00:00-03:30"},
		{"UTC", "0 2 * * *", "2026-11-25T18:40:00Z", "2026-11-26T02:00:00Z"},
	} {
		loc := mustLoad(t, c.zone)
		from, _ := time.Parse(time.RFC3339, c.from)
		cr, err := Parse(c.expr)
		if err != nil {
			t.Fatal(err)
		}
		got := cr.Next(from.In(loc))
		want, _ := time.Parse(time.RFC3339, c.want)
		if !got.Equal(want) || got.Location() != loc {
			t.Errorf("%s %q after %s: got %s, want %s", c.zone, c.expr, c.from, got.Format(time.RFC3339), c.want)
		}
	}
}

// fires lists the activations in [from, to).
func fires(cr *Cron, from, to time.Time) []string {
	var out []string
	for t := cr.Next(from.Add(-time.Nanosecond)); !t.IsZero() && t.Before(to); t = cr.Next(t) {
		out = append(out, t.Format(time.RFC3339))
	}
	return out
}

// TestNextAcrossDST: across a daylight-saving change every daily job fires
// exactly once a day, a time in the spring-forward gap fires once at the end
// of the gap (as cron does), and a time repeated in the fall-back hour fires
// at its first occurrence only.
func TestNextAcrossDST(t *testing.T) {
	ny := mustLoad(t, "America/New_York")
	lh := mustLoad(t, "Australia/Lord_Howe") // 30-minute DST shift
	for _, c := range []struct {
		name string
		loc  *time.Location
		expr string
		from string
		days int
		want []string
	}{
		{"spring forward, before the gap", ny, "30 1 * * *", "2026-03-07T00:00:00-05:00", 3,
			[]string{"2026-03-07T01:30:00-05:00", "2026-03-08T01:30:00-05:00", "2026-03-09T01:30:00-04:00"}},
		{"spring forward, inside the gap", ny, "30 2 * * *", "2026-03-07T00:00:00-05:00", 3,
			[]string{"2026-03-07T02:30:00-05:00", "2026-03-08T03:00:00-04:00", "2026-03-09T02:30:00-04:00"}},
		{"spring forward, after the gap", ny, "0 3 * * *", "2026-03-07T00:00:00-05:00", 3,
			[]string{"2026-03-07T03:00:00-05:00", "2026-03-08T03:00:00-04:00", "2026-03-09T03:00:00-04:00"}},
		{"fall back, repeated hour", ny, "30 1 * * *", "2026-10-31T00:00:00-04:00", 3,
			[]string{"2026-10-31T01:30:00-04:00", "2026-11-01T01:30:00-04:00", "2026-11-02T01:30:00-05:00"}},
		{"fall back, hourly", ny, "0 * * * *", "2026-11-01T00:00:00-04:00", 0,
			[]string{"2026-11-01T00:00:00-04:00", "2026-11-01T01:00:00-04:00", "2026-11-01T02:00:00-05:00", "2026-11-01T03:00:00-05:00"}},
		{"half-hour DST, repeated half hour", lh, "45 1 * * *", "2026-04-04T00:00:00+11:00", 2,
			[]string{"2026-04-04T01:45:00+11:00", "2026-04-05T01:45:00+11:00"}},
		{"half-hour DST, gap", lh, "15 2 * * *", "2026-10-03T00:00:00+10:30", 2,
			[]string{"2026-10-03T02:15:00+10:30", "2026-10-04T02:30:00+11:00"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			cr, err := Parse(c.expr)
			if err != nil {
				t.Fatal(err)
			}
			from, _ := time.Parse(time.RFC3339, c.from)
			from = from.In(c.loc)
			to := from.AddDate(0, 0, c.days)
			if c.days == 0 {
				to = from.Add(5 * time.Hour) // five real hours
			}
			got := fires(cr, from, to)
			if len(got) != len(c.want) {
				t.Fatalf("fires %q, want %q", got, c.want)
			}
			for i := range got {
				g, _ := time.Parse(time.RFC3339, got[i])
				w, _ := time.Parse(time.RFC3339, c.want[i])
				if !g.Equal(w) {
					t.Fatalf("fires %q, want %q", got, c.want)
				}
			}
		})
	}
}

// Package schedule parses the five-field cron expressions of the seed's
// *_SCHEDULE variables and computes their next activation time. The daemon's
// built-in scheduler uses it on hosts without systemd timers.
package schedule

import (
	"fmt"
	"strconv"
	"strings"
	"time"
)

// Cron is a parsed five-field cron expression: minute, hour, day of month,
// month and day of week (0 or 7 is Sunday).
type Cron struct {
	expr                     string
	minute, hour, dom, month uint64
	dow                      uint64
	domStar, dowStar         bool
}

type field struct {
	name     string
	min, max int
}

var fields = []field{{"minute", 0, 59}, {"hour", 0, 23}, {"day of month", 1, 31}, {"month", 1, 12}, {"day of week", 0, 7}}

// Parse parses expr ("0 2 * * *"). The error names the field at fault.
func Parse(expr string) (*Cron, error) {
	parts := strings.Fields(expr)
	if len(parts) != 5 {
		return nil, fmt.Errorf("cron expression %q has %d fields, want 5 (minute hour day-of-month month day-of-week)", expr, len(parts))
	}
	c := &Cron{expr: expr}
	dst := []*uint64{&c.minute, &c.hour, &c.dom, &c.month, &c.dow}
	for i, p := range parts {
		bits, err := parseField(p, fields[i])
		if err != nil {
			return nil, fmt.Errorf("cron expression %q: %w", expr, err)
		}
		*dst[i] = bits
	}
	if c.dow&(1<<7) != 0 {
		c.dow |= 1
	}
	c.domStar = parts[2] == "*"
	c.dowStar = parts[4] == "*"
	return c, nil
}

func parseField(s string, f field) (uint64, error) {
	var bits uint64
	for _, item := range strings.Split(s, ",") {
		rng, step := item, 1
		if i := strings.IndexByte(item, '/'); i >= 0 {
			n, err := strconv.Atoi(item[i+1:])
			if err != nil || n <= 0 {
				return 0, fmt.Errorf("%s: bad step in %q", f.name, item)
			}
			rng, step = item[:i], n
		}
		lo, hi := f.min, f.max
		if rng != "*" {
			a, b, isRange := strings.Cut(rng, "-")
			var err error
			if lo, err = strconv.Atoi(a); err != nil {
				return 0, fmt.Errorf("%s: %q is not a number", f.name, a)
			}
			hi = lo
			if isRange {
				if hi, err = strconv.Atoi(b); err != nil {
					return 0, fmt.Errorf("%s: %q is not a number", f.name, b)
				}
			} else if step > 1 {
				hi = f.max
			}
		}
		if lo < f.min || hi > f.max || lo > hi {
			return 0, fmt.Errorf("%s: %q is outside %d-%d", f.name, item, f.min, f.max)
		}
		for v := lo; v <= hi; v += step {
			bits |= 1 << uint(v)
		}
	}
	return bits, nil
}

// String returns the expression as written.
func (c *Cron) String() string { return c.expr }

// Next returns the first activation strictly after t, in t's location.
// It returns the zero time if none exists within five years.
//
// Fields are matched against the wall clock of t's location (as cron
// does), never against UTC: "0 2 * * *" in Asia/Kolkata (+05:30) fires at
// 02:00 IST. Across daylight-saving changes each matching wall-clock time
// fires once: a time skipped when clocks go forward fires at the end of the
// gap (02:30 fires at 03:00 EDT in America/New_York on the spring-forward
// day), and a time repeated when clocks go back fires at its first
// occurrence only (so an hourly job skips the repeated hour), as cron does.
func (c *Cron) Next(t time.Time) time.Time {
	loc := t.Location()
	// u walks civil (wall-clock) time; UTC has no gaps or repeats.
	u := time.Date(t.Year(), t.Month(), t.Day(), t.Hour(), t.Minute(), 0, 0, time.UTC).Add(time.Minute)
	limit := u.AddDate(5, 0, 0)
	for u.Before(limit) {
		if c.month&(1<<uint(u.Month())) == 0 {
			u = time.Date(u.Year(), u.Month()+1, 1, 0, 0, 0, 0, time.UTC)
			continue
		}
		if !c.dayMatches(u) {
			u = time.Date(u.Year(), u.Month(), u.Day()+1, 0, 0, 0, 0, time.UTC)
			continue
		}
		if c.hour&(1<<uint(u.Hour())) == 0 {
			u = time.Date(u.Year(), u.Month(), u.Day(), u.Hour()+1, 0, 0, 0, time.UTC)
			continue
		}
		if c.minute&(1<<uint(u.Minute())) == 0 {
			u = u.Add(time.Minute)
			continue
		}
		if r := atWall(u, loc); r.After(t) {
			return r
		}
		u = u.Add(time.Minute)
	}
	return time.Time{}
}

// wallOf returns t's wall clock in its location as a UTC time (civil time).
func wallOf(t time.Time) time.Time {
	return time.Date(t.Year(), t.Month(), t.Day(), t.Hour(), t.Minute(), 0, 0, time.UTC)
}

// atWall returns the first instant at which loc's wall clock shows the civil
// minute u: the first of two when clocks went back, and when u was skipped
// because clocks went forward, the first instant after the skip.
func atWall(u time.Time, loc *time.Location) time.Time {
	r := time.Date(u.Year(), u.Month(), u.Day(), u.Hour(), u.Minute(), 0, 0, loc)
	if wallOf(r).Equal(u) {
		// time.Date may pick either of two instants; take the earliest.
		// Daylight-saving shifts are at most two hours.
		for back := 2 * time.Hour; back > 0; back -= 15 * time.Minute {
			if e := r.Add(-back); wallOf(e).Equal(u) {
				return e
			}
		}
		return r
	}
	// u lies in a gap: scan from before it for the first instant whose wall
	// clock has passed u.
	for e := r.Add(-3 * time.Hour).Truncate(time.Minute); e.Before(r.Add(3 * time.Hour)); e = e.Add(time.Minute) {
		if !wallOf(e).Before(u) {
			return e
		}
	}
	return r
}

// dayMatches applies cron's rule: when both day fields are restricted, a day
// matching either one is enough.
func (c *Cron) dayMatches(t time.Time) bool {
	dom := c.dom&(1<<uint(t.Day())) != 0
	dow := c.dow&(1<<uint(t.Weekday())) != 0
	switch {
	case c.domStar && c.dowStar:
		return true
	case c.domStar:
		return dow
	case c.dowStar:
		return dom
	default:
		return dom || dow
	}
}

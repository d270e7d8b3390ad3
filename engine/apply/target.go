// Package apply replays captured change sets on top of a restored full
// backup: it plans which archives of a chain lead to a recovery target
// (time, LSN, xid, named mark or the latest captured commit), checks that
// the chain is whole before anything is written, and applies the change
// sets transaction by transaction into a database, recording progress in a
// replication origin so that an interrupted replay resumes without applying
// anything twice.
package apply

import (
	"errors"
	"fmt"
	"github.com/pme2go/pme2go-backup/engine/errs"
	"github.com/pme2go/pme2go-backup/engine/lsn"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pglogrepl"
)

// Kind says what a Target points at.
type Kind int

// Target kinds.
const (
	Latest Kind = iota // the last captured commit
	Time               // a commit time
	LSN                // a WAL position
	Xid                // a transaction id
	Name               // a mark made with `pme2go-backup mark NAME`
)

// Target is a recovery target. Targets are inclusive by default: the
// transaction at the target is applied and the first commit past it is
// where replay stops. Exclusive stops before the target transaction.
type Target struct {
	Kind      Kind
	Time      time.Time
	LSN       uint64
	Xid       uint32
	Name      string
	Exclusive bool
}

// String renders the target the way the command line takes it.
func (t Target) String() string {
	var s string
	switch t.Kind {
	case Time:
		s = "time " + t.Time.UTC().Format(time.RFC3339Nano)
	case LSN:
		s = "LSN " + pglogrepl.LSN(t.LSN).String()
	case Xid:
		s = "xid " + strconv.FormatUint(uint64(t.Xid), 10)
	case Name:
		s = "mark " + strconv.Quote(t.Name)
	default:
		return "latest"
	}
	if t.Exclusive {
		s += " (exclusive)"
	}
	return s
}

// timeLayouts are the accepted --target-time forms: RFC 3339 and
// PostgreSQL's timestamptz text output (ISO DateStyle).
var timeLayouts = []string{
	time.RFC3339Nano,
	"2006-01-02 15:04:05.999999999Z07:00",
	"2006-01-02 15:04:05.999999999Z07",
	"2006-01-02 15:04:05.999999999-07",
	"2006-01-02 15:04:05.999999999-07:00:00",
	"2006-01-02T15:04:05.999999999-07",
}

// ParseTime parses a target time given as RFC 3339
// (2026-11-25T18:32:03.506302Z) or as PostgreSQL timestamptz text
// (2026-11-25 18:32:03.506302+00).
func ParseTime(s string) (time.Time, error) {
	s = strings.TrimSpace(s)
	for _, l := range timeLayouts {
		if t, err := time.Parse(l, s); err == nil {
			return t.UTC(), nil
		}
	}
	return time.Time{}, fmt.Errorf("target time %q: use RFC 3339 (2026-11-25T18:32:03.506302Z) or PostgreSQL timestamptz text (2026-11-25 18:32:03.506302+00), with a time zone", s)
}

// ParseLSN parses an LSN written X/Y.
func ParseLSN(s string) (uint64, error) {
	l, err := lsn.Parse(s)
	if err != nil {
		return 0, fmt.Errorf("target LSN %q: write it as PostgreSQL does, e.g. 0/16B3748: %w", s, err)
	}
	return uint64(l), nil
}

// TargetSpec holds the command-line target options before validation.
type TargetSpec struct {
	Time, LSN, Xid, Name string
	Latest, Exclusive    bool
}

// ErrNoTarget is returned by ParseTarget when no target option is set.
var ErrNoTarget = errors.New("no recovery target given")

// ParseTarget checks that exactly one target is given and parses it. It
// returns ErrNoTarget when none is set.
func ParseTarget(s TargetSpec) (Target, error) {
	n := 0
	for _, set := range []bool{s.Time != "", s.LSN != "", s.Xid != "", s.Name != "", s.Latest} {
		if set {
			n++
		}
	}
	switch {
	case n == 0 && s.Exclusive:
		return Target{}, errs.New(errs.Usage, "an exclusive target needs a target: a time, an LSN, an xid or a mark name")
	case n == 0:
		return Target{}, ErrNoTarget
	case n > 1:
		return Target{}, errs.New(errs.Usage, "give only one of the recovery targets: a time, an LSN, an xid, a mark name, or the latest state")
	}
	t := Target{Exclusive: s.Exclusive}
	var err error
	switch {
	case s.Time != "":
		t.Kind = Time
		t.Time, err = ParseTime(s.Time)
	case s.LSN != "":
		t.Kind = LSN
		t.LSN, err = ParseLSN(s.LSN)
	case s.Xid != "":
		t.Kind = Xid
		var x uint64
		x, err = strconv.ParseUint(strings.TrimSpace(s.Xid), 10, 32)
		if err != nil {
			err = fmt.Errorf("target xid %q: give a 32-bit transaction id as shown by txid_current() %% 2^32: %w", s.Xid, err)
		}
		t.Xid = uint32(x)
	case s.Name != "":
		t.Kind, t.Name = Name, s.Name
	default:
		if s.Exclusive {
			return Target{}, errs.New(errs.Usage, "an exclusive target does not apply to the latest state")
		}
		t.Kind = Latest
	}
	return t, err
}

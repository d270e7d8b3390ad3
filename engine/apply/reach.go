package apply

import (
	"fmt"
	"time"

	"github.com/pme2go/pme2go-backup/engine/archive"
	"github.com/pme2go/pme2go-backup/engine/catalog"
	"github.com/pme2go/pme2go-backup/engine/changeset"
	"github.com/pme2go/pme2go-backup/engine/errs"
)

// Codes of TargetError (engine/errs codes).
const (
	// CodeChainEnded: the target lies past the point where the chain ended
	// (schema change without captured DDL, lag cap, lost slot, …).
	CodeChainEnded = errs.ChainEnded
	// CodeTargetPastWindow: the target lies after the recovery window, the
	// newest point the archived change sets are known complete up to.
	CodeTargetPastWindow = errs.TargetUnreachable
)

// Fixes of TargetError, as data (worded without any client's syntax).
var (
	FixNewerFull   = errs.Fix{Action: errs.ActFullBackup, Text: "restore from a newer full backup (take one if none exists), or choose a target before the chain's end"}
	FixCaptureDDL  = errs.Fix{Action: errs.ActConfig, Text: "set CAPTURE_DDL (auto or true) so that schema changes travel in the change sets, then take a new full backup"}
	FixIncremental = errs.Fix{Action: errs.ActIncremental, Text: "take an incremental backup to archive newer changes, or choose a target inside the recovery window"}
)

// TargetError is a refused recovery target: Code says why (CodeChainEnded,
// CodeTargetPastWindow), Message what is wrong, Fixes what to do (the
// first is the main one). It is returned (possibly wrapped) before
// anything is written, and unwraps to an *errs.Error with the same code
// and the first fix, so errs.CodeOf and errors.Is(err, errs.ErrChainEnded)
// work on it.
type TargetError struct {
	Code    errs.Code  `json:"code"`
	Message string     `json:"message"`
	Fixes   []errs.Fix `json:"fixes"`
	End     *ChainEnd  `json:"chainEnd,omitempty"`
	Window  *Window    `json:"recoveryWindow,omitempty"`
}

// Error implements error.
func (e *TargetError) Error() string {
	s := e.Message
	for _, f := range e.Fixes {
		s += "; " + f.Text
	}
	return s + "; nothing was restored"
}

// Unwrap returns the error as an *errs.Error.
func (e *TargetError) Unwrap() error {
	out := &errs.Error{Code: e.Code, Message: e.Message + "; nothing was restored"}
	if len(e.Fixes) > 0 {
		f := e.Fixes[0]
		out.Fix = &f
	}
	return out
}

// Fix returns the fixes' texts as one sentence.
func (e *TargetError) Fix() string {
	s := ""
	for i, f := range e.Fixes {
		if i > 0 {
			s += "; or "
		}
		s += f.Text
	}
	return s
}

// ChainEnd is where a chain ended: its change sets are exact for commits
// below LSN and for time targets up to Time.
type ChainEnd struct {
	ChainID string    `json:"chainId"`
	LSN     string    `json:"lsn"`
	Time    time.Time `json:"time,omitzero"`
	Reason  string    `json:"reason"`
	lsn     uint64
}

// Window is the recovery window of a chain: every time from From (the full
// backup's consistent point) to To can be restored exactly, and every LSN
// up to ToLSN. To is the server time up to which the archived stream is
// known complete (or the last commit's time for archives that do not
// record it), never past a chain end.
type Window struct {
	From  time.Time `json:"from"`
	To    time.Time `json:"to"`
	ToLSN string    `json:"toLsn"`
}

// Gap says that --latest reaches an older state than the newest backup
// activity of the database, and why.
type Gap struct {
	Reached      time.Time `json:"reached"`      // newest state restored
	LastActivity time.Time `json:"lastActivity"` // newest archive of the database
	Seconds      float64   `json:"seconds"`
	Reason       string    `json:"reason"`
	Fix          string    `json:"fix"`
}

// metaTime reads an RFC 3339 time from manifest metadata.
func metaTime(m *archive.Manifest, key string) time.Time {
	if m == nil {
		return time.Time{}
	}
	if s, ok := m.Metadata[key].(string); ok {
		if t, err := time.Parse(time.RFC3339Nano, s); err == nil {
			return t
		}
	}
	return time.Time{}
}

// chainEndOf reads the chain end recorded in an incremental's manifest.
func chainEndOf(chainID string, m *archive.Manifest) *ChainEnd {
	s, _ := m.Metadata["chainEndLsn"].(string)
	if s == "" {
		return nil
	}
	l, err := ParseLSN(s)
	if err != nil {
		return nil
	}
	reason, _ := m.Metadata["chainEndReason"].(string)
	return &ChainEnd{ChainID: chainID, LSN: changeset.FormatLSN(l), Time: metaTime(m, "chainEndTime"), Reason: reason, lsn: l}
}

// window computes the plan's recovery window from its archives: end is
// the last archive's EndLSN, lastTime the last commit's time.
func (p *Plan) window(end uint64, lastTime time.Time) *Window {
	w := &Window{From: p.Full.consistentTime(p.Database), ToLSN: changeset.FormatLSN(end)}
	w.To = w.From
	if lastTime.After(w.To) {
		w.To = lastTime
	}
	if n := len(p.Incrementals); n > 0 {
		if ct := metaTime(p.Incrementals[n-1].Manifest, "completeTime"); ct.After(w.To) {
			w.To = ct
		}
	}
	if e := p.ChainEnd; e != nil {
		if e.lsn < end {
			w.ToLSN = e.LSN
		}
		if !e.Time.IsZero() && e.Time.Before(w.To) {
			w.To = e.Time
		}
	}
	return w
}

// lastActivity returns the time of the newest archive of db (full or
// incremental), excluding restore safety backups.
func lastActivity(all []catalog.Backup, db string) (time.Time, string) {
	var t time.Time
	name := ""
	for _, b := range all {
		if b.Manifest == nil || !containsDB(b.Manifest, db) || b.Manifest.IsSafety() {
			continue
		}
		at := b.Manifest.Timestamp
		if b.Manifest.LastCommitTime != nil && b.Manifest.LastCommitTime.After(at) {
			at = *b.Manifest.LastCommitTime
		}
		if at.After(t) {
			t, name = at, b.Name
		}
	}
	return t, name
}

func containsDB(m *archive.Manifest, db string) bool {
	for _, d := range m.Databases {
		if d == db {
			return true
		}
	}
	if d, _ := m.Metadata["database"].(string); d == db {
		return true
	}
	return false
}

// describeReach renders the window and the chain end for --dry-run.
func (p *Plan) describeReach() []string {
	var out []string
	if w := p.Window; w != nil {
		out = append(out, fmt.Sprintf("recovery window %s .. %s (LSN up to %s)", w.From.UTC().Format(time.RFC3339Nano), w.To.UTC().Format(time.RFC3339Nano), w.ToLSN))
	}
	if e := p.ChainEnd; e != nil {
		when := "" // no commit time known at the end (for example right after the full backup)
		if !e.Time.IsZero() {
			when = " (" + e.Time.UTC().Format(time.RFC3339Nano) + ")"
		}
		out = append(out, fmt.Sprintf("chain %s ended at LSN %s%s: %s", e.ChainID, e.LSN, when, e.Reason))
	}
	if g := p.Gap; g != nil {
		out = append(out, fmt.Sprintf("latest state reached %s, %.0f s older than the last backup activity (%s): %s; %s",
			g.Reached.UTC().Format(time.RFC3339Nano), g.Seconds, g.LastActivity.UTC().Format(time.RFC3339Nano), g.Reason, g.Fix))
	}
	if lo := p.LargeObjects; lo != nil {
		out = append(out, fmt.Sprintf("%d large objects (%d written, %d removed): %s", lo.Count, lo.Written, lo.Removed, lo.Note))
	}
	return out
}

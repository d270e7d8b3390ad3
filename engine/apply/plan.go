package apply

import (
	"encoding/json"
	"fmt"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/pme2go/pme2go-backup/engine/archive"
	"github.com/pme2go/pme2go-backup/engine/catalog"
	"github.com/pme2go/pme2go-backup/engine/chain"
	"github.com/pme2go/pme2go-backup/engine/changeset"
	"github.com/pme2go/pme2go-backup/engine/errs"
)

// Archive is one archive of a plan, with its LSN range.
type Archive struct {
	Name     string            `json:"name"`
	Path     string            `json:"path"`
	StartLSN uint64            `json:"-"`
	EndLSN   uint64            `json:"-"` // 0 for the full backup
	Manifest *archive.Manifest `json:"-"`
}

// consistentTime returns when the full backup's dump met the change stream
// for db: the chain's start time recorded in the manifest (taken once the
// slot was consistent, so every commit in the dump is older), or, for
// archives written before it was recorded, the backup's start time.
func (a Archive) consistentTime(db string) time.Time {
	if a.Manifest == nil {
		return time.Time{}
	}
	if s, ok := a.Manifest.Metadata["chainStart:"+db].(string); ok {
		if t, err := time.Parse(time.RFC3339Nano, s); err == nil {
			return t
		}
	}
	return a.Manifest.Timestamp
}

// Plan is what a point-in-time restore of one database will do: restore
// Full, then replay Incrementals in order up to Target. MakePlan fills it
// from the sidecar manifests; Prepare reads the change sets and fills the
// transaction counts and the exact stop point.
type Plan struct {
	Database     string    `json:"database"`
	Target       Target    `json:"-"`
	TargetText   string    `json:"target"`
	ChainID      string    `json:"chainId"`
	Full         Archive   `json:"full"`
	Incrementals []Archive `json:"incrementals"`

	// Filled by Prepare.
	TxCount        int64                `json:"txCount"`        // transactions to apply
	FirstCommitLSN uint64               `json:"-"`              // first transaction applied
	LastCommitLSN  uint64               `json:"-"`              // last transaction applied
	LSNRange       string               `json:"lsnRange"`       // first..last commit LSN applied
	LastCommitTime time.Time            `json:"lastCommitTime"` // its commit time
	StopLSN        uint64               `json:"-"`              // resolved LSN of an xid or name target
	Sequences      *changeset.Sequences `json:"-"`              // from the last archive used
	// SequenceChoices: what the chain's sequence reads tell of each
	// sequence at the target (seqat.go); nil without incremental archives.
	SequenceChoices map[string]SequenceChoice `json:"-"`

	// Window is the chain's recovery window as far as the plan's archives
	// reach; ChainEnd is set when the chain ended (replay never goes past
	// it); Gap is set for --latest when the state reached is older than
	// the newest backup activity of the database.
	Window   *Window   `json:"recoveryWindow,omitempty"`
	ChainEnd *ChainEnd `json:"chainEnd,omitempty"`
	Gap      *Gap      `json:"gap,omitempty"`
	// LargeObjects says how exact the restored large objects are (filled
	// by ApplyLargeObjects).
	LargeObjects *LargeObjectsReport `json:"largeObjects,omitempty"`
	segments     []segment
	prepared     bool
	stoppedIn    int    // index of the segment the last walk stopped in, -1 when it ran through
	nextAfter    uint64 // first commit LSN of the chain's archives after the plan's, 0 when none
	// reach is the end of the chain's archives that follow on from the
	// full backup without a gap, when they hold no commit after the
	// plan's (nextAfter 0): every commit before it is in those archives.
	reach uint64
}

// MarshalJSON renders the archive with its LSN range as X/Y text.
func (a Archive) MarshalJSON() ([]byte, error) {
	type out struct {
		Name     string `json:"name"`
		Path     string `json:"path"`
		StartLSN string `json:"startLsn"`
		EndLSN   string `json:"endLsn,omitempty"`
	}
	o := out{Name: a.Name, Path: a.Path, StartLSN: changeset.FormatLSN(a.StartLSN)}
	if a.EndLSN != 0 {
		o.EndLSN = changeset.FormatLSN(a.EndLSN)
	}
	return json.Marshal(o)
}

// StartLSN returns the chain's start: the full backup's consistent point.
func (p *Plan) StartLSN() uint64 { return p.Full.StartLSN }

// SystemIdentifier returns the source system identifier of the plan.
func (p *Plan) SystemIdentifier() string { return p.Full.Manifest.SystemIdentifier }

// chainOf returns the chain id and start LSN a full backup recorded for db.
func chainOf(m *archive.Manifest, db string) (string, uint64, bool) {
	if m == nil || m.ChainID == "" {
		return "", 0, false
	}
	ids, starts := strings.Split(m.ChainID, ","), strings.Split(m.StartLSN, ",")
	want, _ := m.Metadata["chain:"+db].(string)
	if want == "" && len(m.Databases) == 1 && m.Databases[0] == db && len(ids) == 1 {
		want = ids[0]
	}
	for i, id := range ids {
		if id == want && i < len(starts) {
			l, err := ParseLSN(starts[i])
			if err != nil {
				return "", 0, false
			}
			return id, l, true
		}
	}
	return "", 0, false
}

// fulls returns the full backups of db that started a chain, newest first.
func fulls(all []catalog.Backup, db string) []Archive {
	var out []Archive
	for _, b := range all {
		if b.Type != archive.KindFull || b.Manifest == nil || !slices.Contains(b.Manifest.Databases, db) {
			continue
		}
		if _, start, ok := chainOf(b.Manifest, db); ok {
			out = append(out, Archive{Name: b.Name, Path: b.Path, StartLSN: start, Manifest: b.Manifest})
		}
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].Manifest.Timestamp.After(out[j].Manifest.Timestamp) })
	return out
}

// MakePlan chooses, from the backups in backupDir, the newest full backup
// of db whose chain starts at or before the target, and that chain's
// incremental archives up to the one holding the target. It reads sidecar
// manifests only. For xid and name targets every chain that could hold the
// target is returned in order of preference by MakePlans.
func MakePlan(backupDir, db string, t Target) (*Plan, error) {
	plans, err := MakePlans(backupDir, db, t)
	if err != nil {
		return nil, err
	}
	return plans[0], nil
}

// MakePlans is MakePlan returning every candidate plan, best first: one for
// time, LSN and latest targets; one per chain (newest first) for xid and
// name targets, which only the change sets can place.
func MakePlans(backupDir, db string, t Target) ([]*Plan, error) {
	all, err := catalog.List(backupDir)
	if err != nil {
		return nil, err
	}
	cands := fulls(all, db)
	if t.Kind == Latest {
		if p := newerPlainFull(all, db, cands); p != nil {
			return []*Plan{p}, nil
		}
	}
	if len(cands) == 0 {
		return nil, fmt.Errorf("no full backup of database %s in %s started a change-capture chain, so no point-in-time restore is possible; check the warnings of `pme2go-backup list` (wal_level=logical, REPLICATION) and take a full backup", db, backupDir)
	}
	var plans []*Plan
	for _, f := range cands {
		switch t.Kind {
		case Time:
			if f.consistentTime(db).After(t.Time) {
				continue
			}
		case LSN:
			if f.StartLSN > t.LSN || (t.Exclusive && f.StartLSN == t.LSN) {
				continue
			}
		}
		p, err := assemble(all, db, f, t)
		if err != nil {
			return nil, err
		}
		plans = append(plans, p)
		if t.Kind != Xid && t.Kind != Name {
			break
		}
	}
	if len(plans) == 0 {
		oldest := cands[len(cands)-1]
		return nil, fmt.Errorf("target %s is before the oldest usable full backup %s (taken %s, consistent point %s); nothing older can be replayed: choose a later target",
			t, oldest.Name, oldest.Manifest.Timestamp.UTC().Format(time.RFC3339Nano), changeset.FormatLSN(oldest.StartLSN))
	}
	return plans, nil
}

// assemble links the incrementals of the full backup's chain in LSN order
// and keeps those the target needs, checking system identifier, timeline
// and continuity.
func assemble(all []catalog.Backup, db string, full Archive, t Target) (*Plan, error) {
	chainID, _, _ := chainOf(full.Manifest, db)
	p := &Plan{Database: db, Target: t, TargetText: t.String(), ChainID: chainID, Full: full}
	byName := map[string]bool{}
	var incs []Archive
	for _, b := range all {
		byName[b.Name] = true
		if b.Type != archive.KindIncremental || b.Manifest == nil || b.Manifest.ChainID != chainID {
			continue
		}
		m := b.Manifest
		if m.SystemIdentifier != full.Manifest.SystemIdentifier || m.Timeline != full.Manifest.Timeline {
			return nil, fmt.Errorf("incremental %s belongs to another PostgreSQL system (system identifier %s, timeline %d) than full backup %s (system identifier %s, timeline %d); remove or move it out of the backup directory and retry; nothing was restored",
				b.Name, m.SystemIdentifier, m.Timeline, full.Name, full.Manifest.SystemIdentifier, full.Manifest.Timeline)
		}
		s, err1 := ParseLSN(m.StartLSN)
		e, err2 := ParseLSN(m.EndLSN)
		if err1 != nil || err2 != nil {
			return nil, fmt.Errorf("incremental %s has an unreadable LSN range %q..%q in its manifest; run pme2go-backup verify", b.Name, m.StartLSN, m.EndLSN)
		}
		incs = append(incs, Archive{Name: b.Name, Path: b.Path, StartLSN: s, EndLSN: e, Manifest: m})
	}
	sort.SliceStable(incs, func(i, j int) bool { return incs[i].StartLSN < incs[j].StartLSN })
	expect, prev := full.StartLSN, full.Name
	var lastTime time.Time
	lastCommit := uint64(0)
	broken := ""
	for _, a := range incs {
		switch {
		case a.StartLSN > expect:
			missing := ""
			if a.Manifest.Previous != "" && a.Manifest.Previous != prev && !byName[a.Manifest.Previous] {
				missing = fmt.Sprintf("; archive %s, which %s follows, is missing", a.Manifest.Previous, a.Name)
			}
			return nil, fmt.Errorf("gap in chain %s: %s ends at %s but the next archive %s starts at %s%s; put the missing archive back or choose a target before %s; nothing was restored",
				chainID, prev, changeset.FormatLSN(expect), a.Name, changeset.FormatLSN(a.StartLSN), missing, changeset.FormatLSN(expect))
		case a.StartLSN < expect:
			return nil, fmt.Errorf("overlap in chain %s: %s ends at %s but %s starts earlier, at %s; one of them does not belong to this chain: move it out of the backup directory; nothing was restored",
				chainID, prev, changeset.FormatLSN(expect), a.Name, changeset.FormatLSN(a.StartLSN))
		}
		if !needs(p, t, lastCommit, lastTime) {
			break
		}
		p.Incrementals = append(p.Incrementals, a)
		if e := chainEndOf(chainID, a.Manifest); e != nil {
			p.ChainEnd = e
		}
		expect, prev = a.EndLSN, a.Name
		if l, err := ParseLSN(a.Manifest.LastCommitLSN); err == nil && a.Manifest.TxCount > 0 {
			lastCommit = l
			lastTime = *a.Manifest.LastCommitTime
		}
		if s := chain.Status(a.Manifest.ChainStatus()); s == chain.StatusBroken || s == chain.StatusSealed {
			broken = string(s)
			for _, w := range a.Manifest.Warnings {
				broken = w
			}
		}
	}
	// The archives after the plan's, as far as they follow on without a
	// gap: the first commit they hold, and the position up to which they
	// prove there is none.
	p.reach = expect
	for _, a := range incs[len(p.Incrementals):] {
		if a.StartLSN != p.reach {
			break
		}
		if l, err := ParseLSN(a.Manifest.FirstCommitLSN); err == nil && a.Manifest.TxCount > 0 {
			p.nextAfter = l
			break
		}
		p.reach = a.EndLSN
	}
	p.Window = p.window(expect, lastTime)
	if t.Kind == Latest {
		p.Gap = latestGap(all, p)
	}
	return p, checkReach(p, t, expect, lastCommit, lastTime, broken)
}

// latestGap compares the state --latest reaches with the newest backup
// activity of the database (the newest archive, restore safety backups
// left out): a chain that ended, or newer archives that belong to no
// usable chain, make --latest older than that activity.
func latestGap(all []catalog.Backup, p *Plan) *Gap {
	reached := p.Window.To
	used := map[string]bool{p.Full.Name: true}
	newestUsed := p.Full.Manifest.Timestamp
	for _, a := range p.Incrementals {
		used[a.Name] = true
		if a.Manifest.Timestamp.After(newestUsed) {
			newestUsed = a.Manifest.Timestamp
		}
	}
	var act time.Time
	unused := ""
	for _, b := range all {
		m := b.Manifest
		if m == nil || !containsDB(m, p.Database) || m.IsSafety() {
			continue
		}
		if m.Timestamp.After(act) {
			act = m.Timestamp
		}
		if !used[b.Name] && m.Timestamp.After(newestUsed) && unused == "" {
			unused = b.Name
		}
	}
	if !act.After(reached) {
		return nil
	}
	g := &Gap{Reached: reached, LastActivity: act, Seconds: act.Sub(reached).Seconds()}
	switch e := p.ChainEnd; {
	case e != nil:
		g.Reason = "chain " + e.ChainID + " ended: " + e.Reason
		g.Fix = FixNewerFull.Text
	case unused != "":
		g.Reason = "newer backup " + unused + " belongs to no usable chain"
		g.Fix = FixNewerFull.Text
	default:
		return nil
	}
	return g
}

// needs reports whether the target lies beyond what the archives so far
// hold, so that the next archive is needed.
func needs(p *Plan, t Target, lastCommit uint64, lastTime time.Time) bool {
	switch t.Kind {
	case Time:
		return len(p.Incrementals) == 0 || !lastTime.After(t.Time)
	case LSN:
		return len(p.Incrementals) == 0 || lastCommit < t.LSN
	}
	return true
}

// checkReach refuses targets past the chain's end or past the newest
// point the archived stream is known complete up to (the recovery window).
func checkReach(p *Plan, t Target, end, lastCommit uint64, lastTime time.Time, ended string) error {
	if e := p.ChainEnd; e != nil {
		past := false
		switch t.Kind {
		case Time:
			past = !e.Time.IsZero() && t.Time.After(e.Time)
		case LSN:
			past = t.LSN >= e.lsn
		}
		if past {
			return pastEnd(p, t)
		}
	}
	past := false
	switch t.Kind {
	case Time:
		past = t.Time.After(p.Window.To)
	case LSN:
		past = t.LSN > end
	}
	if !past {
		return nil
	}
	if p.Window != nil && t.Kind == Time {
		msg := fmt.Sprintf("target %s is after the recovery window of chain %s (%s .. %s): the archived change sets are not known complete past %s",
			t, p.ChainID, p.Window.From.UTC().Format(time.RFC3339Nano), p.Window.To.UTC().Format(time.RFC3339Nano), p.Window.To.UTC().Format(time.RFC3339Nano))
		if ended != "" && ended != "sealed" {
			msg += "; the chain ended before the target (" + ended + ")"
			return &TargetError{Code: CodeChainEnded, Message: msg, Fixes: []errs.Fix{FixNewerFull}, Window: p.Window}
		}
		return &TargetError{Code: CodeTargetPastWindow, Message: msg, Fixes: []errs.Fix{FixIncremental}, Window: p.Window}
	}
	newest := fmt.Sprintf("LSN %s", changeset.FormatLSN(end))
	if !lastTime.IsZero() {
		newest = fmt.Sprintf("time %s (last commit at LSN %s), LSN %s", lastTime.UTC().Format(time.RFC3339Nano), changeset.FormatLSN(lastCommit), changeset.FormatLSN(end))
	}
	msg := fmt.Sprintf("target %s is after the last captured commit of chain %s; the newest reachable point is %s", t, p.ChainID, newest)
	if ended != "" && ended != "sealed" {
		msg += "; the chain ended before the target (" + ended + ")"
		return &TargetError{Code: CodeChainEnded, Message: msg, Fixes: []errs.Fix{FixNewerFull}, Window: p.Window}
	}
	return &TargetError{Code: CodeTargetPastWindow, Message: msg, Window: p.Window,
		Fixes: []errs.Fix{FixIncremental, {Action: errs.ActLatest, Text: "restore the newest captured state instead"}}}
}

// pastEnd is the refusal of a target past the chain's end.
func pastEnd(p *Plan, t Target) error {
	e := p.ChainEnd
	msg := fmt.Sprintf("target %s is past the end of chain %s: the chain ended before the target (%s); its change sets are exact only up to LSN %s", t, e.ChainID, e.Reason, e.LSN)
	if !e.Time.IsZero() {
		msg += " (time " + e.Time.UTC().Format(time.RFC3339Nano) + ")"
	}
	return &TargetError{Code: CodeChainEnded, Message: msg, Fixes: []errs.Fix{FixNewerFull, FixCaptureDDL}, End: e, Window: p.Window}
}

// newerPlainFull returns a plan restoring only the newest full backup of db
// when that backup started no chain and is newer than what the newest
// chain reaches (--latest: the newest state any backup holds wins). Restore
// safety backups are left out.
func newerPlainFull(all []catalog.Backup, db string, cands []Archive) *Plan {
	var newest *catalog.Backup
	for i, b := range all {
		m := b.Manifest
		if b.Type != archive.KindFull || m == nil || !slices.Contains(m.Databases, db) || m.IsSafety() {
			continue
		}
		if newest == nil || m.Timestamp.After(newest.Manifest.Timestamp) {
			newest = &all[i]
		}
	}
	if newest == nil {
		return nil
	}
	if _, _, chained := chainOf(newest.Manifest, db); chained {
		return nil
	}
	if len(cands) > 0 {
		p, err := assemble(all, db, cands[0], Target{Kind: Latest})
		if err != nil || !newest.Manifest.Timestamp.After(p.Window.To) {
			return nil
		}
	}
	f := Archive{Name: newest.Name, Path: newest.Path, Manifest: newest.Manifest}
	ts := newest.Manifest.Timestamp
	return &Plan{Database: db, Target: Target{Kind: Latest}, TargetText: Target{Kind: Latest}.String(), Full: f,
		Window: &Window{From: ts, To: ts, ToLSN: changeset.FormatLSN(0)}}
}

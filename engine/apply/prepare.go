package apply

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/pme2go/pme2go-backup/engine/changeset"
)

// Build makes the plan for restoring db to target t from the backups in
// backupDir and prepares it (see Prepare), extracting change sets below
// workDir. Every error comes before anything is written to a database.
func Build(ctx context.Context, backupDir, db string, t Target, workDir string) (*Plan, error) {
	plans, err := MakePlans(backupDir, db, t)
	if err != nil {
		return nil, err
	}
	var notFound []string
	for _, p := range plans {
		err := p.Prepare(ctx, workDir)
		if errors.Is(err, errNotFound) {
			notFound = append(notFound, p.ChainID)
			continue
		}
		if err != nil {
			return nil, err
		}
		return p, nil
	}
	return nil, fmt.Errorf("target %s is not in the captured change sets of database %s (chains searched: %v); check the name or xid with pme2go-backup show-changes; nothing was restored", t, db, notFound)
}

var errNotFound = errors.New("target not found")

// Prepare verifies and extracts the plan's incremental archives below
// workDir, reads the change sets up to the target (checking that every
// segment belongs to the chain and continues it), resolves xid and name
// targets to the commit LSN of their transaction, keeps only the archives
// needed and counts the transactions to apply.
func (p *Plan) Prepare(ctx context.Context, workDir string) error {
	if err := p.extract(ctx, workDir); err != nil {
		return err
	}
	c := &counter{p: p}
	decide := p.decider(0)
	if p.Target.Kind == Xid || p.Target.Kind == Name {
		// Find the target even past a chain end, to refuse it by name.
		decide = func(*changeset.Begin) action { return doApply }
	}
	if err := p.walk(ctx, decide, c); err != nil {
		return err
	}
	if (p.Target.Kind == Xid || p.Target.Kind == Name) && !c.found {
		return errNotFound
	}
	if err := p.placeSequences(ctx, &c.seqCollector); err != nil {
		return err
	}
	if e := p.ChainEnd; e != nil && c.found && p.StopLSN >= e.lsn {
		return pastEnd(p, p.Target)
	}
	if c.found {
		p.trim(c.foundArchive)
	}
	if p.TxCount > 0 {
		p.LSNRange = changeset.FormatLSN(p.FirstCommitLSN) + ".." + changeset.FormatLSN(p.LastCommitLSN)
	}
	p.prepared = true
	return nil
}

// trim drops the archives after the one holding the target.
func (p *Plan) trim(last string) {
	for i, a := range p.Incrementals {
		if a.Name == last {
			p.Incrementals = p.Incrementals[:i+1]
			break
		}
	}
	for i, s := range p.segments {
		if s.archive == last && (i+1 == len(p.segments) || p.segments[i+1].archive != last) {
			p.segments = p.segments[:i+1]
			break
		}
	}
}

// counter counts the transactions a replay will apply and finds xid and
// name targets.
type counter struct {
	seqCollector
	p            *Plan
	tx           *changeset.Begin
	isTarget     bool
	found        bool
	foundArchive string
}

func (c *counter) begin(b *changeset.Begin) error {
	c.tx = b
	c.isTarget = c.p.Target.Kind == Xid && b.Xid == c.p.Target.Xid
	return nil
}

func (c *counter) change(*changeset.Change) error { return nil }

func (c *counter) message(b *changeset.Begin, m *changeset.Message) error {
	c.seqMessage(b, m, c.archiveOf(b.FinalLSN), true)
	if c.p.Target.Kind == Name && m.Prefix == changeset.MarkPrefix && string(m.Content) == c.p.Target.Name {
		c.isTarget = true
	}
	return nil
}

func (c *counter) commit(cm *changeset.Commit) error {
	p := c.p
	if c.isTarget {
		c.found = true
		p.StopLSN = cm.CommitLSN
		c.foundArchive = c.archiveOf(cm.CommitLSN)
		if p.Target.Exclusive {
			c.nextCommit(cm.CommitLSN) // the target itself is not applied
			return errStop
		}
	}
	p.TxCount++
	c.prev = cm.CommitLSN
	if p.FirstCommitLSN == 0 {
		p.FirstCommitLSN = cm.CommitLSN
	}
	p.LastCommitLSN, p.LastCommitTime = cm.CommitLSN, cm.CommitTime
	if c.isTarget {
		return errStop
	}
	return nil
}

// archiveOf names the incremental whose LSN range holds lsn.
func (c *counter) archiveOf(lsn uint64) string {
	for _, a := range c.p.Incrementals {
		if lsn >= a.StartLSN && lsn < a.EndLSN {
			return a.Name
		}
	}
	return c.p.Incrementals[len(c.p.Incrementals)-1].Name
}

// Describe renders the plan for --dry-run.
func (p *Plan) Describe() []string {
	out := []string{
		fmt.Sprintf("database %s, chain %s, target %s", p.Database, p.ChainID, p.Target),
		fmt.Sprintf("full backup %s (consistent point %s, taken %s)", p.Full.Name, changeset.FormatLSN(p.Full.StartLSN), p.Full.Manifest.Timestamp.UTC().Format(time.RFC3339Nano)),
	}
	for _, a := range p.Incrementals {
		out = append(out, fmt.Sprintf("incremental %s (%s..%s, %d transactions)", a.Name, changeset.FormatLSN(a.StartLSN), changeset.FormatLSN(a.EndLSN), a.Manifest.TxCount))
	}
	out = append(out, p.describeReach()...)
	if p.TxCount == 0 {
		out = append(out, "no transaction to replay: the result is the full backup")
	} else {
		out = append(out, fmt.Sprintf("replay %d transactions, commit LSN %s..%s, last commit at %s",
			p.TxCount, changeset.FormatLSN(p.FirstCommitLSN), changeset.FormatLSN(p.LastCommitLSN), p.LastCommitTime.UTC().Format(time.RFC3339Nano)))
	}
	return out
}

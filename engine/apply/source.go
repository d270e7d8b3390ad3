package apply

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/pme2go/pme2go-backup/engine/archive"
	"github.com/pme2go/pme2go-backup/engine/changeset"
)

// segment is one extracted change-set segment of a plan.
type segment struct {
	archive string
	path    string
}

// extract verifies the plan's incremental archives and unpacks them below
// workDir (one directory per archive, reused when already there), then
// checks each segment header against the chain.
func (p *Plan) extract(ctx context.Context, workDir string) error {
	p.segments = nil
	for i, a := range p.Incrementals {
		dir := filepath.Join(workDir, strings.TrimSuffix(a.Name, filepath.Ext(a.Name)))
		if _, err := os.Stat(filepath.Join(dir, archive.ManifestName)); err != nil {
			rep, err := archive.Verify(ctx, a.Path)
			if err != nil {
				return fmt.Errorf("verify %s: %w", a.Name, err)
			}
			if !rep.OK() {
				var msgs []string
				for _, pr := range rep.Problems {
					msgs = append(msgs, strings.TrimSpace(pr.Member+" "+pr.Message))
				}
				return fmt.Errorf("incremental %s failed verification (%s); restore it from another copy or choose a target before %s; nothing was restored",
					a.Name, strings.Join(msgs, "; "), changeset.FormatLSN(a.StartLSN))
			}
			os.RemoveAll(dir)
			if err := os.MkdirAll(dir, 0o700); err != nil {
				return fmt.Errorf("create extraction directory: %w", err)
			}
			if _, err := archive.Extract(ctx, a.Path, dir); err != nil {
				os.RemoveAll(dir)
				return err
			}
		}
		segs, _ := filepath.Glob(filepath.Join(dir, "changes", "*"))
		sort.Strings(segs)
		if len(segs) == 0 {
			return fmt.Errorf("incremental %s holds no change set (changes/ is empty); run pme2go-backup verify; nothing was restored", a.Name)
		}
		for _, s := range segs {
			p.segments = append(p.segments, segment{archive: a.Name, path: s})
		}
		if i == len(p.Incrementals)-1 {
			p.Sequences = readSequences(filepath.Join(dir, "sequences.json"))
		}
	}
	return nil
}

// checkHeader checks that a segment belongs to the plan's chain and
// starts where the previous one ended.
func (p *Plan) checkHeader(seg segment, h changeset.Header, expect uint64) error {
	if h.SystemIdentifier != p.SystemIdentifier() || h.Timeline != p.Full.Manifest.Timeline {
		return fmt.Errorf("incremental %s holds a change set from another PostgreSQL system (system identifier %s, timeline %d; the full backup %s has %s, timeline %d); remove it from the backup directory; nothing was restored",
			seg.archive, h.SystemIdentifier, h.Timeline, p.Full.Name, p.SystemIdentifier(), p.Full.Manifest.Timeline)
	}
	if h.ChainID != p.ChainID || h.Database != p.Database {
		return fmt.Errorf("incremental %s holds a change set of chain %s, database %s, not chain %s of database %s; remove it from the backup directory; nothing was restored",
			seg.archive, h.ChainID, h.Database, p.ChainID, p.Database)
	}
	if h.StartLSN != expect {
		return fmt.Errorf("change set %s in %s starts at %s, but the chain continues at %s: gap or overlap in the chain; nothing was restored",
			filepath.Base(seg.path), seg.archive, changeset.FormatLSN(h.StartLSN), changeset.FormatLSN(expect))
	}
	return nil
}

func readSequences(path string) *changeset.Sequences {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil
	}
	s := new(changeset.Sequences)
	if json.Unmarshal(b, s) != nil {
		return nil
	}
	return s
}

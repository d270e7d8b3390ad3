package apply

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pme2go/pme2go-backup/engine/capture"
	"github.com/pme2go/pme2go-backup/engine/chain"
)

// LargeObjectsReport says what a point-in-time restore did with large
// objects, which logical decoding does not carry. Capture records their
// complete state at each seal; the restore puts back the state recorded
// by the last archive it used, so they are exact as of AsOf (the seal),
// not per transaction.
type LargeObjectsReport struct {
	AsOf    time.Time `json:"asOf"`
	Count   int       `json:"count"`   // large objects in that state
	Written int       `json:"written"` // created or rewritten in the restored database
	Removed int       `json:"removed"` // unlinked (not in that state)
	// Exact is true when the state did not change between the capture
	// before the one used (or the full backup) and the one used: then it is
	// the state at the target.
	Exact bool `json:"exact"`
	// Note says how exact the state is, for the restore's output.
	Note string `json:"note"`
}

// loSegment returns the large-object directory extracted beside a segment.
func loSegment(seg segment) string {
	return filepath.Join(filepath.Dir(filepath.Dir(seg.path)), "largeobjects", filepath.Base(seg.path))
}

// ApplyLargeObjects brings the large objects of the database conn is
// connected to (the restored full backup, after replay) to a state the
// plan's archives recorded: for --latest the last one; for other targets
// the first taken at or after the target's time (the target time, or the
// last replayed commit's time), else the last. Capture records the state
// at each seal and, while streaming, whenever it changed (at most every
// capture.Options.LargeObjectInterval). It returns nil when the plan's
// archives recorded none (older archives, or capture without the right to
// read them).
func ApplyLargeObjects(ctx context.Context, conn *pgx.Conn, p *Plan) (*LargeObjectsReport, error) {
	type snap struct {
		idx *capture.LargeObjectIndex
		dir string
	}
	var snaps []snap
	data := map[uint32]map[string]string{} // oid -> md5 -> file
	add := func(archive, dir string) error {
		idx, err := capture.ReadLargeObjectIndex(dir)
		if err != nil {
			return fmt.Errorf("incremental %s: %w", archive, err)
		}
		if idx == nil {
			return nil
		}
		snaps = append(snaps, snap{idx, dir})
		for _, oid := range idx.Data {
			if data[oid] == nil {
				data[oid] = map[string]string{}
			}
			data[oid][idx.Objects[oid].MD5] = filepath.Join(dir, strconv.FormatUint(uint64(oid), 10))
		}
		return nil
	}
	for _, seg := range p.segments {
		dir := loSegment(seg)
		subs, _ := filepath.Glob(filepath.Join(dir, "s*"))
		sort.Strings(subs)
		for _, sub := range subs {
			if err := add(seg.archive, sub); err != nil {
				return nil, err
			}
		}
		if err := add(seg.archive, dir); err != nil {
			return nil, err
		}
	}
	if len(snaps) == 0 {
		return nil, nil
	}
	sort.SliceStable(snaps, func(i, j int) bool { return snaps[i].idx.Taken.Before(snaps[j].idx.Taken) })
	chosen, exact := len(snaps)-1, false
	if p.Target.Kind != Latest {
		at := p.Target.Time
		if p.Target.Kind != Time {
			at = p.LastCommitTime
		}
		for i, sn := range snaps {
			if !sn.idx.Taken.Before(at) {
				chosen = i
				break
			}
		}
		// The first capture at or after the target; but when the one
		// before it was still seen unchanged at the target, that one is
		// the state at the target.
		if s := snaps[chosen].idx.Since; chosen > 0 && !s.IsZero() && !at.After(s) {
			chosen, exact = chosen-1, true
		}
	}
	last := snaps[chosen].idx
	cur, err := chain.ReadLargeObjects(ctx, conn, "")
	if err != nil {
		return nil, err
	}
	rep := &LargeObjectsReport{AsOf: last.Taken, Count: len(last.Objects)}
	// The state recorded before it: the previous capture's, or the full
	// backup's (what was restored). Unchanged means exact at the target.
	prior := cur
	if chosen > 0 {
		prior = snaps[chosen-1].idx.Objects
	}
	rep.Exact = exact || sameObjects(prior, last.Objects)
	for oid := range cur {
		if _, ok := last.Objects[oid]; !ok {
			if _, err := conn.Exec(ctx, `SELECT pg_catalog.lo_unlink($1)`, oid); err != nil {
				return nil, fmt.Errorf("remove large object %d: %w", oid, err)
			}
			rep.Removed++
		}
	}
	for oid, want := range last.Objects {
		have, ok := cur[oid]
		if !ok || have.MD5 != want.MD5 {
			file := data[oid][want.MD5]
			if file == "" {
				return nil, fmt.Errorf("large object %d (md5 %s) is in the recorded state but its data is in no archive of the plan; run pme2go-backup verify", oid, want.MD5)
			}
			b, err := os.ReadFile(file)
			if err != nil {
				return nil, fmt.Errorf("read large object %d: %w", oid, err)
			}
			if ok {
				if _, err := conn.Exec(ctx, `SELECT pg_catalog.lo_unlink($1)`, oid); err != nil {
					return nil, fmt.Errorf("replace large object %d: %w", oid, err)
				}
			}
			if _, err := conn.Exec(ctx, `SELECT pg_catalog.lo_from_bytea($1, $2)`, oid, b); err != nil {
				return nil, fmt.Errorf("write large object %d: %w", oid, err)
			}
			rep.Written++
			have = chain.LargeObject{}
		}
		if want.Owner != "" && have.Owner != want.Owner {
			// The owner's role may not exist where the restore runs
			// (restore without globals): then the restorer keeps it.
			var exists bool
			conn.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = $1)`, want.Owner).Scan(&exists)
			if exists {
				if _, err := conn.Exec(ctx, fmt.Sprintf("ALTER LARGE OBJECT %d OWNER TO %s", oid, pgx.Identifier{want.Owner}.Sanitize())); err != nil {
					return nil, fmt.Errorf("give large object %d to %s: %w", oid, want.Owner, err)
				}
			}
		}
	}
	rep.Note = "large objects are restored as recorded at " + last.Taken.UTC().Format(time.RFC3339Nano) + " (captured at each seal and, while streaming, when they changed), not per transaction"
	if rep.Exact {
		rep.Note = "large objects did not change around the target (same state at the captures before and after it); restored as recorded at " + last.Taken.UTC().Format(time.RFC3339Nano)
	}
	p.LargeObjects = rep
	return rep, nil
}

func sameObjects(a, b chain.LargeObjects) bool {
	if len(a) != len(b) {
		return false
	}
	for oid, x := range a {
		if y, ok := b[oid]; !ok || x.MD5 != y.MD5 {
			return false
		}
	}
	return true
}

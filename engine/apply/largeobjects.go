package apply

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
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
	// Exact is true when the state did not change between the seal before
	// the target's archive (or the full backup) and the seal used: then it
	// is the state at the target.
	Exact bool `json:"exact"`
	// Note says how exact the state is, for the restore's output.
	Note string `json:"note"`
}

// loSegment returns the large-object directory extracted beside a segment.
func loSegment(seg segment) string {
	return filepath.Join(filepath.Dir(filepath.Dir(seg.path)), "largeobjects", filepath.Base(seg.path))
}

// ApplyLargeObjects brings the large objects of the database conn is
// connected to (the restored full backup, after replay) to the state the
// plan's last archive recorded. It returns nil when the plan's archives
// recorded none (older archives, or capture without the right to read
// them).
func ApplyLargeObjects(ctx context.Context, conn *pgx.Conn, p *Plan) (*LargeObjectsReport, error) {
	var last, before *capture.LargeObjectIndex
	lastArchive := ""
	if n := len(p.Incrementals); n > 0 {
		lastArchive = p.Incrementals[n-1].Name
	}
	data := map[uint32]map[string]string{} // oid -> md5 -> file
	for _, seg := range p.segments {
		dir := loSegment(seg)
		idx, err := capture.ReadLargeObjectIndex(dir)
		if err != nil {
			return nil, fmt.Errorf("incremental %s: %w", seg.archive, err)
		}
		if idx == nil {
			continue
		}
		if seg.archive != lastArchive {
			before = idx
		}
		last = idx
		for _, oid := range idx.Data {
			if data[oid] == nil {
				data[oid] = map[string]string{}
			}
			data[oid][idx.Objects[oid].MD5] = filepath.Join(dir, strconv.FormatUint(uint64(oid), 10))
		}
	}
	if last == nil {
		return nil, nil
	}
	cur, err := chain.ReadLargeObjects(ctx, conn, "")
	if err != nil {
		return nil, err
	}
	rep := &LargeObjectsReport{AsOf: last.Taken, Count: len(last.Objects)}
	// The state before the target's archive: the previous archive's, or
	// the full backup's (what was restored).
	prior := cur
	if before != nil {
		prior = before.Objects
	}
	rep.Exact = sameObjects(prior, last.Objects)
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
	rep.Note = "large objects are restored as recorded when the archive was sealed (" + last.Taken.UTC().Format(time.RFC3339Nano) + "), not per transaction"
	if rep.Exact {
		rep.Note = "large objects did not change around the target (same state at the seals before and after it); restored as recorded at " + last.Taken.UTC().Format(time.RFC3339Nano)
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

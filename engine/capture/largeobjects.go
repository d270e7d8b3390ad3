package capture

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/pme2go/pme2go-backup/engine/chain"
	"github.com/pme2go/pme2go-backup/engine/changeset"
	"github.com/pme2go/pme2go-backup/engine/crypt"
	"github.com/pme2go/pme2go-backup/engine/fsutil"
)

// LargeObjectsExt ends the directory beside a sealed segment that holds
// the large objects captured when it was sealed: index.json (LargeObjectIndex)
// and one file per new or changed object, named by its OID, with its data.
const LargeObjectsExt = ".lo"

// LargeObjectIndex is an index.json of a segment's large objects: the
// complete state of every large object when it was taken, and the OIDs
// whose data is stored beside it (new or changed since the previous
// capture; all of them when no earlier state was known). The one at the
// top of the segment's directory was taken at the seal; while streaming,
// a snapshot directory s<unix nanoseconds> holds one whenever the state
// changed.
type LargeObjectIndex struct {
	Taken time.Time `json:"taken"`
	// Since, when set, is the last time the previous captured state was
	// seen unchanged: the state changed after it (and by Taken).
	Since   time.Time          `json:"since,omitzero"`
	Objects chain.LargeObjects `json:"objects"`
	Data    []uint32           `json:"data"`
}

// LargeObjectsDir returns the large-object directory of the segment at path.
func LargeObjectsDir(segment string) string { return segment + LargeObjectsExt }

// captureLargeObjects writes the large objects' state beside the segment
// being sealed (index.json and data files at the top of its directory) and
// returns it, to be saved as the chain's new baseline once the seal is
// durable. Without the right to read large objects it logs a warning and
// captures nothing (nil, nil).
func (s *session) captureLargeObjects(ctx context.Context, segment string) (chain.LargeObjects, error) {
	now, err := chain.ReadLargeObjects(ctx, s.conn, "")
	if err != nil {
		s.opts.Log.Warn("large objects not captured", "database", s.st.Database, "error", err)
		return nil, nil
	}
	prev, err := s.st.LoadLargeObjects()
	if err != nil {
		return nil, err
	}
	dir := LargeObjectsDir(segment)
	// Streaming snapshots (subdirectories) stay; the seal's own files
	// are rewritten.
	if entries, err := os.ReadDir(dir); err == nil {
		for _, e := range entries {
			if !e.IsDir() {
				os.Remove(filepath.Join(dir, e.Name()))
			}
		}
	}
	if len(now) == 0 && len(prev) == 0 && prev != nil {
		return now, nil
	}
	if err := s.writeLargeObjects(ctx, dir, now, prev); err != nil {
		s.opts.Log.Warn("large objects not captured", "database", s.st.Database, "error", err)
		os.Remove(filepath.Join(dir, "index.json"))
		return nil, nil
	}
	s.loState, s.loSeen = now, time.Now().UTC()
	return now, nil
}

// streamLargeObjects records, while streaming, the large objects' state in
// a snapshot directory s<unix nanoseconds> below the open segment's
// large-object directory when it changed since the last capture, so that a
// restore can take the state nearest its target (see LargeObjectIndex).
func (s *session) streamLargeObjects(ctx context.Context) error {
	if s.loState == nil {
		prev, err := s.st.LoadLargeObjects()
		if err != nil || prev == nil {
			return err // no baseline yet: the seal carries everything
		}
		s.loState = prev
	}
	now, err := chain.ReadLargeObjects(ctx, s.conn, "")
	if err != nil {
		s.opts.Log.Warn("large objects not captured", "database", s.st.Database, "error", err)
		return nil
	}
	if sameLargeObjects(now, s.loState) {
		s.loSeen = time.Now().UTC()
		return nil
	}
	segment := filepath.Join(s.st.SegmentsDir(), SegmentName(s.segStart))
	dir := filepath.Join(LargeObjectsDir(segment), fmt.Sprintf("s%d", time.Now().UnixNano()))
	if err := s.writeLargeObjects(ctx, dir, now, s.loState); err != nil {
		os.RemoveAll(dir)
		return err
	}
	s.loState, s.loSeen = now, time.Now().UTC()
	return nil
}

func sameLargeObjects(a, b chain.LargeObjects) bool {
	if len(a) != len(b) {
		return false
	}
	for oid, x := range a {
		if y, ok := b[oid]; !ok || x != y {
			return false
		}
	}
	return true
}

// writeLargeObjects writes index.json (the complete state now) and the
// data of the objects new or changed since prev into dir.
func (s *session) writeLargeObjects(ctx context.Context, dir string, now, prev chain.LargeObjects) error {
	if err := fsutil.EnsurePrivateDir(filepath.Dir(dir)); err != nil {
		return fmt.Errorf("large objects directory: %w", err)
	}
	if err := fsutil.EnsurePrivateDir(dir); err != nil {
		return fmt.Errorf("large objects directory: %w", err)
	}
	idx := LargeObjectIndex{Taken: time.Now().UTC(), Objects: now}
	if s.loState != nil && !s.loSeen.IsZero() {
		idx.Since = s.loSeen
	}
	for oid, lo := range now {
		if old, ok := prev[oid]; ok && old.MD5 == lo.MD5 {
			continue
		}
		var data []byte
		if err := s.conn.QueryRow(ctx, `SELECT pg_catalog.lo_get($1)`, oid).Scan(&data); err != nil {
			var missing bool
			if s.conn.QueryRow(ctx, `SELECT NOT EXISTS (SELECT 1 FROM pg_catalog.pg_largeobject_metadata WHERE oid = $1)`, oid).Scan(&missing); missing {
				delete(now, oid) // unlinked meanwhile
				continue
			}
			return fmt.Errorf("read large object %d: %w", oid, err)
		}
		if chain.SumMD5(data) != lo.MD5 {
			lo.MD5, lo.Size = chain.SumMD5(data), int64(len(data))
			now[oid] = lo
		}
		if err := crypt.WriteFileAtomic(filepath.Join(dir, strconv.FormatUint(uint64(oid), 10)), data, 0o600); err != nil {
			return fmt.Errorf("store large object %d: %w", oid, err)
		}
		idx.Data = append(idx.Data, oid)
	}
	b, err := json.Marshal(idx)
	if err != nil {
		return fmt.Errorf("encode large objects index: %w", err)
	}
	if err := fsutil.WriteFileAtomic(filepath.Join(dir, "index.json"), b, 0o600); err != nil {
		return fmt.Errorf("store large objects index: %w", err)
	}
	return nil
}

// ReadLargeObjectIndex reads a segment's large-object index; nil when the
// segment has none.
func ReadLargeObjectIndex(dir string) (*LargeObjectIndex, error) {
	b, err := os.ReadFile(filepath.Join(dir, "index.json"))
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	idx := &LargeObjectIndex{}
	if err := json.Unmarshal(b, idx); err != nil {
		return nil, fmt.Errorf("large objects index %s is damaged: %w", dir, err)
	}
	return idx, nil
}

// largeObjectDDL reports whether a captured statement acts on large
// objects (ALTER LARGE OBJECT … OWNER TO, GRANT or REVOKE … ON LARGE
// OBJECT, COMMENT ON LARGE OBJECT, SECURITY LABEL … ON LARGE OBJECT).
// Large objects are not in the change stream: such a statement is not
// stored for replay (it would fail there, or act on the state of the full
// backup), as their owners, privileges and comments are captured with
// their state at each seal and streaming interval and restored with it.
func largeObjectDDL(stmt string) bool {
	for _, st := range changeset.SplitStatements(stmt) {
		w := st.Words
		if len(w) > 12 {
			w = w[:12]
		}
		for i := 0; i+1 < len(w); i++ {
			if w[i] == "LARGE" && w[i+1] == "OBJECT" && i > 0 && (w[i-1] == "ON" || (i == 1 && w[0] == "ALTER")) {
				return true
			}
		}
	}
	return false
}

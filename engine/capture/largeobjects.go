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
	"github.com/pme2go/pme2go-backup/engine/fsutil"
)

// LargeObjectsExt ends the directory beside a sealed segment that holds
// the large objects captured when it was sealed: index.json (LargeObjectIndex)
// and one file per new or changed object, named by its OID, with its data.
const LargeObjectsExt = ".lo"

// LargeObjectIndex is the index.json of a segment's large objects: the
// complete state of every large object when the segment was sealed, and
// the OIDs whose data is stored beside it (new or changed since the
// previous seal; all of them when no earlier state was known).
type LargeObjectIndex struct {
	Taken   time.Time          `json:"taken"`
	Objects chain.LargeObjects `json:"objects"`
	Data    []uint32           `json:"data"`
}

// LargeObjectsDir returns the large-object directory of the segment at path.
func LargeObjectsDir(segment string) string { return segment + LargeObjectsExt }

// captureLargeObjects writes the large objects' state beside the segment
// being sealed and returns it, to be saved as the chain's new baseline once
// the seal is durable. Without the right to read large objects it logs a
// warning and captures nothing (nil, nil).
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
	os.RemoveAll(dir)
	if len(now) == 0 && len(prev) == 0 && prev != nil {
		return now, nil
	}
	if err := fsutil.EnsurePrivateDir(dir); err != nil {
		return nil, fmt.Errorf("large objects of segment %s: %w", segment, err)
	}
	idx := LargeObjectIndex{Taken: time.Now().UTC(), Objects: now}
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
			s.opts.Log.Warn("large objects not captured", "database", s.st.Database, "object", oid, "error", err)
			os.RemoveAll(dir)
			return nil, nil
		}
		if chain.SumMD5(data) != lo.MD5 {
			lo.MD5, lo.Size = chain.SumMD5(data), int64(len(data))
			now[oid] = lo
		}
		if err := fsutil.WriteFileAtomic(filepath.Join(dir, strconv.FormatUint(uint64(oid), 10)), data, 0o600); err != nil {
			return nil, fmt.Errorf("store large object %d: %w", oid, err)
		}
		idx.Data = append(idx.Data, oid)
	}
	b, err := json.Marshal(idx)
	if err != nil {
		return nil, fmt.Errorf("encode large objects index: %w", err)
	}
	if err := fsutil.WriteFileAtomic(filepath.Join(dir, "index.json"), b, 0o600); err != nil {
		return nil, fmt.Errorf("store large objects index: %w", err)
	}
	return now, nil
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

package chain

import (
	"context"
	"crypto/md5"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/jackc/pgx/v5"
)

// LargeObject is the state of one large object: the MD5 of its data, its
// size in bytes, its owner, its ACL (text form of
// pg_largeobject_metadata.lomacl, "" for the default) and its comment.
type LargeObject struct {
	MD5     string `json:"md5"`
	Size    int64  `json:"size"`
	Owner   string `json:"owner"`
	ACL     string `json:"acl,omitempty"`
	Comment string `json:"comment,omitempty"`
}

// LargeObjects maps large object OIDs to their state.
type LargeObjects map[uint32]LargeObject

// ReadLargeObjects reads the state of every large object of the connected
// database (pg_largeobject_metadata, lo_get), at the exported snapshot when
// one is given. Reading needs SELECT on each object (or superuser, or
// lo_compat_privileges).
func ReadLargeObjects(ctx context.Context, conn *pgx.Conn, snapshot string) (LargeObjects, error) {
	tx, err := conn.BeginTx(ctx, pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly})
	if err != nil {
		return nil, fmt.Errorf("read large objects: %w", err)
	}
	defer tx.Rollback(context.Background())
	if snapshot != "" {
		if _, err := tx.Exec(ctx, "SET TRANSACTION SNAPSHOT '"+snapshot+"'"); err != nil {
			return nil, fmt.Errorf("read large objects at snapshot %s: %w", snapshot, err)
		}
	}
	rows, err := tx.Query(ctx, `SELECT oid, md5(d), length(d), owner, acl, comment FROM (
	   SELECT m.oid, pg_catalog.lo_get(m.oid) AS d, pg_catalog.pg_get_userbyid(m.lomowner)::text AS owner,
	          coalesce(m.lomacl::text, '') AS acl, coalesce(pg_catalog.obj_description(m.oid, 'pg_largeobject'), '') AS comment
	     FROM pg_catalog.pg_largeobject_metadata m) s`)
	if err != nil {
		return nil, fmt.Errorf("read large objects: %w", err)
	}
	out := LargeObjects{}
	for rows.Next() {
		var oid uint32
		var lo LargeObject
		if err := rows.Scan(&oid, &lo.MD5, &lo.Size, &lo.Owner, &lo.ACL, &lo.Comment); err != nil {
			return nil, fmt.Errorf("read large objects: %w", err)
		}
		out[oid] = lo
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read large objects (the role needs SELECT on every large object, or superuser): %w", err)
	}
	return out, nil
}

// LoadLargeObjects reads the large objects' state recorded at the last
// seal (or the chain's start); nil when none was recorded.
func (s *State) LoadLargeObjects() (LargeObjects, error) {
	b, err := os.ReadFile(filepath.Join(s.dir, "largeobjects.json"))
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("chain %s: read largeobjects.json: %w", s.ID, err)
	}
	los := LargeObjects{}
	if err := json.Unmarshal(b, &los); err != nil {
		return nil, nil // damaged: the next seal carries every object
	}
	return los, nil
}

// SaveLargeObjects writes largeobjects.json atomically.
func (s *State) SaveLargeObjects(los LargeObjects) error {
	return s.saveJSON("largeobjects.json", "large objects", los)
}

// SumMD5 returns the hex MD5 of data, as PostgreSQL's md5() prints it.
func SumMD5(data []byte) string {
	h := md5.Sum(data)
	return hex.EncodeToString(h[:])
}

package chain

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/jackc/pgx/v5"

	"github.com/pme2go/pme2go-backup/engine/changeset"
	"github.com/pme2go/pme2go-backup/engine/fsutil"
)

// Column is one published column as pgoutput describes it.
type Column struct {
	Name    string `json:"name"`
	TypeOID uint32 `json:"typeOid"`
	TypMod  int32  `json:"typmod"`
}

// TableDef is the known definition of one table: its columns and the LSN
// at which that definition was recorded (0: the chain's snapshot).
type TableDef struct {
	Columns []Column `json:"columns"`
	Since   uint64   `json:"since"`
}

// Same reports whether d and o have the same columns, in order.
func (d TableDef) Same(o TableDef) bool {
	if len(d.Columns) != len(o.Columns) {
		return false
	}
	for i := range d.Columns {
		if d.Columns[i] != o.Columns[i] {
			return false
		}
	}
	return true
}

// TableKey is the key of a table in a Schema: "schema"."name", always quoted.
func TableKey(schema, name string) string {
	return changeset.QuoteIdent(schema) + "." + changeset.QuoteIdent(name)
}

// Schema is what the capture knows of the published tables, keyed by
// TableKey, so that a changed definition (DDL) is noticed even
// when the first change after it is the first one captured. It is stored as
// relations.json in the chain directory.
type Schema struct {
	Tables map[string]TableDef `json:"tables"`
	// DDLAt is the LSN of the last pme2go.ddl message captured (CAPTURE_DDL).
	DDLAt uint64 `json:"ddlAt,omitempty"`
}

// LoadSchema reads the chain's relations.json; a missing file is an empty
// schema.
func (s *State) LoadSchema() (*Schema, error) {
	sc := &Schema{Tables: map[string]TableDef{}}
	b, err := os.ReadFile(filepath.Join(s.dir, "relations.json"))
	if errors.Is(err, os.ErrNotExist) {
		return sc, nil
	}
	if err != nil {
		return nil, fmt.Errorf("chain %s: read relations.json: %w", s.ID, err)
	}
	if err := json.Unmarshal(b, sc); err != nil {
		return nil, fmt.Errorf("chain %s: relations.json is damaged: %w", s.ID, err)
	}
	if sc.Tables == nil {
		sc.Tables = map[string]TableDef{}
	}
	return sc, nil
}

// SaveSchema writes relations.json atomically.
func (s *State) SaveSchema(sc *Schema) error {
	b, err := json.Marshal(sc)
	if err != nil {
		return fmt.Errorf("chain %s: encode relations: %w", s.ID, err)
	}
	if err := fsutil.WriteFileAtomic(filepath.Join(s.dir, "relations.json"), b, 0o600); err != nil {
		return fmt.Errorf("chain %s: write relations.json: %w", s.ID, err)
	}
	return nil
}

// snapshotSchema reads the column lists of every published table as of the
// exported snapshot (the state the full backup dumps).
func snapshotSchema(ctx context.Context, conn *pgx.Conn, snapshot string) (*Schema, error) {
	tx, err := conn.BeginTx(ctx, pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly})
	if err != nil {
		return nil, fmt.Errorf("read table definitions: %w", err)
	}
	defer tx.Rollback(context.Background())
	if _, err := tx.Exec(ctx, "SET TRANSACTION SNAPSHOT '"+snapshot+"'"); err != nil {
		return nil, fmt.Errorf("read table definitions at snapshot %s: %w", snapshot, err)
	}
	rows, err := tx.Query(ctx, `
SELECT n.nspname, c.relname, a.attname, a.atttypid, a.atttypmod
  FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
  JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped AND a.attgenerated = ''
 WHERE c.relkind = 'r' AND c.relpersistence = 'p'
   AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg\_%'
 ORDER BY 1, a.attnum`)
	if err != nil {
		return nil, fmt.Errorf("read table definitions: %w", err)
	}
	sc := &Schema{Tables: map[string]TableDef{}}
	for rows.Next() {
		var nsp, rel string
		var col Column
		if err := rows.Scan(&nsp, &rel, &col.Name, &col.TypeOID, &col.TypMod); err != nil {
			return nil, fmt.Errorf("read table definitions: %w", err)
		}
		table := TableKey(nsp, rel)
		d := sc.Tables[table]
		d.Columns = append(d.Columns, col)
		sc.Tables[table] = d
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read table definitions: %w", err)
	}
	return sc, nil
}

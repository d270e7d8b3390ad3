package chain

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"

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
	// Touched maps the OID of each object captured DDL created, altered or
	// dropped to the LSN of the last such DDL message; Privileges maps
	// each object type of captured GRANT, REVOKE and ALTER DEFAULT
	// PRIVILEGES ("TABLE", …) to the LSN of the last one. LegacyAt is the
	// LSN of the last DDL message that did not say what it touched (event
	// triggers installed by older versions): it explains any difference
	// before it, as those versions did.
	Touched    map[uint32]uint64 `json:"touched,omitempty"`
	Privileges map[string]uint64 `json:"privileges,omitempty"`
	LegacyAt   uint64            `json:"legacyAt,omitempty"`
}

// Touch records what one captured DDL message at lsn touched.
func (sc *Schema) Touch(lsn uint64, known bool, oids []uint32, grants []string) {
	sc.DDLAt = max(sc.DDLAt, lsn)
	if !known {
		sc.LegacyAt = max(sc.LegacyAt, lsn)
		return
	}
	if sc.Touched == nil && len(oids) > 0 {
		sc.Touched = map[uint32]uint64{}
	}
	for _, o := range oids {
		sc.Touched[o] = max(sc.Touched[o], lsn)
	}
	if sc.Privileges == nil && len(grants) > 0 {
		sc.Privileges = map[string]uint64{}
	}
	for _, g := range grants {
		sc.Privileges[g] = max(sc.Privileges[g], lsn)
	}
}

// TouchedSince reports whether captured DDL after LSN since touched oid
// (or a DDL message that does not say what it touched came after since).
func (sc *Schema) TouchedSince(oid uint32, since uint64) bool {
	return sc.LegacyAt > since || sc.Touched[oid] > since
}

// grantKinds maps the object types PostgreSQL reports for GRANT, REVOKE and
// ALTER DEFAULT PRIVILEGES to the kinds of catalog print entries whose
// privileges they change.
var grantKinds = map[string][]string{
	"TABLE": {"relation"}, "SEQUENCE": {"relation"}, "FUNCTION": {"function"}, "PROCEDURE": {"function"},
	"ROUTINE": {"function"}, "SCHEMA": {"schema"}, "TYPE": {"type"}, "DOMAIN": {"type"},
	"LANGUAGE": {"language"}, "FOREIGN DATA WRAPPER": {"foreign-data"}, "FOREIGN SERVER": {"server"},
}

// PrivilegesSince reports whether captured GRANT, REVOKE or ALTER DEFAULT
// PRIVILEGES after LSN since may have changed privileges of catalog print
// entries of this kind (see Kind). ALTER DEFAULT PRIVILEGES is reported
// with the plural object type it is for ("TABLES"): it explains changed
// default privileges.
func (sc *Schema) PrivilegesSince(kind string, since uint64) bool {
	if sc.LegacyAt > since {
		return true
	}
	for t, at := range sc.Privileges {
		if at <= since {
			continue
		}
		if (kind == "default" && strings.HasSuffix(t, "S")) || slices.Contains(grantKinds[t], kind) {
			return true
		}
	}
	return false
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
	return s.saveJSON("relations.json", "relations", sc)
}

// saveJSON writes v as JSON into the chain's state directory atomically
// (file mode 0600); what names the content in errors.
func (s *State) saveJSON(file, what string, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("chain %s: encode %s: %w", s.ID, what, err)
	}
	if err := fsutil.WriteFileAtomic(filepath.Join(s.dir, file), b, 0o600); err != nil {
		return fmt.Errorf("chain %s: write %s: %w", s.ID, file, err)
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

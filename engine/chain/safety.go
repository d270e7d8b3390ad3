package chain

import (
	"context"
	"fmt"
	"strings"

	"github.com/jackc/pgx/v5"
)

// Unsafe is a table a FOR ALL TABLES publication would publish although it
// has no replica identity: once published, its UPDATEs and DELETEs fail.
type Unsafe struct {
	Table string // schema-qualified, quoted as format('%I.%I') does
	Index string // a unique index usable as replica identity, or ""
	Fix   string // the ALTER TABLE statement that makes it safe
}

// ReplicaIdentityError lists the tables that stop a chain from starting.
type ReplicaIdentityError struct {
	Database string
	Tables   []Unsafe
}

// Error implements error; the message carries one fix per table.
func (e *ReplicaIdentityError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "database %s: %d table(s) have no primary key and no replica identity; publishing them would make their UPDATE and DELETE fail, so no change capture was started. Run:\n", e.Database, len(e.Tables))
	for _, t := range e.Tables {
		fmt.Fprintf(&b, "  %s\n", t.Fix)
	}
	b.WriteString("or set REPLICA_IDENTITY_FIX=full to let pme2go-backup give them REPLICA IDENTITY FULL")
	return b.String()
}

// UnsafeTables lists the permanent tables of the connected database that
// have neither a primary key (with REPLICA IDENTITY DEFAULT) nor another
// replica identity, with the fix for each: USING INDEX when a unique,
// non-partial index on NOT NULL columns exists, FULL otherwise.
func UnsafeTables(ctx context.Context, conn *pgx.Conn) ([]Unsafe, error) {
	rows, err := conn.Query(ctx, `
SELECT format('%I.%I', n.nspname, c.relname),
       coalesce((SELECT format('%I', ic.relname)
                   FROM pg_index i JOIN pg_class ic ON ic.oid = i.indexrelid
                  WHERE i.indrelid = c.oid AND i.indisunique AND i.indimmediate AND i.indisvalid
                    AND i.indpred IS NULL AND i.indexprs IS NULL
                    AND NOT EXISTS (SELECT 1 FROM pg_attribute a
                                     WHERE a.attrelid = c.oid AND a.attnum = ANY (i.indkey) AND NOT a.attnotnull)
                  ORDER BY ic.relname LIMIT 1), '')
  FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
 WHERE c.relkind = 'r' AND c.relpersistence = 'p'
   AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg\_%'
   AND (c.relreplident = 'n'
        OR (c.relreplident = 'd' AND NOT EXISTS (SELECT 1 FROM pg_index p WHERE p.indrelid = c.oid AND p.indisprimary)))
 ORDER BY 1`)
	if err != nil {
		return nil, fmt.Errorf("list tables without replica identity: %w", err)
	}
	var out []Unsafe
	for rows.Next() {
		var u Unsafe
		if err := rows.Scan(&u.Table, &u.Index); err != nil {
			return nil, fmt.Errorf("list tables without replica identity: %w", err)
		}
		u.Fix = "ALTER TABLE " + u.Table + " REPLICA IDENTITY FULL;"
		if u.Index != "" {
			u.Fix = "ALTER TABLE " + u.Table + " REPLICA IDENTITY USING INDEX " + u.Index + ";"
		}
		out = append(out, u)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list tables without replica identity: %w", err)
	}
	return out, nil
}

// checkSafety refuses (or, with REPLICA_IDENTITY_FIX=full, fixes) tables
// without replica identity. It returns the tables it altered.
func checkSafety(ctx context.Context, conn *pgx.Conn, db, fix string) ([]string, error) {
	unsafe, err := UnsafeTables(ctx, conn)
	if err != nil || len(unsafe) == 0 {
		return nil, err
	}
	if fix != "full" {
		return nil, &ReplicaIdentityError{Database: db, Tables: unsafe}
	}
	var fixed []string
	for _, u := range unsafe {
		if _, err := conn.Exec(ctx, "ALTER TABLE "+u.Table+" REPLICA IDENTITY FULL"); err != nil {
			return fixed, fmt.Errorf("REPLICA_IDENTITY_FIX=full: set REPLICA IDENTITY FULL on %s: %w; run it by hand as the table owner", u.Table, err)
		}
		fixed = append(fixed, u.Table)
	}
	return fixed, nil
}

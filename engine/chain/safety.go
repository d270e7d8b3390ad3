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

// UnsafeTables lists the permanent tables of the connected database
// (regular tables, partitions, and partitioned tables, whose future
// partitions would inherit the lack) that have neither a primary key (with
// REPLICA IDENTITY DEFAULT) nor another working replica identity, with the
// fix for each: USING INDEX when a unique,
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
 WHERE c.relkind IN ('r', 'p') AND c.relpersistence = 'p'
   AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg\_%'
   AND n.nspname !~ '^pme2go_[0-9a-f]{8}$'
   AND NOT CASE c.relreplident
             WHEN 'f' THEN true
             WHEN 'i' THEN EXISTS (SELECT 1 FROM pg_index i WHERE i.indrelid = c.oid AND i.indisreplident)
             WHEN 'd' THEN EXISTS (SELECT 1 FROM pg_index p WHERE p.indrelid = c.oid AND p.indisprimary)
             ELSE false END
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

// publishedTablesSQL selects the tables a chain's publication lists (as
// schema-qualified, quoted names): every permanent regular table that is
// not a partition, and every partitioned table that is not itself a
// partition (its partitions, present and future, are published through it
// under their own names: publish_via_partition_root stays off, so replay
// writes each row into the partition that holds it on the source).
// Temporary and unlogged tables are never published (PostgreSQL cannot
// publish unlogged ones), nor system schemas and the pme2go_<id8> schemas.
const publishedTablesSQL = `
SELECT format('%I.%I', n.nspname, c.relname)
  FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
 WHERE c.relkind IN ('r', 'p') AND NOT c.relispartition AND c.relpersistence = 'p'
   AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg\_%'
   AND n.nspname !~ '^pme2go_[0-9a-f]{8}$'
 ORDER BY 1`

// createPublication creates the chain's publication listing every table
// publishedTablesSQL selects, each with ONLY (an inheritance child is a
// table of its own, listed by itself). New tables are added by the event
// trigger as they appear.
func createPublication(ctx context.Context, conn *pgx.Conn, name string) error {
	tx, err := conn.Begin(ctx)
	if err != nil {
		return fmt.Errorf("create publication %s: %w", name, err)
	}
	defer tx.Rollback(context.Background())
	if _, err := tx.Exec(ctx, "CREATE PUBLICATION "+pgx.Identifier{name}.Sanitize()); err != nil {
		return fmt.Errorf("create publication %s: %w", name, err)
	}
	rows, err := tx.Query(ctx, publishedTablesSQL)
	if err != nil {
		return fmt.Errorf("list the tables to publish: %w", err)
	}
	tables, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return fmt.Errorf("list the tables to publish: %w", err)
	}
	for len(tables) > 0 {
		n := min(len(tables), 500)
		if _, err := tx.Exec(ctx, "ALTER PUBLICATION "+pgx.Identifier{name}.Sanitize()+" ADD TABLE ONLY "+strings.Join(tables[:n], ", ONLY ")); err != nil {
			return fmt.Errorf("add tables to publication %s (the role must own them, or be superuser): %w", name, err)
		}
		tables = tables[n:]
	}
	if err := tx.Commit(ctx); err != nil {
		return fmt.Errorf("create publication %s: %w", name, err)
	}
	return nil
}

// unpublishedAt lists the tables publishedTablesSQL selects at the
// exported snapshot that the publication does not list (directly), at that
// same snapshot: tables created while the chain was starting, which neither
// the list nor the event trigger caught.
func unpublishedAt(ctx context.Context, conn *pgx.Conn, snapshot, pub string) ([]string, error) {
	tx, err := conn.BeginTx(ctx, pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly})
	if err != nil {
		return nil, err
	}
	defer tx.Rollback(context.Background())
	if _, err := tx.Exec(ctx, "SET TRANSACTION SNAPSHOT '"+snapshot+"'"); err != nil {
		return nil, err
	}
	rows, err := tx.Query(ctx, `SELECT t FROM (`+publishedTablesSQL+`) x(t)
	 WHERE t::regclass NOT IN (SELECT pr.prrelid FROM pg_publication_rel pr JOIN pg_publication p ON p.oid = pr.prpubid WHERE p.pubname = $1)`, pub)
	if err != nil {
		return nil, fmt.Errorf("compare the publication with the tables: %w", err)
	}
	return pgx.CollectRows(rows, pgx.RowTo[string])
}

// NoTriggersError refuses a chain that would run without event triggers
// (DB_USER is not a superuser, or they could not be installed) while
// REPLICA_IDENTITY_FIX is not full: nothing could then keep a published
// table that later loses its key from making its UPDATE and DELETE fail.
type NoTriggersError struct {
	Database string
	Why      string // why there are no event triggers
}

// Error implements error, with the two fixes.
func (e *NoTriggersError) Error() string {
	return "database " + e.Database + ": no change capture started: " + e.Why + ", and without event triggers a published table that later loses its key " +
		"(ALTER TABLE … DROP CONSTRAINT …_pkey, DROP INDEX of its replica identity index) would make its UPDATE and DELETE fail until the chain ends. " +
		"Set REPLICA_IDENTITY_FIX=full (every published table then gets REPLICA IDENTITY FULL at the chain's start, so that losing a key breaks no write; " +
		"each UPDATE and DELETE then writes the whole old row to the WAL), or use a superuser DB_USER (event triggers keep the publication safe)"
}

// fullIdentityWithoutTriggers prepares a chain that runs without event
// triggers (REPLICA_IDENTITY_FIX=full, see NoTriggersError): it refuses
// when a partitioned table has no primary key (a partition created or
// attached later, published through it, would have no replica identity,
// and nothing could take it out of the publication), and gives every
// permanent table (regular, partitioned, partitions) REPLICA IDENTITY FULL,
// which PostgreSQL accepts for UPDATE and DELETE whatever keys the table
// has or loses later. It returns the tables it altered.
func fullIdentityWithoutTriggers(ctx context.Context, conn *pgx.Conn, db string) ([]string, error) {
	rows, err := conn.Query(ctx, `
SELECT format('%I.%I', n.nspname, c.relname)
  FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
 WHERE c.relkind = 'p' AND c.relpersistence = 'p'
   AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg\_%'
   AND n.nspname !~ '^pme2go_[0-9a-f]{8}$'
   AND NOT EXISTS (SELECT 1 FROM pg_index i WHERE i.indrelid = c.oid AND i.indisprimary)
 ORDER BY 1`)
	if err != nil {
		return nil, fmt.Errorf("list partitioned tables without a primary key: %w", err)
	}
	nokey, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, fmt.Errorf("list partitioned tables without a primary key: %w", err)
	}
	if len(nokey) > 0 {
		return nil, fmt.Errorf("database %s: no change capture started: partitioned table(s) %s have no primary key; without event triggers (a superuser DB_USER), a partition created or attached later would be published without a replica identity and its UPDATE and DELETE would fail. Give them a primary key, or use a superuser DB_USER",
			db, strings.Join(nokey, ", "))
	}
	rows, err = conn.Query(ctx, `
SELECT format('%I.%I', n.nspname, c.relname)
  FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
 WHERE c.relkind IN ('r', 'p') AND c.relpersistence = 'p' AND c.relreplident <> 'f'
   AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg\_%'
   AND n.nspname !~ '^pme2go_[0-9a-f]{8}$'
 ORDER BY 1`)
	if err != nil {
		return nil, fmt.Errorf("list tables without REPLICA IDENTITY FULL: %w", err)
	}
	tables, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, fmt.Errorf("list tables without REPLICA IDENTITY FULL: %w", err)
	}
	for i, t := range tables {
		if _, err := conn.Exec(ctx, "ALTER TABLE "+t+" REPLICA IDENTITY FULL"); err != nil {
			return tables[:i], fmt.Errorf("REPLICA_IDENTITY_FIX=full without event triggers: set REPLICA IDENTITY FULL on %s: %w; run it as the table's owner, or use a superuser DB_USER", t, err)
		}
	}
	return tables, nil
}

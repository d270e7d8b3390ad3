package restore

import (
	"context"
	"fmt"
	"log/slog"
	"strconv"
	"strings"

	"github.com/jackc/pgx/v5"

	"github.com/pme2go/pme2go-backup/engine/apply"
	"github.com/pme2go/pme2go-backup/engine/pgclient"
)

// Tables loaded with their owner's privileges.
//
// pg_restore loads table data with COPY as the restoring role (a
// superuser), and COPY evaluates the table's CHECK constraints, generated
// columns and the domain constraints of its columns' types. When one of
// them calls a function of a role that is not a superuser, that role's
// code runs as the superuser: a table owner could make itself superuser
// with a CHECK constraint on its own table, as soon as its table is
// restored by a plain pg_restore (tested: it does). Index expressions are
// not concerned (PostgreSQL builds indexes with the table owner's
// privileges, in a security-restricted operation), nor are triggers, rules
// and policies (created after the data).
//
// So the restore loads such tables (apply.UntrustedTablesSQL, the tables
// replay writes through their owner too) the way replay writes them: after
// the pre-data section, each is renamed aside and a plain table of text
// columns under its name takes pg_restore's COPY, where no user code runs;
// then, before the post-data section, a SECURITY DEFINER function owned by
// the table's owner (where PostgreSQL refuses SET ROLE and SET SESSION
// AUTHORIZATION) inserts the rows into the real table, casting each value
// from its text form as COPY would have read it, on a connection of its own
// that is closed right after; the stand-in, the function and the schema
// holding it are dropped and the table gets its name back. All of it
// happens in the scratch database, which nobody else can connect to.

// loadSchema holds the owner functions of the data load, in the scratch
// database only and only during the load.
const loadSchema = "pme2go_load"

// ownerTable is a table loaded through its owner.
type ownerTable struct {
	oid                    uint32
	schema, name, aside    string // aside: its name while the stand-in has its own
	ownerIdent             string
	cols, casts, standCols []string // quoted names; "name::type"; "name text"
}

// setAsideOwnerTables renames the tables of db whose data would run a
// non-superuser's code aside and creates their stand-ins; it returns them.
func setAsideOwnerTables(ctx context.Context, target pgclient.Target, db string, log *slog.Logger) ([]ownerTable, error) {
	conn, err := target.Connect(ctx, db)
	if err != nil {
		return nil, err
	}
	defer conn.Close(context.Background())
	if _, err := conn.Exec(ctx, "SET search_path = pg_catalog, pg_temp"); err != nil {
		return nil, err
	}
	var super bool
	if err := conn.QueryRow(ctx, `SELECT rolsuper FROM pg_roles WHERE rolname = current_user`).Scan(&super); err != nil {
		return nil, err
	}
	if !super {
		return nil, nil // its own privileges are all a table owner's code gets
	}
	rows, err := conn.Query(ctx, `SELECT c.oid, u.nspname, u.relname, u.owner
		FROM (`+apply.UntrustedTablesSQL+`) AS u(nspname, relname, ownerid, owner)
		JOIN pg_namespace n ON n.nspname = u.nspname
		JOIN pg_class c ON c.relnamespace = n.oid AND c.relname = u.relname
		WHERE c.relkind = 'r' ORDER BY 2, 3`)
	if err != nil {
		return nil, fmt.Errorf("find the tables whose data runs their owner's code: %w", err)
	}
	var ts []ownerTable
	for rows.Next() {
		var t ownerTable
		if err := rows.Scan(&t.oid, &t.schema, &t.name, &t.ownerIdent); err != nil {
			rows.Close()
			return nil, err
		}
		t.aside = "pme2go_load_" + strconv.FormatUint(uint64(t.oid), 10)
		ts = append(ts, t)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("find the tables whose data runs their owner's code: %w", err)
	}
	if len(ts) == 0 {
		return nil, nil
	}
	tx, err := conn.Begin(ctx)
	if err != nil {
		return nil, err
	}
	defer tx.Rollback(context.Background())
	for i := range ts {
		t := &ts[i]
		rows, err := tx.Query(ctx, `SELECT pg_catalog.quote_ident(attname), pg_catalog.format_type(atttypid, atttypmod)
			FROM pg_attribute WHERE attrelid = $1 AND attnum > 0 AND NOT attisdropped AND attgenerated = '' ORDER BY attnum`, t.oid)
		if err != nil {
			return nil, err
		}
		for rows.Next() {
			var name, typ string
			if err := rows.Scan(&name, &typ); err != nil {
				rows.Close()
				return nil, err
			}
			t.cols = append(t.cols, name)
			t.casts = append(t.casts, name+"::"+typ)
			t.standCols = append(t.standCols, name+" pg_catalog.text")
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return nil, err
		}
		q := qualifiedName(t.schema, t.name)
		if _, err := tx.Exec(ctx, "ALTER TABLE "+q+" RENAME TO "+ident(t.aside)); err != nil {
			return nil, fmt.Errorf("set table %s aside for its owner's data load: %w", q, err)
		}
		if _, err := tx.Exec(ctx, "CREATE TABLE "+q+" ("+strings.Join(t.standCols, ", ")+")"); err != nil {
			return nil, fmt.Errorf("create the stand-in of table %s: %w", q, err)
		}
		log.Debug("table loaded with its owner's privileges (its data runs the owner's code)", "database", db, "table", q)
	}
	if err := tx.Commit(ctx); err != nil {
		return nil, err
	}
	return ts, nil
}

// loadOwnerTables moves the rows pg_restore loaded into the stand-ins into
// the real tables with their owners' privileges, and puts the tables back
// under their names.
func loadOwnerTables(ctx context.Context, target pgclient.Target, db string, ts []ownerTable) error {
	if len(ts) == 0 {
		return nil
	}
	conn, err := target.Connect(ctx, db)
	if err != nil {
		return err
	}
	defer conn.Close(context.Background())
	if _, err := conn.Exec(ctx, "SET search_path = pg_catalog, pg_temp"); err != nil {
		return err
	}
	if _, err := conn.Exec(ctx, "CREATE SCHEMA "+loadSchema); err != nil {
		return fmt.Errorf("create schema %s for the data load (drop it from the source if it is not ours): %w", loadSchema, err)
	}
	for _, t := range ts {
		stand, real := qualifiedName(t.schema, t.name), qualifiedName(t.schema, t.aside)
		fn := loadSchema + ".load_" + strconv.FormatUint(uint64(t.oid), 10)
		into := real + " (" + strings.Join(t.cols, ", ") + ")"
		if len(t.cols) == 0 {
			into = real // a table without columns, or with generated ones only
		}
		// Column names win over the variable's (a column may be named
		// like it).
		body := "#variable_conflict use_column\nDECLARE pme2go_rows pg_catalog.int8; BEGIN INSERT INTO " + into + " OVERRIDING SYSTEM VALUE SELECT " +
			strings.Join(t.casts, ", ") + " FROM " + stand + "; GET DIAGNOSTICS pme2go_rows = ROW_COUNT; RETURN pme2go_rows; END"
		for _, q := range []string{
			"CREATE FUNCTION " + fn + "() RETURNS pg_catalog.int8 LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS " + quoteLit(body),
			"REVOKE ALL ON FUNCTION " + fn + "() FROM PUBLIC",
			"ALTER FUNCTION " + fn + "() OWNER TO " + t.ownerIdent,
			"GRANT SELECT ON " + stand + " TO " + t.ownerIdent,
		} {
			if _, err := conn.Exec(ctx, q); err != nil {
				return fmt.Errorf("prepare the data load of %s with its owner's privileges: %w", stand, err)
			}
		}
		// On a connection of its own: the owner's code may change the
		// session (settings, prepared statements); it is closed after.
		if err := func() error {
			c, err := target.Connect(ctx, db)
			if err != nil {
				return err
			}
			defer c.Close(context.Background())
			_, err = c.Exec(ctx, "SELECT "+fn+"()")
			return err
		}(); err != nil {
			return fmt.Errorf("load table %s with the privileges of its owner %s: %w", stand, t.ownerIdent, err)
		}
		for _, q := range []string{
			"DROP FUNCTION " + fn + "()",
			"DROP TABLE " + stand,
			"ALTER TABLE " + real + " RENAME TO " + ident(t.name),
		} {
			if _, err := conn.Exec(ctx, q); err != nil {
				return fmt.Errorf("finish the data load of %s: %w", stand, err)
			}
		}
	}
	if _, err := conn.Exec(ctx, "DROP SCHEMA "+loadSchema); err != nil {
		return fmt.Errorf("drop schema %s after the data load: %w", loadSchema, err)
	}
	return nil
}

// qualifiedName quotes schema.name.
func qualifiedName(schema, name string) string {
	return pgx.Identifier{schema, name}.Sanitize()
}

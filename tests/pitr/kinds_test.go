package pitr_test

import (
	"testing"

	"github.com/pme2go/pme2go-backup/tests/pgharness"
)

// kindsSetup creates what the objects of TestCatalogKinds need, before
// the full backup: a table, a composite type with a function to text (for
// a cast), a comparison function (for an operator), an event trigger
// function.
const kindsSetup = `CREATE ROLE kinds_reader;
	CREATE TABLE t (id int PRIMARY KEY, a int, b int); INSERT INTO t VALUES (1, 1, 1);
	CREATE TYPE pair AS (x int, y int);
	CREATE FUNCTION pair_text(pair) RETURNS text LANGUAGE sql IMMUTABLE AS 'SELECT ($1).x || '','' || ($1).y';
	CREATE FUNCTION int_eq3(int, int) RETURNS boolean LANGUAGE sql IMMUTABLE AS 'SELECT $1 = $2';
	CREATE FUNCTION et_fn() RETURNS event_trigger LANGUAGE plpgsql AS 'BEGIN NULL; END';
	CREATE SEQUENCE s`

// kindChanges are changes that no row change reveals and that the
// catalog print must see, each with the print entry it names.
var kindChanges = []struct {
	name, sql, names string
	uncaptured       bool // event triggers do not fire for it
}{
	{"statistics object", `CREATE STATISTICS t_ab (dependencies) ON a, b FROM t`, "statistics public.t_ab created", false},
	{"collation", `CREATE COLLATION c_copy FROM "C"`, "collation public.c_copy", false},
	{"operator", `CREATE OPERATOR === (LEFTARG = int, RIGHTARG = int, FUNCTION = int_eq3)`, "operator public.===(integer,integer) created", false},
	{"cast", `CREATE CAST (pair AS text) WITH FUNCTION pair_text(pair)`, "cast (public.pair AS text) created", false},
	{"event trigger", `CREATE EVENT TRIGGER et ON ddl_command_start EXECUTE FUNCTION et_fn()`, "event trigger et created", true},
	{"column statistics target", `ALTER TABLE t ALTER COLUMN a SET STATISTICS 300`, "relation-details public.t changed", false},
	{"index comment", `COMMENT ON INDEX t_pkey IS 'the key'`, "relation-details public.t changed", false},
	{"default privileges", `ALTER DEFAULT PRIVILEGES GRANT SELECT ON TABLES TO kinds_reader`, "default privileges", false},
	{"table privileges", `GRANT SELECT ON t TO kinds_reader`, "relation public.t changed", false},
	{"sequence owner", `ALTER SEQUENCE s OWNED BY t.a`, "relation-details public.s changed", false},
	{"extension comment", `COMMENT ON EXTENSION plpgsql IS 'procedures'`, "extension-details plpgsql changed", false},
	{"database setting", `ALTER DATABASE app SET work_mem = '7MB'`, "database app changed", true},
	{"publication of the user", `CREATE PUBLICATION user_pub FOR TABLE t`, "publication user_pub created", false},
}

// TestCatalogKinds: without DDL capture, a change of each kind of object
// the catalog print covers (statistics objects, collations, operators,
// casts, event triggers, column statistics targets, comments of indexes,
// default privileges, privileges, the column owning a sequence, extension
// comments, database settings, publications of the user) ends the chain at the next seal naming
// it, and --latest restores the state before it (data and schema). With
// DDL capture, such changes replay (the restored schema equals the
// source), except event triggers and database settings, which PostgreSQL
// does not fire event triggers for: the chain ends.
func TestCatalogKinds(t *testing.T) {
	c := pgharness.Start(t)
	c.CreateDB(t, "app")
	c.Exec(t, "app", kindsSetup)

	t.Run("without DDL capture", func(t *testing.T) {
		e := newEnv(t, c, "CAPTURE_DDL=false")
		for i, k := range kindChanges {
			t.Run(k.name, func(t *testing.T) {
				e.full(t)
				want, wantSchema := sums(t, c, "app"), schemaOf(t, c, "app")
				c.Exec(t, "app", k.sql)
				c.Exec(t, "app", `INSERT INTO t VALUES ($1, 0, 0)`, 100+i)
				chainEnds(t, e, k.names, "without DDL capture")
				if i == 0 {
					latestIs(t, e, "r_kind", want, wantSchema, true)
				}
			})
		}
	})

	c.Exec(t, "app", `DROP EVENT TRIGGER et`)
	c.Exec(t, "app", `ALTER DATABASE app RESET work_mem`)
	t.Run("with DDL capture", func(t *testing.T) {
		e := newEnv(t, c, "CAPTURE_DDL=true")
		e.full(t)
		c.Exec(t, "app", `DROP STATISTICS t_ab; DROP COLLATION c_copy; DROP OPERATOR === (int, int); DROP CAST (pair AS text);
			ALTER TABLE t ALTER COLUMN a SET STATISTICS -1; COMMENT ON INDEX t_pkey IS NULL;
			ALTER DEFAULT PRIVILEGES REVOKE SELECT ON TABLES FROM kinds_reader; REVOKE SELECT ON t FROM kinds_reader;
			ALTER SEQUENCE s OWNED BY NONE; COMMENT ON EXTENSION plpgsql IS 'PL/pgSQL procedural language'; DROP PUBLICATION user_pub`)
		for _, k := range kindChanges {
			if !k.uncaptured {
				c.Exec(t, "app", k.sql)
			}
		}
		c.Exec(t, "app", `INSERT INTO t VALUES (200, 2, 2)`)
		e.incremental(t)
		latestIs(t, e, "r_kinds_ddl", sums(t, c, "app"), schemaOf(t, c, "app"), false)

		want, wantSchema := sums(t, c, "app"), schemaOf(t, c, "app")
		c.Exec(t, "app", `CREATE EVENT TRIGGER et ON ddl_command_start EXECUTE FUNCTION et_fn()`)
		chainEnds(t, e, "event trigger et created", "did not capture")
		latestIs(t, e, "r_kinds_et", want, wantSchema, true)
	})
}

package pitr_test

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/pme2go/pme2go-backup/engine/apply"
	"github.com/pme2go/pme2go-backup/engine/capture"
	"github.com/pme2go/pme2go-backup/engine/incremental"
	"github.com/pme2go/pme2go-backup/tests/pgharness"
)

// chainEnds runs an incremental and checks that it ends the chain with a
// reason holding each of want.
func chainEnds(t *testing.T, e *env, want ...string) {
	t.Helper()
	_, err := incremental.Take(context.Background(), e.cfg, incremental.Options{})
	if !errors.Is(err, capture.ErrChainEnded) {
		t.Fatalf("incremental: %v, want the chain ended", err)
	}
	for _, w := range want {
		if !strings.Contains(err.Error(), w) {
			t.Fatalf("chain end %q does not say %q", err, w)
		}
	}
	t.Logf("chain ended: %v", err)
}

// latestIs restores --latest into db and compares data and schema with
// the source state recorded before (want, wantSchema); gap says whether
// the plan must report a gap (the chain ended).
func latestIs(t *testing.T, e *env, db string, want map[string]pgharness.TableSum, wantSchema string, gap bool) {
	t.Helper()
	res, err := e.restoreTo(context.Background(), apply.Target{Kind: apply.Latest}, db)
	if err != nil {
		t.Fatalf("restore --latest: %v", err)
	}
	same(t, db, want, sums(t, e.c, db))
	sameSchema(t, db, wantSchema, schemaOf(t, e.c, db))
	if gap != (res.PITR != nil && res.PITR.Gap != nil) {
		t.Fatalf("%s: gap %+v, want a gap: %v", db, res.PITR.Gap, gap)
	}
}

// TestDDLMatchedToObjects: with DDL capture, a catalog difference (or a
// changed relation description in the stream) is accepted only when
// captured DDL touched that object; other DDL captured in the same
// interval does not explain it. Captured DDL of many kinds explains its
// own differences, including those it causes in dependent objects (a
// renamed column in a view, a renamed schema in a column's type, a column
// added to a partitioned table or an inheritance parent in the partitions
// and children, whose row changes then show it).
func TestDDLMatchedToObjects(t *testing.T) {
	c := pgharness.Start(t)
	c.CreateDB(t, "app")
	c.Exec(t, "app", `CREATE ROLE reader;
		CREATE SCHEMA s1; CREATE TYPE s1.mood AS ENUM ('a', 'b');
		CREATE TABLE t (id int PRIMARY KEY, v text); INSERT INTO t VALUES (1, 'a');
		CREATE TABLE u (id int PRIMARY KEY, m s1.mood); INSERT INTO u VALUES (1, 'a');
		CREATE VIEW vt AS SELECT id, v FROM t;
		CREATE TABLE pt (id int, k int, PRIMARY KEY (id, k)) PARTITION BY LIST (k);
		CREATE TABLE pt1 PARTITION OF pt FOR VALUES IN (1); INSERT INTO pt VALUES (1, 1);
		CREATE TABLE par (id int PRIMARY KEY); CREATE TABLE chi (c int) INHERITS (par); ALTER TABLE chi ADD PRIMARY KEY (id);
		INSERT INTO chi VALUES (1, 1)`)
	e := newEnv(t, c, "CAPTURE_DDL=true")

	t.Run("captured DDL explains its own changes", func(t *testing.T) {
		e.full(t)
		for _, q := range []string{
			`ALTER TABLE t RENAME COLUMN v TO v2`,
			`CREATE INDEX t_v2 ON t (v2)`,
			`COMMENT ON TABLE t IS 'the table'; COMMENT ON COLUMN t.v2 IS 'a column'`,
			`GRANT SELECT ON t TO reader; GRANT UPDATE (v2) ON t TO reader`,
			`ALTER DEFAULT PRIVILEGES GRANT SELECT ON TABLES TO reader`,
			`CREATE STATISTICS t_st (ndistinct) ON id, v2 FROM t`,
			`ALTER TABLE t ALTER COLUMN v2 SET STATISTICS 500`,
			`ALTER TYPE s1.mood ADD VALUE 'c'`,
			`ALTER SCHEMA s1 RENAME TO s2`,
			`DROP INDEX t_v2`,
			`ALTER TABLE pt ADD COLUMN extra text DEFAULT 'x'`,
			`INSERT INTO pt VALUES (5, 1, 'y'); UPDATE pt SET extra = 'z' WHERE id = 1`,
			`ALTER TABLE par ADD COLUMN z int`,
			`INSERT INTO chi VALUES (2, 2, 2); UPDATE chi SET z = 1 WHERE id = 1`,
			`INSERT INTO t VALUES (2, 'b'); INSERT INTO u VALUES (2, 'c')`,
		} {
			c.Exec(t, "app", q)
		}
		e.incremental(t)
		latestIs(t, e, "r_explained", sums(t, c, "app"), schemaOf(t, c, "app"), false)
	})

	t.Run("uncaptured ALTER beside unrelated captured DDL, then a row change", func(t *testing.T) {
		want, wantSchema := sums(t, c, "app"), schemaOf(t, c, "app")
		c.Exec(t, "app", `CREATE TABLE unrelated2 (id int PRIMARY KEY);
			SET session_replication_role = replica; ALTER TABLE t ADD COLUMN hidden4 int DEFAULT 13; RESET session_replication_role;
			INSERT INTO t (id, v2) VALUES (6, 'f')`)
		chainEnds(t, e, `"public"."t"`)
		latestIs(t, e, "r_hidden4", want, wantSchema, true)
	})

	t.Run("uncaptured ALTER beside unrelated captured DDL, no row change", func(t *testing.T) {
		e.full(t)
		want, wantSchema := sums(t, c, "app"), schemaOf(t, c, "app")
		c.Exec(t, "app", `CREATE TABLE unrelated3 (id int PRIMARY KEY)`)
		c.Exec(t, "app", `SET session_replication_role = replica; ALTER TABLE t ADD COLUMN hidden5 int DEFAULT 1`)
		chainEnds(t, e, "relation public.t changed", "did not capture")
		latestIs(t, e, "r_hidden5", want, wantSchema, true)
	})

	t.Run("uncaptured COMMENT beside a captured COMMENT on another table", func(t *testing.T) {
		e.full(t)
		c.Exec(t, "app", `COMMENT ON TABLE u IS 'captured'`)
		c.Exec(t, "app", `SET session_replication_role = replica; COMMENT ON TABLE t IS 'hidden'`)
		chainEnds(t, e, "relation public.t changed")
	})
}

// TestPublicationTampered: a table taken out of the chain's publication
// by hand (its later changes would be lost) ends the chain at the last
// proven point, with and without DDL capture; the restore of --latest
// equals the source before it.
func TestPublicationTampered(t *testing.T) {
	c := pgharness.Start(t)
	c.CreateDB(t, "app")
	c.Exec(t, "app", `CREATE TABLE t (id int PRIMARY KEY, v text); CREATE TABLE u (id int PRIMARY KEY); INSERT INTO t VALUES (1, 'a')`)
	for i, mode := range []string{"true", "false"} {
		t.Run("CAPTURE_DDL="+mode, func(t *testing.T) {
			e := newEnv(t, c, "CAPTURE_DDL="+mode)
			e.full(t)
			var pub string
			if err := c.Conn(t, "app").QueryRow(context.Background(), `SELECT pubname FROM pg_publication p WHERE pubname LIKE 'pme2go%' AND EXISTS (SELECT 1 FROM pg_publication_tables pt WHERE pt.pubname = p.pubname AND pt.tablename = 't') ORDER BY oid DESC LIMIT 1`).Scan(&pub); err != nil {
				t.Fatal(err)
			}
			if mode == "true" {
				c.Exec(t, "app", `CREATE TABLE other`+mode+` (id int PRIMARY KEY)`) // captured DDL, on another table
			}
			// The chain is exact up to here: the event trigger's guard
			// ends it at the ALTER PUBLICATION.
			want, wantSchema := sums(t, c, "app"), schemaOf(t, c, "app")
			c.Exec(t, "app", `ALTER PUBLICATION `+pub+` DROP TABLE t`)
			c.Exec(t, "app", `INSERT INTO t VALUES ($1, 'lost')`, 10+i)
			c.Exec(t, "app", `INSERT INTO u VALUES ($1)`, 10+i)
			// The event trigger's guard names the statement; without the
			// triggers (a role that is not a superuser), the catalog
			// comparison names the table.
			_, err := incremental.Take(context.Background(), e.cfg, incremental.Options{})
			if !errors.Is(err, capture.ErrChainEnded) || !(strings.Contains(err.Error(), "relation-details public.t changed") || strings.Contains(err.Error(), "publication was changed")) {
				t.Fatalf("incremental after the table left the publication: %v, want the chain ended", err)
			}
			latestIs(t, e, "r_pubtamper_"+mode, want, wantSchema, true)
		})
	}
}

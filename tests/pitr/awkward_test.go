package pitr_test

import (
	"context"
	"testing"

	"github.com/pme2go/pme2go-backup/engine/apply"
	"github.com/pme2go/pme2go-backup/tests/pgharness"
)

// TestAwkwardColumns: row changes after the full backup of tables whose
// columns logical decoding treats specially replay exactly: an identity
// column GENERATED ALWAYS (inserted and updated), a stored generated
// column (never sent by pgoutput: recomputed), a dropped column (never
// sent), a domain over an array, a table with REPLICA IDENTITY FULL and no
// key, and a table whose replica identity changed to an index before the
// full backup. The restore is compared with the source: data and schema.
func TestAwkwardColumns(t *testing.T) {
	c := pgharness.Start(t)
	c.CreateDB(t, "app")
	c.Exec(t, "app", `CREATE DOMAIN intlist AS int[] CHECK (cardinality(VALUE) < 10);
		CREATE TABLE ident (id int GENERATED ALWAYS AS IDENTITY PRIMARY KEY, v text);
		CREATE TABLE gen (id int PRIMARY KEY, a int, twice int GENERATED ALWAYS AS (a * 2) STORED);
		CREATE TABLE dropped (id int PRIMARY KEY, gone text, v text); ALTER TABLE dropped DROP COLUMN gone;
		CREATE TABLE arr (id int PRIMARY KEY, l intlist, m text[][]);
		CREATE TABLE nokey (a int, b text); ALTER TABLE nokey REPLICA IDENTITY FULL;
		CREATE TABLE byidx (id int NOT NULL, v text); CREATE UNIQUE INDEX byidx_id ON byidx (id); ALTER TABLE byidx REPLICA IDENTITY USING INDEX byidx_id;
		INSERT INTO ident (v) VALUES ('a'), ('b');
		INSERT INTO gen VALUES (1, 1), (2, 2);
		INSERT INTO dropped VALUES (1, 'a');
		INSERT INTO arr VALUES (1, '{1,2}', '{{a,b},{c,d}}');
		INSERT INTO nokey VALUES (1, 'a'), (1, 'a'), (2, 'b');
		INSERT INTO byidx VALUES (1, 'a'), (2, 'b')`)
	for _, mode := range []string{"false", "true"} {
		t.Run("CAPTURE_DDL="+mode, func(t *testing.T) {
			e := newEnv(t, c, "CAPTURE_DDL="+mode)
			e.full(t)
			c.Exec(t, "app", `INSERT INTO ident (v) VALUES ('c');
				UPDATE ident SET v = 'bb' WHERE id = 2;
				INSERT INTO ident OVERRIDING SYSTEM VALUE VALUES (100, 'forced');
				UPDATE ident SET id = DEFAULT WHERE id = 1;
				DELETE FROM ident WHERE id = 100;
				INSERT INTO gen VALUES (3, 3); UPDATE gen SET a = 20 WHERE id = 2; DELETE FROM gen WHERE id = 1;
				INSERT INTO dropped VALUES (2, 'b'); UPDATE dropped SET v = 'aa' WHERE id = 1;
				INSERT INTO arr VALUES (2, '{3}', '{{e}}'); UPDATE arr SET l = l || 9 WHERE id = 1;
				UPDATE nokey SET b = 'c' WHERE a = 2; DELETE FROM nokey WHERE a = 1 AND ctid = (SELECT min(ctid) FROM nokey WHERE a = 1);
				UPDATE byidx SET v = 'bb' WHERE id = 2; UPDATE byidx SET id = 3 WHERE id = 1`)
			want, wantSchema := sums(t, c, "app"), schemaOf(t, c, "app")
			e.incremental(t)
			db := "r_awkward_" + mode
			if _, err := e.restoreTo(context.Background(), apply.Target{Kind: apply.Latest}, db); err != nil {
				t.Fatal(err)
			}
			same(t, db, want, sums(t, c, db))
			sameSchema(t, db, wantSchema, schemaOf(t, c, db))
		})
	}
}

package pitr_test

import (
	"testing"

	"github.com/pme2go/pme2go-backup/tests/pgharness"
)

// TestCreateTableAsThenKey: CREATE TABLE AS makes a table without a key,
// and its rows are written before the event trigger can publish it, so
// they are never decoded. Without REPLICA_IDENTITY_FIX the table cannot be
// published (its UPDATE and DELETE would fail): the chain ends at the
// CREATE TABLE AS even when the next statement adds a primary key, with a
// reason that says so and what to do; --latest restores the state before
// it (data and schema) and reports the gap. With REPLICA_IDENTITY_FIX=full
// the table is published at once, replay runs the statement again (its
// query is deterministic here) and the key, and the restore equals the
// source.
func TestCreateTableAsThenKey(t *testing.T) {
	c := pgharness.Start(t)
	c.CreateDB(t, "app")
	c.Exec(t, "app", `CREATE TABLE src (id int PRIMARY KEY, v text); INSERT INTO src SELECT g, 'v' || g FROM generate_series(1, 50) g`)
	const ctas = `CREATE TABLE n AS SELECT id, v FROM src WHERE id <= 20; ALTER TABLE n ADD PRIMARY KEY (id)`

	t.Run("without REPLICA_IDENTITY_FIX", func(t *testing.T) {
		e := newEnv(t, c, "CAPTURE_DDL=true", "REPLICA_IDENTITY_FIX=")
		e.full(t)
		c.Exec(t, "app", `INSERT INTO src VALUES (51, 'before')`)
		e.incremental(t)
		want, wantSchema := sums(t, c, "app"), schemaOf(t, c, "app")
		c.Exec(t, "app", ctas)
		c.Exec(t, "app", `INSERT INTO n VALUES (100, 'after'); UPDATE src SET v = 'x' WHERE id = 1`)
		chainEnds(t, e, "public.n", "CREATE TABLE AS", "create the table with its key first")
		latestIs(t, e, "r_ctas_end", want, wantSchema, true)
		c.Exec(t, "app", `DROP TABLE n`)
	})

	t.Run("with REPLICA_IDENTITY_FIX=full", func(t *testing.T) {
		e := newEnv(t, c, "CAPTURE_DDL=true", "REPLICA_IDENTITY_FIX=full")
		e.full(t)
		c.Exec(t, "app", ctas)
		c.Exec(t, "app", `INSERT INTO n VALUES (100, 'after'); UPDATE n SET v = 'y' WHERE id = 2; DELETE FROM n WHERE id = 3`)
		e.incremental(t)
		latestIs(t, e, "r_ctas_full", sums(t, c, "app"), schemaOf(t, c, "app"), false)
	})
}

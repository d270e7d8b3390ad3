package pitr_test

import (
	"context"
	"strings"
	"testing"

	"github.com/pme2go/pme2go-backup/engine/apply"
	"github.com/pme2go/pme2go-backup/engine/chain"
	"github.com/pme2go/pme2go-backup/engine/config"
	"github.com/pme2go/pme2go-backup/tests/pgharness"
)

// TestTwoInstallations (issue 6 item 3): two installations (two
// BACKUP_DIRs) back up the same database with DDL capture on; each one's
// cleanup leaves the other's slot, publication and triggers alone; each
// replays every DDL statement exactly once, and both point-in-time restores
// equal the source.
func TestTwoInstallations(t *testing.T) {
	c := pgharness.Start(t)
	c.CreateDB(t, "app")
	c.Exec(t, "app", `CREATE TABLE t (id serial PRIMARY KEY, v text); INSERT INTO t (v) VALUES ('seed')`)
	a, b := newEnv(t, c), newEnv(t, c)
	idA, _ := config.InstallationShortID(a.cfg)
	idB, _ := config.InstallationShortID(b.cfg)
	if idA == idB {
		t.Fatal("two installations share an id")
	}
	a.full(t)
	b.full(t)
	c.Exec(t, "app", `CREATE TABLE shared (id int PRIMARY KEY, note text); INSERT INTO shared VALUES (1, 'one')`)
	c.Exec(t, "app", `ALTER TABLE t ADD COLUMN extra int DEFAULT 3; UPDATE t SET extra = 4 WHERE id = 1`)
	c.Exec(t, "app", `INSERT INTO t (v) SELECT 'x' || g FROM generate_series(1, 20) g; DELETE FROM shared`)
	ctx := context.Background()
	for _, e := range []*env{a, b} {
		dropped, err := chain.DropOrphans(ctx, e.cfg)
		if err != nil || len(dropped) != 0 {
			t.Fatalf("cleanup dropped %+v: %v", dropped, err)
		}
		others, err := chain.Others(ctx, e.cfg)
		if err != nil || len(others) < 3 { // the other's slot, publication and schema
			t.Fatalf("other installation's objects: %+v %v", others, err)
		}
	}
	var slots int
	c.Conn(t, "app").QueryRow(ctx, `SELECT count(*) FROM pg_replication_slots WHERE slot_name LIKE 'pme2go\_%'`).Scan(&slots)
	if slots != 2 {
		t.Fatalf("%d slots after both cleanups, want 2", slots)
	}
	want, wantSchema := sums(t, c, "app"), ddlSchemaOf(t, c, "app")
	for i, e := range []*env{a, b} {
		e.incremental(t)
		db := []string{"r_inst_a", "r_inst_b"}[i]
		if _, err := e.restoreTo(ctx, apply.Target{Kind: apply.Latest}, db); err != nil {
			t.Fatalf("installation %d: %v", i, err)
		}
		same(t, db, want, sums(t, c, db))
		sameDDLSchema(t, db, wantSchema, ddlSchemaOf(t, c, db))
		st, _ := chain.OpenFor(e.cfg, "app")
		if st == nil || !strings.HasPrefix(st.Slot, chain.ObjectPrefix([]string{idA, idB}[i])) {
			t.Fatalf("installation %d: chain %+v", i, st)
		}
	}
}

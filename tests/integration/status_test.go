package integration

import (
	"encoding/json"
	"slices"
	"strings"
	"testing"

	"github.com/pme2go/pme2go-backup/engine/config"
	"github.com/pme2go/pme2go-backup/tests/pgharness"
)

// TestStatusShowsChainLagAndCleanupDropsOrphanSlots: after a full backup on a
// wal_level=logical server, status reports the open chain with its slot's
// lag; cleanup drops a slot of this installation that belongs to no chain and
// keeps (and status shows) one named for another installation.
func TestStatusShowsChainLagAndCleanupDropsOrphanSlots(t *testing.T) {
	c := pgharness.Start(t)
	c.CreateDB(t, "app")
	c.Exec(t, "app", `CREATE TABLE t (id int PRIMARY KEY, v text)`)
	env := cfgEnv(t, c, []string{"app"})
	takeBackup(t, env)
	c.Exec(t, "app", `INSERT INTO t SELECT g, repeat('x', 100) FROM generate_series(1, 1000) g`)

	r := runCLI(t, env, "status", "--json")
	if r.code != 0 {
		t.Fatalf("status: %s", r.stderr)
	}
	var st struct {
		Incrementals string
		Chains       []struct {
			Status string
			Lag    *struct {
				Exists bool
				Bytes  int64
			}
		}
	}
	if err := json.Unmarshal([]byte(r.stdout), &st); err != nil {
		t.Fatal(err)
	}
	if len(st.Chains) != 1 || st.Chains[0].Status != "open" || st.Chains[0].Lag == nil || !st.Chains[0].Lag.Exists || st.Chains[0].Lag.Bytes <= 0 {
		t.Fatalf("status chains: %+v\n%s", st.Chains, r.stdout)
	}
	if !strings.Contains(st.Incrementals, "logical") {
		t.Errorf("incrementals: %q", st.Incrementals)
	}
	if r := runCLI(t, env, "status"); r.code != 0 || !strings.Contains(r.stdout, "slot lag") {
		t.Fatalf("status text lacks the slot lag:\n%s%s", r.stdout, r.stderr)
	}

	// An orphan of this installation (its short id in the name, no chain
	// behind it) is dropped; one of another installation is shown and kept.
	id8, err := config.InstallationShortID(loadCfg(t, env))
	if err != nil {
		t.Fatal(err)
	}
	mine, foreign := "pme2go_"+id8+"_orphan_test", "pme2go_0badc0de_theirs"
	c.Exec(t, "app", `SELECT pg_create_logical_replication_slot('`+mine+`', 'pgoutput')`)
	c.Exec(t, "app", `SELECT pg_create_logical_replication_slot('`+foreign+`', 'pgoutput')`)
	r = runCLI(t, env, "cleanup", "--dry-run")
	if r.code != 0 || !strings.Contains(r.stdout, "would drop\tslot "+mine) || strings.Contains(r.stdout, "drop\tslot "+foreign) {
		t.Fatalf("cleanup --dry-run: %s%s", r.stdout, r.stderr)
	}
	r = runCLI(t, env, "cleanup")
	if r.code != 0 || !strings.Contains(r.stdout, "dropped\tslot "+mine) || strings.Contains(r.stdout, "dropped\tslot "+foreign) {
		t.Fatalf("cleanup: %s%s", r.stdout, r.stderr)
	}
	var names []string
	rows, err := c.Conn(t, "app").Query(t.Context(), `SELECT slot_name FROM pg_replication_slots WHERE slot_name LIKE 'pme2go%' ORDER BY 1`)
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var n string
		if err := rows.Scan(&n); err != nil {
			t.Fatal(err)
		}
		names = append(names, n)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	if len(names) != 2 || !slices.Contains(names, foreign) || slices.Contains(names, mine) {
		t.Fatalf("slots after cleanup: %v, want the chain's own and %s", names, foreign)
	}
	if r := runCLI(t, env, "status"); !strings.Contains(r.stdout, foreign) || !strings.Contains(r.stdout, "0badc0de") {
		t.Errorf("status does not show the other installation's slot:\n%s", r.stdout)
	}
}

// TestForceRestoreEndsChain: replacing a database that has an open change
// capture chain ends that chain (its slot would keep the replaced database
// from being dropped) and leaves no stray database or slot.
func TestForceRestoreEndsChain(t *testing.T) {
	c := pgharness.Start(t)
	c.CreateDB(t, "app")
	c.Exec(t, "app", `CREATE TABLE t (id int PRIMARY KEY, v text); INSERT INTO t SELECT g, 'v' FROM generate_series(1, 100) g`)
	env := cfgEnv(t, c, []string{"app"})
	path := takeBackup(t, env)
	c.Exec(t, "app", `DELETE FROM t`)
	r := runCLI(t, env, "restore", "--backup", path, "--force", "--no-safety-backup")
	if r.code != 0 {
		t.Fatalf("restore --force: %s%s", r.stdout, r.stderr)
	}
	var slots, stray, rows int
	conn := c.Conn(t, "postgres")
	if err := conn.QueryRow(t.Context(), `SELECT count(*) FROM pg_replication_slots`).Scan(&slots); err != nil {
		t.Fatal(err)
	}
	if err := conn.QueryRow(t.Context(), `SELECT count(*) FROM pg_database WHERE datname LIKE '%pme2go%'`).Scan(&stray); err != nil {
		t.Fatal(err)
	}
	if err := c.Conn(t, "app").QueryRow(t.Context(), `SELECT count(*) FROM t`).Scan(&rows); err != nil {
		t.Fatal(err)
	}
	if slots != 0 || stray != 0 || rows != 100 {
		t.Fatalf("after the restore: %d slots, %d stray databases, %d rows (want 0, 0, 100)", slots, stray, rows)
	}
	r = runCLI(t, env, "status")
	if !strings.Contains(r.stdout, "replaced by a restore") {
		t.Fatalf("status does not say why the chain ended:\n%s", r.stdout)
	}
}

package capture_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pme2go/pme2go-backup/engine/backup"
	"github.com/pme2go/pme2go-backup/engine/capture"
	"github.com/pme2go/pme2go-backup/engine/chain"
	"github.com/pme2go/pme2go-backup/engine/changeset"
	"github.com/pme2go/pme2go-backup/engine/config"
	"github.com/pme2go/pme2go-backup/engine/incremental"
	"github.com/pme2go/pme2go-backup/engine/progress"
	"github.com/pme2go/pme2go-backup/tests/pgharness"
)

// noPme2goObjects asserts the server holds no pme2go_ slot or publication.
func noPme2goObjects(t *testing.T, c *pgharness.Cluster, db string) {
	t.Helper()
	if slots, pubs, machinery := pme2goObjects(t, c, db); slots != 0 || pubs != 0 || machinery != 0 {
		var names string
		c.Conn(t, db).QueryRow(context.Background(), `SELECT concat_ws(', ', (SELECT string_agg(slot_name, ' ') FROM pg_replication_slots),
		    (SELECT string_agg(pubname, ' ') FROM pg_publication))`).Scan(&names)
		t.Fatalf("%d pme2go slots, %d publications and %d event triggers or schemas left (%s)", slots, pubs, machinery, names)
	}
}

// pme2goObjects counts our slots, publications, and event triggers and
// schemas in db.
func pme2goObjects(t *testing.T, c *pgharness.Cluster, db string) (slots, pubs, machinery int) {
	t.Helper()
	conn := c.Conn(t, db)
	if err := conn.QueryRow(context.Background(), `SELECT count(*) FROM pg_replication_slots WHERE slot_name LIKE 'pme2go\_%'`).Scan(&slots); err != nil {
		t.Fatal(err)
	}
	if err := conn.QueryRow(context.Background(), `SELECT count(*) FROM pg_publication WHERE pubname LIKE 'pme2go\_%'`).Scan(&pubs); err != nil {
		t.Fatal(err)
	}
	if err := conn.QueryRow(context.Background(), `SELECT (SELECT count(*) FROM pg_event_trigger WHERE evtname LIKE 'pme2go\_%')
	      + (SELECT count(*) FROM pg_namespace WHERE nspname LIKE 'pme2go\_%')`).Scan(&machinery); err != nil {
		t.Fatal(err)
	}
	return slots, pubs, machinery
}

// TestReplicaIdentity: tables without a key stop the chain from starting
// (the full backup goes on, its manifest warns with the ALTER TABLE fixes);
// REPLICA_IDENTITY_FIX=full applies them.
func TestReplicaIdentity(t *testing.T) {
	c := setup(t, "app")
	c.Exec(t, "app", `CREATE TABLE nokey (a int, b text);
		CREATE TABLE uniq (a int NOT NULL, b text); CREATE UNIQUE INDEX uniq_a ON uniq (a);`)
	cfg := loadCfg(t, cfgEnv(t, c, "app"))
	res0 := full(t, cfg)
	w := strings.Join(res0.Manifest.Warnings, "\n")
	if res0.Manifest.ChainID != "" || !strings.Contains(w, "ALTER TABLE public.nokey REPLICA IDENTITY FULL;") ||
		!strings.Contains(w, "ALTER TABLE public.uniq REPLICA IDENTITY USING INDEX uniq_a;") || !strings.Contains(w, "REPLICA_IDENTITY_FIX=full") {
		t.Fatalf("want a full backup without chain and the fixes in its warnings, got %+v", res0.Manifest)
	}
	noPme2goObjects(t, c, "app")
	if _, err := incremental.Take(context.Background(), cfg, incremental.Options{}); !errors.Is(err, incremental.ErrNoChain) {
		t.Fatalf("incremental without chain: %v", err)
	}

	cfg = loadCfg(t, cfgEnv(t, c, "app", "REPLICA_IDENTITY_FIX=full"))
	full(t, cfg)
	var ri string
	if err := c.Conn(t, "app").QueryRow(context.Background(), `SELECT relreplident::text FROM pg_class WHERE relname = 'nokey'`).Scan(&ri); err != nil {
		t.Fatal(err)
	}
	if ri != "f" {
		t.Fatalf("nokey replica identity %q, want f", ri)
	}
	c.Exec(t, "app", `INSERT INTO nokey VALUES (1, 'x'); UPDATE nokey SET b = 'y'; DELETE FROM nokey`)
	res, err := incremental.Take(context.Background(), cfg, incremental.Options{})
	if err != nil || res[0].TxCount != 1 {
		t.Fatalf("incremental: %v %+v", err, res)
	}
}

// TestLagCap: a slot holding back more than MAX_SLOT_LAG ends its chain
// and is dropped.
func TestLagCap(t *testing.T) {
	c := setup(t, "app")
	cfg := loadCfg(t, cfgEnv(t, c, "app", "MAX_SLOT_LAG=1MB"))
	full(t, cfg)
	st := openChain(t, cfg, "app")
	c.Exec(t, "app", `INSERT INTO t (v) SELECT repeat('x', 200) FROM generate_series(1, 20000)`)
	lag, err := capture.Lag(context.Background(), cfg, st)
	if err != nil || lag.Bytes < 1<<20 {
		t.Fatalf("lag %+v %v", lag, err)
	}
	_, err = incremental.Take(context.Background(), cfg, incremental.Options{})
	if !errors.Is(err, capture.ErrChainEnded) || !strings.Contains(err.Error(), "MAX_SLOT_LAG") || !strings.Contains(err.Error(), "full backup") {
		t.Fatalf("want chain ended by MAX_SLOT_LAG, got %v", err)
	}
	st2, _ := chain.Load(cfg, st.ID)
	if st2.Status != chain.StatusBroken || !strings.Contains(st2.Reason, "MAX_SLOT_LAG") {
		t.Fatalf("chain %+v", st2)
	}
	noPme2goObjects(t, c, "app")
}

// TestInvalidatedSlot: a slot invalidated by max_slot_wal_keep_size ends
// the chain with that message.
func TestInvalidatedSlot(t *testing.T) {
	c := setup(t, "app", pgharness.WithSetting("max_slot_wal_keep_size", "'1MB'"), pgharness.WithSetting("wal_keep_size", "0"))
	cfg := loadCfg(t, cfgEnv(t, c, "app"))
	full(t, cfg)
	st := openChain(t, cfg, "app")
	// Each round writes WAL, switches to a new segment and checkpoints; a
	// checkpoint whose redo point is more than max_slot_wal_keep_size past
	// the slot's restart_lsn invalidates it (wal_status "lost"). A few
	// rounds always get there; not getting there is a failure, not a skip.
	var lag *capture.SlotLag
	for round := 0; round < 10; round++ {
		c.Exec(t, "app", `INSERT INTO t (v) VALUES ('wal'); SELECT pg_switch_wal();`)
		c.Exec(t, "app", `INSERT INTO t (v) VALUES ('wal'); SELECT pg_switch_wal();`)
		c.Exec(t, "app", `CHECKPOINT`)
		var err error
		if lag, err = capture.Lag(context.Background(), cfg, st); err != nil {
			t.Fatalf("lag: %v", err)
		}
		if lag.WalStatus == "lost" {
			break
		}
	}
	if lag.WalStatus != "lost" {
		t.Fatalf("slot not invalidated after 10 rounds of WAL switches and checkpoints (wal_status %q)", lag.WalStatus)
	}
	_, err := incremental.Take(context.Background(), cfg, incremental.Options{})
	if !errors.Is(err, capture.ErrChainEnded) || !strings.Contains(err.Error(), "invalidated") {
		t.Fatalf("want chain ended by invalidation, got %v", err)
	}
	st2, _ := chain.Load(cfg, st.ID)
	if st2.Status != chain.StatusBroken {
		t.Fatalf("chain %+v", st2)
	}
	noPme2goObjects(t, c, "app")
}

// TestSchemaChange: without DDL capture a changed table ends the chain,
// keeping the transactions before it; with CAPTURE_DDL the DDL travels in
// the stream and the chain stays open.
func TestSchemaChange(t *testing.T) {
	c := setup(t, "app")
	cfg := loadCfg(t, cfgEnv(t, c, "app", "CAPTURE_DDL=false"))
	full(t, cfg)
	st := openChain(t, cfg, "app")
	before := txs(t, c.Conn(t, "app"), 2)
	c.Exec(t, "app", `ALTER TABLE t ADD COLUMN extra int; INSERT INTO t (v, extra) VALUES ('after', 1)`)
	res, err := incremental.Take(context.Background(), cfg, incremental.Options{})
	if !errors.Is(err, capture.ErrChainEnded) || !strings.Contains(err.Error(), `schema change of "public"."t"`) || !strings.Contains(err.Error(), "take a new full backup") {
		t.Fatalf("want schema change, got %v", err)
	}
	if len(res) != 1 {
		t.Fatalf("want a final incremental, got %+v", res)
	}
	_, got := archiveTxs(t, res[0].Path)
	checkXids(t, got, before, st.Start())
	st2, _ := chain.Load(cfg, st.ID)
	if st2.Status != chain.StatusBroken || !strings.Contains(st2.Reason, "schema change") {
		t.Fatalf("chain %+v", st2)
	}
	noPme2goObjects(t, c, "app")

	// CAPTURE_DDL: the same change is captured.
	cfg = loadCfg(t, cfgEnv(t, c, "app", "CAPTURE_DDL=true"))
	full(t, cfg)
	c.Exec(t, "app", `ALTER TABLE t ADD COLUMN more text`)
	c.Exec(t, "app", `INSERT INTO t (v, more) VALUES ('ddl', 'm')`)
	res, err = incremental.Take(context.Background(), cfg, incremental.Options{})
	if err != nil {
		t.Fatalf("incremental with CAPTURE_DDL: %v", err)
	}
	_, got = archiveTxs(t, res[0].Path)
	if len(got) != 2 || len(got[0].Messages) != 1 || !changeset.IsDDLPrefix(got[0].Messages[0].Prefix) ||
		!strings.Contains(string(got[0].Messages[0].Content), "ADD COLUMN more") {
		t.Fatalf("DDL not captured: %d txs %+v", len(got), got)
	}
	if st3 := openChain(t, cfg, "app"); st3.Status != chain.StatusOpen {
		t.Fatalf("chain %+v", st3)
	}

	// Without DDL capture, a table created after the full backup ends it.
	cfg = loadCfg(t, cfgEnv(t, c, "app", "CAPTURE_DDL=false"))
	full(t, cfg)
	c.Exec(t, "app", `CREATE TABLE newt (id int PRIMARY KEY)`)
	c.Exec(t, "app", `INSERT INTO newt VALUES (1)`)
	_, err = incremental.Take(context.Background(), cfg, incremental.Options{})
	if !errors.Is(err, capture.ErrChainEnded) || !strings.Contains(err.Error(), `public.newt created after the full backup`) {
		t.Fatalf("want schema change for a new table, got %v", err)
	}
}

// TestNoOrphans: a failed full backup leaves no slot, publication or open
// chain; cleanup's DropOrphans drops a stray pme2go_ slot.
func TestNoOrphans(t *testing.T) {
	c := setup(t, "app")
	c.CreateDB(t, "second")
	cfg := loadCfg(t, cfgEnv(t, c, "app,second"))
	ctx, cancel := context.WithCancel(context.Background())
	_, err := backup.Full(ctx, cfg, backup.Options{Chain: incremental.NewChainStarter(cfg, nil), Progress: func(p progress.Event) {
		if p.Phase == "dump" && p.Object == "second" {
			cancel()
		}
	}})
	if err == nil {
		t.Fatal("cancelled full backup succeeded")
	}
	noPme2goObjects(t, c, "app")
	noPme2goObjects(t, c, "second")
	if all, _ := chain.List(cfg); len(all) != 0 {
		t.Fatalf("chains left: %+v", all)
	}
	entries, _ := os.ReadDir(chain.ChainsDir(cfg))
	if len(entries) != 0 {
		t.Fatalf("chain directories left: %v", entries)
	}

	id8, err := config.InstallationShortID(cfg)
	if err != nil {
		t.Fatal(err)
	}
	mine := chain.ObjectPrefix(id8) + "cstray"
	c.Exec(t, "app", `SELECT pg_create_logical_replication_slot('`+mine+`', 'pgoutput')`)
	c.Exec(t, "app", `CREATE PUBLICATION `+mine)
	// Another installation's objects, and an older name no chain of ours
	// explains: listed as others', never dropped.
	c.Exec(t, "app", `SELECT pg_create_logical_replication_slot('pme2go_deadbeef_cother', 'pgoutput')`)
	c.Exec(t, "app", `CREATE PUBLICATION pme2go_deadbeef_cother`)
	c.Exec(t, "app", `SELECT pg_create_logical_replication_slot('pme2go_c20250101t000000_abcdef', 'pgoutput')`)
	o, err := chain.Orphans(context.Background(), cfg)
	if err != nil || len(o) != 2 {
		t.Fatalf("orphans: %v %+v", err, o)
	}
	others, err := chain.Others(context.Background(), cfg)
	if err != nil || len(others) != 3 {
		t.Fatalf("others: %v %+v", err, others)
	}
	dropped, err := chain.DropOrphans(context.Background(), cfg)
	if err != nil || len(dropped) != 2 {
		t.Fatalf("drop orphans: %v %+v", err, dropped)
	}
	var left int
	c.Conn(t, "app").QueryRow(context.Background(), `SELECT (SELECT count(*) FROM pg_replication_slots WHERE slot_name LIKE 'pme2go%')
	     + (SELECT count(*) FROM pg_publication WHERE pubname LIKE 'pme2go%')`).Scan(&left)
	if left != 3 {
		t.Fatalf("other installations' objects dropped: %d left, want 3", left)
	}
	c.Exec(t, "app", `SELECT pg_drop_replication_slot('pme2go_deadbeef_cother')`)
	c.Exec(t, "app", `SELECT pg_drop_replication_slot('pme2go_c20250101t000000_abcdef')`)
	c.Exec(t, "app", `DROP PUBLICATION pme2go_deadbeef_cother`)
	noPme2goObjects(t, c, "app")
}

// TestSlotCreationBlocked: slot creation waits for running transactions;
// past the timeout the warning names the session in the way, and nothing is
// left behind.
func TestSlotCreationBlocked(t *testing.T) {
	c := setup(t, "app")
	cfg := loadCfg(t, cfgEnv(t, c, "app"))
	ctx := context.Background()
	blocker, err := pgx.Connect(ctx, c.ConnString("app")+" application_name=blocker")
	if err != nil {
		t.Fatal(err)
	}
	defer blocker.Close(ctx)
	tx, err := blocker.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(ctx, `INSERT INTO t (v) VALUES ('long transaction')`); err != nil {
		t.Fatal(err)
	}
	s := chain.NewStarter(cfg, nil)
	s.SlotTimeout = 2 * time.Second
	snap, meta, release, err := s.Snapshot(ctx, "app")
	if err != nil || snap != "" {
		t.Fatalf("snapshot %q, %v", snap, err)
	}
	release(false)
	w := meta[chain.WarningKey]
	if !strings.Contains(w, fmt.Sprintf("pid %d", blocker.PgConn().PID())) || !strings.Contains(w, `"blocker"`) || !strings.Contains(w, "INSERT INTO t") {
		t.Fatalf("warning does not name the blocker: %s", w)
	}
	tx.Rollback(ctx)
	// The abandoned slot creation ends once the blocker is gone.
	waitFor(t, "the abandoned slot to disappear", func() bool { s, p, m := pme2goObjects(t, c, "app"); return s == 0 && p == 0 && m == 0 })
}

package capture_test

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pme2go/pme2go-backup/engine/capture"
	"github.com/pme2go/pme2go-backup/engine/chain"
	"github.com/pme2go/pme2go-backup/engine/changeset"
	"github.com/pme2go/pme2go-backup/engine/config"
	"github.com/pme2go/pme2go-backup/engine/errs"
	"github.com/pme2go/pme2go-backup/engine/incremental"
	"github.com/pme2go/pme2go-backup/engine/ops"
	"github.com/pme2go/pme2go-backup/tests/pgharness"
)

// connAs opens a connection to db as role (trust authentication on the
// socket); it is closed at test cleanup.
func connAs(t *testing.T, c *pgharness.Cluster, db, role string) *pgx.Conn {
	t.Helper()
	conn, err := pgx.Connect(context.Background(), strings.Replace(c.ConnString(db), "user=postgres", "user="+role, 1))
	if err != nil {
		t.Fatalf("connect as %s: %v", role, err)
	}
	t.Cleanup(func() { conn.Close(context.Background()) })
	return conn
}

// capturedDDL returns the DDL records of an incremental archive's change
// sets, in order.
func capturedDDL(t *testing.T, path string) []changeset.DDL {
	t.Helper()
	_, txs := archiveTxs(t, path)
	var out []changeset.DDL
	for _, tx := range txs {
		for _, m := range tx.Messages {
			if !changeset.IsDDLPrefix(m.Prefix) {
				continue
			}
			d, err := changeset.ParseDDL(m.Content)
			if err != nil {
				t.Fatalf("captured DDL %q: %v", m.Content, err)
			}
			out = append(out, d)
		}
	}
	return out
}

// TestForgedTriggerState (issue 6): a role that is not a superuser sets
// the session settings named after our schema (pme2go_<id8>.*), trying to
// make the event trigger record another statement of its query string than
// the one that ran, and another role than its own (replay runs a captured
// statement as the role recorded: a superuser's name would run the
// attacker's code with a superuser's rights during a restore). The
// trigger keeps its state where only it can write, and takes the role
// from the session itself.
func TestForgedTriggerState(t *testing.T) {
	c := setup(t, "app")
	c.Exec(t, "app", `CREATE ROLE mallory LOGIN; GRANT CREATE ON SCHEMA public TO mallory`)
	cfg := loadCfg(t, cfgEnv(t, c, "app"))
	full(t, cfg)
	id8, _ := config.InstallationShortID(cfg)
	g := "pme2go_" + id8
	ctx := context.Background()
	m := connAs(t, c, "app", "mallory")
	// One query string: the forged settings claim that one statement of
	// this string already fired; then two CREATE TABLE, committed apart.
	forge := `SELECT set_config('` + g + `.qkey', md5(statement_timestamp()::text || ' ' || current_query()), false),
		set_config('` + g + `.qn', '1', false), set_config('` + g + `.role', 'postgres', false);
		CREATE TABLE forged_a (id int PRIMARY KEY); COMMIT; CREATE TABLE forged_b (id int PRIMARY KEY, x int)`
	if _, err := m.Exec(ctx, forge); err != nil {
		t.Fatalf("forging string: %v", err)
	}
	// A statement that sets the role setting while it runs, between the
	// trigger's ddl_command_start and ddl_command_end.
	// (A CHECK constraint is validated on the rows already there.)
	chk := `ALTER TABLE forged_a ADD CONSTRAINT forged_chk CHECK (set_config('` + g + `.role', 'postgres', false) IS NOT NULL)`
	if _, err := m.Exec(ctx, `INSERT INTO forged_a VALUES (1)`); err != nil {
		t.Fatal(err)
	}
	if _, err := m.Exec(ctx, chk); err != nil {
		t.Fatalf("ALTER TABLE … CHECK: %v", err)
	}
	res, err := incremental.Take(ctx, cfg, incremental.Options{})
	if err != nil {
		t.Fatalf("incremental: %v", err)
	}
	ddl := capturedDDL(t, res[0].Path)
	var got []string
	for _, d := range ddl {
		got = append(got, d.Role+": "+strings.Join(strings.Fields(d.Statement), " "))
	}
	want := []string{
		"mallory: CREATE TABLE forged_a (id int PRIMARY KEY)",
		"mallory: CREATE TABLE forged_b (id int PRIMARY KEY, x int)",
		"mallory: " + chk,
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("captured DDL:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

// appWrites runs an INSERT, an UPDATE and a DELETE on table t (id serial
// key, v text): none may fail because of the backup.
func appWrites(t *testing.T, c *pgharness.Cluster, table string) {
	t.Helper()
	conn := c.Conn(t, "app")
	for _, q := range []string{`INSERT INTO ` + table + ` (v) VALUES ('w'), ('w2')`,
		`UPDATE ` + table + ` SET v = v || 'x' WHERE id % 3 = 0`,
		`DELETE FROM ` + table + ` WHERE id = (SELECT max(id) FROM ` + table + `)`} {
		if _, err := conn.Exec(context.Background(), q); err != nil {
			t.Fatalf("application statement failed: %s: %v", q, err)
		}
	}
}

// expectEnd takes an incremental and asserts that it ends the open chain
// with a reason containing want, as a chain-end error, and that the
// chain's objects left the database.
func expectEnd(t *testing.T, c *pgharness.Cluster, cfg *config.Config, want string) {
	t.Helper()
	st := openChain(t, cfg, "app")
	_, err := ops.Incremental(context.Background(), cfg, ops.IncrementalOptions{}, nil)
	if !errors.Is(err, capture.ErrChainEnded) || errs.CodeOf(err) != errs.ChainEnded ||
		!strings.Contains(err.Error(), "chain ended: ") || !strings.Contains(err.Error(), want) {
		t.Fatalf("incremental: want the chain ended (%q), got %v", want, err)
	}
	st2, _ := chain.Load(cfg, st.ID)
	if st2.Status != chain.StatusBroken || !strings.Contains(st2.Reason, want) {
		t.Fatalf("chain %+v", st2)
	}
	noPme2goObjects(t, c, "app")
	if _, err := incremental.Take(context.Background(), cfg, incremental.Options{}); !errors.Is(err, incremental.ErrNoChain) {
		t.Fatalf("incremental after the chain ended: %v", err)
	}
}

// TestNoHarm (issue 6): what an application or an administrator does to
// its tables, or to our objects, never makes an application statement fail
// because of the backup, and whatever takes our machinery away ends the
// chain with the reason instead of leaving a chain that cannot continue
// ("resumes when restarted").
func TestNoHarm(t *testing.T) {
	c := setup(t, "app", pgharness.WithSetting("max_prepared_transactions", "2"))
	ctx := context.Background()
	cfg := loadCfg(t, cfgEnv(t, c, "app"))
	id8, _ := config.InstallationShortID(cfg)

	t.Run("set unlogged with DDL capture", func(t *testing.T) {
		full(t, cfg)
		st := openChain(t, cfg, "app")
		c.Exec(t, "app", `CREATE TABLE pr (id int PRIMARY KEY, v text) PARTITION BY RANGE (id);
			CREATE TABLE pr1 PARTITION OF pr FOR VALUES FROM (0) TO (1000000);
			CREATE TABLE empty_t (id int PRIMARY KEY)`)
		// PostgreSQL refuses SET UNLOGGED of a published table ("part of
		// a publication"); the event trigger takes it out first. An empty
		// table is then not covered, like an unlogged table created now.
		c.Exec(t, "app", `ALTER TABLE /* partitioned */ "public".pr SET UNLOGGED`)
		c.Exec(t, "app", `ALTER TABLE empty_t SET UNLOGGED`)
		writeEach(t, c, "app", "pr", "empty_t")
		if got := published(t, c, "app", st.Publication); slices.Contains(got, "empty_t") || !slices.Contains(got, "pr") {
			t.Fatalf("publication lists %v: want empty_t out (unlogged) and pr still in (SET UNLOGGED changes nothing for a partitioned table)", got)
		}
		if _, err := incremental.Take(ctx, cfg, incremental.Options{}); err != nil {
			t.Fatalf("incremental: %v", err)
		}
		if st := openChain(t, cfg, "app"); !slices.Equal(st.NotCovered, []string{"public.empty_t"}) {
			t.Fatalf("chain %+v: want public.empty_t not covered", st)
		}
		// A table holding rows: the statement succeeds, the chain ends
		// (its later changes would be in no change set).
		c.Exec(t, "app", `ALTER TABLE t SET UNLOGGED`)
		appWrites(t, c, "t")
		expectEnd(t, c, cfg, "table public.t set UNLOGGED by 'ALTER TABLE t SET UNLOGGED' while holding rows")
		c.Exec(t, "app", `ALTER TABLE t SET LOGGED; DROP TABLE pr, empty_t`)
		// A new full backup starts a fresh chain.
		res := full(t, cfg)
		if res.Manifest.ChainID == "" || res.Manifest.ChainID == st.ID {
			t.Fatalf("full backup after the chain ended: chain %q", res.Manifest.ChainID)
		}
		if err := chain.End(ctx, cfg, openChain(t, cfg, "app"), "test over"); err != nil {
			t.Fatal(err)
		}
	})

	t.Run("partition set unlogged", func(t *testing.T) {
		// A partition is published through its partitioned table, so
		// PostgreSQL lets it become unlogged: its rows would silently stop
		// being captured. The chain ends there.
		full(t, cfg)
		c.Exec(t, "app", `CREATE TABLE pq (id int PRIMARY KEY) PARTITION BY RANGE (id);
			CREATE TABLE pq1 PARTITION OF pq FOR VALUES FROM (0) TO (1000000); INSERT INTO pq VALUES (1), (2)`)
		c.Exec(t, "app", `ALTER TABLE pq1 SET UNLOGGED`)
		writeEach(t, c, "app", "pq")
		expectEnd(t, c, cfg, "table public.pq1 set UNLOGGED")
		c.Exec(t, "app", `DROP TABLE pq`)
	})

	t.Run("set unlogged without DDL capture", func(t *testing.T) {
		cfg := loadCfg(t, cfgEnv(t, c, "app", "CAPTURE_DDL=false"))
		full(t, cfg)
		c.Exec(t, "app", `ALTER TABLE other SET UNLOGGED`)
		c.Exec(t, "app", `INSERT INTO other VALUES ('a', now()); UPDATE other SET d = now(); DELETE FROM other`)
		expectEnd(t, c, cfg, "table public.other set UNLOGGED")
		c.Exec(t, "app", `ALTER TABLE other SET LOGGED`)
		// A new full backup starts a fresh chain.
		full(t, cfg)
		if err := chain.End(ctx, cfg, openChain(t, cfg, "app"), "test over"); err != nil {
			t.Fatal(err)
		}
	})

	t.Run("publication dropped", func(t *testing.T) {
		full(t, cfg)
		st := openChain(t, cfg, "app")
		c.Exec(t, "app", `DROP PUBLICATION `+st.Publication)
		appWrites(t, c, "t")
		expectEnd(t, c, cfg, "the chain's publication was changed or dropped by 'DROP PUBLICATION "+st.Publication)
	})

	t.Run("publication dropped unseen", func(t *testing.T) {
		// Event triggers do not fire with session_replication_role =
		// replica: the capture notices the missing publication itself.
		full(t, cfg)
		st := openChain(t, cfg, "app")
		c.Exec(t, "app", `SET session_replication_role = replica; DROP PUBLICATION `+st.Publication)
		appWrites(t, c, "t")
		expectEnd(t, c, cfg, "publication "+st.Publication+" of the chain no longer exists")
	})

	t.Run("publication dropped unseen while streaming", func(t *testing.T) {
		// A running stream meets the server's "publication does not
		// exist" error at the next change: it ends the chain with the
		// reason instead of retrying ("resumes when restarted") forever.
		full(t, cfg)
		st := openChain(t, cfg, "app")
		done := make(chan error, 1)
		go func() {
			done <- capture.Run(ctx, cfg, st, capture.Options{HealthInterval: time.Hour})
		}()
		conn := c.Conn(t, "app")
		waitFor(t, "the capture to stream", func() bool { return slotActivePID(t, conn, st.Slot) != 0 })
		c.Exec(t, "app", `SET session_replication_role = replica; DROP PUBLICATION `+st.Publication)
		appWrites(t, c, "t")
		select {
		case err := <-done:
			if !errors.Is(err, capture.ErrChainEnded) || errs.CodeOf(err) != errs.ChainEnded ||
				!strings.Contains(err.Error(), "chain ended: publication "+st.Publication+" of the chain no longer exists") {
				t.Fatalf("stream: want the chain ended, got %v", err)
			}
		case <-time.After(60 * time.Second):
			t.Fatal("the stream did not end within 60 s of its publication's drop")
		}
		noPme2goObjects(t, c, "app")
	})

	t.Run("publication changed", func(t *testing.T) {
		full(t, cfg)
		st := openChain(t, cfg, "app")
		c.Exec(t, "app", `ALTER PUBLICATION `+st.Publication+` DROP TABLE other`)
		appWrites(t, c, "t")
		expectEnd(t, c, cfg, "publication was changed or dropped")
	})

	t.Run("slot dropped", func(t *testing.T) {
		full(t, cfg)
		st := openChain(t, cfg, "app")
		c.Exec(t, "app", `SELECT pg_drop_replication_slot('`+st.Slot+`')`)
		appWrites(t, c, "t")
		expectEnd(t, c, cfg, "replication slot "+st.Slot+" no longer exists")
	})

	t.Run("schema dropped", func(t *testing.T) {
		full(t, cfg)
		c.Exec(t, "app", `DROP SCHEMA `+chain.SchemaName(id8)+` CASCADE`)
		c.Exec(t, "app", `CREATE TABLE nokey_after (a int); INSERT INTO nokey_after VALUES (1); UPDATE nokey_after SET a = 2`)
		appWrites(t, c, "t")
		expectEnd(t, c, cfg, "changed pme2go-backup's own schema")
		c.Exec(t, "app", `DROP TABLE nokey_after`)
	})

	t.Run("event trigger disabled", func(t *testing.T) {
		full(t, cfg)
		c.Exec(t, "app", `ALTER EVENT TRIGGER `+chain.ObjectPrefix(id8)+`ddl DISABLE`)
		appWrites(t, c, "t")
		expectEnd(t, c, cfg, chain.ObjectPrefix(id8)+"ddl disabled")
	})

	t.Run("table changes keep the chain", func(t *testing.T) {
		full(t, cfg)
		st := openChain(t, cfg, "app")
		c.Exec(t, "app", `CREATE TABLE victim (id serial PRIMARY KEY, v text); CREATE SCHEMA gone; CREATE TABLE gone.g (id serial PRIMARY KEY, v text);
			CREATE TABLE moved (id serial PRIMARY KEY, v text); CREATE SCHEMA dest;
			CREATE TABLE parted (id int PRIMARY KEY, v text) PARTITION BY RANGE (id)`)
		for _, q := range []string{
			`TRUNCATE t`,
			`ALTER TABLE victim RENAME TO victim2`,
			`ALTER TABLE victim2 RENAME COLUMN v TO w`,
			`ALTER TABLE victim2 RENAME COLUMN w TO v`,
			`ALTER TABLE moved SET SCHEMA dest`,
			`CREATE TABLE parted_a PARTITION OF parted FOR VALUES FROM (0) TO (1000)`,
			`CREATE TABLE parted_b (LIKE parted INCLUDING ALL)`,
			`ALTER TABLE parted ATTACH PARTITION parted_b FOR VALUES FROM (1000) TO (2000)`,
			`ALTER TABLE t REPLICA IDENTITY FULL`,
			`ALTER TABLE t REPLICA IDENTITY DEFAULT`,
		} {
			if _, err := c.Conn(t, "app").Exec(ctx, q); err != nil {
				t.Fatalf("%s: %v", q, err)
			}
		}
		appWrites(t, c, "t")
		appWrites(t, c, "victim2")
		appWrites(t, c, "gone.g")
		appWrites(t, c, "dest.moved")
		c.Exec(t, "app", `INSERT INTO parted VALUES (1, 'a'), (1001, 'b'); UPDATE parted SET v = 'c'; DELETE FROM parted WHERE id = 1`)
		c.Exec(t, "app", `DROP SCHEMA gone CASCADE; DROP TABLE victim2`)
		appWrites(t, c, "t")
		if got := published(t, c, "app", st.Publication); !slices.Contains(got, "dest.moved") || !slices.Contains(got, "parted") {
			t.Fatalf("publication lists %v", got)
		}
		if _, err := incremental.Take(ctx, cfg, incremental.Options{}); err != nil {
			t.Fatalf("incremental: %v", err)
		}
		openChain(t, cfg, "app")
		// A key given up: the table leaves the publication and its
		// writes succeed; the chain ends with the reason.
		c.Exec(t, "app", `ALTER TABLE dest.moved REPLICA IDENTITY NOTHING`)
		appWrites(t, c, "dest.moved")
		expectEnd(t, c, cfg, "table dest.moved has neither a primary key nor a replica identity")
		c.Exec(t, "app", `DROP SCHEMA dest CASCADE; DROP TABLE parted`)
	})

	t.Run("concurrent DDL does not deadlock the application", func(t *testing.T) {
		// Adding a table to the publication locks the publication until
		// commit. A transaction holding it (A) and waiting for a row
		// another transaction (B) holds, while B creates a table, would
		// deadlock — and the deadlock detector would cancel A's UPDATE,
		// which began waiting first. The trigger waits at most half of
		// deadlock_timeout, then leaves B's table out and ends the chain.
		full(t, cfg)
		a, b := c.Conn(t, "app"), c.Conn(t, "app")
		for _, q := range []string{`BEGIN`, `UPDATE t SET v = 'b' WHERE id = 1`} {
			if _, err := b.Exec(ctx, q); err != nil {
				t.Fatal(err)
			}
		}
		for _, q := range []string{`BEGIN`, `CREATE TABLE lock_a (id int PRIMARY KEY)`} {
			if _, err := a.Exec(ctx, q); err != nil {
				t.Fatal(err)
			}
		}
		done := make(chan error, 1)
		go func() {
			_, err := a.Exec(ctx, `UPDATE t SET v = 'a' WHERE id = 1`)
			done <- err
		}()
		time.Sleep(300 * time.Millisecond)
		if _, err := b.Exec(ctx, `CREATE TABLE lock_b (id int PRIMARY KEY)`); err != nil {
			t.Fatalf("CREATE TABLE while another transaction holds the publication: %v", err)
		}
		if _, err := b.Exec(ctx, `COMMIT`); err != nil {
			t.Fatal(err)
		}
		if err := <-done; err != nil {
			t.Fatalf("the application's UPDATE failed: %v", err)
		}
		if _, err := a.Exec(ctx, `COMMIT`); err != nil {
			t.Fatal(err)
		}
		writeEach(t, c, "app", "lock_b")
		expectEnd(t, c, cfg, "had to wait for another transaction")
		c.Exec(t, "app", `DROP TABLE lock_a, lock_b`)
	})

	t.Run("prepared transaction with DDL", func(t *testing.T) {
		// The trigger's state lives in rows a prepared transaction keeps
		// locked: the same session's next DDL must not wait for them.
		full(t, cfg)
		conn := c.Conn(t, "app")
		for _, q := range []string{`BEGIN`, `CREATE TABLE prep_a (id int PRIMARY KEY)`, `PREPARE TRANSACTION 'harm'`} {
			if _, err := conn.Exec(ctx, q); err != nil {
				t.Fatalf("%s: %v", q, err)
			}
		}
		tctx, cancel := context.WithTimeout(ctx, 20*time.Second)
		defer cancel()
		if _, err := conn.Exec(tctx, `CREATE TABLE prep_b (id int PRIMARY KEY)`); err != nil {
			t.Fatalf("DDL after a prepared transaction with DDL: %v", err)
		}
		if _, err := conn.Exec(ctx, `COMMIT PREPARED 'harm'`); err != nil {
			t.Fatal(err)
		}
		appWrites(t, c, "t")
		c.Exec(t, "app", `DROP TABLE prep_a, prep_b`)
		if err := chain.End(ctx, cfg, openChain(t, cfg, "app"), "test over"); err != nil {
			t.Fatal(err)
		}
	})
}

// TestOldTransactionHoldsWAL (issue 6): a transaction that stays open holds
// the slot's restart_lsn back (decoding must restart from its first
// record), so the server keeps WAL for the slot however much the capture
// confirmed. MAX_SLOT_LAG caps that too: the chain ends and the slot
// goes before the disk fills; the application's transaction is untouched.
func TestOldTransactionHoldsWAL(t *testing.T) {
	c := setup(t, "app")
	ctx := context.Background()
	cfg := loadCfg(t, cfgEnv(t, c, "app", "MAX_SLOT_LAG=4MB"))
	full(t, cfg)
	st := openChain(t, cfg, "app")
	old := c.Conn(t, "app")
	for _, q := range []string{`BEGIN`, `INSERT INTO t (v) VALUES ('old')`} {
		if _, err := old.Exec(ctx, q); err != nil {
			t.Fatal(err)
		}
	}
	var err error
	for round := 0; round < 12 && err == nil; round++ {
		// About 1 MB of WAL a round, confirmed by each incremental.
		c.Exec(t, "app", `INSERT INTO other SELECT 'r`+time.Now().Format("150405.000000")+`_' || g, now() FROM generate_series(1, 6000) g; CHECKPOINT`)
		lag, lerr := capture.Lag(ctx, cfg, st)
		if lerr != nil {
			t.Fatal(lerr)
		}
		if lag.Bytes > 4<<20 {
			t.Fatalf("round %d: %d bytes unconfirmed: the test writes too much per round", round, lag.Bytes)
		}
		_, err = incremental.Take(ctx, cfg, incremental.Options{})
	}
	if !errors.Is(err, capture.ErrChainEnded) || !strings.Contains(err.Error(), "is still running") || !strings.Contains(err.Error(), "MAX_SLOT_LAG") {
		t.Fatalf("want the chain ended by the WAL retained for an old transaction, got %v", err)
	}
	noPme2goObjects(t, c, "app")
	if _, err := old.Exec(ctx, `COMMIT`); err != nil {
		t.Fatalf("the application's transaction: %v", err)
	}
}

// TestDefaultPrivilegesOnOurObjects: default privileges the administrator
// set for the backup's role (ALTER DEFAULT PRIVILEGES FOR ROLE postgres
// GRANT ALL … TO mallory, on schemas, tables, functions and sequences)
// would give mallory our schema, the triggers' state table (whose rows
// decide which role a captured statement is replayed as) and our
// functions; the machinery keeps only its owner's privileges.
func TestDefaultPrivilegesOnOurObjects(t *testing.T) {
	c := setup(t, "app")
	c.Exec(t, "app", `CREATE ROLE mallory LOGIN;
		ALTER DEFAULT PRIVILEGES FOR ROLE postgres GRANT ALL ON SCHEMAS TO mallory;
		ALTER DEFAULT PRIVILEGES FOR ROLE postgres GRANT ALL ON TABLES TO mallory;
		ALTER DEFAULT PRIVILEGES FOR ROLE postgres GRANT ALL ON FUNCTIONS TO mallory;
		ALTER DEFAULT PRIVILEGES FOR ROLE postgres GRANT ALL ON SEQUENCES TO mallory`)
	cfg := loadCfg(t, cfgEnv(t, c, "app"))
	full(t, cfg)
	id8, _ := config.InstallationShortID(cfg)
	g := "pme2go_" + id8
	ctx := context.Background()
	rows, _ := c.Conn(t, "app").Query(ctx, `
		SELECT 'schema ' || n.nspname FROM pg_namespace n WHERE n.nspname = $1 AND (has_schema_privilege('mallory', n.oid, 'USAGE') OR has_schema_privilege('mallory', n.oid, 'CREATE'))
		UNION ALL SELECT 'relation ' || c.oid::regclass FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
		 WHERE n.nspname = $1 AND c.relkind IN ('r', 'S') AND (has_table_privilege('mallory', c.oid, 'SELECT') OR has_table_privilege('mallory', c.oid, 'INSERT') OR has_table_privilege('mallory', c.oid, 'UPDATE') OR has_table_privilege('mallory', c.oid, 'DELETE'))
		UNION ALL SELECT 'function ' || p.oid::regprocedure FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
		 WHERE n.nspname = $1 AND has_function_privilege('mallory', p.oid, 'EXECUTE')`, g)
	got, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		t.Fatal(err)
	}
	if len(got) > 0 {
		t.Fatalf("mallory holds privileges on our machinery: %v", got)
	}
	m := connAs(t, c, "app", "mallory")
	if _, err := m.Exec(ctx, `INSERT INTO `+g+`.firing (pid, qkey, n) VALUES (pg_backend_pid(), 'x', 1)`); err == nil {
		t.Fatal("mallory wrote the triggers' state")
	}
}

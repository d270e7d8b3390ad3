package capture_test

import (
	"context"
	"errors"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/pme2go/pme2go-backup/engine/capture"
	"github.com/pme2go/pme2go-backup/engine/chain"
	"github.com/pme2go/pme2go-backup/engine/config"
	"github.com/pme2go/pme2go-backup/engine/incremental"
	"github.com/pme2go/pme2go-backup/engine/selftest"
	"github.com/pme2go/pme2go-backup/tests/pgharness"
)

// published lists the tables of the chain's publication (pg_publication_rel,
// as regclass text under the default search_path).
func published(t *testing.T, c *pgharness.Cluster, db, pub string) []string {
	t.Helper()
	rows, err := c.Conn(t, db).Query(context.Background(), `SELECT pr.prrelid::regclass::text FROM pg_publication_rel pr
	   JOIN pg_publication p ON p.oid = pr.prpubid WHERE p.pubname = $1 ORDER BY 1`, pub)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for rows.Next() {
		var s string
		rows.Scan(&s)
		out = append(out, s)
	}
	return out
}

var writeSeq = 1000

// writeEach runs an INSERT, an UPDATE and a DELETE on each table, each in
// its own statement: none may fail because of the backup.
func writeEach(t *testing.T, c *pgharness.Cluster, db string, tables ...string) {
	t.Helper()
	conn := c.Conn(t, db)
	for _, tb := range tables {
		writeSeq += 10
		n := strconv.Itoa(writeSeq)
		for _, q := range []string{`INSERT INTO ` + tb + ` (id) VALUES (` + n + `), (` + n + ` + 1), (` + n + ` + 2)`,
			`UPDATE ` + tb + ` SET id = id + 5 WHERE id = ` + n, `DELETE FROM ` + tb + ` WHERE id = ` + n + ` + 1`} {
			if _, err := conn.Exec(context.Background(), q); err != nil {
				t.Fatalf("application statement failed: %s: %v", q, err)
			}
		}
	}
}

// TestNewTablesDuringChain (issue 6 item 1): the publication lists its tables;
// tables created during a chain are published when they can be, the others
// are left out and end the chain with the reason; no application write ever
// fails; the chain's objects leave the database when it ends.
func TestNewTablesDuringChain(t *testing.T) {
	c := setup(t, "app")
	c.Exec(t, "app", `CREATE TABLE parent (id int PRIMARY KEY)`)
	ctx := context.Background()

	t.Run("capture on", func(t *testing.T) {
		cfg := loadCfg(t, cfgEnv(t, c, "app"))
		res := full(t, cfg)
		if m, _ := res.Manifest.Metadata["ddlCapture:app"].(string); !strings.HasPrefix(m, "on:") {
			t.Fatalf("ddl capture mode %q", m)
		}
		st := openChain(t, cfg, "app")
		if got := published(t, c, "app", st.Publication); !slices.Equal(got, []string{"other", "parent", "t"}) {
			t.Fatalf("publication at start lists %v", got)
		}
		c.Exec(t, "app", `CREATE TABLE withkey (id int PRIMARY KEY)`)
		c.Exec(t, "app", `CREATE TABLE parted (id int PRIMARY KEY) PARTITION BY RANGE (id)`)
		c.Exec(t, "app", `CREATE TABLE parted_a PARTITION OF parted FOR VALUES FROM (0) TO (1000000)`)
		c.Exec(t, "app", `CREATE TABLE kid (PRIMARY KEY (id)) INHERITS (parent)`)
		c.Exec(t, "app", `CREATE SCHEMA elsewhere; CREATE TABLE elsewhere.e (id int PRIMARY KEY)`)
		c.Exec(t, "app", `CREATE UNLOGGED TABLE scratch (id int)`)
		c.Exec(t, "app", `CREATE TEMP TABLE tmp (id int); INSERT INTO tmp VALUES (1); UPDATE tmp SET id = 2; DROP TABLE tmp`)
		writeEach(t, c, "app", "withkey", "parted", "kid", "elsewhere.e", "scratch")
		want := []string{"elsewhere.e", "kid", "other", "parent", "parted", "t", "withkey"}
		if got := published(t, c, "app", st.Publication); !slices.Equal(got, want) {
			t.Fatalf("publication lists %v, want %v", got, want)
		}
		if _, err := incremental.Take(ctx, cfg, incremental.Options{}); err != nil {
			t.Fatalf("incremental: %v", err)
		}
		st = openChain(t, cfg, "app")
		if st.Status != chain.StatusOpen || !slices.Equal(st.NotCovered, []string{"public.scratch"}) {
			t.Fatalf("chain %+v", st)
		}

		// Tables that cannot be published: left out, the chain ends, the
		// application's writes succeed.
		c.Exec(t, "app", `CREATE TABLE nokey (id int)`)
		c.Exec(t, "app", `CREATE TABLE kpart (id int) PARTITION BY LIST (id)`)
		c.Exec(t, "app", `CREATE TABLE kpart_a PARTITION OF kpart DEFAULT`)
		c.Exec(t, "app", `CREATE TABLE nokid () INHERITS (parent)`)
		c.Exec(t, "app", `CREATE TABLE asel AS SELECT 1 AS id`)
		c.Exec(t, "app", `SELECT 1 AS id INTO sinto`)
		writeEach(t, c, "app", "nokey", "kpart", "nokid", "asel", "sinto", "withkey")
		c.Exec(t, "app", `ALTER TABLE withkey DROP CONSTRAINT withkey_pkey`)
		writeEach(t, c, "app", "withkey")
		if got := published(t, c, "app", st.Publication); slices.Contains(got, "nokey") || slices.Contains(got, "withkey") || slices.Contains(got, "kpart") {
			t.Fatalf("unsafe tables published: %v", got)
		}
		_, err := incremental.Take(ctx, cfg, incremental.Options{})
		if !errors.Is(err, capture.ErrChainEnded) || !strings.Contains(err.Error(), "public.nokey has neither a primary key nor a replica identity") {
			t.Fatalf("want the chain ended by nokey, got %v", err)
		}
		st2, _ := chain.Load(cfg, st.ID)
		if st2.Status != chain.StatusBroken || st2.EndLSN == "" || !strings.Contains(st2.Reason, "nokey") {
			t.Fatalf("chain %+v", st2)
		}
		noPme2goObjects(t, c, "app")
		writeEach(t, c, "app", "nokey", "kpart", "nokid", "asel", "sinto", "withkey")
		c.Exec(t, "app", `DROP TABLE nokey, kpart, nokid, asel, sinto, withkey, parted, kid, elsewhere.e, scratch`)
	})

	t.Run("ddl in a DO block", func(t *testing.T) {
		cfg := loadCfg(t, cfgEnv(t, c, "app"))
		full(t, cfg)
		c.Exec(t, "app", `DO $$ BEGIN CREATE TABLE indo (id int PRIMARY KEY); END $$`)
		writeEach(t, c, "app", "indo")
		_, err := incremental.Take(ctx, cfg, incremental.Options{})
		if !errors.Is(err, capture.ErrChainEnded) || !strings.Contains(err.Error(), "inside a function, procedure or DO block") {
			t.Fatalf("want the chain ended by DDL in a DO block, got %v", err)
		}
		noPme2goObjects(t, c, "app")
		c.Exec(t, "app", `DROP TABLE indo`)
	})

	t.Run("capture off", func(t *testing.T) {
		cfg := loadCfg(t, cfgEnv(t, c, "app", "CAPTURE_DDL=false"))
		res := full(t, cfg)
		if m, _ := res.Manifest.Metadata["ddlCapture:app"].(string); !strings.HasPrefix(m, "off: CAPTURE_DDL=false") {
			t.Fatalf("ddl capture mode %q", m)
		}
		c.Exec(t, "app", `CREATE TABLE late (id int PRIMARY KEY)`)
		writeEach(t, c, "app", "late")
		_, err := incremental.Take(ctx, cfg, incremental.Options{})
		if !errors.Is(err, capture.ErrChainEnded) || !strings.Contains(err.Error(), "public.late created after the full backup while DDL capture is off") {
			t.Fatalf("want the chain ended by a new table, got %v", err)
		}
		noPme2goObjects(t, c, "app")
		c.Exec(t, "app", `DROP TABLE late`)
	})

	t.Run("replica identity fix", func(t *testing.T) {
		cfg := loadCfg(t, cfgEnv(t, c, "app", "REPLICA_IDENTITY_FIX=full"))
		full(t, cfg)
		st := openChain(t, cfg, "app")
		c.Exec(t, "app", `CREATE TABLE nokey (id int)`)
		c.Exec(t, "app", `CREATE TABLE kpart (id int) PARTITION BY LIST (id)`)
		c.Exec(t, "app", `CREATE TABLE kpart_a PARTITION OF kpart DEFAULT`)
		c.Exec(t, "app", `CREATE TABLE nokid () INHERITS (parent)`)
		writeEach(t, c, "app", "nokey", "kpart", "nokid")
		var full int
		c.Conn(t, "app").QueryRow(ctx, `SELECT count(*) FROM pg_class WHERE relname IN ('nokey', 'kpart', 'kpart_a', 'nokid') AND relreplident = 'f'`).Scan(&full)
		if full != 4 {
			t.Fatalf("%d tables got REPLICA IDENTITY FULL, want 4", full)
		}
		if got := published(t, c, "app", st.Publication); !slices.Contains(got, "nokey") || !slices.Contains(got, "kpart") || !slices.Contains(got, "nokid") {
			t.Fatalf("publication lists %v", got)
		}
		if _, err := incremental.Take(ctx, cfg, incremental.Options{}); err != nil {
			t.Fatalf("incremental: %v", err)
		}
		if st := openChain(t, cfg, "app"); st.Status != chain.StatusOpen {
			t.Fatalf("chain %+v", st)
		}
		c.Exec(t, "app", `DROP TABLE nokey, kpart, nokid`)
		if err := chain.End(ctx, cfg, openChain(t, cfg, "app"), "test over"); err != nil {
			t.Fatal(err)
		}
		noPme2goObjects(t, c, "app")
	})

	t.Run("full refuses", func(t *testing.T) {
		// A chain is open; a table without a key appears (left out, chain
		// end pending in the stream); the next full backup refuses a new
		// chain and, in the same step, the old chain's objects leave.
		cfg := loadCfg(t, cfgEnv(t, c, "app"))
		full(t, cfg)
		old := openChain(t, cfg, "app")
		c.Exec(t, "app", `CREATE TABLE nopk2 (id int); INSERT INTO nopk2 VALUES (1), (2); UPDATE nopk2 SET id = id + 1`)
		res := full(t, cfg)
		if res.Manifest.ChainID != "" || !strings.Contains(strings.Join(res.Manifest.Warnings, " "), "nopk2") {
			t.Fatalf("full backup started a chain or did not say why not: %+v", res.Manifest)
		}
		st, _ := chain.Load(cfg, old.ID)
		if st.Status != chain.StatusBroken || !strings.Contains(st.Reason, "nopk2") {
			t.Fatalf("old chain %+v", st)
		}
		noPme2goObjects(t, c, "app")
		writeEach(t, c, "app", "nopk2")
		id8, _ := config.InstallationShortID(cfg)
		if !strings.HasPrefix(st.Slot, chain.ObjectPrefix(id8)) {
			t.Fatalf("slot %s does not carry the installation id %s", st.Slot, id8)
		}
	})
}

// TestCaptureModeWithoutSuperuser (issue 6): with CAPTURE_DDL=auto and a
// role that is not a superuser, no event trigger can be installed, and
// without one nothing could take a published table that loses its key out
// of the publication: its UPDATE and DELETE would fail. So the full backup
// starts no chain unless REPLICA_IDENTITY_FIX=full, which gives every
// table REPLICA IDENTITY FULL at the chain's start (PostgreSQL then
// accepts UPDATE and DELETE whatever keys the table loses), and refuses a
// partitioned table without a key (its later partitions would have none).
// The full backup's warnings say why. CAPTURE_DDL=true refuses to start a
// chain then, with the reason.
func TestCaptureModeWithoutSuperuser(t *testing.T) {
	c := setup(t, "app")
	c.Exec(t, "app", `CREATE ROLE bk LOGIN REPLICATION; GRANT CREATE ON DATABASE app TO bk;
		GRANT pg_read_all_data TO bk; ALTER TABLE t OWNER TO bk; ALTER TABLE other OWNER TO bk;
		ALTER SEQUENCE t_id_seq OWNER TO bk; GRANT CREATE ON SCHEMA public TO bk`)
	ctx := context.Background()

	// Without REPLICA_IDENTITY_FIX=full: no chain, and the reason.
	cfg := loadCfg(t, cfgEnv(t, c, "app", "DB_USER=bk"))
	warned := false
	for _, f := range selftest.Run(ctx, cfg) {
		if f.Check == "ddl capture app" && f.Status == selftest.Warn && strings.Contains(f.Fix, "REPLICA_IDENTITY_FIX=full") {
			warned = true
		}
	}
	if !warned {
		t.Fatalf("test does not warn that no chain will start: %+v", selftest.Run(ctx, cfg))
	}
	res := full(t, cfg)
	w := strings.Join(res.Manifest.Warnings, " ")
	if res.Manifest.ChainID != "" || !strings.Contains(w, "role bk is not a superuser") || !strings.Contains(w, "Set REPLICA_IDENTITY_FIX=full") {
		t.Fatalf("full backup without event triggers: chain %q, warnings %v", res.Manifest.ChainID, res.Manifest.Warnings)
	}
	noPme2goObjects(t, c, "app")

	// A partitioned table without a key: refused even with the fix.
	c.Exec(t, "app", `CREATE TABLE kp (id int) PARTITION BY LIST (id); ALTER TABLE kp OWNER TO bk`)
	cfg = loadCfg(t, cfgEnv(t, c, "app", "DB_USER=bk", "REPLICA_IDENTITY_FIX=full"))
	res = full(t, cfg)
	if res.Manifest.ChainID != "" || !strings.Contains(strings.Join(res.Manifest.Warnings, " "), "partitioned table(s) public.kp have no primary key") {
		t.Fatalf("keyless partitioned table: chain %q, warnings %v", res.Manifest.ChainID, res.Manifest.Warnings)
	}
	noPme2goObjects(t, c, "app")
	c.Exec(t, "app", `DROP TABLE kp`)

	// With REPLICA_IDENTITY_FIX=full: every table FULL, a chain.
	res = full(t, cfg)
	mode, _ := res.Manifest.Metadata["ddlCapture:app"].(string)
	if res.Manifest.ChainID == "" || !strings.HasPrefix(mode, "off: role bk is not a superuser") || !strings.Contains(mode, "REPLICA IDENTITY FULL") {
		t.Fatalf("chain %q, DDL capture mode %q, warnings %v", res.Manifest.ChainID, mode, res.Manifest.Warnings)
	}
	var notFull int
	c.Conn(t, "app").QueryRow(ctx, `SELECT count(*) FROM pg_class WHERE relname IN ('t', 'other') AND relreplident <> 'f'`).Scan(&notFull)
	if notFull != 0 {
		t.Fatalf("%d tables without REPLICA IDENTITY FULL", notFull)
	}
	st := openChain(t, cfg, "app")
	if st.CaptureDDL || st.Triggers || !slices.Equal(published(t, c, "app", st.Publication), []string{"other", "t"}) {
		t.Fatalf("chain %+v publishes %v", st, published(t, c, "app", st.Publication))
	}
	var triggers int
	c.Conn(t, "app").QueryRow(ctx, `SELECT count(*) FROM pg_event_trigger`).Scan(&triggers)
	if triggers != 0 {
		t.Fatalf("%d event triggers installed by a role that is not a superuser", triggers)
	}
	c.Exec(t, "app", `CREATE TABLE later (id int)`)
	writeEach(t, c, "app", "later")
	if slices.Contains(published(t, c, "app", st.Publication), "later") {
		t.Fatal("a table created later was published without the event trigger")
	}
	c.Exec(t, "app", `DROP TABLE later`)
	// A published table loses its key: its writes still succeed.
	c.Exec(t, "app", `ALTER TABLE t DROP CONSTRAINT t_pkey`)
	conn := connAs(t, c, "app", "bk")
	for _, q := range []string{`UPDATE t SET v = v || '!' WHERE id <= 5`, `DELETE FROM t WHERE id = 6`, `INSERT INTO t (v) VALUES ('after')`} {
		if _, err := conn.Exec(ctx, q); err != nil {
			t.Fatalf("application statement failed after the key was dropped: %s: %v", q, err)
		}
	}
	// The catalog comparison ends the chain at the next incremental.
	if _, err := incremental.Take(ctx, cfg, incremental.Options{}); !errors.Is(err, capture.ErrChainEnded) {
		t.Fatalf("incremental after a schema change without DDL capture: %v", err)
	}
	noPme2goObjects(t, c, "app")

	cfg = loadCfg(t, cfgEnv(t, c, "app", "DB_USER=bk", "CAPTURE_DDL=true"))
	res = full(t, cfg)
	if res.Manifest.ChainID != "" || !strings.Contains(strings.Join(res.Manifest.Warnings, " "), "CAPTURE_DDL=true but role bk is not a superuser") {
		t.Fatalf("CAPTURE_DDL=true without superuser: chain %q, warnings %v", res.Manifest.ChainID, res.Manifest.Warnings)
	}
}

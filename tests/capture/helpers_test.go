// Package capture_test checks change capture end to end against real
// PostgreSQL: chains started by full backups, incremental archives holding
// exactly the transactions made, resumption after a cancelled or killed
// capture, and the safety rules (replica identity, lag cap, invalidated
// slots, schema changes, orphaned slots).
package capture_test

import (
	"context"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pme2go/pme2go-backup/engine/archive"
	"github.com/pme2go/pme2go-backup/engine/backup"
	"github.com/pme2go/pme2go-backup/engine/chain"
	"github.com/pme2go/pme2go-backup/engine/changeset"
	"github.com/pme2go/pme2go-backup/engine/config"
	"github.com/pme2go/pme2go-backup/engine/incremental"
	"github.com/pme2go/pme2go-backup/tests/pgharness"
)

// cfgEnv returns the configuration environment for a cluster and database.
func cfgEnv(t *testing.T, c *pgharness.Cluster, db string, extra ...string) map[string]string {
	return pgharness.ConfigEnv(t, c, []string{db}, append([]string{"BACKUP_COMPRESSION_LEVEL=1"}, extra...)...)
}

func loadCfg(t *testing.T, env map[string]string) *config.Config {
	return pgharness.LoadConfig(t, env)
}

// setup starts a cluster with database db holding table t (id serial PK).
func setup(t *testing.T, db string, opts ...pgharness.Option) *pgharness.Cluster {
	t.Helper()
	c := pgharness.Start(t, opts...)
	c.CreateDB(t, db)
	c.Exec(t, db, `CREATE TABLE t (id serial PRIMARY KEY, v text, n numeric);
		CREATE TABLE other (k text PRIMARY KEY, d timestamptz);
		INSERT INTO t (v) SELECT 'seed' || i FROM generate_series(1, 20) i;`)
	return c
}

func full(t *testing.T, cfg *config.Config) *backup.Result {
	t.Helper()
	res, err := backup.Full(context.Background(), cfg, backup.Options{Chain: incremental.NewChainStarter(cfg, nil)})
	if err != nil {
		t.Fatalf("full backup: %v", err)
	}
	return res
}

// txs runs n transactions, each inserting one row into t, and returns
// their xids.
func txs(t *testing.T, conn *pgx.Conn, n int) []uint32 {
	t.Helper()
	ctx := context.Background()
	var out []uint32
	for i := 0; i < n; i++ {
		tx, err := conn.Begin(ctx)
		if err != nil {
			t.Fatal(err)
		}
		var xid int64
		if err := tx.QueryRow(ctx, `INSERT INTO t (v, n) VALUES ($1, 1.5) RETURNING txid_current()`, "row"+strconv.Itoa(i)).Scan(&xid); err != nil {
			t.Fatal(err)
		}
		if err := tx.Commit(ctx); err != nil {
			t.Fatal(err)
		}
		out = append(out, uint32(xid))
	}
	return out
}

// slotExists reports whether the slot exists on the server.
func slotExists(t *testing.T, conn *pgx.Conn, slot string) bool {
	t.Helper()
	var n int
	if err := conn.QueryRow(context.Background(), `SELECT count(*) FROM pg_replication_slots WHERE slot_name = $1`, slot).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n == 1
}

func pubExists(t *testing.T, conn *pgx.Conn, pub string) bool {
	t.Helper()
	var n int
	if err := conn.QueryRow(context.Background(), `SELECT count(*) FROM pg_publication WHERE pubname = $1`, pub).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n == 1
}

// archiveTxs verifies an incremental archive and returns its manifest and
// the transactions of its change set(s).
func archiveTxs(t *testing.T, path string) (*archive.Manifest, []*changeset.Tx) {
	t.Helper()
	ctx := context.Background()
	rep, err := archive.Verify(ctx, path)
	if err != nil || !rep.OK() {
		t.Fatalf("verify %s: %v %+v", path, err, rep)
	}
	dir := t.TempDir()
	m, err := archive.Extract(ctx, path, dir)
	if err != nil {
		t.Fatalf("extract: %v", err)
	}
	segs, _ := filepath.Glob(filepath.Join(dir, "changes", "*"))
	sort.Strings(segs)
	if len(segs) == 0 {
		t.Fatalf("%s: no changes/ member", path)
	}
	var all []*changeset.Tx
	for _, s := range segs {
		_, txs, err := changeset.ReadAll(s)
		if err != nil {
			t.Fatalf("read %s: %v", s, err)
		}
		all = append(all, txs...)
	}
	if _, err := os.Stat(filepath.Join(dir, "sequences.json")); err != nil {
		t.Errorf("no sequences.json: %v", err)
	}
	return m, all
}

// checkXids asserts the transactions are exactly want, in order, with
// strictly increasing commit LSNs above from.
func checkXids(t *testing.T, got []*changeset.Tx, want []uint32, from uint64) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("change set holds %d transactions, want %d", len(got), len(want))
	}
	last := from
	for i, tx := range got {
		if tx.Xid != want[i] {
			t.Fatalf("transaction %d: xid %d, want %d", i, tx.Xid, want[i])
		}
		if tx.CommitLSN <= last {
			t.Fatalf("transaction %d: commit LSN %s not after %s", i, changeset.FormatLSN(tx.CommitLSN), changeset.FormatLSN(last))
		}
		last = tx.CommitLSN
	}
}

func openChain(t *testing.T, cfg *config.Config, db string) *chain.State {
	t.Helper()
	st, err := chain.OpenFor(cfg, db)
	if err != nil || st == nil {
		t.Fatalf("open chain of %s: %v %v", db, st, err)
	}
	return st
}

func ctxTimeout(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

func archiveExtract(path, dir string) (*archive.Manifest, error) {
	return archive.Extract(context.Background(), path, dir)
}

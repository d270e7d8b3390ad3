package capture_test

import (
	"bytes"
	"context"
	"path/filepath"
	"strings"
	"testing"

	"github.com/pme2go/pme2go-backup/engine/chain"
	"github.com/pme2go/pme2go-backup/engine/changeset"
	"github.com/pme2go/pme2go-backup/engine/incremental"
)

// TestChainAndIncrementals: a full backup starts a chain (slot, publication,
// manifest fields); incrementals then hold exactly the transactions made
// since, link to each other without gap, and a second full backup seals the
// old chain into a final incremental and drops its slot.
func TestChainAndIncrementals(t *testing.T) {
	c := setup(t, "app")
	cfg := loadCfg(t, cfgEnv(t, c, "app"))
	ctx := ctxTimeout(t, 2*60e9)
	conn := c.Conn(t, "app")

	f := full(t, cfg)
	m := f.Manifest
	if m.ChainID == "" || m.SlotName == "" || m.StartLSN == "" {
		t.Fatalf("manifest lacks chain fields: %+v", m)
	}
	st := openChain(t, cfg, "app")
	if st.ID != m.ChainID || st.Slot != m.SlotName || st.StartLSN != m.StartLSN || st.FullBackup != filepath.Base(f.Path) {
		t.Fatalf("chain %+v does not match manifest %+v", st, m)
	}
	if !slotExists(t, conn, st.Slot) || !pubExists(t, conn, st.Publication) {
		t.Fatalf("slot or publication %s missing", st.Slot)
	}

	want := txs(t, conn, 5)
	res, err := incremental.Take(ctx, cfg, incremental.Options{})
	if err != nil || len(res) != 1 {
		t.Fatalf("incremental: %v %+v", err, res)
	}
	im, got := archiveTxs(t, res[0].Path)
	checkXids(t, got, want, st.Start())
	if im.Type != "incremental" || im.ChainID != st.ID || im.Previous != filepath.Base(f.Path) || im.StartLSN != m.StartLSN || im.TxCount != 5 ||
		im.FirstCommitLSN != changeset.FormatLSN(got[0].CommitLSN) || im.LastCommitLSN != changeset.FormatLSN(got[4].CommitLSN) || im.LastCommitTime == nil {
		t.Fatalf("incremental manifest: %+v", im)
	}

	// A mark and an update of another table travel in the next one.
	c.Exec(t, "app", `SELECT pg_logical_emit_message(true, 'pme2go.mark', 'before-update')`)
	c.Exec(t, "app", `INSERT INTO other VALUES ('k', now()); UPDATE t SET v = 'changed' WHERE id = 1`)
	want2 := txs(t, conn, 2)
	res2, err := incremental.Take(ctx, cfg, incremental.Options{})
	if err != nil || len(res2) != 1 {
		t.Fatalf("second incremental: %v %+v", err, res2)
	}
	im2, got2 := archiveTxs(t, res2[0].Path)
	if im2.Previous != filepath.Base(res[0].Path) || im2.StartLSN != im.EndLSN {
		t.Fatalf("second incremental does not continue the first: previous %s start %s, first ends %s", im2.Previous, im2.StartLSN, im.EndLSN)
	}
	if len(got2) != 4 {
		t.Fatalf("second incremental holds %d transactions, want 4 (mark, insert+update, 2 inserts)", len(got2))
	}
	checkXids(t, got2[2:], want2, 0)
	if len(got2[0].Messages) != 1 || got2[0].Messages[0].Prefix != changeset.MarkPrefix {
		t.Fatalf("mark not captured: %+v", got2[0])
	}

	// Nothing happened: still a (small) archive, continuing the chain.
	res3, err := incremental.Take(ctx, cfg, incremental.Options{})
	if err != nil || len(res3) != 1 {
		t.Fatalf("empty incremental: %v %+v", err, res3)
	}
	im3, got3 := archiveTxs(t, res3[0].Path)
	if len(got3) != 0 || im3.TxCount != 0 || im3.StartLSN != im2.EndLSN {
		t.Fatalf("empty incremental: %d txs, %+v", len(got3), im3)
	}

	// show-changes renders SQL.
	r, err := changeset.Open(segmentOf(t, res2[0].Path))
	if err != nil {
		t.Fatal(err)
	}
	var sql bytes.Buffer
	if err := changeset.RenderSQL(&sql, r); err != nil || !strings.Contains(sql.String(), "INSERT INTO") || !strings.Contains(sql.String(), "before-update") {
		t.Fatalf("render: %v\n%s", err, sql.String())
	}
	r.Close()

	// A second full backup seals the first chain into a final incremental.
	late := txs(t, conn, 3)
	f2 := full(t, cfg)
	old, err := chain.Load(cfg, st.ID)
	if err != nil || old.Status != chain.StatusSealed {
		t.Fatalf("old chain after second full: %+v %v", old, err)
	}
	if slotExists(t, conn, st.Slot) || pubExists(t, conn, st.Publication) {
		t.Fatalf("old slot/publication %s not dropped", st.Slot)
	}
	if old.LastArchive == filepath.Base(res3[0].Path) {
		t.Fatalf("no final incremental for the old chain")
	}
	_, gotFinal := archiveTxs(t, filepath.Join(cfg.IncrementalDir(), old.LastArchive))
	checkXids(t, gotFinal, late, 0)
	st2 := openChain(t, cfg, "app")
	if st2.ID == st.ID || st2.ID != f2.Manifest.ChainID || !slotExists(t, conn, st2.Slot) {
		t.Fatalf("new chain %+v", st2)
	}
	if o, err := chain.Orphans(context.Background(), cfg); err != nil || len(o) != 0 {
		t.Fatalf("orphans: %v %+v", err, o)
	}
}

// segmentOf extracts an archive and returns its first segment path.
func segmentOf(t *testing.T, path string) string {
	t.Helper()
	dir := t.TempDir()
	if _, err := archiveExtract(path, dir); err != nil {
		t.Fatal(err)
	}
	segs, _ := filepath.Glob(filepath.Join(dir, "changes", "*"))
	if len(segs) == 0 {
		t.Fatal("no segment")
	}
	return segs[0]
}

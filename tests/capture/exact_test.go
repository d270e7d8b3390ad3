package capture_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/pme2go/pme2go-backup/engine/chain"
	"github.com/pme2go/pme2go-backup/engine/errs"
	"github.com/pme2go/pme2go-backup/engine/ops"
	"github.com/pme2go/pme2go-backup/tests/pgharness"
)

// TestPreparedTransactionBlocksSlot: a forgotten PREPARE TRANSACTION holds
// its transaction open, so slot creation waits for it; past the timeout the
// warning names it (gid, owner, database, age) with the fix, instead of
// "no open transaction found now".
func TestPreparedTransactionBlocksSlot(t *testing.T) {
	c := setup(t, "app", pgharness.WithSetting("max_prepared_transactions", "4"))
	cfg := loadCfg(t, cfgEnv(t, c, "app"))
	ctx := context.Background()
	c.Exec(t, "app", `BEGIN; INSERT INTO t (v) VALUES ('prepared'); PREPARE TRANSACTION 'forgotten''s gid'`)
	s := chain.NewStarter(cfg, nil)
	s.SlotTimeout = 2 * time.Second
	snap, meta, release, err := s.Snapshot(ctx, "app")
	if err != nil || snap != "" {
		t.Fatalf("snapshot %q, %v", snap, err)
	}
	release(false)
	w := meta[chain.WarningKey]
	for _, want := range []string{`prepared transaction 'forgotten''s gid'`, "owner postgres", "database app", "prepared ", "s ago",
		`COMMIT PREPARED 'forgotten''s gid'`, `ROLLBACK PREPARED 'forgotten''s gid'`} {
		if !strings.Contains(w, want) {
			t.Fatalf("warning does not say %q: %s", want, w)
		}
	}
	if strings.Contains(w, "no open transaction found") {
		t.Fatalf("warning still says no transaction was found: %s", w)
	}
	t.Logf("warning: %s", w)
	c.Exec(t, "app", `ROLLBACK PREPARED 'forgotten''s gid'`)
	time.Sleep(300 * time.Millisecond)
	noPme2goObjects(t, c, "app")
}

// TestMarkNeedsLogicalWAL: with wal_level = replica no change stream can
// hold a mark, so mark fails with the reason instead of succeeding.
func TestMarkNeedsLogicalWAL(t *testing.T) {
	c := setup(t, "app", pgharness.WithSetting("wal_level", "replica"))
	cfg := loadCfg(t, cfgEnv(t, c, "app"))
	res, err := ops.Mark(context.Background(), cfg, ops.MarkOptions{Name: "before-migration"}, nil)
	if err == nil {
		t.Fatalf("mark succeeded with wal_level = replica: %+v", res)
	}
	if code := errs.CodeOf(err); code != errs.NotFound && code != errs.Unsupported {
		t.Fatalf("mark error %v has code %s", err, code)
	}
	if len(res.Marks) != 0 {
		t.Fatalf("marks reported: %+v", res.Marks)
	}
	t.Logf("refused: %v", err)
}

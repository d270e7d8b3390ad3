package integration

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/pme2go/pme2go-backup/engine/archive"
	"github.com/pme2go/pme2go-backup/engine/backup"
	"github.com/pme2go/pme2go-backup/engine/catalog"
	"github.com/pme2go/pme2go-backup/engine/incremental"
	"github.com/pme2go/pme2go-backup/engine/restore"
	"github.com/pme2go/pme2go-backup/tests/pgharness"
)

// TestFullRoundTripAwkwardData backs up a database full of awkward data with
// every codec, restores each archive into a new database and compares every
// table, sequence and large object with the source.
func TestFullRoundTripAwkwardData(t *testing.T) {
	c := pgharness.Start(t)
	c.CreateDB(t, "src")
	pgharness.LoadAwkward(t, c, "src")
	ctx := context.Background()
	for _, codec := range []string{"xz", "zstd", "gzip", "none"} {
		t.Run(codec, func(t *testing.T) {
			cfg := loadCfg(t, cfgEnv(t, c, []string{"src"}, "BACKUP_COMPRESSION="+codec))
			res, err := backup.Full(ctx, cfg, backup.Options{Chain: incremental.NewChainStarter(cfg, nil)})
			if err != nil {
				t.Fatalf("full backup: %v", err)
			}
			checkPrivate(t, res.Path)
			rep, err := archive.Verify(ctx, res.Path)
			if err != nil || !rep.OK() {
				t.Fatalf("verify: %v %+v", err, rep)
			}
			all, err := catalog.List(cfg.BackupDir)
			if err != nil || len(all) != 1 || all[0].Path != res.Path || all[0].Problem != "" {
				t.Fatalf("list: %v %+v", err, all)
			}
			dst := "dst_" + codec
			if _, err := restore.Run(ctx, cfg, restore.Options{Backup: res.Path, TargetDB: dst}); err != nil {
				t.Fatalf("restore: %v", err)
			}
			n := pgharness.CompareDatabases(t, c, "src", dst)
			t.Logf("%s: %s, %d relations equal", codec, filepath.Base(res.Path), n)
		})
	}
}

// checkPrivate asserts 0600 archives in 0700 directories.
func checkPrivate(t *testing.T, path string) {
	t.Helper()
	for _, p := range []string{path, archive.SidecarPath(path)} {
		st, err := os.Stat(p)
		if err != nil || st.Mode().Perm() != 0o600 {
			t.Errorf("%s: mode %v, want 0600 (%v)", p, st.Mode().Perm(), err)
		}
	}
	for d := filepath.Dir(path); d != filepath.Dir(filepath.Dir(filepath.Dir(path))); d = filepath.Dir(d) {
		st, err := os.Stat(d)
		if err != nil || st.Mode().Perm() != 0o700 {
			t.Errorf("%s: mode %v, want 0700 (%v)", d, st.Mode().Perm(), err)
		}
	}
}

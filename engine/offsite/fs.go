package offsite

import (
	"github.com/pme2go/pme2go-backup/engine/config"
	"github.com/pme2go/pme2go-backup/engine/fsutil"
)

func ensureDirs(cfg *config.Config, dirs ...string) error {
	for _, d := range append([]string{cfg.BackupDir, cfg.StateDir()}, dirs...) {
		if err := fsutil.EnsurePrivateDir(d); err != nil {
			return err
		}
	}
	return nil
}

func writeAtomic(path string, b []byte) error { return fsutil.WriteFileAtomic(path, b, 0o600) }

func syncDir(dir string) error { return fsutil.SyncDir(dir) }

// Package backupdir holds what the workflows share about BACKUP_DIR: the
// directory lock every writer takes (state/backup.lock), the preparation of
// the directories, and the names of new archives. It sits below the
// workflows (backup, incremental, restore, offsite), so that none of them
// needs another for these.
package backupdir

import (
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/pme2go/pme2go-backup/engine/archive"
	"github.com/pme2go/pme2go-backup/engine/config"
	"github.com/pme2go/pme2go-backup/engine/fsutil"
	"github.com/pme2go/pme2go-backup/engine/lock"
)

// LockFile is the directory lock's path below cfg.StateDir().
const LockFile = "backup.lock"

// Lock takes the backup directory lock without waiting; an error wraps
// lock's "already running (pid N)" error when another process holds it.
func Lock(cfg *config.Config) (*lock.Lock, error) {
	return lock.TryAcquire(filepath.Join(cfg.StateDir(), LockFile), "a backup")
}

// Prepare makes the backup directories (and dir) private, takes the
// directory lock and removes leftovers of interrupted runs. The returned
// function releases the lock.
func Prepare(cfg *config.Config, dir string) (func(), error) {
	for _, d := range []string{cfg.BackupDir, cfg.StateDir(), cfg.FullDir(), cfg.IncrementalDir(), dir} {
		if err := fsutil.EnsurePrivateDir(d); err != nil {
			return nil, fmt.Errorf("backup directory %s is not usable (check BACKUP_DIR, ownership and permissions): %w", d, err)
		}
	}
	l, err := Lock(cfg)
	if err != nil {
		return nil, err
	}
	for _, d := range []string{cfg.StateDir(), cfg.FullDir(), cfg.IncrementalDir(), dir} {
		if _, err := fsutil.RemoveLeftovers(d); err != nil {
			l.Release()
			return nil, err
		}
	}
	return func() { l.Release() }, nil
}

// CreateIncremental creates the writer of a new incremental archive in
// cfg.IncrementalDir(), named after m.Timestamp with the configured codec's
// extension (.age when encryption is configured); while that name is taken,
// m.Timestamp moves on by a millisecond. It returns the writer and the final
// path; errors are archive.Create's.
func CreateIncremental(cfg *config.Config, m *archive.Manifest) (*archive.Writer, string, error) {
	var path string
	for {
		path = filepath.Join(cfg.IncrementalDir(), "incremental_backup_"+archive.TimestampName(m.Timestamp)+archive.FileExt(archive.Codec(cfg.Compression)))
		if _, err := os.Stat(path); os.IsNotExist(err) {
			break
		}
		m.Timestamp = m.Timestamp.Add(time.Millisecond)
	}
	w, err := archive.Create(path, archive.WriterOptions{Codec: archive.Codec(cfg.Compression), Level: cfg.CompressionLevel, Workers: cfg.Jobs})
	return w, path, err
}

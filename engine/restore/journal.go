package restore

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/pme2go/pme2go-backup/engine/config"
	"github.com/pme2go/pme2go-backup/engine/fsutil"
	"github.com/pme2go/pme2go-backup/engine/pgclient"
)

// A restore killed midway (SIGKILL, a crash, the machine going down) cannot
// undo what it did to the server: a database replaced with --force could be
// left refusing connections, or renamed to its private name while the
// safety backup ran. Each database restore therefore keeps a journal,
// BACKUP_DIR/state/restores/<pid>-<n>.json, saying which phase it is in; a
// clean end (success, or a failure it undid itself) removes it. The next
// restore (RecoverInterrupted, run under the backup directory lock) finishes
// or undoes what a dead process left:
//
//   - building (restored copy being made): its scratch database is dropped
//     (a point-in-time scratch database is kept for --resume);
//   - locked (the target refused connections, maybe already swapped): the
//     swap is undone, the target gets its connection setting back, and the
//     restored copy is dropped as above: the target is as it was;
//   - committed (safety backup taken, chain ended): the restore is completed:
//     the target (the restored database) gets the connection setting, the
//     replaced database is dropped.

// Journal phases.
const (
	phaseBuilding  = "building"
	phaseLocked    = "locked"
	phaseCommitted = "committed"
)

type journal struct {
	PID       int    `json:"pid"`
	Target    string `json:"target"`
	Fresh     string `json:"fresh"`
	Old       string `json:"old,omitempty"`
	PITR      bool   `json:"pitr,omitempty"`
	AllowConn bool   `json:"allowConn"`
	Phase     string `json:"phase"`

	path string
	keep bool // an undo failed: leave it for the next run
}

func journalDir(cfg *config.Config) string { return filepath.Join(cfg.StateDir(), "restores") }

// newJournal starts the journal of one database restore.
func newJournal(cfg *config.Config, target, fresh string, pitr bool) (*journal, error) {
	dir := journalDir(cfg)
	if err := fsutil.EnsurePrivateDir(dir); err != nil {
		return nil, fmt.Errorf("restore journal directory: %w", err)
	}
	j := &journal{PID: os.Getpid(), Target: target, Fresh: fresh, PITR: pitr, AllowConn: true}
	for n := 1; ; n++ {
		j.path = filepath.Join(dir, fmt.Sprintf("%d-%d.json", j.PID, n))
		if _, err := os.Stat(j.path); errors.Is(err, os.ErrNotExist) {
			break
		}
	}
	return j, j.set(phaseBuilding)
}

// set records the phase durably.
func (j *journal) set(phase string) error {
	j.Phase = phase
	data, err := json.MarshalIndent(j, "", "  ")
	if err != nil {
		return err
	}
	if err := fsutil.WriteFileAtomic(j.path, append(data, '\n'), 0o600); err != nil {
		return fmt.Errorf("write restore journal: %w", err)
	}
	return nil
}

// close removes the journal unless an undo failed.
func (j *journal) close() {
	if j != nil && !j.keep {
		os.Remove(j.path)
	}
}

// RecoverInterrupted finishes or undoes the database restores of restore
// processes that died midway (see above) and returns what it did, one
// sentence each. Call it holding the backup directory lock. Journals of
// running processes are left alone.
func RecoverInterrupted(ctx context.Context, cfg *config.Config, log *slog.Logger) ([]string, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	entries, err := os.ReadDir(journalDir(cfg))
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read restore journals: %w", err)
	}
	var done []string
	var errs []error
	for _, e := range entries {
		if !strings.HasSuffix(e.Name(), ".json") {
			continue
		}
		path := filepath.Join(journalDir(cfg), e.Name())
		data, err := os.ReadFile(path)
		if err != nil {
			errs = append(errs, fmt.Errorf("read restore journal %s: %w", path, err))
			continue
		}
		var j journal
		if err := json.Unmarshal(data, &j); err != nil {
			errs = append(errs, fmt.Errorf("restore journal %s is damaged (remove it once the databases are checked): %w", path, err))
			continue
		}
		if j.PID == os.Getpid() || (j.PID > 0 && syscall.Kill(j.PID, 0) != syscall.ESRCH) {
			continue // a running restore
		}
		what, err := recoverOne(ctx, pgclient.FromConfig(cfg), &j, log)
		if err != nil {
			errs = append(errs, fmt.Errorf("undo the restore of %s interrupted in process %d: %w", j.Target, j.PID, err))
			continue
		}
		os.Remove(path)
		log.Warn("restore interrupted earlier: "+what, "database", j.Target, "pid", j.PID, "phase", j.Phase)
		done = append(done, what)
	}
	return done, errors.Join(errs...)
}

func recoverOne(ctx context.Context, target pgclient.Target, j *journal, log *slog.Logger) (string, error) {
	names := []string{j.Target, j.Fresh}
	if j.Old != "" {
		names = append(names, j.Old)
	}
	maint, err := connectMaintenance(ctx, target, names...)
	if err != nil {
		return "", err
	}
	defer maint.Close(context.Background())
	exists := func(db string) (bool, error) {
		var ok bool
		err := maint.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)`, db).Scan(&ok)
		return ok, err
	}
	dropFresh := func() (string, error) {
		ok, err := exists(j.Fresh)
		if err != nil || !ok {
			return "", err
		}
		if j.PITR {
			setAllowConnections(ctx, maint, j.Fresh, true)
			return fmt.Sprintf("; scratch database %s kept (drop it, or continue with --resume if it is accepted)", j.Fresh), nil
		}
		dropDatabase(ctx, maint, j.Fresh, log)
		return fmt.Sprintf("; scratch database %s dropped", j.Fresh), nil
	}
	switch j.Phase {
	case phaseBuilding:
		tail, err := dropFresh()
		return fmt.Sprintf("restore of %s interrupted while building the restored copy; %s was not changed%s", j.Target, j.Target, tail), err
	case phaseLocked:
		swapped := false
		if j.Old != "" {
			oldThere, err := exists(j.Old)
			if err != nil {
				return "", err
			}
			freshThere, err := exists(j.Fresh)
			if err != nil {
				return "", err
			}
			if oldThere && !freshThere {
				if err := renameBoth(ctx, maint, j.Target, j.Fresh, j.Old, j.Target); err != nil {
					return "", fmt.Errorf("put %s back from %s: %w", j.Target, j.Old, err)
				}
				swapped = true
			}
		}
		if err := setAllowConnections(ctx, maint, j.Target, j.AllowConn); err != nil {
			return "", fmt.Errorf("give %s its connections back: %w", j.Target, err)
		}
		tail, err := dropFresh()
		what := fmt.Sprintf("restore --force of %s interrupted after it had shut the database; connections allowed again", j.Target)
		if swapped {
			what += ", the replaced database put back under its name (its content as it was)"
		}
		return what + tail, err
	case phaseCommitted:
		if err := setAllowConnections(ctx, maint, j.Target, j.AllowConn); err != nil {
			return "", fmt.Errorf("open the restored database %s: %w", j.Target, err)
		}
		if ok, err := exists(j.Old); err != nil {
			return "", err
		} else if ok {
			setAllowConnections(ctx, maint, j.Old, false)
			dropDatabase(ctx, maint, j.Old, log)
		}
		return fmt.Sprintf("restore --force of %s interrupted after its safety backup; completed: the restored database accepts connections, the replaced one was dropped", j.Target), nil
	}
	return "", fmt.Errorf("unknown phase %q", j.Phase)
}

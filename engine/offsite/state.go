package offsite

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"syscall"
	"time"

	"github.com/pme2go/pme2go-backup/engine/archive"
	"github.com/pme2go/pme2go-backup/engine/config"
	"github.com/pme2go/pme2go-backup/engine/fsutil"
)

// StateFile is the record of off-site copies, below BACKUP_DIR/state.
const StateFile = "offsite.json"

// Copy records one backup's verified copy in the repository.
type Copy struct {
	Name string `json:"name"`
	Type string `json:"type"` // "full" or "incremental"
	// Key is the archive's path below the repository root.
	Key    string    `json:"key"`
	Size   int64     `json:"size"`
	SHA256 string    `json:"sha256"` // of the bytes as stored
	Copied time.Time `json:"copied"` // when the upload was verified
	// LocalPruned is when the local copy was removed (LOCAL_RETENTION_DAYS).
	LocalPruned *time.Time `json:"localPruned,omitempty"`
	// Manifest is the sidecar manifest, so that list and status describe
	// a backup whose local copy was pruned without asking the repository.
	Manifest *archive.Manifest `json:"manifest,omitempty"`
	// Ours is set when this installation uploaded the copy (or holds it
	// locally); a copy only found in the repository (another
	// installation's, or one from before the state was lost) is not ours,
	// and OFFSITE_RETENTION_DAYS never removes it.
	Ours bool `json:"ours,omitempty"`
}

// State is the content of the state file.
type State struct {
	// Repository is the OFFSITE_URL (without credentials) the copies were
	// made to; copies recorded for another repository do not count.
	Repository string           `json:"repository"`
	Copies     map[string]*Copy `json:"copies"`
	// Uploads are the multipart uploads of archives in progress, by
	// repository path, resumed by the next upload of the same bytes.
	Uploads map[string]*PendingUpload `json:"uploads,omitempty"`
	// Streams records, per chain segment, what streaming has sent.
	Streams map[string]*StreamPos `json:"streams,omitempty"`
	// LastSync and LastError describe the last upload run.
	LastSync  *time.Time `json:"lastSync,omitempty"`
	LastError string     `json:"lastError,omitempty"`
	// LastSuccess is when the last run without an error ended.
	LastSuccess *time.Time `json:"lastSuccess,omitempty"`
}

// StreamPos is how much of one open segment streaming has sent.
type StreamPos struct {
	Chain      string    `json:"chain"`
	Database   string    `json:"database"`
	Segment    string    `json:"segment"`
	Generation string    `json:"generation"`
	Offset     int64     `json:"offset"`
	Synced     time.Time `json:"synced"`
}

var stateMu sync.Mutex

func statePath(cfg *config.Config) string { return filepath.Join(cfg.StateDir(), StateFile) }

// LoadState reads the state file of cfg (empty when missing).
func LoadState(cfg *config.Config) (*State, error) {
	st := &State{Copies: map[string]*Copy{}, Streams: map[string]*StreamPos{}, Uploads: map[string]*PendingUpload{}}
	b, err := os.ReadFile(statePath(cfg))
	if errors.Is(err, os.ErrNotExist) {
		return st, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read off-site state: %w", err)
	}
	if err := json.Unmarshal(b, st); err != nil {
		return nil, fmt.Errorf("off-site state %s is damaged (%v); move it away and run `pme2go-backup offsite sync` to rebuild it from the repository", statePath(cfg), err)
	}
	if st.Copies == nil {
		st.Copies = map[string]*Copy{}
	}
	if st.Streams == nil {
		st.Streams = map[string]*StreamPos{}
	}
	if st.Uploads == nil {
		st.Uploads = map[string]*PendingUpload{}
	}
	return st, nil
}

// update applies fn to the state under a process mutex and an exclusive
// file lock (the daemon's jobs, a stream and a CLI may update it at once),
// then writes it atomically with mode 0600.
func update(cfg *config.Config, fn func(*State) error) error {
	stateMu.Lock()
	defer stateMu.Unlock()
	if err := fsutil.EnsurePrivateDir(cfg.StateDir()); err != nil {
		return err
	}
	lf, err := os.OpenFile(statePath(cfg)+".lock", os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return fmt.Errorf("lock off-site state: %w", err)
	}
	defer lf.Close()
	if err := syscall.Flock(int(lf.Fd()), syscall.LOCK_EX); err != nil {
		return fmt.Errorf("lock off-site state: %w", err)
	}
	st, err := LoadState(cfg)
	if err != nil {
		return err
	}
	if err := fn(st); err != nil {
		return err
	}
	b, err := json.MarshalIndent(st, "", "  ")
	if err != nil {
		return err
	}
	return fsutil.WriteFileAtomic(statePath(cfg), append(b, '\n'), 0o600)
}

// Location says where a backup lives: "local", "offsite" or "both".
type Location struct {
	Name     string `json:"name"`
	Location string `json:"location"`
	Copy     *Copy  `json:"-"`
}

// Copies returns the recorded copies of the configured repository, oldest
// first (nil without a repository).
func Copies(cfg *config.Config) ([]*Copy, error) {
	s, err := Parse(cfg)
	if err != nil {
		return nil, nil
	}
	st, err := LoadState(cfg)
	if err != nil {
		return nil, err
	}
	if st.Repository != "" && st.Repository != s.String() {
		return nil, nil
	}
	var out []*Copy
	for _, c := range st.Copies {
		out = append(out, c)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

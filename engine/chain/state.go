// Package chain manages backup chains: one logical replication slot and one
// publication per database, started at the exact snapshot a full backup
// dumps, and the state directory that describes them
// (BACKUP_DIR/state/chains/<chainID>/chain.json and its segments/).
//
// A chain is "open" while its changes are captured, "sealed" once a newer
// full backup of the same database replaced it, and "broken" (with a reason)
// when it can no longer continue: a schema change, a slot past MAX_SLOT_LAG,
// an invalidated slot. Sealed and broken chains have no slot or publication
// on the server.
package chain

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"github.com/pme2go/pme2go-backup/engine/lsn"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/pme2go/pme2go-backup/engine/changeset"
	"github.com/pme2go/pme2go-backup/engine/config"
	"github.com/pme2go/pme2go-backup/engine/fsutil"
)

// Status is a chain's state as chain.json records it (and an incremental's
// manifest, Metadata["chainStatus"]). The text values are the state
// directory's format and never change.
type Status string

// Chain statuses.
const (
	StatusPending Status = "pending" // slot created, its full backup still running
	StatusOpen    Status = "open"
	StatusSealed  Status = "sealed"
	StatusBroken  Status = "broken"
)

// Prefix starts every slot and publication name the program creates.
// Names made since installation identities exist continue with the
// installation's short id and an underscore (ObjectPrefix); older names
// (Prefix followed by the chain id) are recognised only through this
// BACKUP_DIR's chain states.
const Prefix = "pme2go_"

// ObjectPrefix returns "pme2go_<id8>_", the start of every slot and
// publication name of the installation whose short id is id8
// (config.ShortID).
func ObjectPrefix(id8 string) string { return Prefix + id8 + "_" }

// SchemaName returns "pme2go_<id8>", the schema holding the installation's
// event trigger functions in each database it captures.
func SchemaName(id8 string) string { return Prefix + id8 }

// OwnerOf tells which installation made a slot or publication from its
// name: the short id for names made with ObjectPrefix, "" for older or
// foreign names (ok false when the name is not one of the program's at all).
func OwnerOf(name string) (id8 string, ok bool) {
	if !strings.HasPrefix(name, Prefix) {
		return "", false
	}
	rest := name[len(Prefix):]
	if len(rest) > 9 && rest[8] == '_' && strings.Trim(rest[:8], "0123456789abcdef") == "" {
		return rest[:8], true
	}
	return "", true
}

// State is the description of one chain, stored as chain.json.
type State struct {
	ID               string `json:"id"`
	Database         string `json:"database"`
	Slot             string `json:"slot"`
	Publication      string `json:"publication"`
	SystemIdentifier string `json:"systemIdentifier,omitempty"`
	Timeline         int    `json:"timeline,omitempty"`
	ServerVersion    int    `json:"serverVersion,omitempty"`
	StartLSN         string `json:"startLsn"` // consistent point of the slot
	// startSequences: the sequences read as the chain started (JSON), for
	// the full backup's manifest; not kept in the state file.
	startSequences string
	Status         Status    `json:"status"`
	Reason         string    `json:"reason,omitempty"`
	Created        time.Time `json:"created"`
	Ended          time.Time `json:"ended,omitzero"`
	FullBackup     string    `json:"fullBackup,omitempty"`     // archive name of the chain's full backup
	NextSegmentLSN string    `json:"nextSegmentLsn,omitempty"` // where the next (or open) segment begins
	LastArchive    string    `json:"lastArchive,omitempty"`    // newest archive of the chain (full or incremental)
	CaptureDDL     bool      `json:"captureDdl,omitempty"`
	// CaptureMode says how DDL is seen ("trigger": captured by the event
	// trigger; "off: <why>" otherwise), for full, status and test.
	CaptureMode string `json:"captureMode,omitempty"`
	// Installation is the short id (config.ShortID) of the installation
	// that made the chain; "" for chains made before identities existed.
	Installation string `json:"installation,omitempty"`
	// EndLSN is where a broken chain ended: changes at or past it are not
	// in the chain ("" when unknown: the end of what was captured); its
	// change sets are exact for transactions whose commit LSN is below it,
	// and for time targets up to EndTime. Restores refuse targets past them.
	EndLSN  string    `json:"endLsn,omitempty"`
	EndTime time.Time `json:"endTime,omitzero"`
	// CompleteLSN and CompleteTime: the stream is known complete up to
	// this position and server time (last seal or streaming flush).
	CompleteLSN  string    `json:"completeLsn,omitempty"`
	CompleteTime time.Time `json:"completeTime,omitzero"`
	// NotCovered lists the unlogged tables created during the chain: not
	// published, so incrementals do not cover them.
	NotCovered []string `json:"notCovered,omitempty"`
	// Triggers is set when the chain's start installed the event triggers
	// (superuser): the capture then checks that they are still there and
	// enabled, and ends the chain when they are not.
	Triggers bool `json:"triggers,omitempty"`

	dir string
}

// Dir returns the chain's state directory.
func (s *State) Dir() string { return s.dir }

// SegmentsDir returns the directory holding the chain's segments.
func (s *State) SegmentsDir() string { return filepath.Join(s.dir, "segments") }

// ChainsDir returns BACKUP_DIR/state/chains.
func ChainsDir(cfg *config.Config) string { return filepath.Join(cfg.StateDir(), "chains") }

// NewID returns a chain id for db at t: c<yyyymmddthhmmss>_<6 hex of the
// database name's SHA-256>, lowercase so that it is a valid slot name.
func NewID(db string, t time.Time) string {
	h := sha256.Sum256([]byte(db))
	return "c" + strings.ToLower(t.UTC().Format("20060102T150405")) + "_" + hex.EncodeToString(h[:3])
}

// ParseLSN parses an LSN written as X/Y (engine/lsn); "" is 0.
func ParseLSN(s string) (uint64, error) {
	if s == "" {
		return 0, nil
	}
	l, err := lsn.Parse(s)
	return uint64(l), err
}

// FormatLSN renders an LSN as X/Y (engine/lsn).
func FormatLSN(l uint64) string { return lsn.LSN(l).String() }

// Start returns the chain's consistent point.
func (s *State) Start() uint64 { l, _ := ParseLSN(s.StartLSN); return l }

// NextSegment returns the LSN where the open or next segment begins.
func (s *State) NextSegment() uint64 {
	if l, _ := ParseLSN(s.NextSegmentLSN); l > 0 {
		return l
	}
	return s.Start()
}

// Save writes chain.json atomically.
func (s *State) Save() error {
	if err := fsutil.EnsurePrivateDir(s.dir); err != nil {
		return fmt.Errorf("chain %s: state directory: %w", s.ID, err)
	}
	b, err := json.MarshalIndent(s, "", "  ")
	if err != nil {
		return fmt.Errorf("chain %s: encode state: %w", s.ID, err)
	}
	if err := fsutil.WriteFileAtomic(filepath.Join(s.dir, "chain.json"), append(b, '\n'), 0o600); err != nil {
		return fmt.Errorf("chain %s: write chain.json (check free space in BACKUP_DIR): %w", s.ID, err)
	}
	return nil
}

// Load reads the chain with id from the state directory.
func Load(cfg *config.Config, id string) (*State, error) {
	dir := filepath.Join(ChainsDir(cfg), id)
	b, err := os.ReadFile(filepath.Join(dir, "chain.json"))
	if err != nil {
		return nil, fmt.Errorf("chain %s: %w", id, err)
	}
	s := &State{}
	if err := json.Unmarshal(b, s); err != nil {
		return nil, fmt.Errorf("chain %s: chain.json is damaged (%v); remove %s and take a new full backup", id, err, dir)
	}
	s.dir = dir
	return s, nil
}

// Reload re-reads chain.json into s (another process may have changed it).
func (s *State) Reload() error {
	n, err := loadDir(s.dir)
	if err != nil {
		return err
	}
	*s = *n
	return nil
}

func loadDir(dir string) (*State, error) {
	b, err := os.ReadFile(filepath.Join(dir, "chain.json"))
	if err != nil {
		return nil, fmt.Errorf("read chain state: %w", err)
	}
	s := &State{}
	if err := json.Unmarshal(b, s); err != nil {
		return nil, fmt.Errorf("chain state %s is damaged: %w", dir, err)
	}
	s.dir = dir
	return s, nil
}

// List returns every chain in the state directory, oldest first. Folders
// without a readable chain.json are skipped.
func List(cfg *config.Config) ([]*State, error) {
	entries, err := os.ReadDir(ChainsDir(cfg))
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("list chains: %w", err)
	}
	var out []*State
	for _, e := range entries {
		if !e.IsDir() || fsutil.IsTemp(e.Name()) {
			continue
		}
		s, err := loadDir(filepath.Join(ChainsDir(cfg), e.Name()))
		if err != nil {
			continue
		}
		out = append(out, s)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Created.Before(out[j].Created) })
	return out, nil
}

// OpenFor returns the open chain of db, or nil when there is none. With
// several (which Finish prevents) the newest wins.
func OpenFor(cfg *config.Config, db string) (*State, error) {
	all, err := List(cfg)
	if err != nil {
		return nil, err
	}
	var found *State
	for _, s := range all {
		if s.Database == db && s.Status == StatusOpen {
			found = s
		}
	}
	return found, nil
}

// MarkEnded sets status (sealed or broken) and reason and saves the state,
// re-reading chain.json first so that concurrent updates are kept.
func (s *State) MarkEnded(status Status, reason string) error {
	return s.MarkEndedAt(status, reason, 0)
}

// MarkEndedAt is MarkEnded recording also the LSN where the chain ended
// (EndLSN; 0 leaves it unset): the first position whose changes the chain
// does not hold.
func (s *State) MarkEndedAt(status Status, reason string, end uint64) error {
	if s.dir != "" {
		s.Reload()
	}
	s.Status, s.Reason, s.Ended = status, reason, time.Now().UTC()
	if end != 0 {
		s.EndLSN = FormatLSN(end)
	}
	return s.Save()
}

// DDLPrefix returns the prefix of the logical messages carrying the DDL
// this chain's installation captured ("pme2go.ddl.<id8>"; the legacy
// "pme2go.ddl" for chains without an installation id).
func (s *State) DDLPrefix() string { return changeset.DDLPrefixFor(s.Installation) }

// EndPrefix returns the prefix of the logical messages by which the event
// trigger ends this chain ("pme2go.end.<id8>").
func (s *State) EndPrefix() string { return changeset.EndPrefixFor(s.Installation) }

// newState prepares the state of a new chain of db for the installation
// id8, with an id used by no chain directory and (taken reports) no slot or
// publication on the server. Its slot and publication are named
// ObjectPrefix(id8)+id, so that two installations starting a chain of the
// same database in the same second never collide.
func newState(cfg *config.Config, id8, db string, now time.Time, taken func(name string) bool) *State {
	id := NewID(db, now)
	base := id
	for n := 2; ; n++ {
		if _, err := os.Stat(filepath.Join(ChainsDir(cfg), id)); errors.Is(err, os.ErrNotExist) && !taken(ObjectPrefix(id8)+id) {
			break
		}
		id = fmt.Sprintf("%s_%d", base, n)
	}
	return &State{ID: id, Database: db, Slot: ObjectPrefix(id8) + id, Publication: ObjectPrefix(id8) + id,
		Installation: id8, Status: StatusPending, Created: now.UTC(), dir: filepath.Join(ChainsDir(cfg), id)}
}

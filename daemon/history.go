package daemon

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/pme2go/pme2go-backup/dbusapi"
)

// HistoryFile is the name of the job history in BACKUP_DIR/state.
const HistoryFile = "daemon-history.json"

// Record is one finished job in the history (JSON, camelCase, durations in
// seconds, sizes in bytes).
type Record struct {
	ID           uint64    `json:"id"`
	Kind         string    `json:"kind"`
	State        string    `json:"state"`
	Trigger      string    `json:"trigger,omitempty"`
	Databases    []string  `json:"databases,omitempty"`
	StartedByUID uint32    `json:"startedByUid"`
	StartedAt    time.Time `json:"startedAt"`
	FinishedAt   time.Time `json:"finishedAt"`
	Duration     float64   `json:"duration"`
	Bytes        uint64    `json:"bytes"`
	Result       string    `json:"result,omitempty"`
	ErrorCode    string    `json:"errorCode,omitempty"`
	Error        string    `json:"error,omitempty"`
}

func recordOf(j dbusapi.JobInfo) Record {
	r := Record{ID: j.ID, Kind: j.Kind, State: j.State, Trigger: j.Trigger, Databases: j.Databases,
		StartedByUID: j.StartedByUID, StartedAt: j.StartedAt.UTC(), FinishedAt: j.FinishedAt.UTC(),
		Duration: j.FinishedAt.Sub(j.StartedAt).Seconds(), Bytes: j.Bytes, Result: j.Result}
	if j.Error != nil {
		r.ErrorCode, r.Error = j.Error.Code, j.Error.Error()
	}
	return r
}

// History keeps the last Size job records in a JSON file, rewritten
// atomically (temporary file, fsync, rename) after each job.
type History struct {
	path string
	size int

	mu      sync.Mutex
	records []Record
}

// OpenHistory loads the history at dir/HistoryFile (missing is empty). A
// damaged file is renamed aside and reported, never fatal.
func OpenHistory(dir string, size int) (*History, error) {
	if size <= 0 {
		size = 100
	}
	h := &History{path: filepath.Join(dir, HistoryFile), size: size}
	data, err := os.ReadFile(h.path)
	switch {
	case os.IsNotExist(err):
		return h, nil
	case err != nil:
		return h, fmt.Errorf("read job history: %w", err)
	}
	if err := json.Unmarshal(data, &h.records); err != nil {
		bad := h.path + ".damaged"
		_ = os.Rename(h.path, bad)
		h.records = nil
		return h, fmt.Errorf("job history %s is damaged (kept as %s): %w", h.path, bad, err)
	}
	if len(h.records) > size {
		h.records = h.records[len(h.records)-size:]
	}
	return h, nil
}

// Records returns a copy of the history, oldest first.
func (h *History) Records() []Record {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]Record(nil), h.records...)
}

// MaxID is the highest job id recorded.
func (h *History) MaxID() uint64 {
	h.mu.Lock()
	defer h.mu.Unlock()
	var m uint64
	for _, r := range h.records {
		m = max(m, r.ID)
	}
	return m
}

// Add appends r and saves the file.
func (h *History) Add(r Record) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.records = append(h.records, r)
	if len(h.records) > h.size {
		h.records = h.records[len(h.records)-h.size:]
	}
	return h.save()
}

func (h *History) save() error {
	data, err := json.MarshalIndent(h.records, "", "  ")
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(h.path), 0o700); err != nil {
		return fmt.Errorf("save job history: %w", err)
	}
	tmp, err := os.CreateTemp(filepath.Dir(h.path), ".history-*.tmp")
	if err != nil {
		return fmt.Errorf("save job history: %w", err)
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(append(data, '\n')); err != nil {
		tmp.Close()
		return fmt.Errorf("save job history: %w", err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return fmt.Errorf("save job history: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("save job history: %w", err)
	}
	if err := os.Rename(tmp.Name(), h.path); err != nil {
		return fmt.Errorf("save job history: %w", err)
	}
	if d, err := os.Open(filepath.Dir(h.path)); err == nil {
		_ = d.Sync()
		d.Close()
	}
	return nil
}

package ops

import (
	"context"
	"path/filepath"
	"sort"
	"time"

	"github.com/pme2go/pme2go-backup/engine/catalog"
	"github.com/pme2go/pme2go-backup/engine/config"
	"github.com/pme2go/pme2go-backup/engine/crypt"
)

// Backup is one archive as List shows it (from its sidecar manifest; no
// archive is decompressed).
type Backup struct {
	Name      string    `json:"name"`
	Path      string    `json:"path"`
	Type      string    `json:"type"` // "full" or "incremental"
	Timestamp time.Time `json:"timestamp"`
	Size      int64     `json:"size"` // bytes
	Databases []string  `json:"databases,omitempty"`
	// Trigger is why it was taken: "manual", "scheduled", "safety" (taken by
	// a restore before it replaced a database), …
	Trigger string `json:"trigger,omitempty"`
	// Safety is true for the safety backup a restore took of the database it replaced.
	Safety   bool   `json:"safety,omitempty"`
	ChainID  string `json:"chainId,omitempty"`
	Previous string `json:"previous,omitempty"`
	StartLSN LSN    `json:"startLsn,omitempty"`
	EndLSN   LSN    `json:"endLsn,omitempty"`
	// FirstCommitTime and LastCommitTime bound the transactions of an
	// incremental archive.
	FirstCommitTime *time.Time `json:"firstCommitTime,omitempty"`
	LastCommitTime  *time.Time `json:"lastCommitTime,omitempty"`
	Transactions    int64      `json:"transactions,omitempty"`
	// CompleteTime (incremental archives): the chain's change stream is
	// known complete up to this server time; the recovery window reaches
	// it. ChainEndLSN/ChainEndTime: in the last archive of a chain that
	// ended, the point up to which it is exact.
	CompleteTime *time.Time `json:"completeTime,omitempty"`
	ChainEndLSN  LSN        `json:"chainEndLsn,omitempty"`
	ChainEndTime *time.Time `json:"chainEndTime,omitempty"`
	// Warnings are the non-fatal problems met while taking the backup.
	Warnings []string `json:"warnings"`
	// Problem says why the backup cannot be used as listed (e.g. its
	// manifest is missing); empty when fine.
	Problem string `json:"problem,omitempty"`
	// Location is where the backup lives: "local", "offsite" (its local
	// copy was pruned; Path is then "offsite:<key>") or "both".
	Location string `json:"location"`
	// Recipients, on an encrypted archive (name ending in .age), are the
	// fingerprints of the keys it is encrypted to (its sidecar's record).
	Recipients []string `json:"recipients,omitempty"`
	// Drill is set on the archives the last restore drill restored: when,
	// and whether the drill of their database passed.
	Drill *BackupDrill `json:"drill,omitempty"`
}

func fromCatalog(b catalog.Backup) Backup {
	out := Backup{Name: b.Name, Path: b.Path, Type: string(b.Type), Timestamp: b.Timestamp, Size: b.Size, Location: "local",
		Databases: b.Databases, ChainID: b.ChainID, Previous: b.Previous, Problem: b.Problem, Warnings: []string{}}
	if m := b.Manifest; m != nil {
		out.Trigger, out.Safety = m.Trigger(), m.IsSafety()
		out.StartLSN, out.EndLSN = parseLSN(m.StartLSN), parseLSN(m.EndLSN)
		out.FirstCommitTime, out.LastCommitTime, out.Transactions = m.FirstCommitTime, m.LastCommitTime, m.TxCount
		out.Warnings = append(out.Warnings, m.Warnings...)
		out.CompleteTime, out.ChainEndTime = metaTime(m.Metadata, "completeTime"), metaTime(m.Metadata, "chainEndTime")
		if s, ok := m.Metadata["chainEndLsn"].(string); ok {
			out.ChainEndLSN = parseLSN(s)
		}
		if a := m.Archive; a != nil && a.Encryption != nil {
			for _, k := range a.Encryption.Recipients {
				out.Recipients = append(out.Recipients, crypt.Fingerprint(k))
			}
		}
	}
	return out
}

// metaTime reads an RFC 3339 time from manifest metadata; nil when absent.
func metaTime(md map[string]any, key string) *time.Time {
	s, ok := md[key].(string)
	if !ok {
		return nil
	}
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		return nil
	}
	return &t
}

// ListOptions tune List.
type ListOptions struct {
	// Type keeps only "full" or "incremental" backups; empty: all.
	Type string `json:"type,omitempty"`
}

// ListResult is every backup, oldest first. It encodes as a JSON array.
type ListResult []Backup

// List returns the backups in BACKUP_DIR, oldest first, with each backup's
// warnings; a backup whose manifest cannot be read is listed with a Problem.
func List(ctx context.Context, cfg *config.Config, opts ListOptions, _ Progress) (ListResult, error) {
	all, err := catalog.List(cfg.BackupDir)
	if err != nil {
		return nil, err
	}
	out := ListResult{}
	_, last := lastDrill(cfg)
	marks := drillMarks(last)
	for _, b := range locate(cfg, all) {
		if opts.Type == "" || b.Type == opts.Type {
			b.Drill = marks[b.Name]
			out = append(out, b)
		}
	}
	return out, ctx.Err()
}

func baseName(path string) string { return filepath.Base(path) }

func backups(all []catalog.Backup) []Backup {
	out := make([]Backup, 0, len(all))
	for _, b := range all {
		out = append(out, fromCatalog(b))
	}
	return out
}

// sortBackups orders backups oldest first, as catalog.List does.
func sortBackups(list []Backup) {
	sort.SliceStable(list, func(i, j int) bool {
		if !list[i].Timestamp.Equal(list[j].Timestamp) {
			return list[i].Timestamp.Before(list[j].Timestamp)
		}
		return list[i].Name < list[j].Name
	})
}

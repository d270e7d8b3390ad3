package catalog

import (
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/pme2go/pme2go-backup/engine/archive"
)

// Decision is what retention decided for one backup and why.
type Decision struct {
	Backup Backup `json:"backup"`
	Keep   bool   `json:"keep"`
	Reason string `json:"reason"`
}

// Plan applies the seed's retention: backups older than days are removed,
// except the newest full backup and anything a kept backup needs (the full
// backup that starts a kept incremental's chain and the chain's earlier
// incrementals). days <= 0 keeps everything.
func Plan(all []Backup, days int, now time.Time) []Decision {
	cutoff := now.Add(-time.Duration(days) * 24 * time.Hour)
	keep := map[string]string{}
	for _, b := range all {
		if days <= 0 || !b.Timestamp.Before(cutoff) {
			keep[b.Path] = "within retention"
		}
	}
	if nf, ok := Newest(all, archive.KindFull); ok && keep[nf.Path] == "" {
		keep[nf.Path] = "newest full backup"
	}
	// Keep what kept incrementals depend on: their chain's full backup and
	// earlier incrementals of the same chain.
	for _, b := range all {
		if keep[b.Path] == "" || b.Type != archive.KindIncremental || b.ChainID == "" {
			continue
		}
		for _, dep := range all {
			if dep.ChainID == b.ChainID && dep.Timestamp.Before(b.Timestamp) && keep[dep.Path] == "" {
				keep[dep.Path] = "needed by " + b.Name
			}
		}
	}
	out := make([]Decision, 0, len(all))
	for _, b := range all {
		d := Decision{Backup: b, Keep: keep[b.Path] != "", Reason: keep[b.Path]}
		if !d.Keep {
			d.Reason = fmt.Sprintf("older than %d days", days)
		}
		out = append(out, d)
	}
	return out
}

// Remove deletes a backup's archive and its sidecar manifest.
func Remove(b Backup) error {
	var errs []error
	for _, p := range []string{archive.SidecarPath(b.Path), b.Path} {
		if err := os.Remove(p); err != nil && !os.IsNotExist(err) {
			errs = append(errs, fmt.Errorf("remove %s: %w", p, err))
		}
	}
	return errors.Join(errs...)
}

package ops

import (
	"time"

	"github.com/pme2go/pme2go-backup/engine/schedule"
)

// Schedule is a parsed cron schedule (the seed's FULL_BACKUP_SCHEDULE,
// INCREMENTAL_BACKUP_SCHEDULE and CLEANUP_SCHEDULE syntax).
type Schedule interface {
	// Next returns the first activation strictly after t, in t's location.
	Next(t time.Time) time.Time
	// String returns the expression as written.
	String() string
}

// ParseSchedule parses a five-field cron expression. A bad expression is a
// USAGE error naming what is wrong.
func ParseSchedule(expr string) (Schedule, error) {
	c, err := schedule.Parse(expr)
	if err != nil {
		return nil, err
	}
	return c, nil
}

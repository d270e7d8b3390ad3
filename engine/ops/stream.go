package ops

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"time"

	"github.com/pme2go/pme2go-backup/engine/capture"
	"github.com/pme2go/pme2go-backup/engine/config"
	"github.com/pme2go/pme2go-backup/engine/progress"
)

// StreamOptions tune continuous capture.
type StreamOptions struct {
	// Databases to follow; default DB_NAME.
	Databases []string     `json:"databases,omitempty"`
	Log       *slog.Logger `json:"-"`
	// SyncInterval and StatusInterval override the capture defaults (0: default).
	SyncInterval   time.Duration `json:"-"`
	StatusInterval time.Duration `json:"-"`
}

// StreamResult says what each database's capture stored before it stopped.
type StreamResult struct {
	Databases []StreamedDatabase `json:"databases"`
	Duration  float64            `json:"duration"` // seconds
}

// StreamedDatabase is one database's capture.
type StreamedDatabase struct {
	Database     string `json:"database"`
	Chain        string `json:"chain,omitempty"`
	Transactions int64  `json:"transactions"` // stored by this run
	Position     LSN    `json:"position"`     // last confirmed flush position
	Error        string `json:"error,omitempty"`
	Code         Code   `json:"code,omitempty"`
}

// Stream captures changes continuously, one capture per database following
// its open chain (and the next chain when a full backup replaces it), until
// ctx is cancelled (then it returns nil and the result) or a capture fails
// for good. Progress (phase "capture", Done = transactions stored by this
// run, Object = database, Message = confirmed position) is reported after
// each fsync; reports of different databases are serialized. Errors: BUSY
// when another capture holds the chain's lock, NOT_FOUND when a database
// has no open chain, CHAIN_ENDED when a chain ended and no newer one exists.
func Stream(ctx context.Context, cfg *config.Config, opts StreamOptions, p Progress) (*StreamResult, error) {
	if err := checkRecipients(); err != nil {
		return nil, err
	}
	start := time.Now()
	dbs := opts.Databases
	if len(dbs) == 0 {
		dbs = cfg.DBNames
	}
	log := logger(opts.Log)
	res := &StreamResult{Databases: make([]StreamedDatabase, len(dbs))}
	stopOffsite := offsiteStreamSync(ctx, cfg, dbs, log)
	var mu sync.Mutex
	var wg sync.WaitGroup
	errList := make([]error, len(dbs))
	for i, db := range dbs {
		res.Databases[i].Database = db
		wg.Add(1)
		go func() {
			defer wg.Done()
			err := capture.Follow(ctx, cfg, db, capture.Options{Log: log, SyncInterval: opts.SyncInterval, StatusInterval: opts.StatusInterval,
				Progress: func(cp capture.Progress) {
					mu.Lock()
					defer mu.Unlock()
					d := &res.Databases[i]
					d.Chain, d.Transactions, d.Position = cp.Chain, cp.TxCount, parseLSN(cp.Position)
					p.Report(progress.Event{Phase: "capture", Object: db, Done: cp.TxCount, Unit: progress.Transactions, Message: cp.Position})
				}})
			if err != nil {
				err = identityNeeded(known(err), "streaming capture")
				log.Error("capture stopped", "database", db, "error", err)
				mu.Lock()
				res.Databases[i].Error, res.Databases[i].Code = err.Error(), CodeOf(err)
				mu.Unlock()
			}
			errList[i] = err
		}()
	}
	wg.Wait()
	stopOffsite()
	res.Duration = seconds(time.Since(start))
	return res, errors.Join(errList...)
}

package ops

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"time"

	"github.com/pme2go/pme2go-backup/engine/archive"
	"github.com/pme2go/pme2go-backup/engine/backup"
	"github.com/pme2go/pme2go-backup/engine/config"
	"github.com/pme2go/pme2go-backup/engine/errs"
	"github.com/pme2go/pme2go-backup/engine/incremental"
	"github.com/pme2go/pme2go-backup/engine/progress"
	"github.com/pme2go/pme2go-backup/engine/restore"
)

// FullOptions tune a full backup.
type FullOptions struct {
	// Databases to back up; default the configuration's DB_NAME.
	Databases []string `json:"databases,omitempty"`
	// Trigger is recorded in the manifest: "manual" (default), "scheduled", …
	Trigger string `json:"trigger,omitempty"`
	// Compression, when set, is this backup's archive codec instead of
	// BACKUP_COMPRESSION: "xz", "zstd", "gzip" or "none" (plain tar).
	Compression string       `json:"compression,omitempty"`
	Log         *slog.Logger `json:"-"`
}

// FullResult describes a written full backup.
type FullResult struct {
	Name      string    `json:"name"`
	Path      string    `json:"path"`
	Size      int64     `json:"size"`     // archive bytes
	Duration  float64   `json:"duration"` // seconds
	Timestamp time.Time `json:"timestamp"`
	Databases []string  `json:"databases"`
	ChainID   string    `json:"chainId,omitempty"`
	StartLSN  LSN       `json:"startLsn,omitempty"` // where the dump meets the change stream
	Warnings  []string  `json:"warnings"`
	// DDLCapture says, per database, which DDL capture mode its new chain
	// runs in and why ("on: …" or "off: …").
	DDLCapture map[string]string `json:"ddlCapture,omitempty"`
	// Offsite is the archive's off-site copy (absent without OFFSITE_URL),
	// and the copies of earlier backups retried after it.
	Offsite []OffsiteCopy `json:"offsite,omitempty"`
	// OffsiteError is set when the off-site copy failed: the backup
	// succeeded and is safe locally; the next backup or off-site sync
	// copies it. Status lists it as not copied until then.
	OffsiteError *ErrorJSON `json:"offsiteError,omitempty"`
}

// Full takes a full backup of the configured databases (or opts.Databases)
// into BACKUP_DIR/full. With wal_level=logical it starts a new chain per
// database, dumped at the chain's slot snapshot. Progress phases: "dump"
// (bytes, estimated from the databases' size), "archive" (bytes), "done".
// Errors: BUSY when another backup holds the directory lock, CONN_ERR,
// PG_DUMP_ERR, ENOSPC, EACCES. On error nothing is left that List shows.
// With OFFSITE_URL the archive is then copied off-site; a failed copy does
// not fail the backup: it is reported in OffsiteError.
func Full(ctx context.Context, cfg *config.Config, opts FullOptions, p Progress) (*FullResult, error) {
	if err := checkRecipients(); err != nil {
		return nil, err
	}
	cfg, err := withCodec(cfg, opts.Compression)
	if err != nil {
		return nil, err
	}
	res, err := backup.Full(ctx, cfg, backup.Options{
		Trigger: opts.Trigger, Databases: opts.Databases, Log: logger(opts.Log),
		Progress: p, Chain: incremental.NewChainStarter(cfg, logger(opts.Log)),
	})
	if err != nil {
		return nil, fmt.Errorf("full backup failed: %w", err)
	}
	out := fullResult(res)
	out.Offsite, out.OffsiteError = copyOffsite(ctx, cfg, []string{res.Path}, logger(opts.Log), p)
	return out, nil
}

// safetyBackup is the safety backup restore takes of a database it is about
// to replace: a full backup with trigger "safety" (no chain is started, no
// off-site copy is made), dumped from the database's private name while
// restore holds the directory lock.
func safetyBackup(cfg *config.Config, log *slog.Logger) restore.SafetyBackup {
	return func(ctx context.Context, db, connectAs string) (string, error) {
		res, err := backup.Full(ctx, cfg, backup.Options{Trigger: archive.TriggerSafety, Databases: []string{db},
			DumpFrom: map[string]string{db: connectAs}, Locked: true, Log: log})
		if err != nil {
			return "", err
		}
		return res.Path, nil
	}
}

func fullResult(res *backup.Result) *FullResult {
	m := res.Manifest
	out := &FullResult{Name: baseName(res.Path), Path: res.Path, Size: res.Size, Duration: seconds(res.Duration),
		Warnings: []string{}}
	if m != nil {
		out.Timestamp, out.Databases, out.ChainID, out.StartLSN = m.Timestamp, m.Databases, m.ChainID, parseLSN(m.StartLSN)
		out.Warnings = append(out.Warnings, m.Warnings...)
		for _, db := range m.Databases {
			if mode, ok := m.Metadata["ddlCapture:"+db].(string); ok && mode != "" {
				if out.DDLCapture == nil {
					out.DDLCapture = map[string]string{}
				}
				out.DDLCapture[db] = mode
			}
		}
	}
	return out
}

// IncrementalOptions tune an incremental backup.
type IncrementalOptions struct {
	// Databases to seal; default DB_NAME.
	Databases []string `json:"databases,omitempty"`
	Trigger   string   `json:"trigger,omitempty"`
	// Compression, when set, is this backup's archive codec instead of
	// BACKUP_COMPRESSION (as FullOptions.Compression).
	Compression string       `json:"compression,omitempty"`
	Log         *slog.Logger `json:"-"`
}

// IncrementalArchive is one written incremental archive.
type IncrementalArchive struct {
	Name         string `json:"name"`
	Path         string `json:"path"`
	Database     string `json:"database"`
	ChainID      string `json:"chainId"`
	Transactions int64  `json:"transactions"`
	StartLSN     LSN    `json:"startLsn"`
	EndLSN       LSN    `json:"endLsn"`
}

// IncrementalResult lists the archives an incremental backup wrote (one per
// database with an open chain, plus leftovers of older chains).
type IncrementalResult struct {
	Archives []IncrementalArchive `json:"archives"`
	Duration float64              `json:"duration"` // seconds
	// Offsite are the archives' off-site copies (absent without OFFSITE_URL).
	Offsite []OffsiteCopy `json:"offsite,omitempty"`
	// OffsiteError is set when an off-site copy failed (as
	// FullResult.OffsiteError).
	OffsiteError *ErrorJSON `json:"offsiteError,omitempty"`
}

// Incremental seals the changes captured since the last backup of each open
// chain into incremental archives. Progress: phase "seal" as each database
// starts (Done of Total databases), "archive" for each archive written
// (and "offsite" for its off-site copy), then "done" with the number of
// archives. A partial failure returns the
// archives written and the error. Errors: BUSY, and NOT_FOUND when no
// configured database has an open chain (take a full backup first).
func Incremental(ctx context.Context, cfg *config.Config, opts IncrementalOptions, p Progress) (*IncrementalResult, error) {
	if err := checkRecipients(); err != nil {
		return nil, err
	}
	cfg, err := withCodec(cfg, opts.Compression)
	if err != nil {
		return nil, err
	}
	start := time.Now()
	res, err := incremental.Take(ctx, cfg, incremental.Options{Databases: opts.Databases, Trigger: opts.Trigger, Log: logger(opts.Log), Progress: p})
	out := &IncrementalResult{Archives: []IncrementalArchive{}}
	for _, r := range res {
		out.Archives = append(out.Archives, IncrementalArchive{Name: baseName(r.Path), Path: r.Path, Database: r.Database,
			ChainID: r.Chain, Transactions: r.TxCount, StartLSN: parseLSN(r.StartLSN), EndLSN: parseLSN(r.EndLSN)})
	}
	var paths []string
	for _, a := range out.Archives {
		paths = append(paths, a.Path)
	}
	out.Offsite, out.OffsiteError = copyOffsite(ctx, cfg, paths, logger(opts.Log), p)
	out.Duration = seconds(time.Since(start))
	p.Report(progress.Event{Phase: "done", Done: int64(len(out.Archives)), Total: int64(len(out.Archives)), Unit: progress.Archives})
	if err != nil {
		err = identityNeeded(err, "an incremental backup")
		if errs.CodeOf(err) == errs.Failed && errors.Is(err, incremental.ErrNoChain) {
			err = &errs.Error{Code: errs.NotFound, Message: "no open chain", Err: err,
				Fix: &errs.Fix{Action: errs.ActFullBackup, Text: "take a full backup first (needs wal_level = logical and a role with REPLICATION)"}}
		}
		return out, fmt.Errorf("incremental backup failed: %w", err)
	}
	return out, nil
}

// identityNeeded words a KEY_ERR met while capturing or sealing: reading
// the open change-set segment of an encrypted repository (to find its last
// whole transaction, and to seal it into an archive) needs the private key
// on the backup host; writing needs only the recipients. Full backups need
// no identity.
func identityNeeded(err error, what string) error {
	if errs.CodeOf(err) != errs.KeyErr {
		return err
	}
	return &errs.Error{Code: errs.KeyErr, Err: err,
		Message: what + " of an encrypted repository reads the open change-set segment (to find its last whole transaction and to seal it), which needs the private key on this host; the slot was not advanced past what is stored",
		Fix:     &errs.Fix{Action: errs.ActConfig, Text: "set BACKUP_ENCRYPTION_IDENTITY_FILE (or the systemd credential backup-encryption-identity) on the backup host; full backups need only BACKUP_ENCRYPTION_RECIPIENTS"}}
}

// withCodec returns cfg, or a copy of it whose Compression is codec when
// codec is set and differs. An unknown codec is a USAGE error.
func withCodec(cfg *config.Config, codec string) (*config.Config, error) {
	if codec == "" || codec == cfg.Compression {
		return cfg, nil
	}
	if !slices.Contains(archive.Codecs, archive.Codec(codec)) {
		return nil, &errs.Error{Code: errs.Usage, Message: fmt.Sprintf("unknown compression %.40q", codec),
			Fix: &errs.Fix{Text: "use xz, zstd, gzip or none (as BACKUP_COMPRESSION)"}}
	}
	c := *cfg
	c.Compression = codec
	return &c, nil
}

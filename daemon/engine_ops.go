package daemon

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/pme2go/pme2go-backup/dbusapi"
	"github.com/pme2go/pme2go-backup/engine/apply"
	"github.com/pme2go/pme2go-backup/engine/archive"
	"github.com/pme2go/pme2go-backup/engine/backup"
	"github.com/pme2go/pme2go-backup/engine/catalog"
	"github.com/pme2go/pme2go-backup/engine/changeset"
	"github.com/pme2go/pme2go-backup/engine/config"
	"github.com/pme2go/pme2go-backup/engine/incremental"
	"github.com/pme2go/pme2go-backup/engine/pgclient"
	"github.com/pme2go/pme2go-backup/engine/restore"
)

// This file is the only one that knows the engine's packages: it adapts
// them to the Engine interface.

// engineAdapter runs operations in process with a configuration.
type engineAdapter struct {
	cfg *config.Config
	log *slog.Logger
}

// NewEngine returns the Engine backed by the engine's packages.
func NewEngine(cfg *config.Config, log *slog.Logger) Engine {
	return &engineAdapter{cfg: cfg, log: log}
}

func (e *engineAdapter) Databases() []string { return append([]string(nil), e.cfg.DBNames...) }

// engineError gives an engine error its code.
func engineError(ctx context.Context, err error) error {
	if err == nil {
		return nil
	}
	var de *dbusapi.Error
	if errors.As(err, &de) {
		return de
	}
	if ctx.Err() != nil {
		return fmt.Errorf("%w: %w", ctx.Err(), err)
	}
	var ce *config.Error
	msg := err.Error()
	switch {
	case errors.As(err, &ce):
		return dbusapi.Errorf("CONFIG", "correct the configuration key named", msg)
	case errors.Is(err, restore.ErrNotEmpty):
		return dbusapi.Errorf("NOT_EMPTY", `pass "force" (a safety backup is taken first), or choose another "target-db"`, msg)
	case strings.Contains(msg, "no such file") || strings.Contains(msg, "not found"):
		return dbusapi.Errorf("ENOENT", "check the name with ListBackups", msg)
	case strings.Contains(msg, "permission denied"):
		return dbusapi.Errorf("EACCES", "check the ownership and mode of BACKUP_DIR", msg)
	case strings.Contains(msg, "no space left"):
		return dbusapi.Errorf("ENOSPC", "free space in BACKUP_DIR or lower BACKUP_RETENTION_DAYS", msg)
	case strings.Contains(msg, "pg_dump"):
		return dbusapi.Errorf("PG_DUMP_ERR", "see the daemon's log for pg_dump's message", msg)
	case strings.Contains(msg, "connect"):
		return dbusapi.Errorf("CONN_ERR", "check DB_HOST, DB_PORT, DB_USER and the password source", msg)
	}
	return dbusapi.Errorf(dbusapi.CodeFailed, "", msg)
}

func (e *engineAdapter) Validate(req dbusapi.JobRequest) error {
	if req.Kind == dbusapi.KindRestore {
		ro := req.Restore
		_, err := apply.ParseTarget(apply.TargetSpec{Time: ro.TargetTime, LSN: ro.TargetLSN, Xid: ro.TargetXid,
			Name: ro.TargetName, Latest: ro.Latest, Exclusive: ro.TargetExclusive})
		if err != nil && !errors.Is(err, apply.ErrNoTarget) {
			return dbusapi.Errorf(dbusapi.CodeInvalidArgs, "", err.Error())
		}
	}
	known := map[string]bool{}
	for _, db := range e.cfg.DBNames {
		known[db] = true
	}
	if req.Kind == dbusapi.KindFull || req.Kind == dbusapi.KindIncremental {
		for _, db := range req.Databases {
			if !known[db] {
				return dbusapi.Errorf(dbusapi.CodeInvalidArgs, "name databases listed in DB_NAME ("+strings.Join(e.cfg.DBNames, ",")+")",
					fmt.Sprintf("database %.64q is not configured", db))
			}
		}
	}
	return nil
}

func (e *engineAdapter) Run(ctx context.Context, req dbusapi.JobRequest, progress func(Progress)) (Outcome, error) {
	out, err := e.run(ctx, req, progress)
	return out, engineError(ctx, err)
}

func (e *engineAdapter) run(ctx context.Context, req dbusapi.JobRequest, progress func(Progress)) (Outcome, error) {
	switch req.Kind {
	case dbusapi.KindFull:
		res, err := backup.Full(ctx, e.cfg, backup.Options{Trigger: req.Trigger, Databases: req.Databases, Log: e.log,
			Progress: func(p backup.Progress) {
				pr := Progress{Phase: strings.TrimSpace(p.Phase + " " + p.Database), Bytes: uint64(max(p.Done, 0))}
				if p.Total > 0 {
					// dump is the first half, archive the second.
					f := float64(p.Done) / float64(p.Total)
					if p.Phase == "archive" {
						f = 0.5 + f/2
					} else {
						f /= 2
					}
					pr.Fraction, pr.Valid = f, true
				}
				progress(pr)
			}})
		if err != nil {
			return Outcome{}, err
		}
		return Outcome{Path: res.Path, Size: res.Size, Result: map[string]any{"path": res.Path, "size": res.Size, "duration": res.Duration.Seconds()}}, nil
	case dbusapi.KindIncremental:
		progress(Progress{Phase: "seal"})
		res, err := incremental.Take(ctx, e.cfg, incremental.Options{Databases: req.Databases, Trigger: req.Trigger, Log: e.log})
		if err != nil {
			return Outcome{}, err
		}
		out := Outcome{Result: res}
		for _, r := range res {
			out.Path = r.Path
		}
		return out, nil
	case dbusapi.KindRestore:
		var tp *apply.Target
		ro := req.Restore
		t, err := apply.ParseTarget(apply.TargetSpec{Time: ro.TargetTime, LSN: ro.TargetLSN, Xid: ro.TargetXid,
			Name: ro.TargetName, Latest: ro.Latest, Exclusive: ro.TargetExclusive})
		switch {
		case err == nil:
			tp = &t
		case !errors.Is(err, apply.ErrNoTarget):
			return Outcome{}, dbusapi.Errorf(dbusapi.CodeInvalidArgs, "", err.Error())
		}
		res, err := restore.Run(ctx, e.cfg, restore.Options{Backup: req.Backup, Target: tp, Resume: ro.Resume,
			TargetDB: ro.TargetDB, Databases: req.Databases, Force: ro.Force, NoSafetyBackup: ro.NoSafetyBackup,
			NoOwner: ro.NoOwner, RestoreGlobals: ro.RestoreGlobals, RestoreLogs: ro.RestoreLogs, DryRun: req.DryRun,
			Log: e.log, Progress: func(step string) { progress(Progress{Phase: step}) }})
		if err != nil {
			return Outcome{}, err
		}
		return Outcome{Path: res.Plan.Archive, Result: res}, nil
	case dbusapi.KindVerify:
		all, err := catalog.List(e.cfg.BackupDir)
		if err != nil {
			return Outcome{}, err
		}
		var targets []catalog.Backup
		if req.Backup != "" {
			b, err := catalog.Find(e.cfg.BackupDir, req.Backup)
			if err != nil {
				return Outcome{}, err
			}
			targets = []catalog.Backup{b}
		} else {
			targets = all
		}
		type verified struct {
			Name     string   `json:"name"`
			OK       bool     `json:"ok"`
			Problems []string `json:"problems,omitempty"`
		}
		var report []verified
		var bad []string
		for i, b := range targets {
			progress(Progress{Phase: "verify " + b.Name, Fraction: float64(i) / float64(len(targets)), Valid: true})
			rep, err := archive.Verify(ctx, b.Path)
			if err != nil {
				return Outcome{}, err
			}
			v := verified{Name: b.Name, OK: rep.OK()}
			for _, p := range rep.Problems {
				v.Problems = append(v.Problems, p.String())
			}
			if !v.OK {
				bad = append(bad, b.Name)
			}
			report = append(report, v)
		}
		out := Outcome{Result: report}
		if len(targets) == 1 {
			out.Path = targets[0].Path
		}
		if len(bad) > 0 {
			return out, dbusapi.Errorf("CORRUPT", "restore from another backup; take a new full backup", fmt.Sprintf("%d archive(s) failed verification: %s", len(bad), strings.Join(bad, ", ")))
		}
		return out, nil
	case dbusapi.KindCleanup:
		all, err := catalog.List(e.cfg.BackupDir)
		if err != nil {
			return Outcome{}, err
		}
		plan := catalog.Plan(all, e.cfg.RetentionDays, time.Now())
		var errs []error
		if !req.DryRun {
			for _, d := range plan {
				if !d.Keep {
					errs = append(errs, catalog.Remove(d.Backup))
				}
			}
		}
		return Outcome{Result: plan}, errors.Join(errs...)
	}
	return Outcome{}, dbusapi.Errorf(dbusapi.CodeInvalidArgs, "", "unknown job kind "+req.Kind)
}

func (e *engineAdapter) ListBackups(ctx context.Context) ([]dbusapi.BackupEntry, error) {
	all, err := catalog.List(e.cfg.BackupDir)
	if err != nil {
		return nil, engineError(ctx, err)
	}
	out := make([]dbusapi.BackupEntry, 0, len(all))
	for _, b := range all {
		d := map[string]any{}
		if len(b.Databases) > 0 {
			d["databases"] = b.Databases
		}
		if b.ChainID != "" {
			d["chain"] = b.ChainID
		}
		if b.Previous != "" {
			d["previous"] = b.Previous
		}
		if b.Problem != "" {
			d["problem"] = b.Problem
		}
		out = append(out, dbusapi.BackupEntry{Name: b.Name, Type: b.Type, Path: b.Path, Time: b.Timestamp, Size: b.Size, Details: d})
	}
	return out, nil
}

func (e *engineAdapter) Status(ctx context.Context) (any, error) {
	all, err := catalog.List(e.cfg.BackupDir)
	if err != nil {
		return nil, engineError(ctx, err)
	}
	return map[string]any{"backupDir": e.cfg.BackupDir, "databases": e.cfg.DBNames, "backups": len(all)}, nil
}

func (e *engineAdapter) Mark(ctx context.Context, name string) (string, error) {
	var parts []string
	for _, db := range e.cfg.DBNames {
		conn, err := pgclient.FromConfig(e.cfg).Connect(ctx, db)
		if err != nil {
			return "", engineError(ctx, err)
		}
		var lsn string
		err = conn.QueryRow(ctx, `SELECT pg_logical_emit_message(true, $1, $2)::text`, changeset.MarkPrefix, name).Scan(&lsn)
		conn.Close(context.Background())
		if err != nil {
			return "", engineError(ctx, fmt.Errorf("mark %s in %s: %w", name, db, err))
		}
		parts = append(parts, db+"="+lsn)
	}
	if len(parts) == 1 {
		_, lsn, _ := strings.Cut(parts[0], "=")
		return lsn, nil
	}
	return strings.Join(parts, ","), nil
}

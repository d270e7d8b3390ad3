package daemon

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/pme2go/pme2go-backup/daemon/rest"
	"github.com/pme2go/pme2go-backup/dbusapi"
	"github.com/pme2go/pme2go-backup/engine/config"
	"github.com/pme2go/pme2go-backup/engine/ops"
)

// This file is the only one that knows the engine: it adapts the engine's
// front door (engine/ops) to the Engine interface.

// engineAdapter runs operations in process with a configuration.
type engineAdapter struct {
	cfg *config.Config
	log *slog.Logger
}

// NewEngine returns the Engine backed by the engine's front door.
func NewEngine(cfg *config.Config, log *slog.Logger) Engine {
	return &engineAdapter{cfg: cfg, log: log}
}

func (e *engineAdapter) Databases() []string { return append([]string(nil), e.cfg.DBNames...) }

// fixText words a front-door fix for D-Bus callers: the option names of the
// API ("force", "target-db", ...) rather than a CLI's flags.
func fixText(f *ops.Fix) (text, action string) {
	if f == nil {
		return "", ""
	}
	action = string(f.Action)
	text = f.Text
	if text == "" && action != "" {
		text = fmt.Sprintf("repeat with the %q option", action)
	}
	return text, action
}

// engineError converts a front-door error to the API's error (same code,
// message and fix).
func engineError(ctx context.Context, err error) error {
	if err == nil {
		return nil
	}
	var de *dbusapi.Error
	if errors.As(err, &de) {
		return de
	}
	if ctx.Err() != nil && !errors.Is(err, context.Canceled) {
		err = fmt.Errorf("%w: %w", ctx.Err(), err)
	}
	c := ops.Classify(err)
	text, action := fixText(c.Fix)
	return &dbusapi.Error{Code: string(c.Code), Message: err.Error(), Fix: text, Action: action}
}

// offsiteError converts a backup's failed off-site copy to the API's error.
func offsiteError(e *ops.ErrorJSON) *dbusapi.Error {
	if e == nil {
		return nil
	}
	text, action := fixText(e.Fix)
	return &dbusapi.Error{Code: string(e.Code), Message: e.Message, Fix: text, Action: action}
}

func (e *engineAdapter) Validate(req dbusapi.JobRequest) error {
	if req.Kind == dbusapi.KindRestore {
		ro := req.Restore
		err := ops.RestoreTarget{Time: ro.TargetTime, LSN: ro.TargetLSN, Xid: ro.TargetXid,
			Name: ro.TargetName, Latest: ro.Latest, Exclusive: ro.TargetExclusive}.Validate()
		if err != nil {
			return dbusapi.Errorf(dbusapi.CodeInvalidArgs, "", err.Error())
		}
	}
	if req.Kind == dbusapi.KindRestore || req.Kind == dbusapi.KindVerify {
		if _, err := backupRef(e.cfg.BackupDir, req.Backup); err != nil {
			return err
		}
	}
	if req.Kind == dbusapi.KindRekey {
		if _, err := backupRefs(e.cfg.BackupDir, req.Backups); err != nil {
			return err
		}
	}
	return e.checkDatabases(req.Databases, req.Kind == dbusapi.KindFull || req.Kind == dbusapi.KindIncremental)
}

// checkDatabases refuses (INVALID_ARGS) a database named twice and, when
// configured is set, one not listed in DB_NAME.
func (e *engineAdapter) checkDatabases(dbs []string, configured bool) error {
	seen := map[string]bool{}
	for _, db := range dbs {
		if seen[db] {
			return dbusapi.Errorf(dbusapi.CodeInvalidArgs, "name each database once",
				fmt.Sprintf("database %.64q is named twice", db))
		}
		seen[db] = true
		if configured && !slices.Contains(e.cfg.DBNames, db) {
			return dbusapi.Errorf(dbusapi.CodeInvalidArgs, "name databases listed in DB_NAME ("+strings.Join(e.cfg.DBNames, ",")+")",
				fmt.Sprintf("database %.64q is not configured", db))
		}
	}
	return nil
}

// backupRef checks a backup named by a caller of the daemon (D-Bus
// Restore and Verify, REST restore) and returns what the engine is given.
// The daemon runs with privileges its callers may lack, so it only opens
// archives inside BACKUP_DIR: a name as the list of backups shows it, or a
// path below BACKUP_DIR (absolute, or relative to it). A path elsewhere is
// refused without looking at it (no existence oracle), as is a name with
// a control character. The CLI's --direct mode, run by someone who can
// read the file, restores archives from anywhere.
func backupRef(backupDir, ref string) (string, error) {
	if ref == "" {
		return "", nil
	}
	for _, r := range ref {
		if r < 0x20 || r == 0x7f {
			return "", dbusapi.Errorf(dbusapi.CodeInvalidArgs, "name a backup as the list of backups shows it",
				fmt.Sprintf("backup %.80q contains a control character", ref))
		}
	}
	outside := dbusapi.Errorf(dbusapi.CodeInvalidArgs,
		"name a backup as the list of backups shows it, or copy the archive (with its .manifest.json) below BACKUP_DIR; "+
			"pme2go-backup --direct restores an archive from anywhere",
		fmt.Sprintf("backup %.200q is not inside BACKUP_DIR (%s): the daemon opens archives there only", ref, backupDir))
	root := filepath.Clean(backupDir)
	if r, err := filepath.EvalSymlinks(root); err == nil {
		root = r
	}
	inside := func(p string) bool {
		return strings.HasPrefix(p, root+string(filepath.Separator)) || strings.HasPrefix(p, filepath.Clean(backupDir)+string(filepath.Separator))
	}
	// The engine first tries a reference as a file (relative to the
	// daemon's working directory), then as a name in the catalog or the
	// off-site repository.
	if st, err := os.Stat(ref); err == nil && st.Mode().IsRegular() {
		abs, err := filepath.Abs(ref)
		if err != nil || !inside(abs) {
			return "", outside
		}
		if r, err := filepath.EvalSymlinks(abs); err != nil || !strings.HasPrefix(r, root+string(filepath.Separator)) {
			return "", outside
		}
	}
	if !strings.ContainsRune(ref, '/') {
		return ref, nil
	}
	p := ref
	if !filepath.IsAbs(p) {
		p = filepath.Join(backupDir, p)
	}
	p = filepath.Clean(p)
	if !inside(p) {
		return "", outside
	}
	if r, err := filepath.EvalSymlinks(p); err == nil && !strings.HasPrefix(r, root+string(filepath.Separator)) {
		return "", outside
	}
	if _, err := os.Stat(p); err != nil && !filepath.IsAbs(ref) {
		// Not a file below BACKUP_DIR: perhaps an off-site key
		// (full/<name>), matched by name.
		return ref, nil
	}
	return p, nil
}

// backupRefs is backupRef of each of refs.
func backupRefs(backupDir string, refs []string) ([]string, error) {
	var out []string
	for _, r := range refs {
		ref, err := backupRef(backupDir, r)
		if err != nil {
			return nil, err
		}
		out = append(out, ref)
	}
	return out, nil
}

// progressOf adapts the front door's progress events. A full backup's dump
// counts for the first half and its archive for the second.
func progressOf(kind string, progress func(Progress)) ops.Progress {
	return func(ev ops.ProgressEvent) {
		p := Progress{Phase: strings.TrimSpace(ev.Phase + " " + ev.Object)}
		if f, ok := ev.Fraction(); ok {
			p.Fraction, p.Valid = f, true
			if kind == dbusapi.KindFull {
				switch ev.Phase {
				case "dump":
					p.Fraction = f / 2
				case "archive":
					p.Fraction = 0.5 + f/2
				}
			}
		}
		if ev.Unit == "bytes" && ev.Done > 0 {
			p.Bytes = uint64(ev.Done)
		}
		progress(p)
	}
}

func (e *engineAdapter) Run(ctx context.Context, req dbusapi.JobRequest, progress func(Progress)) (Outcome, error) {
	out, err := e.run(ctx, req, progressOf(req.Kind, progress))
	return out, engineError(ctx, err)
}

func (e *engineAdapter) run(ctx context.Context, req dbusapi.JobRequest, p ops.Progress) (Outcome, error) {
	switch req.Kind {
	case dbusapi.KindFull:
		res, err := ops.Full(ctx, e.cfg, ops.FullOptions{Databases: req.Databases, Trigger: req.Trigger,
			Compression: req.Compression, Log: e.log}, p)
		if err != nil {
			return Outcome{}, err
		}
		return Outcome{Path: res.Path, Size: res.Size, Result: res, OffsiteError: offsiteError(res.OffsiteError)}, nil
	case dbusapi.KindIncremental:
		res, err := ops.Incremental(ctx, e.cfg, ops.IncrementalOptions{Databases: req.Databases, Trigger: req.Trigger,
			Compression: req.Compression, Log: e.log}, p)
		out := Outcome{Result: res}
		if res != nil {
			for _, a := range res.Archives {
				out.Path = a.Path
			}
			out.OffsiteError = offsiteError(res.OffsiteError)
		}
		return out, err
	case dbusapi.KindRestore:
		ro := req.Restore
		ref, err := backupRef(e.cfg.BackupDir, req.Backup)
		if err != nil {
			return Outcome{}, err
		}
		res, err := ops.Restore(ctx, e.cfg, ops.RestoreOptions{Backup: ref,
			Target: ops.RestoreTarget{Time: ro.TargetTime, LSN: ro.TargetLSN, Xid: ro.TargetXid, Name: ro.TargetName,
				Latest: ro.Latest, Exclusive: ro.TargetExclusive},
			Resume: ro.Resume, TargetDB: ro.TargetDB, Databases: req.Databases, Force: ro.Force,
			NoSafetyBackup: ro.NoSafetyBackup, NoOwner: ro.NoOwner, RestoreGlobals: ro.RestoreGlobals,
			RestoreLogs: ro.RestoreLogs, DryRun: req.DryRun, Log: e.log}, p)
		if err != nil {
			return Outcome{}, err
		}
		return Outcome{Path: res.Archive, Result: res}, nil
	case dbusapi.KindVerify:
		var backups []string
		ref, err := backupRef(e.cfg.BackupDir, req.Backup)
		if err != nil {
			return Outcome{}, err
		}
		if ref != "" {
			backups = []string{ref}
		}
		res, err := ops.Verify(ctx, e.cfg, ops.VerifyOptions{Backups: backups, Offsite: req.Offsite}, p)
		out := Outcome{Result: res}
		if res != nil && len(res.Archives) == 1 {
			out.Path = res.Archives[0].Path
		}
		return out, err
	case dbusapi.KindDrill:
		res, err := ops.Drill(ctx, e.cfg, ops.DrillOptions{Databases: req.Databases, Trigger: req.Trigger, Log: e.log}, p)
		return Outcome{Result: res}, err
	case dbusapi.KindOffsiteSync:
		res, err := ops.OffsiteSync(ctx, e.cfg, ops.OffsiteSyncOptions{Log: e.log}, p)
		return Outcome{Result: res}, err
	case dbusapi.KindRekey:
		refs, err := backupRefs(e.cfg.BackupDir, req.Backups)
		if err != nil {
			return Outcome{}, err
		}
		res, err := ops.Rekey(ctx, e.cfg, ops.RekeyOptions{Backups: refs, DryRun: req.DryRun}, p)
		return Outcome{Result: res}, err
	case dbusapi.KindCleanup:
		res, err := ops.Cleanup(ctx, e.cfg, ops.CleanupOptions{DryRun: req.DryRun, Log: e.log}, p)
		return Outcome{Result: res}, err
	}
	return Outcome{}, dbusapi.Errorf(dbusapi.CodeInvalidArgs, "", "unknown job kind "+req.Kind)
}

func (e *engineAdapter) ListBackups(ctx context.Context) ([]dbusapi.BackupEntry, error) {
	all, err := ops.List(ctx, e.cfg, ops.ListOptions{}, nil)
	if err != nil {
		return nil, engineError(ctx, err)
	}
	out := make([]dbusapi.BackupEntry, 0, len(all))
	for _, b := range all {
		d := map[string]any{}
		if len(b.Databases) > 0 {
			d["databases"] = b.Databases
		}
		str := func(k, v string) {
			if v != "" {
				d[k] = v
			}
		}
		str("chain", b.ChainID)
		str("previous", b.Previous)
		str("problem", b.Problem)
		str("trigger", b.Trigger)
		if b.StartLSN != 0 {
			d["startLsn"] = b.StartLSN.String()
		}
		if b.EndLSN != 0 {
			d["endLsn"] = b.EndLSN.String()
		}
		if b.FirstCommitTime != nil {
			d["firstCommitTime"] = *b.FirstCommitTime
		}
		if b.LastCommitTime != nil {
			d["lastCommitTime"] = *b.LastCommitTime
		}
		if b.Transactions > 0 {
			d["transactions"] = b.Transactions
		}
		if b.Safety {
			d["safety"] = true
		}
		if len(b.Warnings) > 0 {
			d["warnings"] = b.Warnings
		}
		js, _ := json.Marshal(b)
		out = append(out, dbusapi.BackupEntry{Name: b.Name, Type: b.Type, Path: b.Path, Time: b.Timestamp, Size: b.Size, Details: d, JSON: string(js)})
	}
	return out, nil
}

func (e *engineAdapter) Status(ctx context.Context) (any, error) {
	res, err := ops.Status(ctx, e.cfg, ops.StatusOptions{}, nil)
	if err != nil {
		return nil, engineError(ctx, err)
	}
	return res, nil
}

func (e *engineAdapter) Stream(ctx context.Context, db string, progress func(Progress)) error {
	_, err := ops.Stream(ctx, e.cfg, ops.StreamOptions{Databases: []string{db}, Log: e.log}, func(ev ops.ProgressEvent) {
		progress(Progress{Phase: strings.TrimSpace(ev.Phase + " " + ev.Object + " " + ev.Message)})
	})
	if err != nil && ctx.Err() != nil {
		return nil
	}
	return engineError(ctx, err)
}

func (e *engineAdapter) Window(ctx context.Context) (Window, error) {
	st, err := ops.Status(ctx, e.cfg, ops.StatusOptions{}, nil)
	if err != nil {
		return Window{}, engineError(ctx, err)
	}
	list, err := ops.List(ctx, e.cfg, ops.ListOptions{Type: "full"}, nil)
	if err != nil {
		list = nil
	}
	return windowOf(st, list), nil
}

// Figures reports what /metrics shows of the archives and the server: the
// newest usable archive per kind and database, each open chain's slot lag,
// the recovery window, whether the server answered.
func (e *engineAdapter) Figures(ctx context.Context) (rest.Snapshot, error) {
	var snap rest.Snapshot
	st, err := ops.Status(ctx, e.cfg, ops.StatusOptions{Recent: 1}, nil)
	if err != nil {
		return snap, engineError(ctx, err)
	}
	list, err := ops.List(ctx, e.cfg, ops.ListOptions{}, nil)
	if err != nil {
		return snap, engineError(ctx, err)
	}
	up := st.ServerOK
	snap.ServerUp = &up
	if l := st.LastDrill; l != nil && !l.Time.IsZero() {
		snap.LastDrill = &rest.DrillFigure{Time: l.Time, OK: l.OK, Databases: l.Database, Duration: l.Duration}
	}
	if o := st.Offsite; o != nil {
		snap.Offsite = &rest.OffsiteFigure{Copied: o.Copied, NotCopied: len(o.NotCopied)}
		if o.LastSuccess != nil {
			snap.Offsite.LastSync = *o.LastSuccess
		}
		snap.Offsite.Ran, snap.Offsite.LastOK = o.LastSync != nil, o.LastError == ""
	}
	newest := map[[2]string]int{}
	for _, b := range list {
		if b.Problem != "" || b.Safety {
			continue
		}
		dbs := b.Databases
		if len(dbs) == 0 {
			dbs = e.cfg.DBNames
		}
		for _, db := range dbs {
			k := [2]string{b.Type, db}
			if i, ok := newest[k]; ok {
				if b.Timestamp.Before(snap.Backups[i].Time) {
					continue
				}
				snap.Backups[i] = rest.BackupFigure{Kind: b.Type, Database: db, Time: b.Timestamp, Size: b.Size, Duration: -1}
				continue
			}
			newest[k] = len(snap.Backups)
			snap.Backups = append(snap.Backups, rest.BackupFigure{Kind: b.Type, Database: db, Time: b.Timestamp, Size: b.Size, Duration: -1})
		}
	}
	for _, ch := range st.Chains {
		if ch.Status == "open" && ch.Lag != nil && ch.Lag.Exists {
			snap.SlotLag = append(snap.SlotLag, rest.SlotLagFigure{Database: ch.Database, Slot: ch.Lag.Slot, Bytes: ch.Lag.Bytes})
		}
	}
	var fulls []ops.Backup
	for _, b := range list {
		if b.Type == "full" {
			fulls = append(fulls, b)
		}
	}
	w := windowOf(st, fulls)
	snap.WindowStart, snap.WindowEnd = w.Start, w.End
	return snap, nil
}

// windowOf computes the recovery window from a status and the full backups.
func windowOf(st *ops.StatusResult, fulls []ops.Backup) Window {
	var w Window
	for _, ch := range st.Chains {
		if ch.Status != "open" {
			continue
		}
		if ch.Lag != nil && ch.Lag.Bytes > 0 {
			w.LagBytes += uint64(ch.Lag.Bytes)
		}
		if ch.CompleteTime != nil && (w.End.IsZero() || ch.CompleteTime.Before(w.End)) {
			w.End = *ch.CompleteTime
		}
	}
	for _, b := range fulls {
		if b.Problem == "" && (w.Start.IsZero() || b.Timestamp.Before(w.Start)) {
			w.Start = b.Timestamp
		}
	}
	return w
}

func (e *engineAdapter) Mark(ctx context.Context, name string, databases []string) (string, error) {
	if err := e.checkDatabases(databases, true); err != nil {
		return "", err
	}
	res, err := ops.Mark(ctx, e.cfg, ops.MarkOptions{Name: name, Databases: databases}, nil)
	if err != nil {
		return "", engineError(ctx, err)
	}
	if len(res.Marks) == 1 {
		return res.Marks[0].LSN.String(), nil
	}
	parts := make([]string, 0, len(res.Marks))
	for _, m := range res.Marks {
		parts = append(parts, m.Database+"="+m.LSN.String())
	}
	return strings.Join(parts, ","), nil
}

// LastDrill reports the last restore drill (drillReporter).
func (e *engineAdapter) LastDrill(ctx context.Context) (DrillSummary, bool) {
	st, err := ops.Status(ctx, e.cfg, ops.StatusOptions{NoServer: true}, nil)
	if err != nil || st.LastDrill == nil {
		return DrillSummary{}, false
	}
	l := st.LastDrill
	return DrillSummary{Time: l.Time, OK: l.OK, Databases: l.Database, Duration: l.Duration, Error: l.Error}, true
}

// Package backup takes full backups: pg_dump of each configured database in
// directory format (optionally at a snapshot exported by a replication slot),
// the cluster's globals, system information, application statistics and
// configured log and extra files, packed into one atomic archive with a
// manifest of checksums.
package backup

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/pme2go/pme2go-backup/engine/archive"
	"github.com/pme2go/pme2go-backup/engine/backupdir"
	"github.com/pme2go/pme2go-backup/engine/config"
	"github.com/pme2go/pme2go-backup/engine/fsutil"
	"github.com/pme2go/pme2go-backup/engine/pgclient"
	"github.com/pme2go/pme2go-backup/engine/progress"
	"github.com/pme2go/pme2go-backup/engine/version"
)

// Snapshotter lets the incremental engine hand pg_dump the snapshot exported
// by a replication slot. It is called once per database before its dump;
// release is called after pg_dump has exited, successfully or not.
type Snapshotter func(ctx context.Context, db string) (snapshot string, meta map[string]string, release func(ok bool), err error)

// ChainStarter starts a change-capture chain per database at the snapshot
// pg_dump is given. The front door passes the incremental workflow's
// starter (which first seals an older chain of the same database into a
// last incremental); a *chain.Starter satisfies it.
type ChainStarter interface {
	// Snapshot is called once per database before its dump, as a
	// Snapshotter.
	Snapshot(ctx context.Context, db string) (snapshot string, meta map[string]string, release func(ok bool), err error)
	// Finish is called once the backup ended: ok says whether the archive
	// fullName was written (the chains are kept) or not (they are dropped).
	Finish(ctx context.Context, ok bool, fullName string) error
}

// Options tune one full backup.
type Options struct {
	Trigger   string   // "manual", "scheduled", "safety", … recorded in the manifest
	Databases []string // default: the configuration's DB_NAME
	Dir       string   // default: BACKUP_DIR/full
	Snapshot  Snapshotter
	// Chain, when set (and Snapshot is not), starts a change-capture chain
	// at the dump's snapshot when the server allows it (wal_level =
	// logical, a role with REPLICATION). Nil: no chain is started.
	Chain ChainStarter
	// Progress is told phase "dump" per database (Object; bytes done of
	// the databases' estimated size), "archive" (bytes) and "done".
	Progress progress.Func
	Log      *slog.Logger
	// Locked says the caller already holds the backup directory lock (a
	// restore taking its safety backup).
	Locked bool
	// DumpFrom maps a database name of Databases to the database actually
	// dumped, when that database is reachable under another name for the
	// moment: a restore --force renames the database it replaces to a
	// private name, so that nothing but its safety backup can connect, and
	// records the backup under the original name. The dump's own table of
	// contents then names the private name (manifest metadata dumpedAs:<db>).
	DumpFrom map[string]string
}

// source is the database to connect to for the database recorded as db.
func (o Options) source(db string) string {
	if s := o.DumpFrom[db]; s != "" {
		return s
	}
	return db
}

// Result describes a written backup.
type Result struct {
	Path     string
	Manifest *archive.Manifest
	Size     int64
	Duration time.Duration
}

// Full takes a full backup. On any error nothing is left that `list` would
// show, and temporary files are removed (or, after a crash, removed by the
// next run).
func Full(ctx context.Context, cfg *config.Config, opts Options) (_ *Result, retErr error) {
	start := time.Now()
	log := opts.Log
	if log == nil {
		log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	report := opts.Progress
	dbs := opts.Databases
	if len(dbs) == 0 {
		dbs = cfg.DBNames
	}
	dir := opts.Dir
	if dir == "" {
		dir = cfg.FullDir()
	}
	if !opts.Locked {
		unlock, err := backupdir.Prepare(cfg, dir)
		if err != nil {
			return nil, err
		}
		defer unlock()
	} else if err := fsutil.EnsurePrivateDir(dir); err != nil {
		return nil, fmt.Errorf("backup directory %s is not usable: %w", dir, err)
	}

	target := pgclient.FromConfig(cfg)
	conn, err := target.Connect(ctx, opts.source(dbs[0]))
	if err != nil {
		return nil, err
	}
	defer conn.Close(context.Background())
	srv, err := pgclient.Inspect(ctx, conn)
	if err != nil {
		return nil, err
	}
	tools, err := findTools(ctx, cfg.PgBinDir, srv.Major(), "pg_dump", "pg_dumpall")
	if err != nil {
		return nil, err
	}
	var total int64
	for _, db := range dbs {
		n, err := pgclient.DatabaseSize(ctx, conn, opts.source(db))
		if err != nil {
			return nil, fmt.Errorf("%w; check DB_NAME", err)
		}
		total += n
	}

	log.Debug("backup prepared", "elapsed", time.Since(start).Round(time.Millisecond))
	name := "full_backup_" + archive.TimestampName(start)
	path := filepath.Join(dir, name+archive.FileExt(archive.Codec(cfg.Compression)))
	staging := filepath.Join(dir, fsutil.TempPrefix(name)+"staging")
	if err := os.Mkdir(staging, 0o700); err != nil {
		return nil, fmt.Errorf("create staging directory: %w", err)
	}
	defer os.RemoveAll(staging)

	m := &archive.Manifest{
		Type: archive.KindFull, Timestamp: start.UTC(), Version: version.Version, FormatVersion: archive.FormatVersion,
		Files: map[string]string{}, Metadata: map[string]any{"trigger": orDefault(opts.Trigger, archive.TriggerManual)},
		SystemIdentifier: srv.SystemIdentifier, Timeline: srv.Timeline, ServerVersion: srv.Version,
		PgDumpVersion: tools["pg_dump"].Version, Databases: dbs,
	}
	if id8, err := config.InstallationShortID(cfg); err == nil && id8 != "" {
		m.Metadata["installation"] = id8 // who made it (engine/offsite: restores never choose another's)
	}
	if srv.WalLevel != "logical" {
		m.Warnings = append(m.Warnings, fmt.Sprintf("wal_level is %s: incremental backups are off; set wal_level = logical and restart PostgreSQL to enable them", srv.WalLevel))
	} else if opts.Snapshot == nil && !(srv.Replication || srv.Superuser) {
		m.Warnings = append(m.Warnings, "DB_USER has no REPLICATION privilege: incremental backups are off; ALTER ROLE … REPLICATION to enable them")
	} else if opts.Snapshot == nil && opts.Chain != nil && opts.Trigger != archive.TriggerSafety {
		// Start a change-capture chain at the dump's snapshot (engine/chain).
		// A restore's safety backup starts none: its database is replaced.
		starter := opts.Chain
		opts.Snapshot = starter.Snapshot
		defer func() {
			if err := starter.Finish(context.WithoutCancel(ctx), retErr == nil, filepath.Base(path)); err != nil {
				log.Warn("change capture chain", "error", err)
			}
		}()
	}

	// Globals and the system and application information do not depend
	// on the dump: they are written while pg_dump runs, into a manifest of
	// their own merged below (dumpDatabase writes into m meanwhile).
	info := &archive.Manifest{Files: map[string]string{}, Metadata: map[string]any{}}
	infoDone := make(chan error, 1)
	infoStart := time.Now()
	go func() {
		err := dumpGlobals(ctx, log, target, tools["pg_dumpall"], srv, opts.source(dbs[0]), filepath.Join(staging, "globals.sql"), info)
		if err == nil {
			err = writeInfo(ctx, cfg, target, srv, tools, dbs, opts.source, staging, info)
		}
		log.Debug("globals and information written", "duration", time.Since(infoStart).Round(time.Millisecond))
		infoDone <- err
	}()
	infoErr := sync.OnceValue(func() error { return <-infoDone })
	defer infoErr() // before the staging directory is removed

	// Dump every database into the staging directory.
	var done int64
	for _, db := range dbs {
		report.Report(progress.Event{Phase: "dump", Object: db, Done: done, Total: total, Unit: progress.Bytes})
		if src := opts.source(db); src != db {
			m.Metadata["dumpedAs:"+db] = src
		}
		if err := dumpDatabase(ctx, log, target, tools["pg_dump"], cfg.Jobs, opts.source(db), filepath.Join(staging, "database", db), opts.Snapshot, m); err != nil {
			if strings.Contains(err.Error(), "No space left on device") {
				return nil, fmt.Errorf("no space left in %s while dumping %s: free some space or point BACKUP_DIR to a larger file system: %w", dir, db, err)
			}
			return nil, err
		}
		n, _ := pgclient.DatabaseSize(ctx, conn, opts.source(db))
		done += n
		m.Files["database:"+db] = "database/" + db + "/"
	}
	if cfg.Compression == string(archive.CodecXZ) {
		// The pure-Go LZMA encoder is several times slower than pg_dump's
		// zlib on table data and compresses it no better
		// (docs/benchmarks.md): table data is gzip-compressed in parallel
		// and stored in the xz stream; the rest is LZMA-compressed.
		t := time.Now()
		if err := compressTableData(ctx, filepath.Join(staging, "database"), cfg.CompressionLevel, cfg.Jobs); err != nil {
			return nil, err
		}
		log.Info("table data compressed", "duration", time.Since(t).Round(time.Millisecond))
	}
	dumped := time.Now()
	if err := infoErr(); err != nil {
		return nil, err
	}
	m.HasGlobals = info.HasGlobals
	m.Warnings = append(m.Warnings, info.Warnings...)
	for k, v := range info.Files {
		m.Files[k] = v
	}
	for k, v := range info.Metadata {
		m.Metadata[k] = v
	}

	files, err := collect(staging, "")
	if err != nil {
		return nil, fmt.Errorf("read staging directory: %w", err)
	}
	for i := range files {
		files[i].staged = true
	}
	archiveOrder(files, dbs)
	files = append(files, pathMembers(cfg.LogPaths, "logs", m)...)
	files = append(files, pathMembers(cfg.ExtraPaths, "files", m)...)
	packStart := time.Now()
	res, err := pack(ctx, cfg, log, path, files, m, report)
	if err != nil {
		return nil, err
	}
	res.Duration = time.Since(start)
	report.Report(progress.Event{Phase: "done", Done: res.Size, Total: res.Size, Unit: progress.Bytes})
	log.Info("full backup completed", "backup", filepath.Base(path), "duration", res.Duration.Round(time.Millisecond), "size", res.Size,
		"dump", dumped.Sub(start).Round(time.Millisecond), "info", packStart.Sub(dumped).Round(time.Millisecond), "archive", time.Since(packStart).Round(time.Millisecond))
	return res, nil
}

func dumpDatabase(ctx context.Context, log *slog.Logger, target pgclient.Target, pgDump *pgclient.Tool, jobs int, db, out string, snap Snapshotter, m *archive.Manifest) error {
	if err := os.MkdirAll(filepath.Dir(out), 0o700); err != nil {
		return fmt.Errorf("create dump directory: %w", err)
	}
	snapshot := ""
	release := func(bool) {}
	if snap != nil {
		s, meta, rel, err := snap(ctx, db)
		if err != nil {
			return fmt.Errorf("snapshot for database %s: %w", db, err)
		}
		snapshot, release = s, rel
		for k, v := range meta {
			m.Metadata[k] = v
		}
		chainMeta(m, db, meta)
	}
	log.Info("dumping database", "database", db, "jobs", jobs, "snapshot", snapshot)
	t := time.Now()
	err := pgDump.Run(ctx, log, target, db, dumpArgs(out, jobs, snapshot)...)
	release(err == nil)
	log.Info("pg_dump finished", "database", db, "duration", time.Since(t).Round(time.Millisecond))
	return err
}

func dumpGlobals(ctx context.Context, log *slog.Logger, target pgclient.Target, tool *pgclient.Tool, srv *pgclient.ServerInfo, db, out string, m *archive.Manifest) error {
	args := []string{"-w", "--globals-only", "--file=" + out, "--database=" + db}
	if !srv.Superuser {
		args = append(args, "--no-role-passwords")
	}
	err := tool.Run(ctx, log, target, db, args...)
	switch {
	case err == nil && srv.Superuser:
		m.HasGlobals = true
	case err == nil:
		m.HasGlobals = true
		m.Warnings = append(m.Warnings, "globals.sql lacks role passwords: DB_USER is not a superuser")
	case ctx.Err() != nil:
		return err
	default:
		os.Remove(out)
		m.Warnings = append(m.Warnings, "no globals (roles, tablespaces): pg_dumpall --globals-only failed: "+err.Error())
		log.Warn("backup lacks globals", "error", err)
		return nil
	}
	m.Files["globals"] = "globals.sql"
	return nil
}

func findTools(ctx context.Context, binDir string, major int, names ...string) (map[string]*pgclient.Tool, error) {
	tools := map[string]*pgclient.Tool{}
	for _, n := range names {
		t, err := pgclient.FindTool(ctx, n, binDir, major)
		if err != nil {
			return nil, err
		}
		if err := t.CheckCompatible(major); err != nil {
			return nil, err
		}
		tools[n] = t
	}
	return tools, nil
}

func orDefault(s, d string) string {
	if s == "" {
		return d
	}
	return s
}

// chainMeta records the chain a Snapshotter started in the manifest's chain
// fields. With several databases (one chain each) the fields list them
// comma-separated in database order, and Metadata["chain:<db>"] names each.
func chainMeta(m *archive.Manifest, db string, meta map[string]string) {
	if w := meta["warning"]; w != "" {
		m.Warnings = append(m.Warnings, w)
		delete(m.Metadata, "warning")
	}
	if meta["chainId"] == "" {
		return
	}
	join := func(a, b string) string {
		if a == "" {
			return b
		}
		return a + "," + b
	}
	m.ChainID = join(m.ChainID, meta["chainId"])
	m.SlotName = join(m.SlotName, meta["slotName"])
	m.StartLSN = join(m.StartLSN, meta["startLsn"])
	m.Metadata["chain:"+db] = meta["chainId"]
	if t := meta["startTime"]; t != "" {
		m.Metadata["chainStart:"+db] = t
	}
	if d := meta["ddlCapture"]; d != "" {
		m.Metadata["ddlCapture:"+db] = d
	}
	if q := meta["sequences"]; q != "" { // chain.SequencesKey
		m.Metadata["chainSequences:"+db] = q
	}
}

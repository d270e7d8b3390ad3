package ops

import (
	"context"
	"fmt"
	"syscall"
	"time"

	"github.com/pme2go/pme2go-backup/engine/archive"
	"github.com/pme2go/pme2go-backup/engine/capture"
	"github.com/pme2go/pme2go-backup/engine/catalog"
	"github.com/pme2go/pme2go-backup/engine/chain"
	"github.com/pme2go/pme2go-backup/engine/config"
	"github.com/pme2go/pme2go-backup/engine/pgclient"
)

// StatusOptions tune Status.
type StatusOptions struct {
	// Recent is how many of the newest backups to include (default 5).
	Recent int `json:"recent,omitempty"`
	// NoServer skips connecting to PostgreSQL (no server state, no lag).
	NoServer bool `json:"noServer,omitempty"`
}

// StatusResult is the state of the installation: configuration summary,
// disk usage, the server, every chain with its slot lag, recent backups.
type StatusResult struct {
	BackupDir     string    `json:"backupDir"`
	RetentionDays int       `json:"retentionDays"`
	Compression   string    `json:"compression"`
	Databases     []string  `json:"databases"`
	Server        string    `json:"server"`
	ServerOK      bool      `json:"serverReachable"`
	WalLevel      string    `json:"walLevel,omitempty"`
	Incrementals  string    `json:"incrementals"`
	Backups       int       `json:"backups"`
	UsedBytes     int64     `json:"usedBytes"`
	FreeBytes     int64     `json:"freeBytes"`
	MaxSlotLag    int64     `json:"maxSlotLagBytes"`
	LastFull      *Backup   `json:"lastFull,omitempty"`
	LastIncr      *Backup   `json:"lastIncremental,omitempty"`
	Recent        []Backup  `json:"recent"`
	Schedules     Schedules `json:"schedules"`
	Chains        []Chain   `json:"chains"`
	Time          time.Time `json:"time"`
	// Installation is this installation's short id, carried in the names of
	// its slots and publications; OtherInstallations lists the pme2go_*
	// objects on the server that belong to other installations (left alone).
	Installation       string   `json:"installation,omitempty"`
	OtherInstallations []Orphan `json:"otherInstallations"`
	// Offsite is the off-site repository's state (absent without OFFSITE_URL).
	Offsite *OffsiteStatus `json:"offsite,omitempty"`
	// LastDrill is the last restore drill's outcome (BACKUP_DIR/state/drill.json); absent before the first.
	LastDrill *LastDrill `json:"lastDrill,omitempty"`
	// Encryption says which keys the kept archives need (absent when
	// nothing is or will be encrypted).
	Encryption *EncryptionStatus `json:"encryption,omitempty"`
}

// Schedules are the configured cron schedules.
type Schedules struct {
	Full        string `json:"full"`
	Incremental string `json:"incremental"`
	Cleanup     string `json:"cleanup"`
	Drill       string `json:"drill"` // empty: no drills by the built-in scheduler
}

// Chain is one change-capture chain.
type Chain struct {
	ID       string `json:"id"`
	Database string `json:"database"`
	Status   string `json:"status"` // pending, open, sealed, broken
	Reason   string `json:"reason,omitempty"`
	StartLSN LSN    `json:"startLsn"`
	EndLSN   LSN    `json:"endLsn,omitempty"` // where a broken chain ended
	// EndTime: time targets up to it are exact in a broken chain.
	EndTime *time.Time `json:"endTime,omitempty"`
	// CompleteTime: the stream is known complete up to this server time
	// (last seal or streaming probe): the end of the recovery window once
	// archived.
	CompleteTime *time.Time `json:"completeTime,omitempty"`
	// DDLCapture says how DDL is seen: "trigger", or "off: <why>".
	DDLCapture  string     `json:"ddlCapture,omitempty"`
	Created     time.Time  `json:"created"`
	Ended       *time.Time `json:"ended,omitempty"`
	FullBackup  string     `json:"fullBackup,omitempty"`
	LastArchive string     `json:"lastArchive,omitempty"`
	CaptureDDL  bool       `json:"captureDdl"`
	Lag         *SlotLag   `json:"lag,omitempty"`
	LagError    string     `json:"lagError,omitempty"`
}

// SlotLag is how much WAL an open chain's slot holds back.
type SlotLag struct {
	Slot           string `json:"slot"`
	Exists         bool   `json:"exists"`
	Active         bool   `json:"active"` // a capture streams from it now
	Bytes          int64  `json:"bytes"`  // pg_current_wal_lsn() - confirmed_flush_lsn
	WalStatus      string `json:"walStatus,omitempty"`
	SafeWalSize    *int64 `json:"safeWalSize,omitempty"` // bytes before invalidation; absent: unlimited
	ConfirmedFlush LSN    `json:"confirmedFlush,omitempty"`
}

// Status reports the installation's state. It does not fail when the server
// is unreachable (Server says why); it fails only when BACKUP_DIR cannot be read.
func Status(ctx context.Context, cfg *config.Config, opts StatusOptions, _ Progress) (*StatusResult, error) {
	all, err := catalog.List(cfg.BackupDir)
	if err != nil {
		return nil, err
	}
	n := opts.Recent
	if n <= 0 {
		n = 5
	}
	r := &StatusResult{BackupDir: cfg.BackupDir, RetentionDays: cfg.RetentionDays, Compression: cfg.Compression,
		Databases: cfg.DBNames, Backups: len(all), Recent: []Backup{}, MaxSlotLag: cfg.MaxSlotLag, Time: time.Now().UTC(),
		Schedules: Schedules{Full: cfg.FullSchedule, Incremental: cfg.IncrSchedule, Cleanup: cfg.CleanupSchedule, Drill: cfg.DrillSchedule}}
	for _, b := range all {
		r.UsedBytes += b.Size
	}
	located := locate(cfg, all)
	for i, b := range located {
		if i >= len(located)-n {
			r.Recent = append(r.Recent, b)
		}
	}
	r.Offsite = offsiteStatus(cfg, located)
	r.Encryption = encryptionStatus(all)
	if b, ok := catalog.Newest(all, archive.KindFull); ok {
		fb := fromCatalog(b)
		r.LastFull = &fb
	}
	if b, ok := catalog.Newest(all, archive.KindIncremental); ok {
		ib := fromCatalog(b)
		r.LastIncr = &ib
	}
	var st syscall.Statfs_t
	if syscall.Statfs(cfg.BackupDir, &st) == nil {
		r.FreeBytes = int64(st.Bavail) * st.Bsize
	}
	if opts.NoServer {
		r.Server, r.Incrementals = "not checked", "unknown (server not checked)"
	} else {
		serverStatus(ctx, cfg, r)
	}
	r.Chains = chainStatuses(ctx, cfg, !opts.NoServer)
	r.LastDrill, _ = lastDrill(cfg)
	r.Installation, _ = config.InstallationShortID(cfg)
	r.OtherInstallations = []Orphan{}
	if !opts.NoServer {
		if others, err := chain.Others(ctx, cfg); err == nil {
			for _, o := range others {
				r.OtherInstallations = append(r.OtherInstallations, orphanOf(o))
			}
		}
	}
	return r, nil
}

// chainStatuses describes every chain; open chains get their slot's lag.
func chainStatuses(ctx context.Context, cfg *config.Config, withLag bool) []Chain {
	out := []Chain{}
	states, err := chain.List(cfg)
	if err != nil {
		return out
	}
	for _, st := range states {
		c := Chain{ID: st.ID, Database: st.Database, Status: string(st.Status), Reason: st.Reason, StartLSN: parseLSN(st.StartLSN), EndLSN: parseLSN(st.EndLSN), DDLCapture: st.CaptureMode,
			Created: st.Created, FullBackup: st.FullBackup, LastArchive: st.LastArchive, CaptureDDL: st.CaptureDDL}
		if !st.Ended.IsZero() {
			e := st.Ended
			c.Ended = &e
		}
		if !st.EndTime.IsZero() {
			e := st.EndTime
			c.EndTime = &e
		}
		if !st.CompleteTime.IsZero() {
			ct := st.CompleteTime
			c.CompleteTime = &ct
		}
		if withLag && st.Status == chain.StatusOpen {
			if lag, err := capture.Lag(ctx, cfg, st); err != nil {
				c.LagError = err.Error()
			} else {
				c.Lag = &SlotLag{Slot: lag.Slot, Exists: lag.Exists, Active: lag.Active, Bytes: lag.Bytes,
					WalStatus: lag.WalStatus, SafeWalSize: lag.SafeWalSize, ConfirmedFlush: parseLSN(lag.ConfirmedFlush)}
			}
		}
		out = append(out, c)
	}
	return out
}

func serverStatus(ctx context.Context, cfg *config.Config, r *StatusResult) {
	conn, err := pgclient.FromConfig(cfg).Connect(ctx, cfg.DBNames[0])
	if err != nil {
		r.Server, r.Incrementals = "unreachable: "+err.Error(), "unknown (server unreachable)"
		return
	}
	defer conn.Close(context.WithoutCancel(ctx))
	srv, err := pgclient.Inspect(ctx, conn)
	if err != nil {
		r.Server, r.Incrementals = err.Error(), "unknown"
		return
	}
	r.ServerOK, r.WalLevel = true, srv.WalLevel
	r.Server = fmt.Sprintf("PostgreSQL %s at %s", srv.Version, cfg.DBHost)
	r.Incrementals = "possible (wal_level = logical)"
	if srv.WalLevel != "logical" {
		r.Incrementals = "off: wal_level is " + srv.WalLevel + "; set wal_level = logical and restart PostgreSQL"
	}
}

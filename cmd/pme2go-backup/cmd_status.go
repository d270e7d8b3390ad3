package main

import (
	"fmt"
	"os"
	"syscall"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/pme2go/pme2go-backup/engine/capture"
	"github.com/pme2go/pme2go-backup/engine/catalog"
	"github.com/pme2go/pme2go-backup/engine/chain"
	"github.com/pme2go/pme2go-backup/engine/config"
	"github.com/pme2go/pme2go-backup/engine/pgclient"
)

// statusReport is what `status --json` prints.
type statusReport struct {
	BackupDir     string            `json:"backupDir"`
	RetentionDays int               `json:"retentionDays"`
	Compression   string            `json:"compression"`
	Databases     []string          `json:"databases"`
	Server        string            `json:"server"`
	WalLevel      string            `json:"walLevel,omitempty"`
	Incrementals  string            `json:"incrementals"`
	Backups       int               `json:"backups"`
	UsedBytes     int64             `json:"usedBytes"`
	FreeBytes     int64             `json:"freeBytes"`
	LastFull      *catalog.Backup   `json:"lastFull,omitempty"`
	Recent        []catalog.Backup  `json:"recent"`
	Schedules     map[string]string `json:"schedules"`
	Chains        []chainStatus     `json:"chains"`
	// Installation is this installation's short id, carried in the names
	// of its slots and publications; OtherInstallations lists the pme2go_*
	// objects on the server that belong to other installations.
	Installation       string         `json:"installation,omitempty"`
	OtherInstallations []chain.Orphan `json:"otherInstallations"`
}

// chainStatus is one change-capture chain in `status`.
type chainStatus struct {
	ID       string           `json:"id"`
	Database string           `json:"database"`
	Status   string           `json:"status"`
	Reason   string           `json:"reason,omitempty"`
	EndLSN   string           `json:"endLsn,omitempty"`
	DDL      string           `json:"ddlCapture,omitempty"`
	StartLSN string           `json:"startLsn"`
	Lag      *capture.SlotLag `json:"lag,omitempty"`
	LagError string           `json:"lagError,omitempty"`
}

// chainStatuses describes every chain; open chains get their slot's lag.
func chainStatuses(c *cli.Context, cfg *config.Config) []chainStatus {
	out := []chainStatus{}
	states, err := chain.List(cfg)
	if err != nil {
		return out
	}
	for _, st := range states {
		cs := chainStatus{ID: st.ID, Database: st.Database, Status: st.Status, Reason: st.Reason, EndLSN: st.EndLSN,
			DDL: st.CaptureMode, StartLSN: st.StartLSN}
		if st.Status == chain.StatusOpen {
			if lag, err := capture.Lag(c.Context, cfg, st); err != nil {
				cs.LagError = err.Error()
			} else {
				cs.Lag = lag
			}
		}
		out = append(out, cs)
	}
	return out
}

func statusCommand() *cli.Command {
	return &cli.Command{
		Name:  "status",
		Usage: "show configuration, recent backups and disk usage",
		Flags: []cli.Flag{&cli.BoolFlag{Name: "json", Usage: "print JSON"}},
		Action: func(c *cli.Context) error {
			cfg, _, err := loadConfig(c)
			if err != nil {
				return err
			}
			all, err := catalog.List(cfg.BackupDir)
			if err != nil {
				return err
			}
			r := statusReport{BackupDir: cfg.BackupDir, RetentionDays: cfg.RetentionDays, Compression: cfg.Compression,
				Databases: cfg.DBNames, Backups: len(all), Recent: []catalog.Backup{},
				Schedules: map[string]string{"full": cfg.FullSchedule, "incremental": cfg.IncrSchedule, "cleanup": cfg.CleanupSchedule}}
			for _, b := range all {
				r.UsedBytes += b.Size
			}
			if len(all) > 5 {
				r.Recent = all[len(all)-5:]
			} else if len(all) > 0 {
				r.Recent = all
			}
			if b, ok := catalog.Newest(all, "full"); ok {
				r.LastFull = &b
			}
			var st syscall.Statfs_t
			if syscall.Statfs(cfg.BackupDir, &st) == nil {
				r.FreeBytes = int64(st.Bavail) * st.Bsize
			}
			r.Server, r.WalLevel, r.Incrementals = serverStatus(c, cfg.DBHost, cfg.DBNames[0], pgclient.FromConfig(cfg))
			r.Chains = chainStatuses(c, cfg)
			r.Installation, _ = config.InstallationShortID(cfg)
			r.OtherInstallations = []chain.Orphan{}
			if others, err := chain.Others(c.Context, cfg); err == nil {
				r.OtherInstallations = others
			}
			if c.Bool("json") {
				return printJSON(os.Stdout, r)
			}
			fmt.Printf("Backup directory: %s (%s used by %d backups, %s free)\n", r.BackupDir, humanBytes(r.UsedBytes), r.Backups, humanBytes(r.FreeBytes))
			fmt.Printf("Retention:        %d days, compression %s\n", r.RetentionDays, r.Compression)
			fmt.Printf("Databases:        %v\n", r.Databases)
			fmt.Printf("Server:           %s\n", r.Server)
			fmt.Printf("Incrementals:     %s\n", r.Incrementals)
			fmt.Printf("Schedules:        full %q, incremental %q, cleanup %q\n", cfg.FullSchedule, cfg.IncrSchedule, cfg.CleanupSchedule)
			if r.LastFull != nil {
				fmt.Printf("Last full backup: %s (%s ago)\n", r.LastFull.Name, time.Since(r.LastFull.Timestamp).Round(time.Second))
			} else {
				fmt.Println("Last full backup: none")
			}
			for _, ch := range r.Chains {
				line := fmt.Sprintf("Chain %s:  %s, database %s, from %s", ch.ID, ch.Status, ch.Database, ch.StartLSN)
				switch {
				case ch.Lag != nil && !ch.Lag.Exists:
					line += ", slot missing"
				case ch.Lag != nil:
					line += fmt.Sprintf(", slot lag %s of %s allowed (MAX_SLOT_LAG)", humanBytes(ch.Lag.Bytes), humanBytes(cfg.MaxSlotLag))
					if ch.Lag.Active {
						line += ", streaming"
					}
				case ch.LagError != "":
					line += ", lag unknown: " + ch.LagError
				}
				if ch.Reason != "" {
					line += " (" + ch.Reason + ")"
				}
				fmt.Println(line)
			}
			for _, o := range r.OtherInstallations {
				fmt.Printf("Not ours:         %s %s in %s: %s (left alone)\n", o.Kind, o.Name, o.Database, o.Reason)
			}
			fmt.Println()
			printBackups(r.Recent)
			return nil
		},
	}
}

func serverStatus(c *cli.Context, host, db string, t pgclient.Target) (server, walLevel, incr string) {
	conn, err := t.Connect(c.Context, db)
	if err != nil {
		return "unreachable: " + err.Error(), "", "unknown (server unreachable)"
	}
	defer conn.Close(c.Context)
	srv, err := pgclient.Inspect(c.Context, conn)
	if err != nil {
		return err.Error(), "", "unknown"
	}
	incr = "possible (wal_level = logical)"
	if srv.WalLevel != "logical" {
		incr = "off: wal_level is " + srv.WalLevel + "; set wal_level = logical and restart PostgreSQL"
	}
	return fmt.Sprintf("PostgreSQL %s at %s", srv.Version, host), srv.WalLevel, incr
}

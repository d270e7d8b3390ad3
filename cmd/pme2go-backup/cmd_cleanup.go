package main

import (
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/pme2go/pme2go-backup/engine/backup"
	"github.com/pme2go/pme2go-backup/engine/catalog"
	"github.com/pme2go/pme2go-backup/engine/chain"
	"github.com/pme2go/pme2go-backup/engine/restore"
)

func cleanupCommand() *cli.Command {
	return &cli.Command{
		Name:  "cleanup",
		Usage: "remove backups older than BACKUP_RETENTION_DAYS (never the newest full backup or what a kept backup needs)",
		Flags: []cli.Flag{
			&cli.BoolFlag{Name: "dry-run", Usage: "print what would be removed"},
			&cli.BoolFlag{Name: "json", Usage: "print JSON"},
		},
		Action: func(c *cli.Context) error {
			cfg, log, err := loadConfig(c)
			if err != nil {
				return err
			}
			unlock, err := backup.Prepare(cfg, cfg.FullDir())
			if err != nil {
				return err
			}
			defer unlock()
			all, err := catalog.List(cfg.BackupDir)
			if err != nil {
				return err
			}
			plan := catalog.Plan(all, cfg.RetentionDays, time.Now())
			if c.Bool("json") {
				return printJSON(os.Stdout, plan)
			}
			var errs []error
			removed := 0
			for _, d := range plan {
				if d.Keep {
					continue
				}
				verb := "would remove"
				if !c.Bool("dry-run") {
					verb = "removed"
					if err := catalog.Remove(d.Backup); err != nil {
						errs = append(errs, err)
						continue
					}
					log.Info("backup removed by retention", "backup", d.Backup.Name, "reason", d.Reason)
				}
				removed++
				fmt.Printf("%s\t%s\t(%s)\n", verb, d.Backup.Name, d.Reason)
			}
			if !c.Bool("dry-run") {
				stale, err := restore.RemoveStaleWork(cfg)
				if err != nil {
					errs = append(errs, err)
				}
				for _, p := range stale {
					fmt.Printf("removed\t%s\t(work directory of an interrupted point-in-time restore)\n", p)
				}
			}
			if c.Bool("dry-run") {
				orphans, err := chain.Orphans(c.Context, cfg)
				if err != nil {
					log.Warn("could not look for orphaned replication slots", "error", err)
				}
				for _, o := range orphans {
					fmt.Printf("would drop\tslot %s\t(%s)\n", o.Name, o.Reason)
				}
			} else {
				dropped, err := chain.DropOrphans(c.Context, cfg)
				if err != nil {
					errs = append(errs, fmt.Errorf("drop orphaned replication slots: %w", err))
				}
				for _, o := range dropped {
					fmt.Printf("dropped\tslot %s\t(%s)\n", o.Name, o.Reason)
				}
			}
			fmt.Printf("%d backups kept, %d %s\n", len(plan)-removed, removed, map[bool]string{true: "to remove", false: "removed"}[c.Bool("dry-run")])
			return errors.Join(errs...)
		},
	}
}

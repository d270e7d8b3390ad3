package main

import (
	"fmt"
	"os"

	"github.com/urfave/cli/v2"

	"github.com/pme2go/pme2go-backup/engine/backup"
)

func fullCommand() *cli.Command {
	return &cli.Command{
		Name:  "full",
		Usage: "take a full backup of the configured databases",
		Flags: []cli.Flag{
			&cli.StringSliceFlag{Name: "database", Usage: "back up only `DB` (repeatable; default DB_NAME)"},
			&cli.StringFlag{Name: "trigger", Value: "manual", Usage: "recorded in the manifest (manual, scheduled, …)"},
		},
		Action: func(c *cli.Context) error {
			cfg, log, err := loadConfig(c)
			if err != nil {
				return err
			}
			pp := newProgress(os.Stderr)
			res, err := backup.Full(c.Context, cfg, backup.Options{
				Trigger: c.String("trigger"), Databases: c.StringSlice("database"), Log: log,
				Progress: func(p backup.Progress) {
					if p.Phase != "done" {
						pp.update(p.Phase, p.Database, p.Done, p.Total)
					}
				},
			})
			pp.finish()
			if err != nil {
				return fmt.Errorf("full backup failed: %w", err)
			}
			fmt.Printf("%s\t%s\t%s\n", res.Path, humanBytes(res.Size), res.Duration.Round(1e6))
			for _, w := range res.Manifest.Warnings {
				log.Warn(w)
			}
			return nil
		},
	}
}

package main

import (
	"fmt"

	"github.com/urfave/cli/v2"

	"github.com/pme2go/pme2go-backup/engine/incremental"
)

func incrementalCommand() *cli.Command {
	return &cli.Command{
		Name:  "incremental",
		Usage: "seal the changes captured since the last backup into an incremental archive",
		Flags: []cli.Flag{
			&cli.StringSliceFlag{Name: "database", Usage: "only `DB` (repeatable; default DB_NAME)"},
			&cli.StringFlag{Name: "trigger", Value: "manual", Usage: "recorded in the manifest (manual, scheduled, …)"},
		},
		Action: func(c *cli.Context) error {
			cfg, log, err := loadConfig(c)
			if err != nil {
				return err
			}
			res, err := incremental.Take(c.Context, cfg, incremental.Options{
				Databases: c.StringSlice("database"), Trigger: c.String("trigger"), Log: log,
			})
			for _, r := range res {
				fmt.Printf("%s\t%s\t%d transactions\t%s..%s\n", r.Path, r.Database, r.TxCount, r.StartLSN, r.EndLSN)
			}
			if err != nil {
				return fmt.Errorf("incremental backup failed: %w", err)
			}
			return nil
		},
	}
}

package main

import (
	"errors"
	"sync"

	"github.com/urfave/cli/v2"

	"github.com/pme2go/pme2go-backup/engine/capture"
)

func streamCommand() *cli.Command {
	return &cli.Command{
		Name:  "stream",
		Usage: "capture changes continuously (every open chain, one per database) until interrupted",
		Flags: []cli.Flag{
			&cli.StringSliceFlag{Name: "database", Usage: "only `DB` (repeatable; default DB_NAME)"},
		},
		Action: func(c *cli.Context) error {
			cfg, log, err := loadConfig(c)
			if err != nil {
				return err
			}
			dbs := c.StringSlice("database")
			if len(dbs) == 0 {
				dbs = cfg.DBNames
			}
			var wg sync.WaitGroup
			errs := make([]error, len(dbs))
			for i, db := range dbs {
				wg.Add(1)
				go func() {
					defer wg.Done()
					errs[i] = capture.Follow(c.Context, cfg, db, capture.Options{Log: log,
						Progress: func(p capture.Progress) {
							log.Debug("changes stored", "database", p.Database, "position", p.Position, "transactions", p.TxCount)
						}})
					if errs[i] != nil {
						log.Error("capture stopped", "database", db, "error", errs[i])
					}
				}()
			}
			wg.Wait()
			return errors.Join(errs...)
		},
	}
}

package main

import (
	"errors"
	"fmt"
	"sync"

	"github.com/urfave/cli/v2"

	"github.com/pme2go/pme2go-backup/engine/capture"
	"github.com/pme2go/pme2go-backup/engine/chain"
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
				st, err := chain.OpenFor(cfg, db)
				if err == nil && st == nil {
					err = fmt.Errorf("database %s has no open chain; take a full backup first (wal_level=logical)", db)
				}
				if err != nil {
					errs[i] = err
					continue
				}
				wg.Add(1)
				go func() {
					defer wg.Done()
					errs[i] = capture.Run(c.Context, cfg, st, capture.Options{Log: log.With("database", db),
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

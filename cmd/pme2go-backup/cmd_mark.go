package main

import (
	"context"
	"errors"
	"fmt"

	"github.com/urfave/cli/v2"

	"github.com/pme2go/pme2go-backup/engine/changeset"
	"github.com/pme2go/pme2go-backup/engine/pgclient"
)

func markCommand() *cli.Command {
	return &cli.Command{
		Name:      "mark",
		Usage:     "record a named restore point in the change stream of each configured database",
		ArgsUsage: "NAME",
		Action: func(c *cli.Context) error {
			if c.NArg() != 1 || c.Args().First() == "" {
				return usageError{"mark needs exactly one NAME"}
			}
			cfg, _, err := loadConfig(c)
			if err != nil {
				return err
			}
			name := c.Args().First()
			var errs []error
			for _, db := range cfg.DBNames {
				conn, err := pgclient.FromConfig(cfg).Connect(c.Context, db)
				if err != nil {
					errs = append(errs, err)
					continue
				}
				var lsn string
				err = conn.QueryRow(c.Context, `SELECT pg_logical_emit_message(true, $1, $2)::text`, changeset.MarkPrefix, name).Scan(&lsn)
				conn.Close(context.Background())
				if err != nil {
					errs = append(errs, fmt.Errorf("mark %s in %s: %w", name, db, err))
					continue
				}
				fmt.Printf("%s\t%s\t%s\n", db, name, lsn)
			}
			return errors.Join(errs...)
		},
	}
}

package main

import (
	"context"
	"fmt"
	"io"

	"github.com/urfave/cli/v2"

	"github.com/pme2go/pme2go-backup/engine/ops"
)

type markOpts struct {
	common
	ops.MarkOptions
}

func markCommand() *cli.Command {
	return &cli.Command{
		Name:      "mark",
		Usage:     "record a named restore point in the change stream of each configured database",
		ArgsUsage: "NAME",
		Flags: []cli.Flag{
			&cli.StringSliceFlag{Name: "database", Usage: "only `DB` (repeatable; default DB_NAME)"},
			&cli.BoolFlag{Name: "json", Usage: "print JSON"},
		},
		Action: func(c *cli.Context) error {
			if c.NArg() != 1 || c.Args().First() == "" {
				return usageError{"mark needs exactly one NAME"}
			}
			return runMark(c.Context, markOpts{commonOf(c), ops.MarkOptions{Name: c.Args().First(), Databases: c.StringSlice("database")}}, c.App.Writer)
		},
	}
}

func runMark(ctx context.Context, o markOpts, out io.Writer) error {
	var res *ops.MarkResult
	var err error
	if !o.Direct {
		res, err = o.markThroughDaemon(ctx, o.Name, o.Databases)
	} else {
		cfg, _, lerr := o.load()
		if lerr != nil {
			return lerr
		}
		res, err = ops.Mark(ctx, cfg, o.MarkOptions, nil)
	}
	if o.JSON && err == nil {
		return printJSON(out, res)
	}
	if res != nil && !o.JSON {
		for _, m := range res.Marks {
			fmt.Fprintf(out, "%s\t%s\t%s\n", m.Database, res.Name, m.LSN)
		}
	}
	return err
}

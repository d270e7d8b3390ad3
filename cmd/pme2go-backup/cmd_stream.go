package main

import (
	"context"
	"io"

	"github.com/urfave/cli/v2"

	"github.com/pme2go/pme2go-backup/engine/ops"
)

type streamOpts struct {
	common
	ops.StreamOptions
}

func streamCommand() *cli.Command {
	return &cli.Command{
		Name:  "stream",
		Usage: "capture changes continuously (every open chain, one per database) until interrupted",
		Flags: []cli.Flag{
			&cli.StringSliceFlag{Name: "database", Usage: "only `DB` (repeatable; default DB_NAME)"},
			&cli.BoolFlag{Name: "json", Usage: "print what was captured as JSON when stopped"},
		},
		Action: func(c *cli.Context) error {
			return runStream(c.Context, streamOpts{commonOf(c), ops.StreamOptions{Databases: c.StringSlice("database")}}, c.App.Writer)
		},
	}
}

func runStream(ctx context.Context, o streamOpts, out io.Writer) error {
	cfg, log, err := o.load()
	if err != nil {
		return err
	}
	o.Log = log
	res, err := ops.Stream(ctx, cfg, o.StreamOptions, func(e ops.ProgressEvent) {
		log.Debug("changes stored", "database", e.Object, "position", e.Message, "transactions", e.Done)
	})
	if o.JSON && err == nil {
		return printJSON(out, res)
	}
	return err
}

package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"

	"github.com/godbus/dbus/v5"
	"github.com/urfave/cli/v2"

	"github.com/pme2go/pme2go-backup/dbusapi"
	"github.com/pme2go/pme2go-backup/engine/config"
	"github.com/pme2go/pme2go-backup/engine/ops"
)

type incrementalOpts struct {
	common
	ops.IncrementalOptions
}

func incrementalCommand() *cli.Command {
	return &cli.Command{
		Name:  "incremental",
		Usage: "seal the changes captured since the last backup into an incremental archive",
		Flags: []cli.Flag{
			&cli.StringSliceFlag{Name: "database", Usage: "only `DB` (repeatable; default DB_NAME)"},
			&cli.StringFlag{Name: "trigger", Value: "manual", Usage: "recorded in the manifest (manual, scheduled, …)"},
			&cli.BoolFlag{Name: "json", Usage: "print the result as JSON"},
		},
		Action: func(c *cli.Context) error {
			return runIncremental(c.Context, incrementalOpts{commonOf(c), ops.IncrementalOptions{
				Databases: c.StringSlice("database"), Trigger: c.String("trigger")}}, c.App.Writer)
		},
	}
}

func runIncremental(ctx context.Context, o incrementalOpts, out io.Writer) error {
	res, err := jobOrDirect(ctx, o.common, func(ctx context.Context, c *dbusapi.Client) (dbus.ObjectPath, error) {
		return c.StartBackup(ctx, dbusapi.KindIncremental, o.Databases, o.Trigger)
	}, func(cfg *config.Config, log *slog.Logger) (*ops.IncrementalResult, error) {
		o.Log = log
		pp := newProgress(o.Stderr)
		defer pp.finish()
		return ops.Incremental(ctx, cfg, o.IncrementalOptions, pp.report)
	})
	if res != nil {
		warnOffsite(o.Stderr, res.OffsiteError)
	}
	if o.JSON && err == nil {
		return printJSON(out, res)
	}
	if res != nil && !o.JSON {
		for _, a := range res.Archives {
			fmt.Fprintf(out, "%s\t%s\t%d transactions\t%s..%s\n", a.Path, a.Database, a.Transactions, a.StartLSN, a.EndLSN)
		}
	}
	return err
}

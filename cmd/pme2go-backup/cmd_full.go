package main

import (
	"context"
	"fmt"
	"io"

	"github.com/godbus/dbus/v5"
	"github.com/urfave/cli/v2"

	"github.com/pme2go/pme2go-backup/dbusapi"
	"github.com/pme2go/pme2go-backup/engine/ops"
)

type fullOpts struct {
	common
	ops.FullOptions
}

func fullCommand() *cli.Command {
	return &cli.Command{
		Name:  "full",
		Usage: "take a full backup of the configured databases",
		Flags: []cli.Flag{
			&cli.StringSliceFlag{Name: "database", Usage: "back up only `DB` (repeatable; default DB_NAME)"},
			&cli.StringFlag{Name: "trigger", Value: "manual", Usage: "recorded in the manifest (manual, scheduled, …)"},
			&cli.BoolFlag{Name: "json", Usage: "print the result as JSON"},
		},
		Action: func(c *cli.Context) error {
			return runFull(c.Context, fullOpts{commonOf(c), ops.FullOptions{
				Databases: c.StringSlice("database"), Trigger: c.String("trigger")}}, c.App.Writer)
		},
	}
}

func runFull(ctx context.Context, o fullOpts, out io.Writer) error {
	var res *ops.FullResult
	log := newLogger(o.Stderr, o.LogLevel)
	if !o.Direct {
		err := o.runJob(ctx, func(ctx context.Context, c *dbusapi.Client) (dbus.ObjectPath, error) {
			return c.StartBackup(ctx, dbusapi.KindFull, o.Databases, o.Trigger)
		}, &res)
		if err != nil {
			return err
		}
	} else {
		cfg, l, err := o.load()
		if err != nil {
			return err
		}
		o.Log, log = l, l
		pp := newProgress(o.Stderr)
		res, err = ops.Full(ctx, cfg, o.FullOptions, pp.report)
		pp.finish()
		if err != nil {
			return err
		}
	}
	for _, w := range res.Warnings {
		log.Warn(w)
	}
	warnOffsite(o.Stderr, res.OffsiteError)
	if o.JSON {
		return printJSON(out, res)
	}
	if _, err := fmt.Fprintf(out, "%s\t%s\t%.3fs\n", res.Path, humanBytes(res.Size), res.Duration); err != nil {
		return err
	}
	for _, db := range res.Databases {
		if mode := res.DDLCapture[db]; mode != "" {
			fmt.Fprintf(out, "DDL capture of %s: %s\n", db, mode)
		}
	}
	return nil
}

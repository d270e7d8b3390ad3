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

type drillOpts struct {
	common
	ops.DrillOptions
}

func drillCommand() *cli.Command {
	return &cli.Command{
		Name: "drill",
		Usage: "restore drill: restore the newest backup of each database into a scratch database, " +
			"compare it with what the archives recorded, run amcheck, drop it and keep the result",
		Flags: []cli.Flag{
			&cli.StringSliceFlag{Name: "database", Usage: "drill only database `NAME` (repeatable; default: every configured database with a backup)"},
			&cli.StringFlag{Name: "trigger", Value: "manual", Usage: "recorded with the result: manual or scheduled"},
			&cli.BoolFlag{Name: "json", Usage: "print JSON"},
		},
		Action: func(c *cli.Context) error {
			return runDrill(c.Context, drillOpts{commonOf(c), ops.DrillOptions{Databases: c.StringSlice("database"), Trigger: c.String("trigger")}}, c.App.Writer)
		},
	}
}

func runDrill(ctx context.Context, o drillOpts, out io.Writer) error {
	res, err := jobOrDirect(ctx, o.common, func(ctx context.Context, c *dbusapi.Client) (dbus.ObjectPath, error) {
		return c.Drill(ctx, o.Databases, o.Trigger)
	}, func(cfg *config.Config, log *slog.Logger) (*ops.DrillResult, error) {
		o.Log = log
		return ops.Drill(ctx, cfg, o.DrillOptions, nil)
	})
	if o.JSON {
		if res != nil {
			printJSON(out, res)
		}
		return err
	}
	for _, line := range ops.DescribeDrill(res) {
		fmt.Fprintln(out, line)
	}
	return err
}

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

type cleanupOpts struct {
	common
	ops.CleanupOptions
}

func cleanupCommand() *cli.Command {
	return &cli.Command{
		Name:  "cleanup",
		Usage: "remove backups older than BACKUP_RETENTION_DAYS (never the newest full backup or what a kept backup needs)",
		Flags: []cli.Flag{
			&cli.BoolFlag{Name: "dry-run", Usage: "print what would be removed"},
			&cli.BoolFlag{Name: "json", Usage: "print JSON"},
		},
		Action: func(c *cli.Context) error {
			return runCleanup(c.Context, cleanupOpts{commonOf(c), ops.CleanupOptions{DryRun: c.Bool("dry-run")}}, c.App.Writer)
		},
	}
}

func runCleanup(ctx context.Context, o cleanupOpts, out io.Writer) error {
	res, err := jobOrDirect(ctx, o.common, func(ctx context.Context, c *dbusapi.Client) (dbus.ObjectPath, error) {
		return c.Cleanup(ctx, o.DryRun)
	}, func(cfg *config.Config, log *slog.Logger) (*ops.CleanupResult, error) {
		o.Log = log
		return ops.Cleanup(ctx, cfg, o.CleanupOptions, nil)
	})
	if o.JSON || res == nil {
		if res != nil {
			printJSON(out, res)
		}
		return err
	}
	removed, dropped := "removed", "dropped"
	if o.DryRun {
		removed, dropped = "would remove", "would drop"
	}
	for _, d := range res.Decisions {
		if !d.Keep && (o.DryRun || d.Removed) {
			fmt.Fprintf(out, "%s\t%s\t(%s)\n", removed, d.Backup.Name, d.Reason)
		}
	}
	for _, p := range res.StaleWork {
		fmt.Fprintf(out, "removed\t%s\t(work directory of an interrupted point-in-time restore)\n", p)
	}
	for _, orphan := range res.Orphans {
		fmt.Fprintf(out, "%s\t%s %s\t(%s)\n", dropped, orphan.Kind, orphan.Name, orphan.Reason)
	}
	fmt.Fprintf(out, "%d backups kept, %d %s\n", res.Kept, res.Removed, map[bool]string{true: "to remove", false: "removed"}[o.DryRun])
	return err
}

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

type offsiteSyncOpts struct {
	common
	ops.OffsiteSyncOptions
}

// offsiteCommand is `pme2go-backup offsite sync`: copy what is not yet
// off-site, record the repository, prune local copies; through the
// daemon's OffsiteSync job, or in this process with --direct.
func offsiteCommand() *cli.Command {
	sync := &cli.Command{
		Name:  "sync",
		Usage: "copy every backup not yet verified off-site, record the repository's backups, prune local copies (LOCAL_RETENTION_DAYS)",
		Flags: []cli.Flag{&cli.BoolFlag{Name: "json", Usage: "print JSON"}},
		Action: func(c *cli.Context) error {
			return runOffsiteSync(c.Context, offsiteSyncOpts{common: commonOf(c)}, c.App.Writer)
		},
	}
	wrap(sync)
	return &cli.Command{
		Name:        "offsite",
		Usage:       "the off-site S3 repository (OFFSITE_URL)",
		Subcommands: []*cli.Command{sync},
		Action: func(c *cli.Context) error {
			cli.ShowSubcommandHelp(c)
			return usageError{"offsite needs a subcommand: sync"}
		},
	}
}

// warnOffsite tells on stderr that a backup was not copied off-site (the
// backup succeeded: the exit status stays 0; status and the next sync
// follow it up).
func warnOffsite(w io.Writer, e *ops.ErrorJSON) {
	if e == nil || w == nil {
		return
	}
	fmt.Fprintf(w, "warning: %s [%s]\n", e.Message, e.Code)
	if e.Fix != nil && e.Fix.Text != "" {
		fmt.Fprintf(w, "  fix: %s\n", e.Fix.Text)
	}
}

func runOffsiteSync(ctx context.Context, o offsiteSyncOpts, out io.Writer) error {
	res, err := jobOrDirect(ctx, o.common, func(ctx context.Context, c *dbusapi.Client) (dbus.ObjectPath, error) {
		return c.OffsiteSync(ctx)
	}, func(cfg *config.Config, log *slog.Logger) (*ops.OffsiteSyncResult, error) {
		o.Log = log
		return ops.OffsiteSync(ctx, cfg, o.OffsiteSyncOptions, nil)
	})
	if o.JSON || res == nil {
		if res != nil {
			printJSON(out, res)
		}
		return err
	}
	for _, u := range res.Uploaded {
		fmt.Fprintf(out, "copied\t%s\t%s\t%.3fs\n", u.Name, humanBytes(u.Size), u.Secs)
	}
	for _, f := range res.Failed {
		fmt.Fprintf(out, "failed\t%s\t%s\n", f.Name, f.Error)
	}
	for _, n := range res.Pruned {
		fmt.Fprintf(out, "pruned\t%s\t(local copy; stays off-site)\n", n)
	}
	for _, n := range res.Adopted {
		fmt.Fprintf(out, "recorded\t%s\t(found off-site)\n", n)
	}
	if res.AbortedUploads > 0 {
		fmt.Fprintf(out, "aborted %d interrupted multipart upload(s)\n", res.AbortedUploads)
	}
	fmt.Fprintf(out, "%s: %d copied, %d failed, %d pruned\n", res.Repository, len(res.Uploaded), len(res.Failed), len(res.Pruned))
	return err
}

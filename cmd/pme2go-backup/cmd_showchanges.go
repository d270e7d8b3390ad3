package main

import (
	"context"
	"io"

	"github.com/urfave/cli/v2"

	"github.com/pme2go/pme2go-backup/engine/ops"
)

type showChangesOpts struct {
	common
	ops.ShowChangesOptions
}

func showChangesCommand() *cli.Command {
	return &cli.Command{
		Name:      "show-changes",
		Usage:     "print the change set of an incremental archive (or of one segment file) as SQL",
		ArgsUsage: "ARCHIVE|SEGMENT",
		Action: func(c *cli.Context) error {
			if c.NArg() != 1 {
				return usageError{"show-changes needs one incremental archive or segment file"}
			}
			return runShowChanges(c.Context, showChangesOpts{commonOf(c), ops.ShowChangesOptions{Source: c.Args().First()}}, c.App.Writer)
		},
	}
}

func runShowChanges(ctx context.Context, o showChangesOpts, out io.Writer) error {
	// A segment file or an archive path needs no configuration; a backup
	// name is resolved in BACKUP_DIR when the configuration loads.
	cfg, _, _ := o.load()
	o.Out = out
	_, err := ops.ShowChanges(ctx, cfg, o.ShowChangesOptions, nil)
	return err
}

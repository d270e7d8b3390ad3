package main

import (
	"context"
	"fmt"
	"io"
	"text/tabwriter"

	"github.com/urfave/cli/v2"
)

func configCommand() *cli.Command {
	return &cli.Command{
		Name:  "config",
		Usage: "print the effective configuration with each value's source (secrets redacted)",
		Flags: []cli.Flag{&cli.BoolFlag{Name: "json", Usage: "print JSON"}},
		Action: func(c *cli.Context) error {
			return runConfig(c.Context, commonOf(c), c.App.Writer)
		},
	}
}

func runConfig(_ context.Context, o common, out io.Writer) error {
	cfg, _, err := o.load()
	if err != nil {
		return err
	}
	if o.JSON {
		return printJSON(out, cfg.Effective())
	}
	tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	for _, e := range cfg.Effective() {
		fmt.Fprintf(tw, "%s=%s\t# %s\n", e.Key, e.Value, e.Source)
	}
	return tw.Flush()
}

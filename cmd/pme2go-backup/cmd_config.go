package main

import (
	"fmt"
	"os"
	"text/tabwriter"

	"github.com/urfave/cli/v2"
)

func configCommand() *cli.Command {
	return &cli.Command{
		Name:  "config",
		Usage: "print the effective configuration with each value's source (secrets redacted)",
		Flags: []cli.Flag{&cli.BoolFlag{Name: "json", Usage: "print JSON"}},
		Action: func(c *cli.Context) error {
			cfg, _, err := loadConfig(c)
			if err != nil {
				return err
			}
			if c.Bool("json") {
				return printJSON(os.Stdout, cfg.Effective())
			}
			tw := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
			for _, e := range cfg.Effective() {
				fmt.Fprintf(tw, "%s=%s\t# %s\n", e.Key, e.Value, e.Source)
			}
			return tw.Flush()
		},
	}
}

package main

import (
	"context"
	"fmt"
	"io"

	"github.com/urfave/cli/v2"

	"github.com/pme2go/pme2go-backup/engine/ops"
)

type testOpts struct {
	common
	ops.SelfTestOptions
}

func testCommand() *cli.Command {
	return &cli.Command{
		Name:  "test",
		Usage: "check connection, privileges, client tools, wal_level and the backup directory",
		Flags: []cli.Flag{&cli.BoolFlag{Name: "json", Usage: "print JSON"}},
		Action: func(c *cli.Context) error {
			return runTest(c.Context, testOpts{common: commonOf(c)}, c.App.Writer)
		},
	}
}

func runTest(ctx context.Context, o testOpts, out io.Writer) error {
	cfg, _, err := o.load()
	if err != nil {
		return err
	}
	res, err := ops.SelfTest(ctx, cfg, o.SelfTestOptions, nil)
	if res == nil {
		return err
	}
	if o.JSON {
		printJSON(out, res)
		return err
	}
	for _, f := range res.Findings {
		fmt.Fprintf(out, "%-5s %-22s %s\n", f.Status, f.Check, f.Message)
		if f.Fix != "" && f.Status != "ok" {
			fmt.Fprintf(out, "      %-22s fix: %s\n", "", f.Fix)
		}
	}
	return err
}

package main

import (
	"fmt"
	"os"

	"github.com/urfave/cli/v2"

	"github.com/pme2go/pme2go-backup/engine/selftest"
)

func testCommand() *cli.Command {
	return &cli.Command{
		Name:  "test",
		Usage: "check connection, privileges, client tools, wal_level and the backup directory",
		Flags: []cli.Flag{&cli.BoolFlag{Name: "json", Usage: "print JSON"}},
		Action: func(c *cli.Context) error {
			cfg, _, err := loadConfig(c)
			if err != nil {
				return err
			}
			findings := selftest.Run(c.Context, cfg)
			if c.Bool("json") {
				if err := printJSON(os.Stdout, findings); err != nil {
					return err
				}
			} else {
				for _, f := range findings {
					fmt.Printf("%-5s %-22s %s\n", f.Status, f.Check, f.Message)
					if f.Fix != "" && f.Status != selftest.OK {
						fmt.Printf("      %-22s fix: %s\n", "", f.Fix)
					}
				}
			}
			if selftest.Failed(findings) {
				return cli.Exit("self-test failed", exitFailure)
			}
			return nil
		},
	}
}

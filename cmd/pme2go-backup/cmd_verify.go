package main

import (
	"fmt"

	"github.com/urfave/cli/v2"

	"github.com/pme2go/pme2go-backup/engine/archive"
	"github.com/pme2go/pme2go-backup/engine/catalog"
)

func verifyCommand() *cli.Command {
	return &cli.Command{
		Name:      "verify",
		Usage:     "re-read archives and check every checksum (all backups when none is named)",
		ArgsUsage: "[ARCHIVE…]",
		Action: func(c *cli.Context) error {
			cfg, _, err := loadConfig(c)
			if err != nil {
				return err
			}
			var paths []string
			for _, ref := range c.Args().Slice() {
				b, err := catalog.Find(cfg.BackupDir, ref)
				if err != nil {
					return err
				}
				paths = append(paths, b.Path)
			}
			if len(paths) == 0 {
				all, err := catalog.List(cfg.BackupDir)
				if err != nil {
					return err
				}
				for _, b := range all {
					paths = append(paths, b.Path)
				}
			}
			bad := 0
			for _, p := range paths {
				rep, err := archive.Verify(c.Context, p)
				if err != nil {
					return err
				}
				if rep.OK() {
					fmt.Printf("OK\t%s\t%d members, %s\n", p, rep.Members, humanBytes(rep.Bytes))
					continue
				}
				bad++
				fmt.Printf("FAILED\t%s\n", p)
				for _, pr := range rep.Problems {
					if pr.Member != "" {
						fmt.Printf("\t%s: %s\n", pr.Member, pr.Message)
					} else {
						fmt.Printf("\t%s\n", pr.Message)
					}
				}
			}
			if bad > 0 {
				return cli.Exit(fmt.Sprintf("%d of %d archives failed verification", bad, len(paths)), exitFailure)
			}
			return nil
		},
	}
}

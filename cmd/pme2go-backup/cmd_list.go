package main

import (
	"fmt"
	"os"
	"strings"
	"text/tabwriter"

	"github.com/urfave/cli/v2"

	"github.com/pme2go/pme2go-backup/engine/catalog"
)

func listCommand() *cli.Command {
	return &cli.Command{
		Name:  "list",
		Usage: "list backups (reads the manifests beside the archives, never decompresses)",
		Flags: []cli.Flag{&cli.BoolFlag{Name: "json", Usage: "print JSON"}},
		Action: func(c *cli.Context) error {
			cfg, _, err := loadConfig(c)
			if err != nil {
				return err
			}
			all, err := catalog.List(cfg.BackupDir)
			if err != nil {
				return err
			}
			if c.Bool("json") {
				if all == nil {
					all = []catalog.Backup{}
				}
				return printJSON(os.Stdout, all)
			}
			printBackups(all)
			return nil
		},
	}
}

func printBackups(all []catalog.Backup) {
	if len(all) == 0 {
		fmt.Println("no backups")
		return
	}
	tw := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "TYPE\tTIME (UTC)\tSIZE\tDATABASES\tNAME")
	for _, b := range all {
		name := b.Name
		if b.Problem != "" {
			name += "  (" + b.Problem + ")"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", b.Type, b.Timestamp.Format("2006-01-02 15:04:05"), humanBytes(b.Size), strings.Join(b.Databases, ","), name)
	}
	tw.Flush()
}

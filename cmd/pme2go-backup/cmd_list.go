package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/pme2go/pme2go-backup/dbusapi"
	"github.com/pme2go/pme2go-backup/engine/ops"
)

type listOpts struct {
	common
	ops.ListOptions
}

func listCommand() *cli.Command {
	return &cli.Command{
		Name:  "list",
		Usage: "list backups with their warnings (reads the manifests beside the archives, never decompresses)",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "type", Usage: "only `TYPE` backups: full or incremental"},
			&cli.BoolFlag{Name: "json", Usage: "print JSON"},
		},
		Action: func(c *cli.Context) error {
			return runList(c.Context, listOpts{commonOf(c), ops.ListOptions{Type: c.String("type")}}, c.App.Writer)
		},
	}
}

func runList(ctx context.Context, o listOpts, out io.Writer) error {
	if o.Type != "" && o.Type != "full" && o.Type != "incremental" {
		return usageError{fmt.Sprintf("--type must be full or incremental, not %q", o.Type)}
	}
	var res ops.ListResult
	if !o.Direct {
		err := o.call(ctx, func(ctx context.Context, c *dbusapi.Client) error {
			all, err := c.ListBackups(ctx)
			res = ops.ListResult{}
			for _, b := range all {
				var ob ops.Backup
				if err := json.Unmarshal([]byte(b.JSON), &ob); err != nil {
					ob = ops.Backup{Name: b.Name, Path: b.Path, Type: b.Type, Timestamp: b.Time, Size: b.Size, Warnings: []string{}}
				}
				if o.Type == "" || ob.Type == o.Type {
					res = append(res, ob)
				}
			}
			return err
		})
		if err != nil {
			return err
		}
	} else {
		cfg, _, err := o.load()
		if err != nil {
			return err
		}
		res, err = ops.List(ctx, cfg, o.ListOptions, nil)
		if err != nil {
			return err
		}
	}
	if o.JSON {
		return printJSON(out, res)
	}
	printBackups(out, res)
	return nil
}

// printBackups prints a table of backups, each one's warnings and problem
// below it; safety backups taken by a restore are marked.
func printBackups(out io.Writer, all []ops.Backup) {
	if len(all) == 0 {
		fmt.Fprintln(out, "no backups")
		return
	}
	tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "TYPE\tTIME (UTC)\tSIZE\tDATABASES\tNAME")
	for _, b := range all {
		typ := b.Type
		if b.Safety {
			typ += " (safety)"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", typ, b.Timestamp.UTC().Format("2006-01-02 15:04:05"), humanBytes(b.Size), strings.Join(b.Databases, ","), b.Name)
		if b.Location != "" && b.Location != "local" {
			fmt.Fprintf(tw, "\t\t\t\t  location: %s\n", map[string]string{"both": "local and off-site", "offsite": "off-site only (local copy pruned)"}[b.Location])
		}
		if b.Problem != "" {
			fmt.Fprintf(tw, "\t\t\t\t  problem: %s\n", b.Problem)
		}
		if b.CompleteTime != nil {
			fmt.Fprintf(tw, "\t\t\t\t  restorable up to: %s\n", b.CompleteTime.UTC().Format(time.RFC3339Nano))
		}
		if b.ChainEndLSN != 0 {
			fmt.Fprintf(tw, "\t\t\t\t  chain ended: exact up to LSN %s\n", b.ChainEndLSN)
		}
		if b.Drill != nil {
			state := "passed"
			if !b.Drill.OK {
				state = "FAILED"
			}
			fmt.Fprintf(tw, "\t\t\t\t  restore drill %s: %s\n", b.Drill.Time.UTC().Format("2006-01-02 15:04:05"), state)
		}
		for _, w := range b.Warnings {
			fmt.Fprintf(tw, "\t\t\t\t  warning: %s\n", w)
		}
	}
	tw.Flush()
}

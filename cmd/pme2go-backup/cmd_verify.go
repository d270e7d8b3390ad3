package main

import (
	"context"
	"errors"
	"fmt"
	"io"

	"github.com/godbus/dbus/v5"
	"github.com/urfave/cli/v2"

	"github.com/pme2go/pme2go-backup/dbusapi"
	"github.com/pme2go/pme2go-backup/engine/ops"
)

type verifyOpts struct {
	common
	ops.VerifyOptions
}

func verifyCommand() *cli.Command {
	return &cli.Command{
		Name:      "verify",
		Usage:     "re-read archives and check every checksum (all backups when none is named)",
		ArgsUsage: "[ARCHIVE…]",
		Flags: []cli.Flag{&cli.BoolFlag{Name: "json", Usage: "print JSON"},
			&cli.BoolFlag{Name: "offsite", Usage: "also check the off-site copies (OFFSITE_URL): stored bytes against their sidecars, copies only off-site fetched and verified in full"}},
		Action: func(c *cli.Context) error {
			return runVerify(c.Context, verifyOpts{commonOf(c), ops.VerifyOptions{Backups: c.Args().Slice(), Offsite: c.Bool("offsite")}}, c.App.Writer)
		},
	}
}

func runVerify(ctx context.Context, o verifyOpts, out io.Writer) error {
	var res *ops.VerifyResult
	var err error
	if !o.Direct {
		res = &ops.VerifyResult{Archives: []ops.VerifiedArchive{}}
		names := o.Backups
		if len(names) == 0 {
			names = []string{""} // every archive
		}
		var errList []error
		for _, name := range names {
			var one *ops.VerifyResult
			jerr := o.runJob(ctx, func(ctx context.Context, c *dbusapi.Client) (dbus.ObjectPath, error) {
				if o.Offsite {
					return c.VerifyOffsite(ctx, name)
				}
				return c.Verify(ctx, name)
			}, &one)
			if one != nil {
				res.Archives = append(res.Archives, one.Archives...)
				res.Failed += one.Failed
			}
			if jerr != nil {
				errList = append(errList, jerr)
				if one == nil {
					break
				}
			}
		}
		err = errors.Join(errList...)
		if len(errList) == 1 {
			err = errList[0]
		}
	} else {
		cfg, _, lerr := o.load()
		if lerr != nil {
			return lerr
		}
		res, err = ops.Verify(ctx, cfg, o.VerifyOptions, nil)
	}
	if o.JSON {
		if res != nil {
			printJSON(out, res)
		}
		return err
	}
	for _, a := range resArchives(res) {
		if a.OK && a.Location == "offsite" && a.Members == 0 {
			fmt.Fprintf(out, "OK\t%s\t%s, the bytes of the local archive\n", a.Path, humanBytes(a.Bytes))
			continue
		}
		if a.OK {
			fmt.Fprintf(out, "OK\t%s\t%d members, %s\n", a.Path, a.Members, humanBytes(a.Bytes))
			continue
		}
		fmt.Fprintf(out, "FAILED\t%s\n", a.Path)
		for _, pr := range a.Problems {
			if pr.Member != "" {
				fmt.Fprintf(out, "\t%s: %s\n", pr.Member, pr.Message)
			} else {
				fmt.Fprintf(out, "\t%s\n", pr.Message)
			}
		}
	}
	return err
}

func resArchives(r *ops.VerifyResult) []ops.VerifiedArchive {
	if r == nil {
		return nil
	}
	return r.Archives
}

package main

import (
	"context"
	"fmt"
	"io"
	"strconv"

	"github.com/godbus/dbus/v5"
	"github.com/urfave/cli/v2"

	"github.com/pme2go/pme2go-backup/dbusapi"
	"github.com/pme2go/pme2go-backup/engine/ops"
)

type restoreOpts struct {
	common
	ops.RestoreOptions
}

func restoreCommand() *cli.Command {
	return &cli.Command{
		Name:  "restore",
		Usage: "restore a full backup, or a point in time by replaying its chain of incrementals",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "backup", Usage: "archive `PATH` or name (see list); optional with a target"},
			&cli.StringFlag{Name: "target-time", Usage: "replay up to `TIME` (RFC 3339 or PostgreSQL timestamptz text)"},
			&cli.StringFlag{Name: "target-lsn", Usage: "replay up to the commit at WAL position `X/Y`"},
			&cli.StringFlag{Name: "target-xid", Usage: "replay up to transaction `XID`"},
			&cli.StringFlag{Name: "target-name", Usage: "replay up to the mark `NAME` made with pme2go-backup mark"},
			&cli.BoolFlag{Name: "latest", Usage: "replay every captured transaction"},
			&cli.BoolFlag{Name: "target-exclusive", Usage: "stop just before the target instead of just after it"},
			&cli.BoolFlag{Name: "resume", Usage: "continue an interrupted point-in-time restore in the scratch database it left"},
			&cli.StringFlag{Name: "target-db", Usage: "restore into `NAME` (created when missing) instead of the original database"},
			&cli.StringSliceFlag{Name: "database", Usage: "restore only `DB` from the archive (repeatable)"},
			&cli.BoolFlag{Name: "force", Usage: "replace a database that holds data (a safety backup is taken first)"},
			&cli.BoolFlag{Name: "no-safety-backup", Usage: "with --force, do not back up the database being replaced"},
			&cli.BoolFlag{Name: "restore-logs", Usage: "put the archived logs back"},
			&cli.BoolFlag{Name: "restore-globals", Usage: "apply globals.sql (roles, tablespaces) first"},
			&cli.BoolFlag{Name: "no-owner", Usage: "do not restore ownership and privileges (pg_restore --no-owner --no-acl)"},
			&cli.BoolFlag{Name: "dry-run", Usage: "print the plan and change nothing"},
			&cli.BoolFlag{Name: "json", Usage: "print the plan or result as JSON"},
		},
		ArgsUsage: "[true|false after --restore-logs]",
		Action: func(c *cli.Context) error {
			restoreLogs, err := seedBoolArg(c, "restore-logs")
			if err != nil {
				return err
			}
			return runRestore(c.Context, restoreOpts{commonOf(c), ops.RestoreOptions{
				Backup: c.String("backup"), Resume: c.Bool("resume"),
				Target: ops.RestoreTarget{Time: c.String("target-time"), LSN: c.String("target-lsn"), Xid: c.String("target-xid"),
					Name: c.String("target-name"), Latest: c.Bool("latest"), Exclusive: c.Bool("target-exclusive")},
				TargetDB: c.String("target-db"), Databases: c.StringSlice("database"),
				Force: c.Bool("force"), NoSafetyBackup: c.Bool("no-safety-backup"), NoOwner: c.Bool("no-owner"),
				RestoreGlobals: c.Bool("restore-globals"), RestoreLogs: restoreLogs, DryRun: c.Bool("dry-run"),
			}}, c.App.Writer)
		},
	}
}

func runRestore(ctx context.Context, o restoreOpts, out io.Writer) error {
	var res *ops.RestoreResult
	if !o.Direct {
		t := o.Target
		ro := dbusapi.RestoreOptions{TargetTime: t.Time, TargetLSN: t.LSN, TargetXid: t.Xid, TargetName: t.Name,
			Latest: t.Latest, TargetExclusive: t.Exclusive, TargetDB: o.TargetDB, Force: o.Force,
			NoSafetyBackup: o.NoSafetyBackup, RestoreLogs: o.RestoreLogs, RestoreGlobals: o.RestoreGlobals,
			NoOwner: o.NoOwner, Resume: o.Resume}
		err := o.runJob(ctx, func(ctx context.Context, c *dbusapi.Client) (dbus.ObjectPath, error) {
			return c.Restore(ctx, o.Backup, ro, o.Databases, o.DryRun)
		}, &res)
		if err != nil {
			return err
		}
	} else {
		cfg, log, err := o.load()
		if err != nil {
			return err
		}
		o.Log = log
		pp := newProgress(o.Stderr)
		res, err = ops.Restore(ctx, cfg, o.RestoreOptions, pp.report)
		pp.finish()
		if err != nil {
			return err
		}
	}
	if o.JSON {
		printJSON(out, res)
	} else {
		printRestore(out, res)
	}
	if res.HasDifferences() {
		return differencesError{len(res.Differences)}
	}
	return nil
}

// seedBoolArg accepts the seed's form "--restore-logs true" as well as the
// flag alone or "--restore-logs=false".
func seedBoolArg(c *cli.Context, name string) (bool, error) {
	v := c.Bool(name)
	switch args := c.Args().Slice(); len(args) {
	case 0:
		return v, nil
	case 1:
		b, err := strconv.ParseBool(args[0])
		if err != nil || !c.IsSet(name) {
			return false, usageError{fmt.Sprintf("unexpected argument %q", args[0])}
		}
		return b, nil
	default:
		return false, usageError{fmt.Sprintf("unexpected arguments %q", args)}
	}
}

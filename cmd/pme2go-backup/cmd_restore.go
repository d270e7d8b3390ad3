package main

import (
	"errors"
	"fmt"
	"os"
	"strconv"

	"github.com/urfave/cli/v2"

	"github.com/pme2go/pme2go-backup/engine/apply"
	"github.com/pme2go/pme2go-backup/engine/restore"
)

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
		ArgsUsage: " ",
		Action: func(c *cli.Context) error {
			restoreLogs, err := seedBoolArg(c, "restore-logs")
			if err != nil {
				return err
			}
			target, err := apply.ParseTarget(apply.TargetSpec{
				Time: c.String("target-time"), LSN: c.String("target-lsn"), Xid: c.String("target-xid"),
				Name: c.String("target-name"), Latest: c.Bool("latest"), Exclusive: c.Bool("target-exclusive"),
			})
			var tp *apply.Target
			switch {
			case err == nil:
				tp = &target
			case !errors.Is(err, apply.ErrNoTarget):
				return usageError{err.Error()}
			case c.String("backup") == "":
				return usageError{"restore needs --backup, or a target (--target-time, --target-lsn, --target-xid, --target-name, --latest)"}
			}
			if c.Bool("resume") && tp == nil {
				return usageError{"--resume continues a point-in-time restore; give the same target again"}
			}
			cfg, log, err := loadConfig(c)
			if err != nil {
				return err
			}
			res, err := restore.Run(c.Context, cfg, restore.Options{
				Target: tp, Resume: c.Bool("resume"),
				Backup: c.String("backup"), TargetDB: c.String("target-db"), Databases: c.StringSlice("database"),
				Force: c.Bool("force"), NoSafetyBackup: c.Bool("no-safety-backup"), NoOwner: c.Bool("no-owner"),
				RestoreGlobals: c.Bool("restore-globals"), RestoreLogs: restoreLogs, DryRun: c.Bool("dry-run"), Log: log,
				Progress: func(step string) { fmt.Fprintln(os.Stderr, step) },
			})
			if err != nil {
				return fmt.Errorf("restore failed: %w", err)
			}
			if c.Bool("json") {
				return printJSON(os.Stdout, res)
			}
			printPlan(res, c.Bool("dry-run"))
			return nil
		},
	}
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

func printPlan(res *restore.Result, dry bool) {
	p := res.Plan
	head := "Restored"
	if dry {
		head = "Would restore"
	}
	fmt.Printf("%s from %s:\n", head, p.Archive)
	if res.PITR != nil {
		for _, line := range res.PITR.Describe() {
			fmt.Printf("  %s\n", line)
		}
	}
	for _, s := range p.Steps {
		state := "new database"
		if s.TargetExists && s.TargetEmpty {
			state = "empty database, replaced"
		} else if s.TargetExists {
			state = "database with data, replaced"
			if s.SafetyBackup {
				state += " after a safety backup"
			}
		}
		fmt.Printf("  %s -> %s (%s)\n", s.Source, s.Target, state)
	}
	if p.Globals {
		fmt.Println("  globals.sql (roles, tablespaces)")
	}
	for _, sb := range res.SafetyBackups {
		fmt.Printf("  safety backup: %s\n", sb)
	}
	for _, l := range res.RestoredLogs {
		fmt.Printf("  log restored: %s\n", l)
	}
	if r := res.Replay; r != nil && !dry {
		rate := ""
		if s := r.Duration.Seconds(); s > 0 {
			rate = fmt.Sprintf(", %.0f rows/s", float64(r.Rows)/s)
		}
		fmt.Printf("  replayed %d transactions (%d rows%s), %d sequences set\n", r.Applied, r.Rows, rate, r.Sequences)
	}
	if !dry {
		fmt.Printf("done in %s\n", res.Duration.Round(1e6))
	}
}

package main

import (
	"fmt"
	"os"
	"strconv"

	"github.com/urfave/cli/v2"

	"github.com/pme2go/pme2go-backup/engine/restore"
)

func restoreCommand() *cli.Command {
	return &cli.Command{
		Name:  "restore",
		Usage: "restore a full backup",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "backup", Required: true, Usage: "archive `PATH` or name (see list)"},
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
			cfg, log, err := loadConfig(c)
			if err != nil {
				return err
			}
			res, err := restore.Run(c.Context, cfg, restore.Options{
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
	if !dry {
		fmt.Printf("done in %s\n", res.Duration.Round(1e6))
	}
}

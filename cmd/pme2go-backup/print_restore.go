package main

import (
	"fmt"
	"io"

	"github.com/pme2go/pme2go-backup/engine/ops"
)

// printRestore prints a restore's plan (dry run) or result.
func printRestore(out io.Writer, res *ops.RestoreResult) {
	head := "Restored"
	if res.DryRun {
		head = "Would restore"
	}
	fmt.Fprintf(out, "%s from %s:\n", head, res.Archive)
	if p := res.PointInTime; p != nil {
		for _, line := range p.Description {
			fmt.Fprintf(out, "  %s\n", line)
		}
	}
	for _, s := range res.Databases {
		state := "new database"
		if s.TargetExists && s.TargetEmpty {
			state = "empty database, replaced"
		} else if s.TargetExists {
			state = "database with data, replaced"
			if s.SafetyBackup {
				state += " after a safety backup"
			}
		}
		fmt.Fprintf(out, "  %s -> %s (%s)\n", s.Source, s.Target, state)
	}
	if res.Globals {
		fmt.Fprintln(out, "  globals.sql (roles, tablespaces)")
	}
	ended := map[string]int{}
	for _, s := range res.EndedSessions {
		ended[s.Database]++
	}
	for _, s := range res.Databases {
		if n, ok := ended[s.Target]; ok {
			fmt.Fprintf(out, "  %s: new connections refused and %d session(s) ended before it was replaced (pids and applications in the log)\n", s.Target, n)
		} else if s.TargetExists && !s.TargetEmpty && !res.DryRun {
			fmt.Fprintf(out, "  %s: new connections refused before it was replaced; no session was open\n", s.Target)
		}
	}
	for _, sb := range res.SafetyBackups {
		fmt.Fprintf(out, "  safety backup: %s\n", sb)
	}
	for _, l := range res.RestoredLogs {
		fmt.Fprintf(out, "  log restored: %s\n", l)
	}
	if r := res.Replay; r != nil && !res.DryRun {
		rate := ""
		if r.Duration > 0 {
			rate = fmt.Sprintf(", %.0f rows/s", float64(r.Rows)/r.Duration)
		}
		fmt.Fprintf(out, "  replayed %d transactions (%d rows%s), %d sequences set\n", r.Transactions, r.Rows, rate, r.Sequences)
	}
	for _, n := range res.Notes {
		fmt.Fprintf(out, "  note: %s\n", n)
	}
	for _, d := range res.Differences {
		fmt.Fprintf(out, "  DIFFERS: %s: %s\n", d.Object, d.Message)
	}
	if !res.DryRun {
		fmt.Fprintf(out, "done in %.3fs\n", res.Duration)
	}
}

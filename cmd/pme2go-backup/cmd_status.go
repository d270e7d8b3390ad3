package main

import (
	"context"
	"fmt"
	"io"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/pme2go/pme2go-backup/engine/errs"
	"github.com/pme2go/pme2go-backup/engine/ops"
)

type statusOpts struct {
	common
	ops.StatusOptions
}

func statusCommand() *cli.Command {
	return &cli.Command{
		Name:  "status",
		Usage: "show configuration, chains and their slot lag, recent backups and disk usage",
		Flags: []cli.Flag{&cli.BoolFlag{Name: "json", Usage: "print JSON"}},
		Action: func(c *cli.Context) error {
			return runStatus(c.Context, statusOpts{common: commonOf(c)}, c.App.Writer)
		},
	}
}

func runStatus(ctx context.Context, o statusOpts, out io.Writer) error {
	var r *ops.StatusResult
	var ds *daemonStatus
	if !o.Direct {
		var err error
		if ds, err = o.statusFromDaemon(ctx, &r); err != nil {
			return err
		}
		if r == nil {
			return &errs.Error{Code: errs.Failed, Message: "the daemon returned no status"}
		}
	} else {
		cfg, _, err := o.load()
		if err != nil {
			return err
		}
		r, err = ops.Status(ctx, cfg, o.StatusOptions, nil)
		if err != nil {
			return err
		}
	}
	if o.JSON {
		if ds != nil {
			return printJSON(out, struct {
				*ops.StatusResult
				Daemon *daemonStatus `json:"daemon"`
			}{r, ds})
		}
		return printJSON(out, r)
	}
	if ds != nil {
		printDaemonStatus(out, ds)
	}
	fmt.Fprintf(out, "Backup directory: %s (%s used by %d backups, %s free)\n", r.BackupDir, humanBytes(r.UsedBytes), r.Backups, humanBytes(r.FreeBytes))
	fmt.Fprintf(out, "Retention:        %d days, compression %s\n", r.RetentionDays, r.Compression)
	fmt.Fprintf(out, "Databases:        %v\n", r.Databases)
	fmt.Fprintf(out, "Server:           %s\n", r.Server)
	fmt.Fprintf(out, "Incrementals:     %s\n", r.Incrementals)
	fmt.Fprintf(out, "Schedules:        full %q, incremental %q, cleanup %q, drill %q\n", r.Schedules.Full, r.Schedules.Incremental, r.Schedules.Cleanup, r.Schedules.Drill)
	if r.LastFull != nil {
		fmt.Fprintf(out, "Last full backup: %s (%s ago)\n", r.LastFull.Name, time.Since(r.LastFull.Timestamp).Round(time.Second))
	} else {
		fmt.Fprintln(out, "Last full backup: none")
	}
	fmt.Fprintf(out, "Last drill:       %s\n", lastDrillLine(r.LastDrill))
	if o := r.Offsite; o != nil {
		fmt.Fprintf(out, "Off-site:         %s, %d backups copied, %d not yet copied\n", o.Repository, o.Copied, len(o.NotCopied))
		fmt.Fprintf(out, "Locations:        %d local only, %d off-site only, %d both\n", o.LocalOnly, o.OffsiteOnly, o.Both)
		for _, n := range o.NotCopied {
			fmt.Fprintf(out, "Not copied:       %s\n", n)
		}
		if o.LastError != "" {
			fmt.Fprintf(out, "Off-site error:   %s\n", o.LastError)
		}
		for _, s := range o.Streams {
			fmt.Fprintf(out, "Streamed:         chain %s segment %s, %s sent at %s\n", s.Chain, s.Segment, humanBytes(s.Offset), s.Synced.Format(time.RFC3339))
		}
	}
	for _, ch := range r.Chains {
		line := fmt.Sprintf("Chain %s:  %s, database %s, from %s", ch.ID, ch.Status, ch.Database, ch.StartLSN)
		switch {
		case ch.Lag != nil && !ch.Lag.Exists:
			line += ", slot missing"
		case ch.Lag != nil:
			line += fmt.Sprintf(", slot lag %s of %s allowed (MAX_SLOT_LAG)", humanBytes(ch.Lag.Bytes), humanBytes(r.MaxSlotLag))
			if ch.Lag.Active {
				line += ", streaming"
			}
		case ch.LagError != "":
			line += ", lag unknown: " + ch.LagError
		}
		if ch.CompleteTime != nil {
			line += ", complete up to " + ch.CompleteTime.UTC().Format(time.RFC3339)
		}
		if ch.Reason != "" {
			line += " (" + ch.Reason + ")"
		}
		if ch.DDLCapture != "" && ch.Status == "open" {
			line += "; DDL capture " + ch.DDLCapture
		}
		fmt.Fprintln(out, line)
	}
	printEncryption(out, r.Encryption)
	for _, o := range r.OtherInstallations {
		fmt.Fprintf(out, "Not ours:         %s %s in %s: %s (left alone)\n", o.Kind, o.Name, o.Database, o.Reason)
	}
	fmt.Fprintln(out)
	printBackups(out, r.Recent)
	return nil
}

// lastDrillLine describes the last restore drill in one line.
func lastDrillLine(l *ops.LastDrill) string {
	switch {
	case l == nil:
		return "none yet (pme2go-backup drill)"
	case l.Time.IsZero():
		return "unknown: " + l.Error
	}
	s := fmt.Sprintf("%s, %s of %s, %.1f s (%s ago)", map[bool]string{true: "OK", false: "FAILED"}[l.OK],
		l.Time.UTC().Format("2006-01-02 15:04:05 MST"), l.Database, l.Duration, time.Since(l.Time).Round(time.Second))
	if l.Error != "" {
		s += ": " + l.Error
	}
	return s
}

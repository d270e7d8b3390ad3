package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"strings"

	"github.com/godbus/dbus/v5"
	"github.com/urfave/cli/v2"

	"github.com/pme2go/pme2go-backup/dbusapi"
	"github.com/pme2go/pme2go-backup/engine/config"

	"github.com/pme2go/pme2go-backup/engine/ops"
)

type rekeyOpts struct {
	common
	ops.RekeyOptions
}

func rekeyCommand() *cli.Command {
	return &cli.Command{
		Name:      "rekey",
		Usage:     "re-encrypt archives, local and off-site, to the current BACKUP_ENCRYPTION_RECIPIENTS (all encrypted backups when none is named)",
		ArgsUsage: "[ARCHIVE…]",
		Flags: []cli.Flag{
			&cli.BoolFlag{Name: "dry-run", Usage: "list what would be re-encrypted"},
			&cli.BoolFlag{Name: "json", Usage: "print JSON"},
		},
		Action: func(c *cli.Context) error {
			return runRekey(c.Context, rekeyOpts{commonOf(c), ops.RekeyOptions{Backups: c.Args().Slice(), DryRun: c.Bool("dry-run")}}, c.App.Writer)
		},
	}
}

// runRekey re-encrypts through the daemon (its Rekey job), or in this
// process with --direct; either takes the backup directory lock, so it
// waits for no backup and refuses while one runs (BUSY).
func runRekey(ctx context.Context, o rekeyOpts, out io.Writer) error {
	res, err := jobOrDirect(ctx, o.common, func(ctx context.Context, c *dbusapi.Client) (dbus.ObjectPath, error) {
		return c.Rekey(ctx, o.Backups, o.DryRun)
	}, func(cfg *config.Config, _ *slog.Logger) (*ops.RekeyResult, error) {
		return ops.Rekey(ctx, cfg, o.RekeyOptions, nil)
	})
	if o.JSON {
		if res != nil {
			printJSON(out, res)
		}
		return err
	}
	if res != nil {
		fmt.Fprintf(out, "Recipients: %s\n", strings.Join(res.Recipients, ", "))
		for _, a := range res.Archives {
			fmt.Fprintf(out, "%s\t%s", a.Action, a.Name)
			if a.Location == "offsite" {
				fmt.Fprint(out, "\t(off-site only)")
			}
			if a.Offsite != "" {
				fmt.Fprintf(out, "\toff-site copy %s", a.Offsite)
			}
			if len(a.Before) > 0 && a.Action != "current" {
				fmt.Fprintf(out, "\t(was %s)", strings.Join(a.Before, ", "))
			}
			fmt.Fprintln(out)
		}
		fmt.Fprintf(out, "%d re-encrypted, %d off-site copies replaced, %d already current, %d plaintext (left as they are)\n",
			res.Rekeyed, res.OffsiteRekeyed, res.Current, res.Plaintext)
	}
	return err
}

// printEncryption prints status's encryption lines.
func printEncryption(out io.Writer, e *ops.EncryptionStatus) {
	if e == nil {
		return
	}
	state := "off (BACKUP_ENCRYPTION_RECIPIENTS not set)"
	if e.Enabled {
		state = "on, recipients " + strings.Join(e.Recipients, ", ")
		if e.RecipientsError != "" {
			state = "on, but " + e.RecipientsError
		}
	}
	fmt.Fprintf(out, "Encryption:       %s; %d archives encrypted, %d plaintext", state, e.Encrypted, e.Plaintext)
	if e.NeedRekey > 0 {
		fmt.Fprintf(out, ", %d to re-encrypt (rekey)", e.NeedRekey)
	}
	fmt.Fprintln(out)
	for _, k := range e.Keys {
		switch {
		case k.Current:
			fmt.Fprintf(out, "Key %s:  current, %d archives\n", k.Fingerprint, k.Archives)
		case k.NeededBy > 0:
			fmt.Fprintf(out, "Key %s:  retired, still needed by %d archives (run rekey before destroying it)\n", k.Fingerprint, k.NeededBy)
		default:
			fmt.Fprintf(out, "Key %s:  retired, %d archives also encrypted to a current key\n", k.Fingerprint, k.Archives)
		}
	}
}

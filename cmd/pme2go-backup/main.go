// Command pme2go-backup is the operator's client for pme2go-backup: it takes
// full backups, lists, verifies, cleans up and restores them, and prints the
// effective configuration. main only wires things up and maps errors to exit
// codes.
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/urfave/cli/v2"

	"github.com/pme2go/pme2go-backup/engine/version"
)

// Exit codes.
const (
	exitOK      = 0
	exitFailure = 1
	exitUsage   = 2
)

// usageError marks errors in how the command was called.
type usageError struct{ msg string }

func (e usageError) Error() string { return e.msg }

func newApp() *cli.App {
	return &cli.App{
		Name:    "pme2go-backup",
		Usage:   "backups and point-in-time recovery for PostgreSQL",
		Version: version.Version,
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "config", Usage: "configuration `FILE` (default /etc/pme2go-backup/pme2go-backup.conf)"},
			&cli.StringFlag{Name: "log-level", Value: "info", Usage: "debug, info, warn or error"},
		},
		Commands: []*cli.Command{
			fullCommand(), incrementalCommand(), listCommand(), statusCommand(), verifyCommand(),
			cleanupCommand(), testCommand(), restoreCommand(), configCommand(),
			streamCommand(), markCommand(), showChangesCommand(),
		},
		ExitErrHandler: func(*cli.Context, error) {},
		OnUsageError: func(_ *cli.Context, err error, _ bool) error {
			return usageError{err.Error()}
		},
	}
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	err := newApp().RunContext(ctx, os.Args)
	stop()
	os.Exit(exitCode(err))
}

// exitCode prints err and maps it to the process exit status.
func exitCode(err error) int {
	if err == nil {
		return exitOK
	}
	fmt.Fprintln(os.Stderr, "pme2go-backup:", err)
	var ue usageError
	if errors.As(err, &ue) {
		return exitUsage
	}
	var ec cli.ExitCoder
	if errors.As(err, &ec) {
		return ec.ExitCode()
	}
	return exitFailure
}

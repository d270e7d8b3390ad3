// Command pme2go-backup is the operator's client for pme2go-backup. Each
// command is a small options struct and a runX(ctx, opts, out) function:
// parse the flags, call the engine's front door (engine/ops), print. main
// only wires things up; exit codes are decided in exitCode alone.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/urfave/cli/v2"

	"github.com/pme2go/pme2go-backup/engine/errs"
	"github.com/pme2go/pme2go-backup/engine/ops"
	"github.com/pme2go/pme2go-backup/engine/version"
)

// Exit codes (documented in man/pme2go-backup.1, EXIT STATUS).
const (
	exitOK            = 0
	exitFailure       = 1 // the operation failed
	exitUsage         = 2 // the command line is wrong
	exitNotAuthorized = 3 // the caller may not do this
	exitBusy          = 4 // another operation holds the lock
	exitDifferences   = 5 // restored, with named differences from the source
)

// usageError marks errors in how the command was called.
type usageError struct{ msg string }

func (e usageError) Error() string { return e.msg }

// differencesError is returned by a restore that finished but named
// differences from the source; it is printed by the command itself.
type differencesError struct{ n int }

func (e differencesError) Error() string {
	return fmt.Sprintf("restored, with %d named differences from the source", e.n)
}

func newApp(stdout, stderr io.Writer) *cli.App {
	app := &cli.App{
		Name:      "pme2go-backup",
		Usage:     "backups and point-in-time recovery for PostgreSQL",
		Version:   version.Version,
		Writer:    stdout,
		ErrWriter: stderr,
		Flags:     globalFlags(),
		Commands: []*cli.Command{
			fullCommand(), incrementalCommand(), listCommand(), statusCommand(), verifyCommand(), rekeyCommand(),
			cleanupCommand(), testCommand(), restoreCommand(), configCommand(),
			streamCommand(), markCommand(), showChangesCommand(), startSchedulerCommand(), offsiteCommand(), drillCommand(),
		},
		// Reached only without a command or with an unknown one.
		Action: func(c *cli.Context) error {
			if c.NArg() > 0 {
				return usageError{fmt.Sprintf("unknown command %q; see pme2go-backup --help", c.Args().First())}
			}
			cli.ShowAppHelp(c)
			return usageError{"no command given"}
		},
		ExitErrHandler: func(*cli.Context, error) {},
		OnUsageError: func(_ *cli.Context, err error, _ bool) error {
			return usageError{err.Error()}
		},
	}
	for _, cmd := range app.Commands {
		wrap(cmd)
	}
	return app
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	err := newApp(os.Stdout, os.Stderr).RunContext(ctx, os.Args)
	stop()
	os.Exit(exitCode(os.Stderr, err))
}

// exitCode prints err (with its fix, worded with this CLI's flags) and maps
// it to the process exit status.
func exitCode(w io.Writer, err error) int {
	if err == nil {
		return exitOK
	}
	var de differencesError
	if errors.As(err, &de) {
		fmt.Fprintln(w, "pme2go-backup:", err)
		return exitDifferences
	}
	fmt.Fprintln(w, "pme2go-backup:", err)
	if fix := cliFix(ops.Classify(err).Fix); fix != "" {
		fmt.Fprintln(w, "fix:", fix)
	}
	var ue usageError
	var ec cli.ExitCoder
	switch code := ops.CodeOf(err); {
	case errors.As(err, &ue), code == errs.Usage:
		return exitUsage
	case code == errs.NotAuthorized:
		return exitNotAuthorized
	case code == errs.Busy:
		return exitBusy
	case errors.As(err, &ec):
		return ec.ExitCode()
	}
	return exitFailure
}

package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"

	"github.com/urfave/cli/v2"
	"golang.org/x/term"

	"github.com/pme2go/pme2go-backup/engine/config"
	"github.com/pme2go/pme2go-backup/engine/errs"
	"github.com/pme2go/pme2go-backup/engine/ops"
)

// common holds what every command takes: --config, --log-level, --json,
// and where diagnostics go.
type common struct {
	ConfigPath string
	LogLevel   string
	JSON       bool
	// Direct runs the engine in this process instead of asking the daemon
	// (--direct, or PME2GO_DIRECT=1).
	Direct bool
	Stderr io.Writer
}

// globalFlags are accepted before the command name and, for --config and
// --log-level, after it too.
func globalFlags() []cli.Flag {
	return []cli.Flag{
		&cli.StringFlag{Name: "config", Usage: "configuration `FILE` (default /etc/pme2go-backup/pme2go-backup.conf)"},
		&cli.StringFlag{Name: "log-level", Value: "info", Usage: "debug, info, warn or error"},
		&cli.BoolFlag{Name: "direct", EnvVars: []string{directEnv}, Usage: "run in this process instead of through the daemon pme2go-backupd (bare-metal recovery)"},
	}
}

// wrap gives a command the global flags, usage errors with exit status 2,
// a check that it got no arguments it does not take (ArgsUsage ""), and the
// JSON error object on failure with --json.
func wrap(cmd *cli.Command) {
	cmd.Flags = append(cmd.Flags, globalFlags()...)
	cmd.OnUsageError = func(_ *cli.Context, err error, _ bool) error { return usageError{err.Error()} }
	action := cmd.Action
	cmd.Action = func(c *cli.Context) error {
		if cmd.ArgsUsage == "" && c.NArg() > 0 {
			return usageError{fmt.Sprintf("%s takes no arguments, got %q", cmd.Name, c.Args().Slice())}
		}
		err := action(c)
		var de differencesError
		// A restore with named differences printed its result, which lists
		// them: one JSON document on stdout, not the result and an error.
		if err != nil && c.Bool("json") && !errors.As(err, &de) {
			printJSON(c.App.Writer, jsonError(err))
		}
		return err
	}
}

// commonOf reads the common options; a flag given after the command name
// wins over the same flag before it.
func commonOf(c *cli.Context) common {
	g := common{LogLevel: "info", JSON: c.Bool("json"), Stderr: c.App.ErrWriter, Direct: c.Bool("direct")}
	lineage := c.Lineage()
	for i := len(lineage) - 1; i >= 0; i-- { // root first, command last
		x := lineage[i]
		if x.Command == nil && x.App == nil {
			continue
		}
		for _, name := range x.LocalFlagNames() {
			switch name {
			case "config":
				g.ConfigPath = x.String("config")
			case "log-level":
				g.LogLevel = x.String("log-level")
			case "direct":
				g.Direct = x.Bool("direct")
			}
		}
	}
	return g
}

// load reads the configuration named by --config (or the default) with the
// environment's overrides and logs its warnings.
func (g common) load() (*config.Config, *slog.Logger, error) {
	log := newLogger(g.Stderr, g.LogLevel)
	cfg, err := config.Load(g.ConfigPath, os.LookupEnv)
	if err != nil {
		return nil, log, &errs.Error{Code: errs.Config, Err: err}
	}
	for _, w := range cfg.Warnings {
		log.Warn(w)
	}
	return cfg, log, nil
}

func newLogger(w io.Writer, level string) *slog.Logger {
	var l slog.Level
	if err := l.UnmarshalText([]byte(level)); err != nil {
		l = slog.LevelInfo
	}
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: l}))
}

func printJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// jsonError is the error object printed with --json on failure; the fix's
// text is worded with this CLI's flags.
func jsonError(err error) errs.JSON {
	var ue usageError
	if errors.As(err, &ue) {
		return errs.JSON{Error: errs.JSONBody{Code: errs.Usage, Message: err.Error()}}
	}
	j := errs.ToJSON(err)
	if f := j.Error.Fix; f != nil {
		j.Error.Fix = &errs.Fix{Action: f.Action, Text: cliFix(f)}
	}
	return j
}

// cliFix words a fix with this CLI's flags; "" when there is none.
func cliFix(f *ops.Fix) string {
	if f == nil {
		return ""
	}
	words := map[errs.Action]string{
		errs.ActForce:          "pass --force to replace it (a safety backup is taken first unless --no-safety-backup), or --target-db NAME to restore beside it",
		errs.ActResume:         "rerun the same restore with --resume to continue it",
		errs.ActNoResume:       "rerun without --resume",
		errs.ActChooseDatabase: "choose one with --database",
		errs.ActTargetDB:       "restore beside it with --target-db NAME",
		errs.ActLatest:         "use --latest for the newest state",
		errs.ActIncremental:    "run pme2go-backup incremental to archive newer changes",
		errs.ActFullBackup:     "run pme2go-backup full to take a new full backup",
		errs.ActRestoreGlobals: "rerun with --restore-globals to create the roles first, or with --no-owner",
		errs.ActNoOwner:        "rerun with --no-owner",
		errs.ActNoBackup:       "leave out --backup and let the target choose the full backup",
	}[f.Action]
	switch {
	case words == "":
		return f.Text
	case f.Text == "" || strings.Contains(words, f.Text):
		return words
	}
	return words + " (" + f.Text + ")"
}

func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	return ok && term.IsTerminal(int(f.Fd()))
}

// humanBytes renders n as B, KiB, MiB, GiB or TiB.
func humanBytes(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit && exp < 3; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGT"[exp])
}

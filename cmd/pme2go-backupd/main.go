// Command pme2go-backupd is the pme2go-backup daemon: it owns
// org.pme2go.Backup1 on the system bus and runs backups, restores and the
// other operations as jobs. main reads the configuration and flags, builds
// the logger, cancels one root context on SIGTERM or SIGINT, and maps the
// outcome to the exit status; everything else is in package daemon.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"github.com/pme2go/pme2go-backup/engine/ops"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"syscall"
	"time"

	"github.com/pme2go/pme2go-backup/daemon"
	"github.com/pme2go/pme2go-backup/dbusapi"
	"github.com/pme2go/pme2go-backup/engine/config"
	"github.com/pme2go/pme2go-backup/engine/version"
)

// Exit codes.
const (
	exitOK      = 0
	exitFailure = 1
	exitUsage   = 2
)

type options struct {
	config      string
	scheduler   bool
	idleTimeout time.Duration
	idleSet     bool
	logLevel    string
	group       string
	polkit      string
	historySize int
	noAutoFull  bool
	version     bool
}

func parseFlags(args []string, stderr io.Writer) (options, error) {
	var o options
	fs := flag.NewFlagSet("pme2go-backupd", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&o.config, "config", "", "configuration `FILE` (default "+config.DefaultPath+")")
	fs.BoolVar(&o.scheduler, "scheduler", false, "run FULL_BACKUP_SCHEDULE, INCREMENTAL_BACKUP_SCHEDULE and CLEANUP_SCHEDULE (hosts without systemd timers)")
	fs.DurationVar(&o.idleTimeout, "idle-timeout", 0, "exit after `DURATION` with nothing to do (default 0: never; 5m when started by bus activation)")
	fs.StringVar(&o.logLevel, "log-level", "info", "debug, info, warn or error")
	fs.StringVar(&o.group, "group", dbusapi.DefaultGroup, "`GROUP` whose members may call the daemon when polkit is not running")
	fs.StringVar(&o.polkit, "polkit", "auto", "ask polkit: auto (when it is on the bus), on or off")
	fs.IntVar(&o.historySize, "history", 100, "job results kept in BACKUP_DIR/state/"+daemon.HistoryFile)
	fs.BoolVar(&o.noAutoFull, "no-auto-full", false, "with BACKUP_STREAMING, do not take a new full backup when a database has no open chain")
	fs.BoolVar(&o.version, "version", false, "print the version and exit")
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	if fs.NArg() > 0 {
		return o, fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	fs.Visit(func(f *flag.Flag) { o.idleSet = o.idleSet || f.Name == "idle-timeout" })
	switch o.polkit {
	case "auto", "on", "off":
	default:
		return o, fmt.Errorf("--polkit: %q is not auto, on or off", o.polkit)
	}
	if o.idleTimeout < 0 {
		return o, fmt.Errorf("--idle-timeout: negative duration")
	}
	return o, nil
}

func main() {
	os.Exit(run(os.Args[1:]))
}

func run(args []string) int {
	o, err := parseFlags(args, os.Stderr)
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return exitOK
		}
		fmt.Fprintln(os.Stderr, "pme2go-backupd:", err)
		return exitUsage
	}
	if o.version {
		fmt.Println("pme2go-backupd", version.Version)
		return exitOK
	}
	cfg, err := config.Load(o.config, os.LookupEnv)
	if err != nil {
		fmt.Fprintln(os.Stderr, "pme2go-backupd:", err)
		return exitUsage
	}
	var level slog.Level
	if err := level.UnmarshalText([]byte(o.logLevel)); err != nil {
		fmt.Fprintf(os.Stderr, "pme2go-backupd: --log-level: %v\n", err)
		return exitUsage
	}
	logDir := os.Getenv("LOG_DIR")
	if logDir != "" && !filepath.IsAbs(logDir) {
		fmt.Fprintln(os.Stderr, "pme2go-backupd: LOG_DIR must be an absolute path")
		return exitUsage
	}
	log, closeLog, err := daemon.NewLogger(daemon.LogOptions{Level: level, LogDir: logDir,
		RetentionDays: cfg.RetentionDays, Secrets: []string{cfg.Password}})
	if err != nil {
		fmt.Fprintln(os.Stderr, "pme2go-backupd:", err)
		return exitFailure
	}
	defer closeLog()
	for _, w := range cfg.Warnings {
		log.Warn(w)
	}
	idle := o.idleTimeout
	if !o.idleSet && os.Getenv("DBUS_STARTER_BUS_TYPE") == "system" {
		idle = 5 * time.Minute
	}
	d := &daemon.Daemon{
		Engine:      daemon.NewEngine(cfg, log),
		Version:     version.Version,
		StateDir:    cfg.StateDir(),
		Log:         log,
		Group:       o.group,
		Polkit:      o.polkit,
		IdleTimeout: idle,
		HistorySize: o.historySize,
		Streaming:   cfg.Streaming,
		AutoFull:    !o.noAutoFull,
	}
	if o.scheduler {
		d.Schedules = map[string]daemon.Schedule{}
		for kind, expr := range map[string]string{dbusapi.KindFull: cfg.FullSchedule,
			dbusapi.KindIncremental: cfg.IncrSchedule, dbusapi.KindCleanup: cfg.CleanupSchedule} {
			if expr == "" {
				continue
			}
			c, err := ops.ParseSchedule(expr)
			if err != nil {
				fmt.Fprintln(os.Stderr, "pme2go-backupd:", err)
				return exitUsage
			}
			d.Schedules[kind] = c
		}
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	log.Info("starting", "version", version.Version, "pid", strconv.Itoa(os.Getpid()), "databases", cfg.DBNames, "scheduler", o.scheduler)
	if err := d.Run(ctx); err != nil {
		log.Error("pme2go-backupd failed", "error", err)
		return exitFailure
	}
	return exitOK
}

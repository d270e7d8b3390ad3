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
	"io"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/coreos/go-systemd/v22/activation"
	"golang.org/x/sys/unix"

	"github.com/pme2go/pme2go-backup/daemon"
	"github.com/pme2go/pme2go-backup/dbusapi"
	"github.com/pme2go/pme2go-backup/engine/config"
	"github.com/pme2go/pme2go-backup/engine/ops"
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
	logDir := cfg.Value("LOG_DIR") // checked by config.Load: absolute
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
			dbusapi.KindIncremental: cfg.IncrSchedule, dbusapi.KindCleanup: cfg.CleanupSchedule, dbusapi.KindDrill: cfg.DrillSchedule} {
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
	d.Listeners, d.RESTToken, err = restListeners(cfg, log)
	if err != nil {
		fmt.Fprintln(os.Stderr, "pme2go-backupd:", err)
		log.Error("REST API refused", "error", err)
		return exitUsage
	}
	d.MetricsTextfile = cfg.Value("METRICS_TEXTFILE")
	d.Secrets = []string{cfg.Password}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	log.Info("starting", "version", version.Version, "pid", strconv.Itoa(os.Getpid()), "databases", cfg.DBNames, "scheduler", o.scheduler)
	if err := d.Run(ctx); err != nil {
		log.Error("pme2go-backupd failed", "error", err)
		return exitFailure
	}
	return exitOK
}

// restListeners returns the REST API's listeners: the sockets systemd
// passed (sd_listen_fds(3): pme2go-backupd.socket, systemd-socket-activate),
// else REST_LISTEN (unix:/path, created mode 0660, or host:port), else none;
// and the bearer token of REST_TOKEN_FILE. A TCP listener without a token
// is refused.
func restListeners(cfg *config.Config, log *slog.Logger) ([]net.Listener, string, error) {
	var token string
	if p := cfg.Value("REST_TOKEN_FILE"); p != "" {
		t, err := readToken(p)
		if err != nil {
			return nil, "", err
		}
		token = t
	}
	ls, err := activatedListeners(activation.Files(true))
	if err != nil {
		return nil, "", err
	}
	if len(ls) == 0 {
		if addr := cfg.Value("REST_LISTEN"); addr != "" {
			l, err := listen(addr)
			if err != nil {
				return nil, "", err
			}
			ls = append(ls, l)
		}
	}
	for _, l := range ls {
		if n := l.Addr().Network(); n != "unix" && token == "" {
			for _, l := range ls {
				l.Close()
			}
			return nil, "", fmt.Errorf("REST API: refusing the %s listener %s without a bearer token: set REST_TOKEN_FILE "+
				"(a file holding the token, readable by the daemon only), or listen on a Unix socket", n, l.Addr())
		}
	}
	return ls, token, nil
}

// activatedListeners turns the file descriptors systemd passed
// (sd_listen_fds(3)) into listeners. Each must be a listening stream
// socket (ListenStream= with Accept=no in pme2go-backupd.socket): any other
// descriptor is refused with the reason, rather than ignored, since the
// daemon would otherwise run without the API the socket promised (and
// systemd would start it again at every datagram).
func activatedListeners(files []*os.File) ([]net.Listener, error) {
	var ls []net.Listener
	fail := func(err error) ([]net.Listener, error) {
		for _, l := range ls {
			l.Close()
		}
		for _, f := range files {
			f.Close()
		}
		return nil, err
	}
	for _, f := range files {
		what := fmt.Sprintf("the descriptor %d (%s) passed by systemd", f.Fd(), f.Name())
		raw, err := f.SyscallConn()
		if err != nil {
			return fail(fmt.Errorf("REST API: %s: %w", what, err))
		}
		var typ, accepting int
		var serr error
		if err := raw.Control(func(fd uintptr) {
			typ, serr = unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_TYPE)
			if serr == nil {
				accepting, serr = unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_ACCEPTCONN)
			}
		}); err != nil {
			serr = err
		}
		switch {
		case errors.Is(serr, unix.ENOTSOCK):
			return fail(fmt.Errorf("REST API: %s is not a socket: pme2go-backupd.socket must pass a stream socket (ListenStream=)", what))
		case serr != nil:
			return fail(fmt.Errorf("REST API: %s: %w", what, serr))
		case typ != unix.SOCK_STREAM:
			return fail(fmt.Errorf("REST API: %s is not a stream socket (type %d): use ListenStream= in pme2go-backupd.socket, "+
				"not ListenDatagram= or ListenSequentialPacket=", what, typ))
		case accepting == 0:
			return fail(fmt.Errorf("REST API: %s is not listening (a connection passed with Accept=yes?): "+
				"pme2go-backupd.socket must use Accept=no", what))
		}
		l, err := net.FileListener(f)
		if err != nil {
			return fail(fmt.Errorf("REST API: %s: %w", what, err))
		}
		f.Close()
		ls = append(ls, l)
	}
	return ls, nil
}

// listen opens REST_LISTEN.
func listen(addr string) (net.Listener, error) {
	if path, ok := strings.CutPrefix(addr, "unix:"); ok {
		// A socket file left by a daemon that died is replaced; a live one
		// is not.
		if fi, err := os.Lstat(path); err == nil && fi.Mode()&os.ModeSocket != 0 {
			if c, err := net.DialTimeout("unix", path, time.Second); err == nil {
				c.Close()
				return nil, fmt.Errorf("REST_LISTEN: %s is in use by another process", path)
			}
			_ = os.Remove(path)
		}
		l, err := net.Listen("unix", path)
		if err != nil {
			return nil, fmt.Errorf("REST_LISTEN: %w", err)
		}
		if err := os.Chmod(path, 0o660); err != nil {
			l.Close()
			return nil, fmt.Errorf("REST_LISTEN: %w", err)
		}
		return l, nil
	}
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("REST_LISTEN: %w", err)
	}
	return l, nil
}

// readToken reads the first line of a token file. A file other users may
// read is refused: the token grants every operation.
func readToken(path string) (string, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return "", fmt.Errorf("REST_TOKEN_FILE: %w", err)
	}
	if fi.Mode().Perm()&0o007 != 0 {
		return "", fmt.Errorf("REST_TOKEN_FILE: %s is accessible to other users (mode %04o): chmod o-rwx it", path, fi.Mode().Perm())
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("REST_TOKEN_FILE: %w", err)
	}
	line, _, _ := strings.Cut(string(data), "\n")
	line = strings.TrimSpace(line)
	if len(line) < 16 {
		return "", fmt.Errorf("REST_TOKEN_FILE: %s holds no token of at least 16 characters on its first line", path)
	}
	return line, nil
}

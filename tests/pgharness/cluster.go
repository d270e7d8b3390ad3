package pgharness

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// EnvKeep keeps cluster directories (and leaves nothing running) when "1".
const EnvKeep = "PME2GO_TEST_KEEP"

// DefaultPassword is the postgres superuser password set by Start unless
// WithPassword overrides it.
const DefaultPassword = "harness-secret"

// Cluster is a throwaway PostgreSQL cluster started by Start.
type Cluster struct {
	// BinDir is the PostgreSQL server bin directory.
	BinDir string
	// DataDir is the cluster data directory.
	DataDir string
	// SocketDir is the unix socket directory (use it as PGHOST).
	SocketDir string
	// Port is the TCP port, listening on 127.0.0.1 only.
	Port int
	// Password is the postgres superuser password ("" when unset).
	Password string

	base    string
	logFile string
	owner   *owner
	running bool
}

type config struct {
	settings [][2]string
	password string
}

// Option customises Start.
type Option func(*config)

// WithSetting adds a postgresql.conf setting. v is written verbatim, so
// string values need their own single quotes, e.g. WithSetting("x", "'y'").
func WithSetting(k, v string) Option {
	return func(c *config) { c.settings = append(c.settings, [2]string{k, v}) }
}

// WithPassword sets the postgres superuser password (default
// DefaultPassword); "" leaves the role without a password.
func WithPassword(pw string) Option {
	return func(c *config) { c.password = pw }
}

const hbaConf = `# pgharness
local all all trust
local replication all trust
host all all 127.0.0.1/32 scram-sha-256
host replication all 127.0.0.1/32 scram-sha-256
`

// Start creates and starts a throwaway cluster that is stopped and removed
// when t finishes. A missing PostgreSQL installation is reported through
// Require(t, "postgres", ...).
func Start(t testing.TB, opts ...Option) *Cluster {
	t.Helper()
	cfg := config{password: DefaultPassword}
	for _, o := range opts {
		o(&cfg)
	}
	binDir, err := BinDir()
	if err != nil {
		Require(t, "postgres", "PostgreSQL server (initdb) not found; install postgresql")
		return nil
	}
	own, err := serverOwner()
	if err != nil {
		Require(t, "postgres", err.Error())
		return nil
	}
	base, err := own.ownerDir("pgh-*", 0o755)
	if err != nil {
		t.Fatalf("pgharness: %v", err)
	}
	c := &Cluster{
		BinDir: binDir, DataDir: filepath.Join(base, "data"),
		SocketDir: filepath.Join(base, "sock"), Password: cfg.password,
		base: base, logFile: filepath.Join(base, "server.log"), owner: own,
	}
	t.Cleanup(func() { c.cleanup(t) })
	if err := c.create(cfg); err != nil {
		t.Fatalf("pgharness: create cluster: %v", err)
	}
	if err := c.startWithPortRetry(); err != nil {
		t.Fatalf("pgharness: start cluster: %v\n%s", err, c.LogTail(30))
	}
	if cfg.password != "" {
		sql := fmt.Sprintf("ALTER ROLE postgres PASSWORD '%s'", strings.ReplaceAll(cfg.password, "'", "''"))
		c.Exec(t, "postgres", sql)
	}
	return c
}

// create builds the data directory, socket directory and configuration.
func (c *Cluster) create(cfg config) error {
	if err := os.Mkdir(c.SocketDir, 0o755); err != nil {
		return fmt.Errorf("mkdir socket dir: %w", err)
	}
	if err := os.Chmod(c.SocketDir, 0o755); err != nil {
		return fmt.Errorf("chmod socket dir: %w", err)
	}
	if err := c.owner.chownAll(c.SocketDir); err != nil {
		return err
	}
	if err := c.owner.writeFile(c.logFile, nil); err != nil {
		return err
	}
	if err := newDataDir(c.owner, c.BinDir, c.base, c.DataDir); err != nil {
		return err
	}
	var b strings.Builder
	b.WriteString("\n# pgharness\n")
	for _, kv := range [][2]string{
		{"wal_level", "logical"}, {"max_replication_slots", "20"},
		{"max_wal_senders", "20"}, {"listen_addresses", "'127.0.0.1'"},
		{"unix_socket_directories", "'" + c.SocketDir + "'"},
		{"fsync", "off"}, {"synchronous_commit", "off"},
		{"full_page_writes", "off"}, {"shared_buffers", "128MB"},
		{"max_connections", "100"}, {"log_min_messages", "warning"},
		{"logging_collector", "off"},
	} {
		fmt.Fprintf(&b, "%s = %s\n", kv[0], kv[1])
	}
	for _, kv := range cfg.settings {
		fmt.Fprintf(&b, "%s = %s\n", kv[0], kv[1])
	}
	if err := c.owner.appendFile(filepath.Join(c.DataDir, "postgresql.conf"), []byte(b.String())); err != nil {
		return err
	}
	return c.owner.writeFile(filepath.Join(c.DataDir, "pg_hba.conf"), []byte(hbaConf))
}

// freePort asks the kernel for a currently free TCP port on 127.0.0.1.
func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("find free port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// startWithPortRetry picks a free port and starts the server, retrying with
// a new port when the chosen one was taken in the meantime.
func (c *Cluster) startWithPortRetry() error {
	var err error
	for attempt := 0; attempt < 5; attempt++ {
		var port int
		if port, err = freePort(); err != nil {
			return err
		}
		line := fmt.Sprintf("port = %d\n", port)
		if err = c.owner.appendFile(filepath.Join(c.DataDir, "postgresql.conf"), []byte(line)); err != nil {
			return err
		}
		c.Port = port
		if err = c.start(); err == nil {
			return nil
		}
		if !strings.Contains(c.LogTail(20), "could not") {
			return err
		}
	}
	return err
}

// start runs pg_ctl start and waits for the server to accept connections.
func (c *Cluster) start() error {
	err := c.owner.run(c.base, c.Bin("pg_ctl"), "-w", "-t", "60", "-D", c.DataDir,
		"-l", c.logFile, "start")
	if err != nil {
		return err
	}
	c.running = true
	return nil
}

// stop runs pg_ctl stop with the given shutdown mode.
func (c *Cluster) stop(mode string) error {
	if !c.running {
		return nil
	}
	err := c.owner.run(c.base, c.Bin("pg_ctl"), "-w", "-t", "60", "-D", c.DataDir, "-m", mode, "stop")
	if err != nil {
		return err
	}
	c.running = false
	return nil
}

// Stop shuts the server down cleanly (fast mode).
func (c *Cluster) Stop(t testing.TB) {
	t.Helper()
	if err := c.stop("fast"); err != nil {
		t.Fatalf("pgharness: stop: %v", err)
	}
}

// Kill stops the server in immediate mode (crash-like, no checkpoint).
func (c *Cluster) Kill(t testing.TB) {
	t.Helper()
	if err := c.stop("immediate"); err != nil {
		t.Fatalf("pgharness: kill: %v", err)
	}
}

// Restart stops the server (if running) and starts it again on the same port.
func (c *Cluster) Restart(t testing.TB) {
	t.Helper()
	c.Stop(t)
	if err := c.start(); err != nil {
		t.Fatalf("pgharness: restart: %v\n%s", err, c.LogTail(30))
	}
}

// Running reports whether the harness believes the server is running.
func (c *Cluster) Running() bool { return c.running }

// LogTail returns the last n lines of the server log.
func (c *Cluster) LogTail(n int) string {
	data, err := os.ReadFile(c.logFile)
	if err != nil {
		return fmt.Sprintf("(no server log: %v)", err)
	}
	lines := strings.Split(strings.TrimRight(string(data), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// cleanup stops the server and removes its directory (unless kept).
func (c *Cluster) cleanup(t testing.TB) {
	if t.Failed() {
		t.Logf("pgharness: server log tail (%s):\n%s", c.logFile, c.LogTail(40))
	}
	if err := c.stop("immediate"); err != nil {
		t.Logf("pgharness: stop at cleanup: %v", err)
	}
	if os.Getenv(EnvKeep) == "1" {
		t.Logf("pgharness: keeping cluster directory %s", c.base)
		return
	}
	if err := os.RemoveAll(c.base); err != nil {
		t.Logf("pgharness: remove %s: %v", c.base, err)
	}
}

// connect opens a pgx connection and fails t on error.
func connect(t testing.TB, connString string) *pgx.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, connString)
	if err != nil {
		t.Fatalf("pgharness: connect: %v", err)
	}
	return conn
}

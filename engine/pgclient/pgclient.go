// Package pgclient turns the configuration into PostgreSQL connections for pgx
// and into environments for libpq child processes (pg_dump, pg_restore, psql),
// so that no password ever appears in a process argument or a log line.
package pgclient

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/pme2go/pme2go-backup/engine/config"
)

// Target says how to reach the server. Password may be empty, in which case
// libpq's PGPASSFILE or ~/.pgpass applies.
type Target struct {
	Host     string
	Port     int
	User     string
	Password string
	// ConnectTimeout bounds each connection attempt (default 10s).
	ConnectTimeout time.Duration
}

// AppName is the application_name the server shows for our sessions.
const AppName = "pme2go-backup"

func (t Target) timeout() time.Duration {
	if t.ConnectTimeout > 0 {
		return t.ConnectTimeout
	}
	return 10 * time.Second
}

// ConnString renders a keyword/value connection string without the password.
func (t Target) ConnString(db string) string {
	kv := []string{
		"host=" + quote(t.Host),
		"port=" + strconv.Itoa(t.Port),
		"user=" + quote(t.User),
		"dbname=" + quote(db),
		"application_name=" + AppName,
		"connect_timeout=" + strconv.Itoa(int(t.timeout().Seconds())),
	}
	return strings.Join(kv, " ")
}

func quote(s string) string {
	return "'" + strings.NewReplacer(`\`, `\\`, `'`, `\'`).Replace(s) + "'"
}

// Config returns a pgx configuration for db with the password set in memory.
func (t Target) Config(db string) (*pgx.ConnConfig, error) {
	cfg, err := pgx.ParseConfig(t.ConnString(db))
	if err != nil {
		return nil, fmt.Errorf("connection settings: %w", err)
	}
	if t.Password != "" {
		cfg.Password = t.Password
	}
	return cfg, nil
}

// Connect opens a connection to db. Its error explains in operator terms what
// failed: an unreachable server, a rejected password, a missing database.
func (t Target) Connect(ctx context.Context, db string) (*pgx.Conn, error) {
	cfg, err := t.Config(db)
	if err != nil {
		return nil, err
	}
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		return nil, t.explain(db, err)
	}
	return conn, nil
}

// explain wraps a connection error with what to check.
func (t Target) explain(db string, err error) error {
	where := fmt.Sprintf("%s@%s:%d/%s", t.User, t.Host, t.Port, db)
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		switch pgErr.Code {
		case "28P01", "28000":
			return fmt.Errorf("connect to %s: authentication failed (%s); check DB_USER and the password (DB_PASSWORD_FILE, credential db-password or ~/.pgpass): %w", where, pgErr.Message, err)
		case "3D000":
			return fmt.Errorf("connect to %s: database does not exist; check DB_NAME: %w", where, err)
		}
	}
	var netErr net.Error
	if errors.As(err, &netErr) || strings.Contains(err.Error(), "connect: ") || strings.Contains(err.Error(), "dial") {
		return fmt.Errorf("connect to %s: server unreachable; check that PostgreSQL runs and DB_HOST/DB_PORT point to it: %w", where, err)
	}
	return fmt.Errorf("connect to %s: %w", where, err)
}

// ChildEnv returns the environment for a libpq client program working on db:
// the inherited environment minus PG* variables, plus PGHOST, PGPORT, PGUSER,
// PGDATABASE and, when a password is set, PGPASSFILE pointing at a private
// temporary file. The returned cleanup removes that file; call it when the
// child has exited.
func (t Target) ChildEnv(db string) (env []string, cleanup func(), err error) {
	for _, kv := range os.Environ() {
		if strings.HasPrefix(kv, "PG") {
			continue
		}
		env = append(env, kv)
	}
	env = append(env,
		"PGHOST="+t.Host,
		"PGPORT="+strconv.Itoa(t.Port),
		"PGUSER="+t.User,
		"PGDATABASE="+db,
		"PGAPPNAME="+AppName,
		"PGCONNECT_TIMEOUT="+strconv.Itoa(int(t.timeout().Seconds())),
	)
	if pf, ok := os.LookupEnv("PGPASSFILE"); ok && t.Password == "" {
		env = append(env, "PGPASSFILE="+pf)
	}
	cleanup = func() {}
	if t.Password == "" {
		return env, cleanup, nil
	}
	dir, err := os.MkdirTemp("", "pme2go-pgpass-")
	if err != nil {
		return nil, nil, fmt.Errorf("create private password file: %w", err)
	}
	file := filepath.Join(dir, "pgpass")
	line := "*:*:*:*:" + strings.NewReplacer(`\`, `\\`, `:`, `\:`).Replace(t.Password) + "\n"
	if err := os.WriteFile(file, []byte(line), 0o600); err != nil {
		os.RemoveAll(dir)
		return nil, nil, fmt.Errorf("write private password file: %w", err)
	}
	return append(env, "PGPASSFILE="+file), func() { os.RemoveAll(dir) }, nil
}

// FromConfig builds the target from the configuration's DB_* keys.
func FromConfig(c *config.Config) Target {
	return Target{Host: c.DBHost, Port: c.DBPort, User: c.DBUser, Password: c.Password}
}

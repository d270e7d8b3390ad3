package pgharness

import (
	"context"
	"fmt"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// quoteConnValue quotes v for a libpq keyword/value connection string.
func quoteConnValue(v string) string {
	v = strings.ReplaceAll(v, `\`, `\\`)
	v = strings.ReplaceAll(v, `'`, `\'`)
	return "'" + v + "'"
}

// ConnString returns a keyword/value connection string for database db over
// the unix socket as user postgres (trust authentication).
func (c *Cluster) ConnString(db string) string {
	return fmt.Sprintf("host=%s port=%d user=postgres dbname=%s",
		quoteConnValue(c.SocketDir), c.Port, quoteConnValue(db))
}

// TCPConnString returns a keyword/value connection string for database db
// over TCP on 127.0.0.1 (scram-sha-256 authentication, sslmode=disable).
func (c *Cluster) TCPConnString(db, user, password string) string {
	return fmt.Sprintf("host=127.0.0.1 port=%d user=%s password=%s dbname=%s sslmode=disable",
		c.Port, quoteConnValue(user), quoteConnValue(password), quoteConnValue(db))
}

// Env returns PGHOST, PGPORT, PGUSER and PGDATABASE assignments for child
// processes (libpq tools) connecting to db over the unix socket.
func (c *Cluster) Env(db string) []string {
	return []string{
		"PGHOST=" + c.SocketDir,
		"PGPORT=" + strconv.Itoa(c.Port),
		"PGUSER=postgres",
		"PGDATABASE=" + db,
	}
}

// Bin returns the path of the tool name (e.g. "pg_dump") in BinDir.
func (c *Cluster) Bin(name string) string {
	return filepath.Join(c.BinDir, name)
}

// Conn opens a connection to db as postgres; it is closed at test cleanup.
func (c *Cluster) Conn(t testing.TB, db string) *pgx.Conn {
	t.Helper()
	conn := connect(t, c.ConnString(db))
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		conn.Close(ctx)
	})
	return conn
}

// Exec runs sql in db on a short-lived connection and fails t on error.
// Without args the simple protocol is used, so sql may hold several
// statements.
func (c *Cluster) Exec(t testing.TB, db, sql string, args ...any) {
	t.Helper()
	conn := connect(t, c.ConnString(db))
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	defer conn.Close(context.Background())
	if _, err := conn.Exec(ctx, sql, args...); err != nil {
		t.Fatalf("pgharness: exec in %s: %v\nSQL: %s", db, err, abbreviate(sql, 400))
	}
}

// CreateDB creates database name (owned by postgres).
func (c *Cluster) CreateDB(t testing.TB, name string) {
	t.Helper()
	c.Exec(t, "postgres", "CREATE DATABASE "+pgx.Identifier{name}.Sanitize())
}

// abbreviate shortens s to at most n bytes for error messages.
func abbreviate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}

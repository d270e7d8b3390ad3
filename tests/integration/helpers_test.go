// Package integration holds tests that cross packages: full backups taken,
// verified, listed, cleaned up and restored against real PostgreSQL, and the
// CLI driven as an operator would.
package integration

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/pme2go/pme2go-backup/engine/config"
	"github.com/pme2go/pme2go-backup/tests/pgharness"
)

// cfgEnv returns the configuration environment for a cluster and databases,
// with a fresh private BACKUP_DIR, plus extra KEY=VALUE overrides.
func cfgEnv(t *testing.T, c *pgharness.Cluster, dbs []string, extra ...string) map[string]string {
	t.Helper()
	env := map[string]string{
		"BACKUP_DIR":  filepath.Join(t.TempDir(), "backups"),
		"DB_HOST":     c.SocketDir,
		"DB_PORT":     strconv.Itoa(c.Port),
		"DB_USER":     "postgres",
		"DB_NAME":     strings.Join(dbs, ","),
		"BACKUP_JOBS": "2",
	}
	for _, kv := range extra {
		k, v, _ := strings.Cut(kv, "=")
		env[k] = v
	}
	return env
}

// loadCfg builds a validated configuration from env and an empty file.
func loadCfg(t *testing.T, env map[string]string) *config.Config {
	t.Helper()
	p := filepath.Join(t.TempDir(), "pme2go-backup.conf")
	if err := os.WriteFile(p, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Load(p, func(k string) (string, bool) { v, ok := env[k]; return v, ok })
	if err != nil {
		t.Fatalf("config: %v", err)
	}
	return cfg
}

package pgharness

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	backupconfig "github.com/pme2go/pme2go-backup/engine/config"
)

// ConfigEnv returns a pme2go-backup configuration environment for cluster c
// and the databases dbs (comma-joined into DB_NAME): the Unix socket, user
// postgres, two jobs and a fresh private BACKUP_DIR, plus KEY=VALUE
// overrides from extra.
func ConfigEnv(t testing.TB, c *Cluster, dbs []string, extra ...string) map[string]string {
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

// LoadConfig builds a validated configuration from env (and an empty file,
// so that the host's /etc configuration never leaks into a test).
func LoadConfig(t testing.TB, env map[string]string) *backupconfig.Config {
	t.Helper()
	p := filepath.Join(t.TempDir(), "pme2go-backup.conf")
	if err := os.WriteFile(p, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := backupconfig.Load(p, func(k string) (string, bool) { v, ok := env[k]; return v, ok })
	if err != nil {
		t.Fatalf("pgharness: config: %v", err)
	}
	return cfg
}

// Package integration holds tests that cross packages: full backups taken,
// verified, listed, cleaned up and restored against real PostgreSQL, and the
// CLI driven as an operator would.
package integration

import (
	"testing"

	"github.com/pme2go/pme2go-backup/engine/config"
	"github.com/pme2go/pme2go-backup/tests/pgharness"
)

// cfgEnv returns the configuration environment for a cluster and databases.
func cfgEnv(t *testing.T, c *pgharness.Cluster, dbs []string, extra ...string) map[string]string {
	return pgharness.ConfigEnv(t, c, dbs, extra...)
}

// loadCfg builds a validated configuration from env.
func loadCfg(t *testing.T, env map[string]string) *config.Config {
	return pgharness.LoadConfig(t, env)
}

package bench

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/pme2go/pme2go-backup/engine/config"
	"github.com/pme2go/pme2go-backup/engine/crypt"
	"github.com/pme2go/pme2go-backup/engine/ops"
	"github.com/pme2go/pme2go-backup/tests/pgharness"
)

// BenchmarkEncryption measures what age encryption costs a full backup and
// its verification: the same database backed up with and without
// BACKUP_ENCRYPTION_RECIPIENTS, for xz (default) and zstd, alternating
// plain and encrypted runs (BENCH_ROUNDS, default 2; the fastest run of each
// is reported) so that both sides meet the same machine load.
func BenchmarkEncryption(b *testing.B) {
	c := pgharness.Start(b)
	c.CreateDB(b, "bench")
	pgharness.LoadBulk(b, c, "bench", benchMB())
	var dbSize int64
	if err := c.Conn(b, "bench").QueryRow(context.Background(), `SELECT pg_database_size('bench')`).Scan(&dbSize); err != nil {
		b.Fatal(err)
	}
	pub, key, err := crypt.TestKeys(b.TempDir(), "bench")
	if err != nil {
		b.Fatal(err)
	}
	defer crypt.Configure(crypt.Settings{})
	rounds := envInt("BENCH_ROUNDS", 2)
	fmt.Printf("encryption: database %d MB on disk, %d rounds, fastest of each\n", dbSize>>20, rounds)
	for i := 0; i < b.N; i++ {
		for _, codec := range []string{"xz", "zstd"} {
			best := map[bool][2]result{}
			for r := 0; r < rounds; r++ {
				for _, enc := range []bool{false, true} {
					dir := filepath.Join(b.TempDir(), "backups")
					cfg := cryptConfig(b, c, codec, dir, enc, pub, key)
					t0 := time.Now()
					res, err := ops.Full(context.Background(), cfg, ops.FullOptions{Trigger: "bench"}, nil)
					if err != nil {
						b.Fatalf("full backup (%s, encrypted %v): %v", codec, enc, err)
					}
					full := result{wall: time.Since(t0), size: res.Size}
					t0 = time.Now()
					if v, err := ops.Verify(context.Background(), cfg, ops.VerifyOptions{}, nil); err != nil || v.Failed != 0 {
						b.Fatalf("verify (%s, encrypted %v): %v", codec, enc, err)
					}
					verify := result{wall: time.Since(t0), size: res.Size}
					if prev, ok := best[enc]; !ok || full.wall < prev[0].wall {
						prev[0] = full
						best[enc] = prev
					}
					if prev := best[enc]; prev[1].wall == 0 || verify.wall < prev[1].wall {
						prev[1] = verify
						best[enc] = prev
					}
					os.RemoveAll(dir)
				}
			}
			for k, what := range []string{"full", "verify"} {
				p, e := best[false][k], best[true][k]
				p.name = fmt.Sprintf("%s (%s), plaintext", what, codec)
				e.name = fmt.Sprintf("%s (%s), encrypted (age)", what, codec)
				report([]result{p, e})
			}
		}
	}
}

// cryptConfig is a bench configuration, with encryption when enc is set.
func cryptConfig(b *testing.B, c *pgharness.Cluster, codec, dir string, enc bool, pub, key string) *config.Config {
	env := map[string]string{"BACKUP_DIR": dir, "DB_HOST": c.SocketDir, "DB_PORT": strconv.Itoa(c.Port),
		"DB_USER": "postgres", "DB_NAME": "bench", "BACKUP_COMPRESSION": codec}
	if enc {
		env["BACKUP_ENCRYPTION_RECIPIENTS"], env["BACKUP_ENCRYPTION_IDENTITY_FILE"] = pub, key
	}
	conf := filepath.Join(b.TempDir(), "bench.conf")
	os.WriteFile(conf, nil, 0o600)
	cfg, err := config.Load(conf, func(k string) (string, bool) { v, ok := env[k]; return v, ok })
	if err != nil {
		b.Fatal(err)
	}
	return cfg
}

// Package bench measures pme2go-backup against the obvious alternatives in
// the same run, on a generated database of mixed data. Run it with
// `make bench` (BENCH_MB sets the database size, default 500). It reports
// wall time, archive size and their ratios; it asserts nothing about speed.
package bench

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"testing"
	"time"

	"github.com/pme2go/pme2go-backup/engine/backup"
	"github.com/pme2go/pme2go-backup/engine/config"
	"github.com/pme2go/pme2go-backup/tests/pgharness"
)

type result struct {
	name string
	wall time.Duration
	size int64
}

func benchMB() int { return envInt("BENCH_MB", 500) }

// envInt reads a positive integer from the environment, or def.
func envInt(name string, def int) int {
	if n, err := strconv.Atoi(os.Getenv(name)); err == nil && n > 0 {
		return n
	}
	return def
}

// BenchmarkFullBackup compares `pme2go-backup full` (default codec, and
// zstd) with pg_dump -Fc and pg_dump -Fd -j<cores> on the same database.
func BenchmarkFullBackup(b *testing.B) {
	c := pgharness.Start(b)
	c.CreateDB(b, "bench")
	t0 := time.Now()
	pgharness.LoadBulk(b, c, "bench", benchMB())
	conn := c.Conn(b, "bench")
	var dbSize int64
	if err := conn.QueryRow(context.Background(), `SELECT pg_database_size('bench')`).Scan(&dbSize); err != nil {
		b.Fatal(err)
	}
	fmt.Printf("database: %d MB on disk, loaded in %s, %d cores\n", dbSize>>20, time.Since(t0).Round(time.Second), runtime.NumCPU())
	out := b.TempDir()
	jobs := strconv.Itoa(runtime.NumCPU())
	pgDump := c.Bin("pg_dump")
	for i := 0; i < b.N; i++ {
		var rs []result
		rs = append(rs, timeCmd(b, "pg_dump -Fc", c, filepath.Join(out, "fc.dump"), pgDump, "-Fc", "-f", filepath.Join(out, "fc.dump"), "bench"))
		rs = append(rs, timeCmd(b, "pg_dump -Fd -j"+jobs, c, filepath.Join(out, "fd"), pgDump, "-Fd", "-j", jobs, "-f", filepath.Join(out, "fd"), "bench"))
		for _, codec := range []string{"xz", "zstd"} {
			rs = append(rs, timeFull(b, c, codec, filepath.Join(out, "pme2go-"+codec)))
		}
		report(rs)
		for _, p := range []string{"fc.dump", "fd", "pme2go-xz", "pme2go-zstd"} {
			os.RemoveAll(filepath.Join(out, p))
		}
	}
}

func timeCmd(b *testing.B, name string, c *pgharness.Cluster, outPath, bin string, args ...string) result {
	cmd := exec.Command(bin, args...)
	cmd.Env = append(os.Environ(), c.Env("bench")...)
	start := time.Now()
	if o, err := cmd.CombinedOutput(); err != nil {
		b.Fatalf("%s: %v\n%s", name, err, o)
	}
	return result{name: name, wall: time.Since(start), size: duSize(outPath)}
}

func timeFull(b *testing.B, c *pgharness.Cluster, codec, dir string) result {
	env := map[string]string{"BACKUP_DIR": dir, "DB_HOST": c.SocketDir, "DB_PORT": strconv.Itoa(c.Port),
		"DB_USER": "postgres", "DB_NAME": "bench", "BACKUP_COMPRESSION": codec}
	conf := filepath.Join(b.TempDir(), "bench.conf")
	os.WriteFile(conf, nil, 0o600)
	cfg, err := config.Load(conf, func(k string) (string, bool) { v, ok := env[k]; return v, ok })
	if err != nil {
		b.Fatal(err)
	}
	start := time.Now()
	res, err := backup.Full(context.Background(), cfg, backup.Options{Trigger: "bench", Log: slog.New(slog.NewTextHandler(os.Stdout, nil))})
	if err != nil {
		b.Fatalf("full backup (%s): %v", codec, err)
	}
	name := "pme2go-backup full"
	if codec != "xz" {
		name += " (" + codec + ")"
	}
	return result{name: name, wall: time.Since(start), size: res.Size}
}

func duSize(p string) int64 {
	var n int64
	filepath.Walk(p, func(_ string, info os.FileInfo, err error) error {
		if err == nil && info.Mode().IsRegular() {
			n += info.Size()
		}
		return nil
	})
	return n
}

func report(rs []result) {
	base := rs[0]
	fmt.Printf("%-32s %10s %12s %12s %12s\n", "command", "wall", "size MB", "time ratio", "size ratio")
	for _, r := range rs {
		fmt.Printf("%-32s %10s %12.1f %12.2f %12.2f\n", r.name, r.wall.Round(10*time.Millisecond),
			float64(r.size)/(1<<20), r.wall.Seconds()/base.wall.Seconds(), float64(r.size)/float64(base.size))
	}
	fmt.Printf("(ratios against %s)\n", base.name)
}

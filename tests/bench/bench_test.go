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

	"github.com/pme2go/pme2go-backup/engine/config"
	"github.com/pme2go/pme2go-backup/engine/ops"
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
// zstd) with pg_dump -Fc and pg_dump -Fd -j<cores> on the same database,
// then `pme2go-backup restore` of those archives with pg_restore -j<cores>
// of the pg_dump -Fd dump, each into a new database.
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
		var archives []string
		for _, codec := range []string{"xz", "zstd"} {
			r, path := timeFull(b, c, codec, filepath.Join(out, "pme2go-"+codec))
			rs = append(rs, r)
			archives = append(archives, path)
		}
		fmt.Println("full backup:")
		report(rs)

		// Restore of the same data: pg_restore -j<cores> of the pg_dump -Fd
		// dump against pme2go-backup restore of its archives (which verifies,
		// extracts and runs pg_restore -j into a scratch database it then
		// swaps in).
		rr := []result{timeCmd(b, "pg_restore -j"+jobs+" (of pg_dump -Fd)", c, "", c.Bin("pg_restore"), "-j", jobs, "-d", createDB(b, c, fmt.Sprintf("r_pgrestore_%d", i)), filepath.Join(out, "fd"))}
		for k, codec := range []string{"xz", "zstd"} {
			rr = append(rr, timeRestore(b, c, codec, archives[k], fmt.Sprintf("r_pme2go_%s_%d", codec, i)))
		}
		fmt.Println("restore:")
		report(rr)
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

// benchConfig is the configuration of a run with codec, backups in dir.
func benchConfig(b *testing.B, c *pgharness.Cluster, codec, dir string) *config.Config {
	env := map[string]string{"BACKUP_DIR": dir, "DB_HOST": c.SocketDir, "DB_PORT": strconv.Itoa(c.Port),
		"DB_USER": "postgres", "DB_NAME": "bench", "BACKUP_COMPRESSION": codec}
	conf := filepath.Join(b.TempDir(), "bench.conf")
	os.WriteFile(conf, nil, 0o600)
	cfg, err := config.Load(conf, func(k string) (string, bool) { v, ok := env[k]; return v, ok })
	if err != nil {
		b.Fatal(err)
	}
	return cfg
}

// timeFull takes a full backup through the front door and returns its
// figures and archive path.
func timeFull(b *testing.B, c *pgharness.Cluster, codec, dir string) (result, string) {
	cfg := benchConfig(b, c, codec, dir)
	start := time.Now()
	res, err := ops.Full(context.Background(), cfg, ops.FullOptions{Trigger: "bench", Log: slog.New(slog.NewTextHandler(os.Stdout, nil))}, nil)
	if err != nil {
		b.Fatalf("full backup (%s): %v", codec, err)
	}
	name := "pme2go-backup full"
	if codec != "xz" {
		name += " (" + codec + ")"
	}
	return result{name: name, wall: time.Since(start), size: res.Size}, res.Path
}

// timeRestore restores archive into a new database db through the front door.
func timeRestore(b *testing.B, c *pgharness.Cluster, codec, archive, db string) result {
	cfg := benchConfig(b, c, codec, filepath.Dir(filepath.Dir(archive)))
	start := time.Now()
	if _, err := ops.Restore(context.Background(), cfg, ops.RestoreOptions{Backup: archive, TargetDB: db}, nil); err != nil {
		b.Fatalf("restore (%s): %v", codec, err)
	}
	return result{name: "pme2go-backup restore (" + codec + ")", wall: time.Since(start)}
}

// createDB creates an empty database and returns its name.
func createDB(b *testing.B, c *pgharness.Cluster, db string) string {
	c.CreateDB(b, db)
	return db
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
	fmt.Printf("%-40s %10s %12s %12s %12s\n", "command", "wall", "size MB", "time ratio", "size ratio")
	for _, r := range rs {
		size, ratio := "-", "-"
		if r.size > 0 && base.size > 0 {
			size, ratio = fmt.Sprintf("%.1f", float64(r.size)/(1<<20)), fmt.Sprintf("%.2f", float64(r.size)/float64(base.size))
		}
		fmt.Printf("%-40s %10s %12s %12.2f %12s\n", r.name, r.wall.Round(10*time.Millisecond), size, r.wall.Seconds()/base.wall.Seconds(), ratio)
	}
	fmt.Printf("(ratios against %s)\n", base.name)
}

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
	"strings"
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

// fullCase is one database of BenchmarkFullBackup.
type fullCase struct {
	name string
	mb   int  // bulk data (pgharness.LoadBulk)
	many bool // plus 150 small tables and 200 large objects
}

// fullCases are the databases measured: the generated bulk data at a small
// size (BENCH_SMALL_MB, default 30) and at BENCH_MB, and a small database
// of many small objects (tables and large objects, where per-member
// overhead shows), each measured in the same run.
func fullCases() []fullCase {
	return []fullCase{
		{name: "small", mb: envInt("BENCH_SMALL_MB", 30)},
		{name: "objects", mb: 10, many: true},
		{name: "large", mb: benchMB()},
	}
}

// loadManyObjects adds 150 small tables (10 to 1,053 rows) and 200 small
// large objects to db.
func loadManyObjects(b *testing.B, c *pgharness.Cluster, db string) {
	conn := c.Conn(b, db)
	for i := 0; i < 150; i++ {
		if _, err := conn.Exec(context.Background(), fmt.Sprintf(`CREATE TABLE public.small_%d (id int PRIMARY KEY, name text, v numeric, at timestamptz);
			INSERT INTO public.small_%d SELECT g, 'item ' || g || ' of %d', g * 1.5, timestamptz '2024-01-01 00:00:00+00' - g * interval '1 minute' FROM generate_series(1, %d) g`, i, i, i, 10+i*7)); err != nil {
			b.Fatal(err)
		}
	}
	if _, err := conn.Exec(context.Background(), `SELECT lo_from_bytea(0, convert_to(repeat('large object ' || g, 50), 'UTF8')) FROM generate_series(1, 200) g`); err != nil {
		b.Fatal(err)
	}
}

// loadAvg is the machine's load average over the last minute, as text.
func loadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "?"
	}
	f := strings.Fields(string(b))
	if len(f) == 0 {
		return "?"
	}
	return f[0]
}

// BenchmarkFullBackup compares `pme2go-backup full` (default codec, and
// zstd) with pg_dump -Fc and pg_dump -Fd -j<cores> on the same database,
// then `pme2go-backup restore` of those archives with pg_restore -j<cores>
// of the pg_dump -Fd dump, each into a new database; for each of
// fullCases, in one cluster.
func BenchmarkFullBackup(b *testing.B) {
	c := pgharness.Start(b)
	for _, fc := range fullCases() {
		b.Run(fc.name, func(b *testing.B) { benchFull(b, c, fc) })
	}
}

func benchFull(b *testing.B, c *pgharness.Cluster, fc fullCase) {
	db := "bench_" + fc.name
	c.CreateDB(b, db)
	t0 := time.Now()
	pgharness.LoadBulk(b, c, db, fc.mb)
	if fc.many {
		loadManyObjects(b, c, db)
	}
	conn := c.Conn(b, db)
	var dbSize int64
	if err := conn.QueryRow(context.Background(), `SELECT pg_database_size(current_database())`).Scan(&dbSize); err != nil {
		b.Fatal(err)
	}
	fmt.Printf("\n== %s: database %d MB on disk (bulk %d MB%s), loaded in %s, %d cores, load average %s\n", fc.name, dbSize>>20, fc.mb,
		map[bool]string{true: " + 150 small tables + 200 large objects"}[fc.many], time.Since(t0).Round(time.Second), runtime.NumCPU(), loadAvg())
	out := b.TempDir()
	jobs := strconv.Itoa(runtime.NumCPU())
	pgDump := c.Bin("pg_dump")
	for i := 0; i < b.N; i++ {
		var rs []result
		rs = append(rs, timeCmd(b, "pg_dump -Fc", c, db, filepath.Join(out, "fc.dump"), pgDump, "-Fc", "-f", filepath.Join(out, "fc.dump"), db))
		rs = append(rs, timeCmd(b, "pg_dump -Fd -j"+jobs, c, db, filepath.Join(out, "fd"), pgDump, "-Fd", "-j", jobs, "-f", filepath.Join(out, "fd"), db))
		var archives []string
		for _, codec := range []string{"xz", "zstd"} {
			r, path := timeFull(b, c, db, codec, filepath.Join(out, "pme2go-"+codec))
			rs = append(rs, r)
			archives = append(archives, path)
		}
		fmt.Printf("full backup (%s, load average %s after):\n", fc.name, loadAvg())
		report(rs)

		// Restore of the same data: pg_restore -j<cores> of the pg_dump -Fd
		// dump against pme2go-backup restore of its archives (which
		// verifies and extracts in one pass while pg_restore -j fills a
		// scratch database it then swaps in).
		rr := []result{timeCmd(b, "pg_restore -j"+jobs+" (of pg_dump -Fd)", c, db, "", c.Bin("pg_restore"), "-j", jobs, "-d", createDB(b, c, fmt.Sprintf("r_%s_pgrestore_%d", fc.name, i)), filepath.Join(out, "fd"))}
		// The same with the database's creation timed too, as a restore
		// creates its scratch database.
		created := time.Now()
		cdb := createDB(b, c, fmt.Sprintf("r_%s_pgrestorec_%d", fc.name, i))
		r := timeCmd(b, "CREATE DATABASE + pg_restore -j"+jobs, c, db, "", c.Bin("pg_restore"), "-j", jobs, "-d", cdb, filepath.Join(out, "fd"))
		r.wall = time.Since(created)
		rr = append(rr, r)
		for k, codec := range []string{"xz", "zstd"} {
			rr = append(rr, timeRestore(b, c, db, codec, archives[k], fmt.Sprintf("r_%s_pme2go_%s_%d", fc.name, codec, i)))
		}
		fmt.Printf("restore (%s, load average %s after):\n", fc.name, loadAvg())
		report(rr)
		for _, p := range []string{"fc.dump", "fd", "pme2go-xz", "pme2go-zstd"} {
			os.RemoveAll(filepath.Join(out, p))
		}
	}
}

func timeCmd(b *testing.B, name string, c *pgharness.Cluster, db, outPath, bin string, args ...string) result {
	cmd := exec.Command(bin, args...)
	cmd.Env = append(os.Environ(), c.Env(db)...)
	start := time.Now()
	if o, err := cmd.CombinedOutput(); err != nil {
		b.Fatalf("%s: %v\n%s", name, err, o)
	}
	return result{name: name, wall: time.Since(start), size: duSize(outPath)}
}

// benchConfig is the configuration of a run with codec, backups in dir.
func benchConfig(b *testing.B, c *pgharness.Cluster, db, codec, dir string) *config.Config {
	env := map[string]string{"BACKUP_DIR": dir, "DB_HOST": c.SocketDir, "DB_PORT": strconv.Itoa(c.Port),
		"DB_USER": "postgres", "DB_NAME": db, "BACKUP_COMPRESSION": codec}
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
func timeFull(b *testing.B, c *pgharness.Cluster, db, codec, dir string) (result, string) {
	cfg := benchConfig(b, c, db, codec, dir)
	start := time.Now()
	hopts := &slog.HandlerOptions{}
	if os.Getenv("BENCH_PHASES") != "" {
		hopts.Level = slog.LevelDebug
	}
	res, err := ops.Full(context.Background(), cfg, ops.FullOptions{Trigger: "bench", Log: slog.New(slog.NewTextHandler(os.Stdout, hopts))}, nil)
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
func timeRestore(b *testing.B, c *pgharness.Cluster, source, codec, archive, db string) result {
	cfg := benchConfig(b, c, source, codec, filepath.Dir(filepath.Dir(archive)))
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

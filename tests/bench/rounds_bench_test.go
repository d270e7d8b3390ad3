package bench

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pme2go/pme2go-backup/engine/ops"
	"github.com/pme2go/pme2go-backup/tests/pgharness"
)

// BenchmarkFullRounds measures a full backup against pg_dump -Fc and a full
// restore (verification included) against pg_restore -j<cores> of a
// pg_dump -Fd dump of the same database, BENCH_ROUNDS times (default 5)
// in alternating order, and reports the median of each side and the
// median of the per-round ratios, with the load average before and after.
// BENCH_ROUNDS_CASES selects the databases of fullCases (default
// "small,objects"). The restore's own log (debug level) is kept per round:
// BENCH_PHASES=1 prints the phases of every round. BENCH_CPUPROFILE=FILE
// writes a CPU profile of the pme2go-backup restores (in-process work
// only: pg_restore and the server are other processes).
func BenchmarkFullRounds(b *testing.B) {
	rounds := envInt("BENCH_ROUNDS", 5)
	want := map[string]bool{}
	for _, n := range strings.Split(orEnv("BENCH_ROUNDS_CASES", "small,objects"), ",") {
		want[strings.TrimSpace(n)] = true
	}
	c := pgharness.Start(b)
	for _, fc := range fullCases() {
		if !want[fc.name] {
			continue
		}
		b.Run(fc.name, func(b *testing.B) { benchRounds(b, c, fc, rounds) })
	}
}

func orEnv(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}

// phaseLog records the restore's log records with their offset from its
// start.
type phaseLog struct {
	mu    sync.Mutex
	start time.Time
	lines []string
}

func (p *phaseLog) Enabled(context.Context, slog.Level) bool { return true }
func (p *phaseLog) WithAttrs([]slog.Attr) slog.Handler       { return p }
func (p *phaseLog) WithGroup(string) slog.Handler            { return p }
func (p *phaseLog) Handle(_ context.Context, r slog.Record) error {
	var sb strings.Builder
	fmt.Fprintf(&sb, "%7.3fs %s", r.Time.Sub(p.start).Seconds(), r.Message)
	if r.Message == "pme2go-backup object left out of the restore" {
		return nil
	}
	r.Attrs(func(a slog.Attr) bool {
		switch a.Key {
		case "database", "backup", "entry", "object", "error", "owner":
		default:
			fmt.Fprintf(&sb, " %s=%v", a.Key, a.Value)
		}
		return true
	})
	p.mu.Lock()
	p.lines = append(p.lines, sb.String())
	p.mu.Unlock()
	return nil
}

func median(ds []time.Duration) time.Duration {
	s := append([]time.Duration(nil), ds...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

func medianF(fs []float64) float64 {
	s := append([]float64(nil), fs...)
	sort.Float64s(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

func benchRounds(b *testing.B, c *pgharness.Cluster, fc fullCase, rounds int) {
	db := "rounds_" + fc.name
	c.CreateDB(b, db)
	pgharness.LoadBulk(b, c, db, fc.mb)
	if fc.many {
		loadManyObjects(b, c, db)
	}
	c.Exec(b, db, "VACUUM ANALYZE")
	out := b.TempDir()
	jobs := strconv.Itoa(runtime.NumCPU())
	fmt.Printf("\n== rounds %s: %d rounds, %d cores, load average %s\n", fc.name, rounds, runtime.NumCPU(), loadAvg())
	var dumpFc, full []time.Duration
	var fullRatio []float64
	var size, fcSize int64
	var archive string
	if prof := os.Getenv("BENCH_CPUPROFILE"); prof != "" {
		f, err := os.Create(prof + ".backup." + fc.name)
		if err != nil {
			b.Fatal(err)
		}
		pprof.StartCPUProfile(f)
		defer f.Close()
	}
	for i := 0; i < envInt("BENCH_BACKUP_ROUNDS", rounds); i++ {
		fcPath := filepath.Join(out, "fc.dump")
		dir := filepath.Join(out, fmt.Sprintf("pme2go-%d", i))
		var a, p result
		var path string
		first := func() { a = timeCmd(b, "pg_dump -Fc", c, db, fcPath, c.Bin("pg_dump"), "-Fc", "-f", fcPath, db) }
		second := func() { p, path = timeFull(b, c, db, "xz", dir) }
		if i%2 == 0 {
			first()
			second()
		} else {
			second()
			first()
		}
		os.Remove(fcPath)
		if os.Getenv("BENCH_DUMPJ") != "" {
			// pg_dump as a full backup runs it (uncompressed directory
			// format), with one and with <cores> jobs.
			for _, j := range []string{"1", jobs} {
				d := filepath.Join(out, "dumpj")
				r := timeCmd(b, "pg_dump -Fd -Z0 -j"+j, c, db, d, c.Bin("pg_dump"), "-Fd", "-Z0", "-j", j, "-f", d, db)
				fmt.Printf("    pg_dump -Fd -Z0 -j%s %s\n", j, r.wall.Round(10*time.Millisecond))
				os.RemoveAll(d)
			}
		}
		dumpFc, full = append(dumpFc, a.wall), append(full, p.wall)
		fullRatio = append(fullRatio, p.wall.Seconds()/a.wall.Seconds())
		size, fcSize = p.size, a.size
		if archive != "" {
			os.RemoveAll(filepath.Dir(filepath.Dir(archive)))
		}
		archive = path
		fmt.Printf("backup round %d: pg_dump -Fc %s, full %s, ratio %.2f (load %s)\n", i, a.wall.Round(10*time.Millisecond), p.wall.Round(10*time.Millisecond), fullRatio[i], loadAvg())
	}
	fmt.Printf("backup %s: median pg_dump -Fc %s, median full (xz) %s, median ratio %.2f, size %.2f MB vs %.2f MB (%.2f)\n", fc.name,
		median(dumpFc).Round(10*time.Millisecond), median(full).Round(10*time.Millisecond), medianF(fullRatio),
		float64(size)/(1<<20), float64(fcSize)/(1<<20), float64(size)/float64(fcSize))

	if os.Getenv("BENCH_CPUPROFILE") != "" {
		pprof.StopCPUProfile()
	}
	fd := filepath.Join(out, "fd")
	timeCmd(b, "pg_dump -Fd", c, db, fd, c.Bin("pg_dump"), "-Fd", "-j", jobs, "-f", fd, db)
	if prof := os.Getenv("BENCH_CPUPROFILE"); prof != "" {
		f, err := os.Create(prof + ".restore." + fc.name)
		if err != nil {
			b.Fatal(err)
		}
		defer f.Close()
		pprof.StartCPUProfile(f)
		defer pprof.StopCPUProfile()
	}
	var pgr, pgrc, ours []time.Duration
	var ratio, ratioC []float64
	for i := 0; i < rounds; i++ {
		var tc, tr, to time.Duration
		var pl *phaseLog
		plain := func() {
			start := time.Now()
			target := createDB(b, c, fmt.Sprintf("rr_%s_pg_%d", fc.name, i))
			tc = time.Since(start)
			r := timeCmd(b, "pg_restore", c, db, "", c.Bin("pg_restore"), "-j", jobs, "-d", target, fd)
			tr = r.wall
		}
		mine := func() {
			cfg := benchConfig(b, c, db, "xz", filepath.Dir(filepath.Dir(archive)))
			pl = &phaseLog{start: time.Now()}
			start := time.Now()
			if _, err := ops.Restore(context.Background(), cfg, ops.RestoreOptions{Backup: archive, TargetDB: fmt.Sprintf("rr_%s_pme2go_%d", fc.name, i), Log: slog.New(pl)}, nil); err != nil {
				b.Fatalf("restore: %v", err)
			}
			to = time.Since(start)
		}
		if i%2 == 0 {
			plain()
			mine()
		} else {
			mine()
			plain()
		}
		pgr, pgrc, ours = append(pgr, tr), append(pgrc, tc+tr), append(ours, to)
		ratio, ratioC = append(ratio, to.Seconds()/tr.Seconds()), append(ratioC, to.Seconds()/(tc+tr).Seconds())
		fmt.Printf("restore round %d: pg_restore -j%s %s (+CREATE DATABASE %s), restore %s, ratio %.2f (%.2f) (load %s)\n", i, jobs,
			tr.Round(10*time.Millisecond), tc.Round(10*time.Millisecond), to.Round(10*time.Millisecond), ratio[i], ratioC[i], loadAvg())
		if os.Getenv("BENCH_PHASES") != "" || i == 0 {
			for _, l := range pl.lines {
				fmt.Println("    " + l)
			}
		}
		for _, d := range []string{fmt.Sprintf("rr_%s_pg_%d", fc.name, i), fmt.Sprintf("rr_%s_pme2go_%d", fc.name, i)} {
			c.Exec(b, "postgres", "DROP DATABASE "+d)
		}
	}
	fmt.Printf("restore %s: median pg_restore -j%s %s, with CREATE DATABASE %s, restore (xz) %s; median ratio %.2f, to create+restore %.2f (load %s)\n", fc.name, jobs,
		median(pgr).Round(10*time.Millisecond), median(pgrc).Round(10*time.Millisecond), median(ours).Round(10*time.Millisecond), medianF(ratio), medianF(ratioC), loadAvg())
}

// BenchmarkCreateDatabase times CREATE DATABASE … TEMPLATE template0 with
// STRATEGY WAL_LOG (PostgreSQL 15's default) and FILE_COPY, alternating,
// BENCH_ROUNDS times each, with and without dirty shared buffers (an
// UPDATE of BENCH_SMALL_MB of bulk data just before), as a restore creates
// its scratch database on a server that may be busy.
func BenchmarkCreateDatabase(b *testing.B) {
	rounds := envInt("BENCH_ROUNDS", 5)
	c := pgharness.Start(b)
	c.CreateDB(b, "dirty")
	pgharness.LoadBulk(b, c, "dirty", envInt("BENCH_SMALL_MB", 30))
	for _, dirty := range []bool{false, true} {
		times := map[string][]time.Duration{}
		for i := 0; i < rounds; i++ {
			for k, strategy := range []string{"WAL_LOG", "FILE_COPY"} {
				if i%2 == 1 {
					strategy = []string{"FILE_COPY", "WAL_LOG"}[k]
				}
				if dirty {
					c.Exec(b, "dirty", "UPDATE bulk.events SET id = id")
				} else {
					c.Exec(b, "postgres", "CHECKPOINT")
				}
				name := fmt.Sprintf("cdb_%s_%d", strings.ToLower(strategy), i)
				start := time.Now()
				c.Exec(b, "postgres", "CREATE DATABASE "+name+" TEMPLATE template0 STRATEGY "+strategy)
				times[strategy] = append(times[strategy], time.Since(start))
				c.Exec(b, "postgres", "DROP DATABASE "+name)
			}
		}
		fmt.Printf("CREATE DATABASE (dirty buffers %v): median WAL_LOG %s, FILE_COPY %s (load %s)\n", dirty,
			median(times["WAL_LOG"]).Round(time.Millisecond), median(times["FILE_COPY"]).Round(time.Millisecond), loadAvg())
	}
}

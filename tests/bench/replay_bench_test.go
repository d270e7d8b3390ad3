package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/pme2go/pme2go-backup/engine/backup"
	"github.com/pme2go/pme2go-backup/engine/incremental"
	"github.com/pme2go/pme2go-backup/tests/pgharness"
)

// replayWorkload is one source workload of BenchmarkReplay: setup creates
// its tables in db (before the full backup), write runs it and returns the
// rows it wrote (inserted, updated or deleted: the changes replay applies).
type replayWorkload struct {
	name  string
	setup func(b *testing.B, c *pgharness.Cluster, db string)
	write func(b *testing.B, c *pgharness.Cluster, db string, secs int) int64
}

// BenchmarkReplay measures point-in-time replay against the rate at which
// the source wrote the same rows, on three workloads, each in its own
// database of one cluster, measured in the same run:
//
//   - tpcb+bulk: pgbench TPC-B (three updates and an insert per
//     transaction, 4 clients) for BENCH_SECONDS, then five transactions
//     inserting 100,000 rows each, as a batch job would;
//   - bulk: inserts only, 1,000 rows per statement and transaction, 2
//     clients, BENCH_SECONDS/2;
//   - toast: updates only, of rows holding 4 kB TOASTed documents (stored
//     out of line): 19 of 20 leave the document unchanged (pgoutput does not
//     send it and replay must not overwrite it), 1 in 20 rewrites it; 4
//     clients, BENCH_SECONDS.
//
// Each is captured by `incremental` after a full backup and restored with
// `restore --latest --json` into a new database. It reports both rates in
// source rows per second (the replay's from the replay time the restore
// reports, which ends with the durable settle), their ratio and the
// restore's peak RSS (its rusage, children included). BENCH_OWNER_CODE=1
// gives the TPC-B accounts table to a role that is not a superuser, with a
// CHECK calling that role's PL/pgSQL function, so that replay applies its
// changes with the owner's privileges (see engine/apply/safety.go).
// BENCH_REPLAY selects workloads by name (comma-separated).
//
// To compare builds under the same load, BENCH_REPLAY_BINS names other
// CLI binaries (label=path, comma-separated, e.g. a build of main) and
// BENCH_REPLAY_RUNS how many restores of the same capture each makes
// (default 1): they run alternately, each after a CHECKPOINT (not timed),
// in an order that rotates per run, and the median ratio of each build is
// printed. Each restore's line carries the load average and the replay's
// phases (prepare, apply, finish, settle) from its log.
// BENCH_REPLAY_EXPLAIN=1 starts the cluster with auto_explain and prints
// the server log: statements over 200 ms with their plans (ANALYZE,
// BUFFERS), and the checkpoints.
func BenchmarkReplay(b *testing.B) {
	secs := envInt("BENCH_SECONDS", 30)
	var opts []pgharness.Option
	if os.Getenv("BENCH_REPLAY_EXPLAIN") == "1" {
		for _, kv := range [][2]string{{"shared_preload_libraries", "'auto_explain'"}, {"auto_explain.log_min_duration", "'" + explainMin + "'"},
			{"auto_explain.log_analyze", "on"}, {"auto_explain.log_buffers", "on"}, {"log_min_duration_statement", "'" + explainMin + "'"},
			{"log_checkpoints", "on"}, {"log_min_messages", "log"}} {
			opts = append(opts, pgharness.WithSetting(kv[0], kv[1]))
		}
	}
	c := pgharness.Start(b, opts...)
	bin := buildCLI(b)
	conf := filepath.Join(b.TempDir(), "empty.conf")
	os.WriteFile(conf, nil, 0o600)
	pgbench := func(db string, args ...string) {
		cmd := exec.Command(c.Bin("pgbench"), append(args, db)...)
		cmd.Env = append(os.Environ(), c.Env(db)...)
		if out, err := cmd.CombinedOutput(); err != nil {
			b.Fatalf("pgbench %v: %v\n%s", args, err, out)
		}
	}
	count := func(db, q string) int64 {
		var n int64
		conn := c.Conn(b, db)
		defer conn.Close(context.Background())
		if err := conn.QueryRow(context.Background(), q).Scan(&n); err != nil {
			b.Fatal(err)
		}
		return n
	}
	script := func(name, text string) string {
		p := filepath.Join(b.TempDir(), name)
		if err := os.WriteFile(p, []byte(text), 0o644); err != nil {
			b.Fatal(err)
		}
		return p
	}
	workloads := []replayWorkload{
		{name: "tpcb+bulk", setup: func(b *testing.B, c *pgharness.Cluster, db string) {
			pgbench(db, "-i", "-s", "10", "-q")
			c.Exec(b, db, `CREATE TABLE batch (id bigint PRIMARY KEY, at timestamptz, payload jsonb, note text)`)
			if os.Getenv("BENCH_OWNER_CODE") == "1" {
				c.Exec(b, db, `CREATE ROLE bench_owner;
					CREATE FUNCTION bench_ok(int) RETURNS boolean LANGUAGE plpgsql IMMUTABLE AS 'BEGIN RETURN $1 IS NOT NULL; END';
					ALTER FUNCTION bench_ok(int) OWNER TO bench_owner;
					ALTER TABLE pgbench_accounts ADD CONSTRAINT bench_ok CHECK (bench_ok(abalance));
					ALTER TABLE pgbench_accounts OWNER TO bench_owner`)
			}
		}, write: func(b *testing.B, c *pgharness.Cluster, db string, secs int) int64 {
			pgbench(db, "-c", "4", "-j", "2", "-T", strconv.Itoa(secs), "-n")
			for k := 0; k < 5; k++ {
				c.Exec(b, db, `INSERT INTO batch SELECT g, now(), jsonb_build_object('k', g, 'h', md5(g::text)), repeat('n', (g % 40)::int)
					FROM generate_series($1::bigint, $1::bigint + 99999) g`, int64(k)*100000)
			}
			// pgbench's history rows: one insert and three updates each.
			return count(db, `SELECT (SELECT count(*) FROM pgbench_history) * 4 + (SELECT count(*) FROM batch)`)
		}},
		{name: "bulk", setup: func(b *testing.B, c *pgharness.Cluster, db string) {
			c.Exec(b, db, `CREATE TABLE batch (id bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY, at timestamptz, payload jsonb, note text)`)
		}, write: func(b *testing.B, c *pgharness.Cluster, db string, secs int) int64 {
			f := script("bulk.sql", `INSERT INTO batch (at, payload, note) SELECT now(), jsonb_build_object('k', g, 'h', md5(g::text || random()::text)), repeat('n', g % 40) FROM generate_series(1, 1000) g;`+"\n")
			pgbench(db, "-c", "2", "-j", "2", "-T", strconv.Itoa(max(secs/2, 1)), "-n", "-f", f)
			return count(db, `SELECT count(*) FROM batch`)
		}},
		{name: "toast", setup: func(b *testing.B, c *pgharness.Cluster, db string) {
			c.Exec(b, db, `CREATE TABLE docs (id int PRIMARY KEY, n bigint NOT NULL DEFAULT 0, touched timestamptz, doc text);
				ALTER TABLE docs ALTER doc SET STORAGE EXTERNAL;
				INSERT INTO docs (id, doc) SELECT g, (SELECT string_agg(md5(g::text || x::text), '') FROM generate_series(1, 128) x) FROM generate_series(1, 20000) g`)
		}, write: func(b *testing.B, c *pgharness.Cluster, db string, secs int) int64 {
			small := script("small.sql", "\\set id random(1, 20000)\nUPDATE docs SET n = n + 1, touched = now() WHERE id = :id;\n")
			big := script("big.sql", "\\set id random(1, 20000)\nUPDATE docs SET n = n + 1, doc = repeat(md5(random()::text), 128) WHERE id = :id;\n")
			pgbench(db, "-c", "4", "-j", "2", "-T", strconv.Itoa(secs), "-n", "-f", small+"@19", "-f", big+"@1")
			return count(db, `SELECT sum(n)::bigint FROM docs`)
		}},
	}
	only := map[string]bool{}
	for _, n := range splitList(os.Getenv("BENCH_REPLAY")) {
		only[n] = true
	}
	for i := 0; i < b.N; i++ {
		for k, wl := range workloads {
			if len(only) > 0 && !only[wl.name] {
				continue
			}
			db := fmt.Sprintf("src_%d_%d", i, k)
			c.CreateDB(b, db)
			wl.setup(b, c, db)
			env := pgharness.ConfigEnv(b, c, []string{db}, "REPLICA_IDENTITY_FIX=full")
			cfg := pgharness.LoadConfig(b, env)
			if _, err := backup.Full(context.Background(), cfg, backup.Options{Chain: incremental.NewChainStarter(cfg, nil)}); err != nil {
				b.Fatal(err)
			}
			start := time.Now()
			rows := wl.write(b, c, db, secs)
			wrote := time.Since(start)
			res, err := incremental.Take(context.Background(), cfg, incremental.Options{})
			if err != nil {
				b.Fatal(err)
			}
			bins := replayBins(bin)
			runs := envInt("BENCH_REPLAY_RUNS", 1)
			sourceRate := float64(rows) / wrote.Seconds()
			fmt.Printf("replay %-10s source: %d transactions, %d rows in %.1f s = %.0f rows/s (load average %s)\n",
				wl.name, res[0].TxCount, rows, wrote.Seconds(), sourceRate, loadAvg())
			ratios := map[string][]float64{}
			for run := 0; run < runs; run++ {
				// Each restore starts with the cluster's buffers written
				// out (not timed), so that none pays for what the one
				// before it, or the source, left dirty; the order of the
				// builds rotates from run to run.
				for k := range bins {
					rb := bins[(k+run)%len(bins)]
					c.Exec(b, "postgres", "CHECKPOINT")
					target := fmt.Sprintf("replayed_%s_%s_%d", db, rb.label, run)
					cmd := exec.Command(rb.path, "--config", conf, "restore", "--latest", "--json", "--target-db", target)
					cmd.Env = os.Environ()
					for k, v := range env {
						cmd.Env = append(cmd.Env, k+"="+v)
					}
					var stderr strings.Builder
					cmd.Stderr = &stderr
					restoreStart := time.Now()
					out, err := cmd.Output()
					if err != nil {
						b.Fatalf("restore --latest (%s, %s): %v\n%s\n%s", wl.name, rb.label, err, out, stderr.String())
					}
					restoreWall := time.Since(restoreStart)
					var r struct {
						Replay struct {
							Transactions int64   `json:"transactions"`
							Rows         int64   `json:"rows"`
							Duration     float64 `json:"duration"`
						} `json:"replay"`
					}
					if err := json.Unmarshal(out, &r); err != nil || r.Replay.Duration <= 0 {
						b.Fatalf("no replay figures (%v) in:\n%s", err, out)
					}
					replayRate := float64(rows) / r.Replay.Duration
					ratios[rb.label] = append(ratios[rb.label], replayRate/sourceRate)
					peak := cmd.ProcessState.SysUsage().(*syscall.Rusage).Maxrss << 10
					fmt.Printf("replay %-10s %-8s run %d: %d transactions in %.2f s (restore %.1f s) = %.0f rows/s = %.2f x the source's rate; restore peak RSS %.1f MB; load average %s; %s\n",
						wl.name, rb.label, run+1, r.Replay.Transactions, r.Replay.Duration, restoreWall.Seconds(),
						replayRate, replayRate/sourceRate, float64(peak)/(1<<20), loadAvg(), replayPhases(stderr.String()))
					if runs > 1 || len(bins) > 1 {
						c.Exec(b, "postgres", "DROP DATABASE "+target)
					}
				}
			}
			if runs > 1 || len(bins) > 1 {
				for _, rb := range bins {
					fmt.Printf("replay %-10s %-8s median of %d: %.2f x the source's rate %v\n", wl.name, rb.label, runs, medianF(ratios[rb.label]), fmtRatios(ratios[rb.label]))
				}
			}
			if os.Getenv("BENCH_REPLAY_EXPLAIN") == "1" {
				fmt.Printf("server log (statements over %s):\n%s\n", explainMin, c.LogTail(400))
			}
		}
	}
}

// explainMin is the duration from which on BENCH_REPLAY_EXPLAIN=1 logs
// statements and their plans (auto_explain, with ANALYZE and BUFFERS).
const explainMin = "200ms"

// replayBin is a CLI binary whose restores BenchmarkReplay measures.
type replayBin struct{ label, path string }

// replayBins returns the CLI built from this tree ("this") and the ones
// BENCH_REPLAY_BINS names (label=path, comma-separated; e.g. a build of
// main), measured alternately, run after run, under the same load.
func replayBins(built string) []replayBin {
	bins := []replayBin{{"this", built}}
	for _, item := range splitList(os.Getenv("BENCH_REPLAY_BINS")) {
		label, path, ok := strings.Cut(item, "=")
		if !ok {
			label, path = filepath.Base(item), item
		}
		bins = append(bins, replayBin{label, path})
	}
	return bins
}

// replayPhases returns the phase timings of the restore's "change sets
// replayed" log line (prepare, apply, finish, settle, batches).
func replayPhases(log string) string {
	for _, line := range strings.Split(log, "\n") {
		if !strings.Contains(line, "change sets replayed") {
			continue
		}
		var out []string
		for _, f := range strings.Fields(line) {
			for _, k := range []string{"batches=", "prepare=", "apply=", "finish=", "settle="} {
				if strings.HasPrefix(f, k) {
					out = append(out, f)
				}
			}
		}
		return strings.Join(out, " ")
	}
	return "(no phase timings logged)"
}

func fmtRatios(v []float64) string {
	var out []string
	for _, x := range v {
		out = append(out, fmt.Sprintf("%.2f", x))
	}
	return "(" + strings.Join(out, ", ") + ")"
}

// splitList splits a comma-separated list, dropping empty items.
func splitList(s string) []string {
	var out []string
	start := 0
	for i := 0; i <= len(s); i++ {
		if i == len(s) || s[i] == ',' {
			if i > start {
				out = append(out, s[start:i])
			}
			start = i + 1
		}
	}
	return out
}

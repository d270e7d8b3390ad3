package bench

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/pme2go/pme2go-backup/engine/backup"
	"github.com/pme2go/pme2go-backup/engine/incremental"
	"github.com/pme2go/pme2go-backup/tests/pgharness"
)

var replayedRe = regexp.MustCompile(`replayed (\d+) transactions \((\d+) rows, (\d+) rows/s\)`)

// BenchmarkReplay measures point-in-time replay against the rate at which
// the source wrote the same rows: a pgbench run (TPC-B: three updates and an
// insert per transaction) and a bulk phase (inserts in large transactions,
// as a batch job would), captured by `incremental`, then replayed by
// `restore --latest` into a new database. It reports rows per second on both
// sides and the restore's peak memory. BENCH_OWNER_CODE=1 gives
// pgbench_accounts to a role that is not a superuser, with a CHECK calling
// that role's PL/pgSQL function, so that replay applies its changes with
// the owner's privileges (see engine/apply/safety.go).
func BenchmarkReplay(b *testing.B) {
	secs := envInt("BENCH_SECONDS", 30)
	c := pgharness.Start(b)
	c.CreateDB(b, "bench")
	pgbench := func(args ...string) {
		cmd := exec.Command(c.Bin("pgbench"), args...)
		cmd.Env = append(os.Environ(), c.Env("bench")...)
		if out, err := cmd.CombinedOutput(); err != nil {
			b.Fatalf("pgbench %v: %v\n%s", args, err, out)
		}
	}
	pgbench("-i", "-s", "10", "-q", "bench")
	c.Exec(b, "bench", `CREATE TABLE batch (id bigint PRIMARY KEY, at timestamptz, payload jsonb, note text)`)
	if os.Getenv("BENCH_OWNER_CODE") == "1" {
		// The accounts table belongs to a role that is not a superuser and
		// has a CHECK calling that role's PL/pgSQL function: replay applies
		// its changes with its owner's privileges (the slower path).
		c.Exec(b, "bench", `CREATE ROLE bench_owner;
			CREATE FUNCTION bench_ok(int) RETURNS boolean LANGUAGE plpgsql IMMUTABLE AS 'BEGIN RETURN $1 IS NOT NULL; END';
			ALTER FUNCTION bench_ok(int) OWNER TO bench_owner;
			ALTER TABLE pgbench_accounts ADD CONSTRAINT bench_ok CHECK (bench_ok(abalance));
			ALTER TABLE pgbench_accounts OWNER TO bench_owner`)
	}
	env := pgharness.ConfigEnv(b, c, []string{"bench"}, "REPLICA_IDENTITY_FIX=full")
	cfg := pgharness.LoadConfig(b, env)
	if _, err := backup.Full(context.Background(), cfg, backup.Options{}); err != nil {
		b.Fatal(err)
	}
	bin := buildCLI(b)
	conf := filepath.Join(b.TempDir(), "empty.conf")
	os.WriteFile(conf, nil, 0o600)
	for i := 0; i < b.N; i++ {
		start := time.Now()
		pgbench("-c", "4", "-j", "2", "-T", strconv.Itoa(secs), "-n", "bench")
		oltp := time.Since(start)
		bulkStart := time.Now()
		for k := 0; k < 5; k++ {
			c.Exec(b, "bench", `INSERT INTO batch SELECT g, now(), jsonb_build_object('k', g, 'h', md5(g::text)), repeat('n', (g % 40)::int)
				FROM generate_series($1::bigint, $1::bigint + 99999) g`, int64(k)*100000)
		}
		bulk := time.Since(bulkStart)
		res, err := incremental.Take(context.Background(), cfg, incremental.Options{})
		if err != nil {
			b.Fatal(err)
		}
		rows := countChanges(b, c)
		cmd := exec.Command(bin, "--config", conf, "restore", "--latest", "--target-db", fmt.Sprintf("replayed_%d", i))
		cmd.Env = os.Environ()
		for k, v := range env {
			cmd.Env = append(cmd.Env, k+"="+v)
		}
		out, err := cmd.Output()
		if err != nil {
			b.Fatalf("restore --latest: %v\n%s", err, out)
		}
		m := replayedRe.FindStringSubmatch(string(out))
		if m == nil {
			b.Fatalf("no replay figures in:\n%s", out)
		}
		replayRate, _ := strconv.ParseFloat(m[3], 64)
		sourceRate := float64(rows) / (oltp + bulk).Seconds()
		peak := cmd.ProcessState.SysUsage().(*syscall.Rusage).Maxrss << 10
		fmt.Printf("source: %d transactions, %d rows written in %.1f s (pgbench %.1f s + bulk %.1f s): %.0f rows/s\n",
			res[0].TxCount, rows, (oltp + bulk).Seconds(), oltp.Seconds(), bulk.Seconds(), sourceRate)
		fmt.Printf("replay: %s transactions, %s rows: %.0f rows/s = %.2f x the source's rate; restore peak RSS %.1f MB\n",
			m[1], m[2], replayRate, replayRate/sourceRate, float64(peak)/(1<<20))
	}
}

// countChanges counts the rows the workload wrote: pgbench's history rows
// (one insert and three updates per transaction) and the batch rows.
func countChanges(b *testing.B, c *pgharness.Cluster) int64 {
	var hist, batch int64
	conn := c.Conn(b, "bench")
	if err := conn.QueryRow(context.Background(), `SELECT (SELECT count(*) FROM pgbench_history), (SELECT count(*) FROM batch)`).Scan(&hist, &batch); err != nil {
		b.Fatal(err)
	}
	return hist*4 + batch
}

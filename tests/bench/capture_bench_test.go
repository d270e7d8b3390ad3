package bench

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/pme2go/pme2go-backup/engine/backup"
	"github.com/pme2go/pme2go-backup/engine/incremental"
	"github.com/pme2go/pme2go-backup/tests/pgharness"
)

// buildCLI builds pme2go-backup into a temporary directory.
func buildCLI(b *testing.B) string {
	bin := filepath.Join(b.TempDir(), "pme2go-backup")
	if out, err := exec.Command("go", "build", "-o", bin, "github.com/pme2go/pme2go-backup/cmd/pme2go-backup").CombinedOutput(); err != nil {
		b.Fatalf("build: %v\n%s", err, out)
	}
	return bin
}

// peakRSS returns a process's peak resident set size (VmHWM) in bytes.
func peakRSS(pid int) int64 {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "VmHWM:"); ok {
			var kb int64
			fmt.Sscan(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), &kb)
			return kb << 10
		}
	}
	return 0
}

var tpsRe = regexp.MustCompile(`tps = ([0-9.]+)`)

// BenchmarkCapture runs pgbench at full rate while `pme2go-backup stream`
// captures the changes, then reports pgbench's rate, the capture's rate, the
// slot lag when pgbench stops, the time to catch up and the capture's peak
// memory. BENCH_SECONDS sets pgbench's duration (default 30).
func BenchmarkCapture(b *testing.B) {
	secs := envInt("BENCH_SECONDS", 30)
	c := pgharness.Start(b)
	c.CreateDB(b, "bench")
	pgbench := c.Bin("pgbench")
	run := func(args ...string) string {
		cmd := exec.Command(pgbench, args...)
		cmd.Env = append(os.Environ(), c.Env("bench")...)
		out, err := cmd.CombinedOutput()
		if err != nil {
			b.Fatalf("pgbench %v: %v\n%s", args, err, out)
		}
		return string(out)
	}
	run("-i", "-s", "10", "-q", "bench")
	// pgbench_history has no primary key: give it REPLICA IDENTITY FULL.
	env := pgharness.ConfigEnv(b, c, []string{"bench"}, "REPLICA_IDENTITY_FIX=full")
	cfg := pgharness.LoadConfig(b, env)
	if _, err := backup.Full(context.Background(), cfg, backup.Options{Chain: incremental.NewChainStarter(cfg, nil)}); err != nil {
		b.Fatal(err)
	}
	bin := buildCLI(b)
	conf := filepath.Join(b.TempDir(), "empty.conf")
	os.WriteFile(conf, nil, 0o600)
	for i := 0; i < b.N; i++ {
		stream := exec.Command(bin, "--config", conf, "stream")
		stream.Env = os.Environ()
		for k, v := range env {
			stream.Env = append(stream.Env, k+"="+v)
		}
		if err := stream.Start(); err != nil {
			b.Fatal(err)
		}
		conn := c.Conn(b, "bench")
		var startLSN string
		if err := conn.QueryRow(context.Background(), `SELECT pg_current_wal_lsn()::text`).Scan(&startLSN); err != nil {
			b.Fatal(err)
		}
		out := run("-c", "4", "-j", "2", "-T", fmt.Sprint(secs), "-n", "bench")
		tps := "?"
		if m := tpsRe.FindStringSubmatch(out); m != nil {
			tps = m[1]
		}
		lagQ := `SELECT coalesce((pg_current_wal_lsn() - confirmed_flush_lsn)::bigint, -1) FROM pg_replication_slots WHERE slot_name LIKE 'pme2go_%'`
		var lagAtEnd, walBytes int64
		if err := conn.QueryRow(context.Background(), lagQ).Scan(&lagAtEnd); err != nil {
			b.Fatal(err)
		}
		if err := conn.QueryRow(context.Background(), `SELECT (pg_current_wal_lsn() - $1::pg_lsn)::bigint`, startLSN).Scan(&walBytes); err != nil {
			b.Fatal(err)
		}
		caught := time.Now()
		for lag := lagAtEnd; lag > 64<<10 && time.Since(caught) < 5*time.Minute; time.Sleep(100 * time.Millisecond) {
			if err := conn.QueryRow(context.Background(), lagQ).Scan(&lag); err != nil {
				b.Fatal(err)
			}
		}
		catchUp := time.Since(caught)
		peak := peakRSS(stream.Process.Pid)
		stream.Process.Signal(syscall.SIGTERM)
		stream.Wait()
		res, err := incremental.Take(context.Background(), cfg, incremental.Options{})
		if err != nil || len(res) != 1 {
			b.Fatalf("incremental: %v", err)
		}
		st, _ := os.Stat(res[0].Path)
		fmt.Printf("pgbench (TPC-B, 4 clients, %ds): %s tps; WAL written %.1f MB\n", secs, tps, float64(walBytes)/(1<<20))
		fmt.Printf("captured: %d transactions (%.0f tx/s over the run), %.1f MB of WAL decoded (%.2f MB/s), archive %.1f MB\n",
			res[0].TxCount, float64(res[0].TxCount)/float64(secs), float64(walBytes)/(1<<20), float64(walBytes)/(1<<20)/float64(secs), float64(st.Size())/(1<<20))
		fmt.Printf("slot lag when pgbench stopped: %.1f KB; caught up %.2f s later; capture peak RSS %.1f MB\n",
			float64(lagAtEnd)/1024, catchUp.Seconds(), float64(peak)/(1<<20))
	}
}

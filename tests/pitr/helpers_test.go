// Package pitr_test checks point-in-time restore end to end against real
// PostgreSQL: full backups, streamed and drained change capture, and
// restores to times, LSNs, xids and marks compared row by row with the
// source as it was at that moment.
package pitr_test

import (
	"context"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pme2go/pme2go-backup/engine/apply"
	"github.com/pme2go/pme2go-backup/engine/backup"
	"github.com/pme2go/pme2go-backup/engine/config"
	"github.com/pme2go/pme2go-backup/engine/incremental"
	"github.com/pme2go/pme2go-backup/engine/restore"
	"github.com/pme2go/pme2go-backup/tests/pgharness"
)

// env is one cluster with database app, its configuration and the
// environment the CLI gets.
type env struct {
	c    *pgharness.Cluster
	vars map[string]string
	cfg  *config.Config
}

func newEnv(t *testing.T, c *pgharness.Cluster, extra ...string) *env {
	t.Helper()
	vars := map[string]string{
		"BACKUP_DIR": filepath.Join(t.TempDir(), "backups"), "DB_HOST": c.SocketDir,
		"DB_PORT": strconv.Itoa(c.Port), "DB_USER": "postgres", "DB_NAME": "app",
		"BACKUP_JOBS": "2", "BACKUP_COMPRESSION_LEVEL": "1", "REPLICA_IDENTITY_FIX": "full",
	}
	for _, kv := range extra {
		k, v, _ := strings.Cut(kv, "=")
		vars[k] = v
	}
	p := filepath.Join(t.TempDir(), "pme2go-backup.conf")
	if err := os.WriteFile(p, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Load(p, func(k string) (string, bool) { v, ok := vars[k]; return v, ok })
	if err != nil {
		t.Fatalf("config: %v", err)
	}
	return &env{c: c, vars: vars, cfg: cfg}
}

func (e *env) full(t *testing.T) *backup.Result {
	t.Helper()
	res, err := backup.Full(context.Background(), e.cfg, backup.Options{Chain: incremental.NewChainStarter(e.cfg, nil)})
	if err != nil {
		t.Fatalf("full backup: %v", err)
	}
	if len(res.Manifest.Warnings) > 0 {
		t.Logf("full backup warnings: %v", res.Manifest.Warnings)
	}
	return res
}

func (e *env) incremental(t *testing.T) *incremental.Result {
	t.Helper()
	res, err := incremental.Take(context.Background(), e.cfg, incremental.Options{})
	if err != nil {
		t.Fatalf("incremental: %v", err)
	}
	return res[0]
}

// restoreTo restores database app at target into db.
func (e *env) restoreTo(ctx context.Context, target apply.Target, db string, mod ...func(*restore.Options)) (*restore.Result, error) {
	o := restore.Options{Target: &target, TargetDB: db, NoSafetyBackup: true}
	for _, m := range mod {
		m(&o)
	}
	return restore.Run(ctx, e.cfg, o)
}

// sums returns the checksums of db's tables and materialized views,
// leaving out sequences, which a point-in-time restore sets to the values
// recorded at the end of the change set (never lower than at the target).
func sums(t *testing.T, c *pgharness.Cluster, db string) map[string]pgharness.TableSum {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	all, err := pgharness.Checksums(ctx, c.ConnString(db))
	if err != nil {
		t.Fatalf("checksums of %s: %v\n%s", db, err, activity(c))
	}
	conn := c.Conn(t, db)
	defer conn.Close(ctx)
	rows, _ := conn.Query(ctx, `SELECT format('%I.%I', schemaname, sequencename) FROM pg_sequences`)
	seqs, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range seqs {
		delete(all, s)
	}
	return all
}

// activity describes the sessions of the cluster, for a stuck query.
func activity(c *pgharness.Cluster) string {
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, c.ConnString("postgres"))
	if err != nil {
		return err.Error()
	}
	defer conn.Close(ctx)
	rows, _ := conn.Query(ctx, `SELECT format('%s %s %s %s/%s blocked by %s: %s', pid, datname, state, wait_event_type, wait_event, pg_blocking_pids(pid), left(query, 120)) FROM pg_stat_activity WHERE backend_type = 'client backend' OR backend_type = 'walsender'`)
	lines, _ := pgx.CollectRows(rows, pgx.RowTo[string])
	return strings.Join(lines, "\n")
}

// same fails the test when the checksums differ.
func same(t *testing.T, what string, want, got map[string]pgharness.TableSum) {
	t.Helper()
	if d := pgharness.Diff(want, got); len(d) > 0 {
		t.Fatalf("%s: restored data differs in %d relation(s):\n  %s", what, len(d), strings.Join(d, "\n  "))
	}
}

// sameReplayed is same for a point-in-time restore: materialized views
// the replay refreshed at its end (no DDL capture; named in the result as
// differences by design) are left out of the comparison.
func sameReplayed(t *testing.T, what string, want, got map[string]pgharness.TableSum, res *restore.Result) {
	t.Helper()
	if res != nil && res.Replay != nil && len(res.Replay.MatviewsRefreshed) > 0 {
		want, got = maps.Clone(want), maps.Clone(got)
		for _, v := range res.Replay.MatviewsRefreshed {
			delete(want, v)
			delete(got, v)
		}
	}
	same(t, what, want, got)
}

// withoutMatviews leaves db's materialized views out of sums.
func withoutMatviews(t *testing.T, c *pgharness.Cluster, db string, s map[string]pgharness.TableSum) map[string]pgharness.TableSum {
	t.Helper()
	rows, _ := c.Conn(t, db).Query(context.Background(), `SELECT format('%I.%I', schemaname, matviewname) FROM pg_matviews`)
	views, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		t.Fatal(err)
	}
	s = maps.Clone(s)
	for _, v := range views {
		delete(s, v)
	}
	return s
}

// buildCLI builds the pme2go-backup binary once per test.
func buildCLI(t *testing.T) string {
	t.Helper()
	gobin, err := exec.LookPath("go")
	if err != nil {
		pgharness.Require(t, "go", "go toolchain not found")
	}
	bin := filepath.Join(t.TempDir(), "pme2go-backup")
	if out, err := exec.Command(gobin, "build", "-o", bin, "github.com/pme2go/pme2go-backup/cmd/pme2go-backup").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

// cli runs the binary with the environment's configuration.
func (e *env) cli(t *testing.T, bin string, args ...string) *exec.Cmd {
	conf := filepath.Join(t.TempDir(), "empty.conf")
	os.WriteFile(conf, nil, 0o600)
	cmd := exec.Command(bin, append([]string{"--config", conf}, args...)...)
	cmd.Env = os.Environ()
	for k, v := range e.vars {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	return cmd
}

// point is the source state recorded at a moment with no commit running.
type point struct {
	time string // clock_timestamp() as timestamptz text
	lsn  string // pg_current_wal_insert_lsn()
	sums map[string]pgharness.TableSum
	seqs map[string]int64 // sequence values (last_value, or start - increment when never called)
}

func record(t *testing.T, c *pgharness.Cluster, conn *pgx.Conn, db string) point {
	t.Helper()
	var p point
	ctx := context.Background()
	if err := conn.QueryRow(ctx, `SELECT clock_timestamp()::text, pg_current_wal_insert_lsn()::text`).Scan(&p.time, &p.lsn); err != nil {
		t.Fatal(err)
	}
	p.sums = sums(t, c, db)
	p.seqs = seqValues(t, conn)
	return p
}

// seqValues returns the value of every sequence of the connected database:
// last_value when called, else start_value - increment_by.
func seqValues(t *testing.T, conn *pgx.Conn) map[string]int64 {
	t.Helper()
	rows, err := conn.Query(context.Background(), `SELECT format('%I.%I', schemaname, sequencename),
	        coalesce(last_value, start_value - increment_by) FROM pg_sequences`)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]int64{}
	for rows.Next() {
		var k string
		var v int64
		if err := rows.Scan(&k, &v); err != nil {
			t.Fatal(err)
		}
		out[k] = v
	}
	return out
}

// seqsNotBehind fails when a restored sequence is behind the source's value
// at the target: sequences are recorded at each seal, so a restore sets
// them to the values of the last archive used, never lower than at the
// target — except a sequence reset between the target and that seal
// (listed in reset), which the restore raises to the values its column
// holds (checked with floor: sequence -> its column's maximum in the
// restored database). With exact, they must be equal (nothing ran after
// the target).
func seqsNotBehind(t *testing.T, what string, want, got map[string]int64, exact bool, floor map[string]int64) {
	t.Helper()
	for k, v := range want {
		g, ok := got[k]
		f, reset := floor[k]
		switch {
		case !ok:
			t.Fatalf("%s: sequence %s missing in the restored database", what, k)
		case exact && g != v:
			t.Fatalf("%s: sequence %s is %d, the source had %d", what, k, g, v)
		case reset && g < f:
			t.Fatalf("%s: sequence %s is %d, behind the values its column holds (%d)", what, k, g, f)
		case !reset && g < v:
			t.Fatalf("%s: sequence %s is %d, behind the source's %d at the target", what, k, g, v)
		}
	}
}

// seqNote says whether the restore res named sequence name as a difference
// (its value at the target unknown) or claimed it exact.
func seqNote(res *restore.Result, name string) string {
	if res.Replay == nil {
		return "no replay"
	}
	for _, n := range res.Replay.SequencesUnknown {
		if n.Sequence == name {
			return "named as a difference: " + n.Message
		}
	}
	if res.Replay.SequencesExact[name] {
		return "claimed exact"
	}
	return "not named as a difference"
}

func mustTarget(t *testing.T, s apply.TargetSpec) apply.Target {
	t.Helper()
	tg, err := apply.ParseTarget(s)
	if err != nil {
		t.Fatal(err)
	}
	return tg
}

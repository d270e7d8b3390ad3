package pitr_test

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pme2go/pme2go-backup/engine/apply"
	"github.com/pme2go/pme2go-backup/engine/archive"
	"github.com/pme2go/pme2go-backup/engine/errs"
	"github.com/pme2go/pme2go-backup/engine/progress"
	"github.com/pme2go/pme2go-backup/engine/restore"
	"github.com/pme2go/pme2go-backup/tests/pgharness"
)

// chainOf3 makes a full backup and three incrementals, each after a few
// transactions, and returns the incremental archive paths.
func chainOf3(t *testing.T, e *env) []string {
	t.Helper()
	e.c.Exec(t, "app", `CREATE TABLE IF NOT EXISTS t (id serial PRIMARY KEY, v text)`)
	e.full(t)
	var out []string
	for i := 0; i < 3; i++ {
		e.c.Exec(t, "app", `INSERT INTO t (v) SELECT 'x' || g FROM generate_series(1, 10) g`)
		out = append(out, e.incremental(t).Path)
	}
	return out
}

// nothingWritten checks that no restored or scratch database exists.
func nothingWritten(t *testing.T, c *pgharness.Cluster) {
	t.Helper()
	var n int
	if err := c.Conn(t, "postgres").QueryRow(context.Background(), `SELECT count(*) FROM pg_database WHERE datname LIKE '%pme2go%' OR datname IN ('r_early', 'r_late', 'r_foreign', 'r_gap', 'r_after', 'r_cli')`).Scan(&n); err != nil {
		t.Fatal(err)
	}
	if n != 0 {
		t.Fatalf("a refused restore left %d database(s) behind", n)
	}
}

func expectRefusal(t *testing.T, err error, words ...string) {
	t.Helper()
	if err == nil {
		t.Fatalf("restore succeeded, want a refusal mentioning %q", words)
	}
	for _, w := range words {
		if !strings.Contains(err.Error(), w) {
			t.Fatalf("refusal %q does not mention %q", err, w)
		}
	}
	t.Logf("refused: %v", err)
}

// TestRefusals: a gap in the chain, an archive of another PostgreSQL system
// and a target before the full backup are refused before anything is
// written, each with a message that says what is wrong.
func TestRefusals(t *testing.T) {
	t.Setenv(pgharness.EnvNoTemplate, "1") // own system identifiers
	c := pgharness.Start(t)
	c.CreateDB(t, "app")
	e := newEnv(t, c)
	before := time.Now().Add(-time.Minute).UTC().Format(time.RFC3339Nano)
	incs := chainOf3(t, e)
	ctx := context.Background()
	latest := apply.Target{Kind: apply.Latest}

	// Target before the full backup.
	_, err := e.restoreTo(ctx, mustTarget(t, apply.TargetSpec{Time: before}), "r_early")
	expectRefusal(t, err, "before the oldest usable full backup")
	_, err = e.restoreTo(ctx, mustTarget(t, apply.TargetSpec{LSN: "0/10"}), "r_early")
	expectRefusal(t, err, "before the oldest usable full backup")
	// Target after the last captured commit.
	_, err = e.restoreTo(ctx, mustTarget(t, apply.TargetSpec{LSN: "FF/0"}), "r_late")
	expectRefusal(t, err, "after the last captured commit", "newest reachable point")
	nothingWritten(t, c)

	// An archive of another cluster slotted into the chain.
	c2 := pgharness.Start(t)
	c2.CreateDB(t, "app")
	e2 := newEnv(t, c2)
	foreign := chainOf3(t, e2)[0]
	last, err := archive.ReadSidecar(incs[2])
	if err != nil {
		t.Fatal(err)
	}
	fm, _ := archive.ReadSidecar(foreign)
	if fm.SystemIdentifier == last.SystemIdentifier {
		t.Fatalf("both clusters have system identifier %s", fm.SystemIdentifier)
	}
	dst := filepath.Join(e.cfg.IncrementalDir(), "incremental_backup_2099-01-01T00-00-00-000Z.tar.xz")
	data, _ := os.ReadFile(foreign)
	os.WriteFile(dst, data, 0o600)
	fm.ChainID, fm.StartLSN, fm.Previous = last.ChainID, last.EndLSN, filepath.Base(incs[2])
	side, _ := json.Marshal(fm)
	os.WriteFile(archive.SidecarPath(dst), side, 0o600)
	_, err = e.restoreTo(ctx, latest, "r_foreign")
	expectRefusal(t, err, "another PostgreSQL system", "system identifier "+fm.SystemIdentifier)
	os.Remove(dst)
	os.Remove(archive.SidecarPath(dst))
	nothingWritten(t, c)

	// A gap: the middle incremental is gone.
	os.Remove(incs[1])
	os.Remove(archive.SidecarPath(incs[1]))
	_, err = e.restoreTo(ctx, latest, "r_gap")
	expectRefusal(t, err, "gap in chain", filepath.Base(incs[0]), filepath.Base(incs[2]), filepath.Base(incs[1])+", which")
	res, err := e.restoreTo(ctx, latest, "r_gap", func(o *restore.Options) { o.DryRun = true })
	if err == nil {
		t.Fatalf("dry run over a gap: %+v", res.PITR)
	}
	nothingWritten(t, c)
}

// TestResume interrupts a replay after some transactions, checks that a
// plain rerun is refused and that --resume finishes it without applying
// anything twice.
func TestResume(t *testing.T) {
	c := pgharness.Start(t)
	c.CreateDB(t, "app")
	c.Exec(t, "app", `CREATE TABLE acct (id int PRIMARY KEY, bal bigint NOT NULL, log text);
		CREATE TABLE hist (n serial, id int, delta int);
		INSERT INTO acct SELECT g, 0, '' FROM generate_series(1, 50) g`)
	e := newEnv(t, c)
	e.full(t)
	conn := c.Conn(t, "app")
	ctx := context.Background()
	const total = 300
	for i := 0; i < total; i++ {
		// Not idempotent: applying any transaction twice changes the sums.
		tx, err := conn.Begin(ctx)
		if err != nil {
			t.Fatal(err)
		}
		tx.Exec(ctx, `UPDATE acct SET bal = bal + $1, log = log || 'x' WHERE id = $2`, i, i%50+1)
		tx.Exec(ctx, `INSERT INTO hist (id, delta) VALUES ($2, $1)`, i, i%50+1)
		if err := tx.Commit(ctx); err != nil {
			t.Fatal(err)
		}
	}
	e.incremental(t)
	want := sums(t, c, "app")

	cctx, cancel := context.WithCancel(ctx)
	defer cancel()
	_, err := e.restoreTo(cctx, apply.Target{Kind: apply.Latest}, "r_resume", func(o *restore.Options) {
		o.Progress = func(ev progress.Event) {
			n := ev.Done // transactions applied (0: not a commit)
			if n == 120 {
				cancel()
			}
		}
	})
	if f := errs.FixOf(err); err == nil || f == nil || f.Action != errs.ActResume {
		t.Fatalf("interrupted replay: want a fix to resume, got %v (fix %+v)", err, f)
	}
	t.Logf("interrupted: %v", err)
	_, err = e.restoreTo(ctx, apply.Target{Kind: apply.Latest}, "r_resume")
	expectRefusal(t, err, "interrupted point-in-time restore", "r_resume_pme2go_pitr")
	if !errors.Is(err, errs.ErrNeedsResume) || errs.FixOf(err).Action != errs.ActResume {
		t.Fatalf("refusal %v: want code NEEDS_RESUME with a fix to resume", err)
	}
	res, err := e.restoreTo(ctx, apply.Target{Kind: apply.Latest}, "r_resume", func(o *restore.Options) { o.Resume = true })
	if err != nil {
		t.Fatalf("resume: %v", err)
	}
	if res.Replay.ResumedAt == 0 || res.Replay.Applied != res.PITR.TxCount-120 {
		t.Fatalf("resume applied %d of %d transactions, resumed at %x", res.Replay.Applied, res.PITR.TxCount, res.Replay.ResumedAt)
	}
	sameReplayed(t, "resumed", want, sums(t, c, "r_resume"), res)
	var n int
	if err := conn.QueryRow(ctx, `SELECT count(*) FROM pg_replication_origin`).Scan(&n); err != nil {
		t.Fatal(err)
	}
	if n != 0 {
		t.Fatalf("%d replication origins left after the restore", n)
	}
	t.Logf("resumed after 120 of %d transactions, applied %d more", res.PITR.TxCount, res.Replay.Applied)
}

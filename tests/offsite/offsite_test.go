// Package offsite_test checks off-site copies end to end against real
// PostgreSQL and a real S3-compatible server (Versity S3 Gateway on
// 127.0.0.1, tests/s3harness): upload and read-back verification after
// each backup, locations in list and status, pruning of local copies,
// restores and point-in-time restores from the off-site copy alone (an
// empty BACKUP_DIR) compared with the source, an upload killed midway, the
// server stopped during a backup, retention on both sides, and the
// streaming recovery point.
package offsite_test

import (
	"context"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/pme2go/pme2go-backup/engine/archive"
	"github.com/pme2go/pme2go-backup/engine/config"
	"github.com/pme2go/pme2go-backup/engine/ops"
	"github.com/pme2go/pme2go-backup/tests/pgharness"
	"github.com/pme2go/pme2go-backup/tests/s3harness"
)

// env is a configuration against cluster c and the gateway s.
type env struct {
	vars map[string]string
	cfg  *config.Config
}

func newEnv(t *testing.T, c *pgharness.Cluster, s *s3harness.Server, prefix string, extra ...string) *env {
	t.Helper()
	vars := map[string]string{
		"BACKUP_DIR": filepath.Join(t.TempDir(), "backups"), "DB_HOST": c.SocketDir,
		"DB_PORT": strconv.Itoa(c.Port), "DB_USER": "postgres", "DB_NAME": "app",
		"BACKUP_JOBS": "2", "BACKUP_COMPRESSION_LEVEL": "1", "REPLICA_IDENTITY_FIX": "full",
	}
	for k, v := range s.Env(prefix) {
		vars[k] = v
	}
	for _, kv := range extra {
		k, v, _ := strings.Cut(kv, "=")
		vars[k] = v
	}
	return &env{vars: vars, cfg: pgharness.LoadConfig(t, vars)}
}

// with returns a copy of e with more settings (same BACKUP_DIR unless set).
func (e *env) with(t *testing.T, extra ...string) *env {
	vars := map[string]string{}
	for k, v := range e.vars {
		vars[k] = v
	}
	for _, kv := range extra {
		k, v, _ := strings.Cut(kv, "=")
		vars[k] = v
	}
	return &env{vars: vars, cfg: pgharness.LoadConfig(t, vars)}
}

func exec(t *testing.T, c *pgharness.Cluster, db string, sqls ...string) {
	t.Helper()
	ctx := context.Background()
	conn := c.Conn(t, db)
	defer conn.Close(ctx)
	for _, q := range sqls {
		if _, err := conn.Exec(ctx, q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
}

func sums(t *testing.T, c *pgharness.Cluster, db string) map[string]pgharness.TableSum {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	s, err := pgharness.Checksums(ctx, c.ConnString(db))
	if err != nil {
		t.Fatalf("checksums of %s: %v", db, err)
	}
	return s
}

func same(t *testing.T, what string, want, got map[string]pgharness.TableSum) {
	t.Helper()
	if d := pgharness.Diff(want, got); len(d) > 0 {
		t.Fatalf("%s: restored data differs in %d relation(s):\n  %s", what, len(d), strings.Join(d, "\n  "))
	}
}

func locations(t *testing.T, e *env) map[string]string {
	t.Helper()
	l, err := ops.List(context.Background(), e.cfg, ops.ListOptions{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for _, b := range l {
		out[b.Name] = b.Location
	}
	return out
}

func setup(t *testing.T) (*pgharness.Cluster, *s3harness.Server) {
	s := s3harness.Start(t)
	c := pgharness.Start(t)
	exec(t, c, "postgres", "CREATE DATABASE app")
	exec(t, c, "app",
		"CREATE TABLE items (id serial PRIMARY KEY, name text NOT NULL, qty int)",
		"INSERT INTO items (name, qty) SELECT 'item ' || g, g FROM generate_series(1, 2000) g")
	return c, s
}

// TestCopiesAndRestoreFromOffsite: a full and an incremental backup are
// copied and verified; list shows both places; local copies are pruned;
// a restore and a point-in-time restore from the repository alone (empty
// BACKUP_DIR) equal the source.
func TestCopiesAndRestoreFromOffsite(t *testing.T) {
	c, s := setup(t)
	ctx := context.Background()
	e := newEnv(t, c, s, "copies")
	full, err := ops.Full(ctx, e.cfg, ops.FullOptions{}, nil)
	if err != nil {
		t.Fatalf("full: %v", err)
	}
	if len(full.Offsite) != 1 || !full.Offsite[0].Copied {
		t.Fatalf("full backup not copied off-site: %+v", full.Offsite)
	}
	objs := s.Objects("copies")
	if objs["copies/full/"+full.Name] != full.Size || objs["copies/full/"+full.Name+".manifest.json"] == 0 {
		t.Fatalf("repository holds %v, want %s (%d bytes) and its manifest", objs, full.Name, full.Size)
	}
	exec(t, c, "app", "UPDATE items SET qty = qty + 1 WHERE id % 7 = 0", "DELETE FROM items WHERE id > 1990",
		"INSERT INTO items (name, qty) VALUES ('after full', 42)")
	atIncr := sums(t, c, "app")
	inc, err := ops.Incremental(ctx, e.cfg, ops.IncrementalOptions{}, nil)
	if err != nil {
		t.Fatalf("incremental: %v", err)
	}
	if len(inc.Offsite) != 1 || !inc.Offsite[0].Copied {
		t.Fatalf("incremental not copied: %+v", inc.Offsite)
	}
	for name, loc := range locations(t, e) {
		if loc != "both" {
			t.Errorf("%s: location %q, want both", name, loc)
		}
	}
	st, err := ops.Status(ctx, e.cfg, ops.StatusOptions{NoServer: true}, nil)
	if err != nil || st.Offsite == nil || st.Offsite.Copied != 2 || len(st.Offsite.NotCopied) != 0 {
		t.Fatalf("status: %v %+v", err, st.Offsite)
	}

	// A restore of the full backup into another database, from local copies.
	if _, err := ops.Restore(ctx, e.cfg, ops.RestoreOptions{Backup: full.Name, TargetDB: "app_local", NoSafetyBackup: true}, nil); err != nil {
		t.Fatalf("restore: %v", err)
	}

	// Prune local copies (LOCAL_RETENTION_DAYS=0: as soon as verified).
	pr := e.with(t, "LOCAL_RETENTION_DAYS=0")
	res, err := ops.OffsiteSync(ctx, pr.cfg, ops.OffsiteSyncOptions{}, nil)
	if err != nil || len(res.Pruned) != 2 {
		t.Fatalf("sync with LOCAL_RETENTION_DAYS=0: %v %+v", err, res)
	}
	if _, err := os.Stat(full.Path); !os.IsNotExist(err) {
		t.Fatalf("local copy of %s still there: %v", full.Name, err)
	}
	for name, loc := range locations(t, e) {
		if loc != "offsite" {
			t.Errorf("after prune %s: location %q, want offsite", name, loc)
		}
	}

	// Point-in-time restore from the repository alone: a new, empty
	// BACKUP_DIR with only the configuration.
	empty := e.with(t, "BACKUP_DIR="+filepath.Join(t.TempDir(), "empty"))
	rr, err := ops.Restore(ctx, empty.cfg, ops.RestoreOptions{Target: ops.RestoreTarget{Latest: true}, TargetDB: "app_pitr", NoSafetyBackup: true}, nil)
	if err != nil {
		t.Fatalf("PITR from the off-site copy alone: %v", err)
	}
	if rr.Replay == nil || rr.Replay.Transactions == 0 {
		t.Fatalf("nothing replayed: %+v", rr.Replay)
	}
	same(t, "PITR from off-site", atIncr, sums(t, c, "app_pitr"))
	// And a plain restore of the full backup by name, from the repository.
	empty2 := e.with(t, "BACKUP_DIR="+filepath.Join(t.TempDir(), "empty2"))
	if _, err := ops.Restore(ctx, empty2.cfg, ops.RestoreOptions{Backup: full.Name, TargetDB: "app_full", NoSafetyBackup: true}, nil); err != nil {
		t.Fatalf("restore of %s from the off-site copy alone: %v", full.Name, err)
	}
	same(t, "full restore from off-site", sums(t, c, "app_local"), sums(t, c, "app_full"))
	// A restore drill fetches what it needs too.
	empty4 := e.with(t, "BACKUP_DIR="+filepath.Join(t.TempDir(), "empty4"))
	dr, err := ops.Drill(ctx, empty4.cfg, ops.DrillOptions{}, nil)
	if err != nil || !dr.OK {
		t.Fatalf("drill from the off-site copy alone: %v %+v", err, dr)
	}
	// Verify fetches too.
	empty3 := e.with(t, "BACKUP_DIR="+filepath.Join(t.TempDir(), "empty3"))
	vr, err := ops.Verify(ctx, empty3.cfg, ops.VerifyOptions{Backups: []string{full.Name}}, nil)
	if err != nil || vr.Failed != 0 || len(vr.Archives) != 1 {
		t.Fatalf("verify from off-site: %v %+v", err, vr)
	}
}

// TestServerDownDuringBackup: the backup succeeds and is kept locally; the
// failed copy is reported beside it (OffsiteError, status's not-copied list
// and last error); the next backup copies it too.
func TestServerDownDuringBackup(t *testing.T) {
	c, s := setup(t)
	ctx := context.Background()
	e := newEnv(t, c, s, "down")
	s.Stop()
	full, err := ops.Full(ctx, e.cfg, ops.FullOptions{}, nil)
	if err != nil {
		t.Fatalf("full backup with the S3 server down failed, although its archive is safe locally: %v", err)
	}
	if full.OffsiteError == nil || !strings.Contains(full.OffsiteError.Message, "not copied off-site") || full.OffsiteError.Fix == nil {
		t.Fatalf("the failed copy is not reported clearly: %+v", full.OffsiteError)
	}
	t.Logf("off-site error with the server down: %s", full.OffsiteError.Message)
	if _, serr := os.Stat(full.Path); serr != nil {
		t.Fatalf("local archive gone: %v", serr)
	}
	if vr, err := ops.Verify(ctx, e.cfg, ops.VerifyOptions{Backups: []string{full.Name}}, nil); err != nil || vr.Failed != 0 {
		t.Fatalf("local archive not intact: %v", err)
	}
	if loc := locations(t, e)[full.Name]; loc != "local" {
		t.Fatalf("location %q, want local", loc)
	}
	st, _ := ops.Status(ctx, e.cfg, ops.StatusOptions{NoServer: true}, nil)
	if st.Offsite == nil || len(st.Offsite.NotCopied) != 1 || st.Offsite.LastError == "" || st.Offsite.LastSuccess != nil {
		t.Fatalf("status does not name the backup not copied and the error: %+v", st.Offsite)
	}
	s.Restart()
	// The next backup copies itself and the one left behind.
	full2, err := ops.Full(ctx, e.cfg, ops.FullOptions{}, nil)
	if err != nil || full2.OffsiteError != nil {
		t.Fatalf("backup after the server came back: %v %+v", err, full2.OffsiteError)
	}
	copied := map[string]bool{}
	for _, o := range full2.Offsite {
		copied[o.Name] = o.Copied
	}
	// (The new chain also sealed the old one's changes in an incremental.)
	if !copied[full.Name] || !copied[full2.Name] {
		t.Fatalf("the next backup did not copy the one left behind: %+v", full2.Offsite)
	}
	locs := locations(t, e)
	if locs[full.Name] != "both" || locs[full2.Name] != "both" {
		t.Fatalf("locations %v, want both", locs)
	}
	st, _ = ops.Status(ctx, e.cfg, ops.StatusOptions{NoServer: true}, nil)
	if len(st.Offsite.NotCopied) != 0 || st.Offsite.LastError != "" || st.Offsite.LastSuccess == nil {
		t.Fatalf("status after the retry: %+v", st.Offsite)
	}
	res, err := ops.OffsiteSync(ctx, e.cfg, ops.OffsiteSyncOptions{}, nil)
	if err != nil || len(res.Uploaded) != 0 {
		t.Fatalf("sync with nothing left to copy: %v %+v", err, res)
	}
}

// TestSharedRepositoryOtherInstallation: two installations (two
// BACKUP_DIRs, two identities) copy backups of a database of the same name
// to one bucket and prefix. Installation A's local copies are gone and it
// restores --latest from the repository: it gets A's data, never B's newer
// full backup; B's backup named explicitly is still fetched and restored.
func TestSharedRepositoryOtherInstallation(t *testing.T) {
	c, s := setup(t)
	ctx := context.Background()
	a := newEnv(t, c, s, "shared")
	fa, err := ops.Full(ctx, a.cfg, ops.FullOptions{}, nil)
	if err != nil || len(fa.Offsite) != 1 || !fa.Offsite[0].Copied {
		t.Fatalf("full of A: %v %+v", err, fa)
	}
	atA := sums(t, c, "app")
	exec(t, c, "app", "DELETE FROM items WHERE id <= 500", "INSERT INTO items (name, qty) VALUES ('only in B', 7)")
	atB := sums(t, c, "app")
	// Backup names have a resolution of one second: B's must differ.
	for start := time.Now().Truncate(time.Second); time.Now().Truncate(time.Second).Equal(start); {
		time.Sleep(50 * time.Millisecond)
	}
	b := newEnv(t, c, s, "shared")
	fb, err := ops.Full(ctx, b.cfg, ops.FullOptions{}, nil)
	if err != nil || len(fb.Offsite) != 1 || !fb.Offsite[0].Copied {
		t.Fatalf("full of B: %v %+v", err, fb)
	}
	if !fb.Timestamp.After(fa.Timestamp) {
		t.Fatalf("B's full %s is not newer than A's %s", fb.Name, fa.Name)
	}
	for _, p := range []string{fa.Path, archive.SidecarPath(fa.Path)} {
		if err := os.Remove(p); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := ops.Restore(ctx, a.cfg, ops.RestoreOptions{Target: ops.RestoreTarget{Latest: true}, TargetDB: "app_a", NoSafetyBackup: true}, nil); err != nil {
		t.Fatalf("A's --latest restore from the repository: %v", err)
	}
	same(t, "A's --latest restore (must be A's backup, not B's newer one)", atA, sums(t, c, "app_a"))
	if loc := locations(t, a)[fb.Name]; loc == "local" || loc == "both" {
		t.Errorf("A's --latest restore fetched B's backup %s (location %q)", fb.Name, loc)
	}
	// Named explicitly, B's backup may be restored by A.
	if _, err := ops.Restore(ctx, a.cfg, ops.RestoreOptions{Backup: fb.Name, TargetDB: "app_b", NoSafetyBackup: true}, nil); err != nil {
		t.Fatalf("A's restore of B's backup named explicitly: %v", err)
	}
	same(t, "B's backup named explicitly", atB, sums(t, c, "app_b"))
}

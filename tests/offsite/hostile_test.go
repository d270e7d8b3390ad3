package offsite_test

import (
	"context"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/pme2go/pme2go-backup/engine/archive"
	"github.com/pme2go/pme2go-backup/engine/offsite"
	"github.com/pme2go/pme2go-backup/engine/ops"
	"github.com/pme2go/pme2go-backup/tests/pgharness"
	"github.com/pme2go/pme2go-backup/tests/s3harness"
)

// TestHostileRepository: what an attacker (or a mistake) can do to the
// bucket never makes us restore the wrong backup, delete another
// installation's backups, or prune the only good copy. One gateway, fake
// archives (no PostgreSQL needed: copying, fetching and retention read
// sidecars and bytes only).
func TestHostileRepository(t *testing.T) {
	s := s3harness.Start(t)
	ctx := context.Background()
	day := 24 * time.Hour
	objPath := func(prefix, rel string) string { return filepath.Join(s.Root, s.Bucket, prefix, rel) }
	copyFile := func(t *testing.T, from, to string) {
		t.Helper()
		b, err := os.ReadFile(from)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(to, b, 0o644); err != nil {
			t.Fatal(err)
		}
	}

	// An object and its sidecar replaced by another backup's (same size):
	// the fetch must refuse, never hand out the other backup under this
	// name; with and without the local record of the copy.
	t.Run("swapped-object", func(t *testing.T) {
		_, cfg := fakeEnv(t, s, "swap")
		a := filepath.Base(fakeBackup(t, cfg.BackupDir, "full", "", time.Now().Add(-2*time.Hour), 4096))
		b := filepath.Base(fakeBackup(t, cfg.BackupDir, "full", "", time.Now().Add(-time.Hour), 4096))
		if _, err := ops.OffsiteSync(ctx, cfg, ops.OffsiteSyncOptions{}, nil); err != nil {
			t.Fatal(err)
		}
		copyFile(t, objPath("swap", "full/"+b), objPath("swap", "full/"+a))
		copyFile(t, objPath("swap", "full/"+b+archive.SidecarSuffix), objPath("swap", "full/"+a+archive.SidecarSuffix))
		_, empty := fakeEnv(t, s, "swap")
		_, err := ops.Verify(ctx, empty, ops.VerifyOptions{Backups: []string{a}}, nil)
		if ops.CodeOf(err) != "VERIFY_FAILED" || !strings.Contains(err.Error(), b) {
			t.Errorf("a fetch of %s that holds %s's bytes and sidecar: %v (code %s), want VERIFY_FAILED naming %s", a, b, err, ops.CodeOf(err), b)
		}
		if l, _ := ops.List(ctx, empty, ops.ListOptions{}, nil); len(l) != 0 {
			t.Errorf("a refused fetch left %d backups in BACKUP_DIR", len(l))
		}
		// A forged sidecar naming a: the installation that made the copy
		// remembers its checksum and refuses it.
		m, err := archive.ReadSidecar(filepath.Join(cfg.BackupDir, "full", b))
		if err != nil {
			t.Fatal(err)
		}
		m.Archive.Name = a
		if err := archive.WriteSidecar(objPath("swap", "full/"+a), m); err != nil {
			t.Fatal(err)
		}
		os.Remove(filepath.Join(cfg.BackupDir, "full", a))
		os.Remove(filepath.Join(cfg.BackupDir, "full", a+archive.SidecarSuffix))
		_, err = ops.Verify(ctx, cfg, ops.VerifyOptions{Backups: []string{a}}, nil)
		if ops.CodeOf(err) != "VERIFY_FAILED" || !strings.Contains(err.Error(), "this installation copied") {
			t.Errorf("fetch of the swapped copy with the copy recorded: %v", err)
		} else {
			t.Logf("swapped copy refused: %v", err)
		}
		if _, serr := os.Stat(filepath.Join(cfg.BackupDir, "full", a)); serr == nil {
			t.Error("the refused copy was written to BACKUP_DIR")
		}
	})

	// A copy changed in the bucket after its upload (same size): the local
	// copy, then the only good one, must not be pruned.
	t.Run("changed-object-not-pruned", func(t *testing.T) {
		vars, cfg := fakeEnv(t, s, "changed")
		path := fakeBackup(t, cfg.BackupDir, "full", "", time.Now().Add(-20*day), 8192)
		if _, err := ops.OffsiteSync(ctx, cfg, ops.OffsiteSyncOptions{}, nil); err != nil {
			t.Fatal(err)
		}
		obj := objPath("changed", "full/"+filepath.Base(path))
		bb, _ := os.ReadFile(obj)
		bb[len(bb)/2] ^= 0x01
		os.WriteFile(obj, bb, 0o644)
		vars["LOCAL_RETENTION_DAYS"] = "1"
		pcfg := pgharness.LoadConfig(t, vars)
		res, err := ops.OffsiteSync(ctx, pcfg, ops.OffsiteSyncOptions{}, nil)
		if _, serr := os.Stat(path); serr != nil {
			t.Fatalf("the local copy was pruned although the off-site copy is damaged (sync: %v, %+v)", err, res)
		}
		if err == nil || !strings.Contains(err.Error(), filepath.Base(path)) {
			t.Errorf("sync with a damaged off-site copy: %v, want an error naming it", err)
		} else {
			t.Logf("damaged copy kept locally: %v", err)
		}
		// The next sync uploads it again; then the local copy may go.
		res, err = ops.OffsiteSync(ctx, pcfg, ops.OffsiteSyncOptions{}, nil)
		if err != nil || len(res.Uploaded) != 1 || len(res.Pruned) != 1 {
			t.Fatalf("the sync after: %v %+v, want the copy uploaded again and the local one pruned", err, res)
		}
	})

	// A local archive whose bytes changed after its copy (rekey writes new
	// bytes of the same size and a new sidecar): cleanup must not prune it
	// on the strength of the old copy.
	t.Run("rewritten-local-not-pruned", func(t *testing.T) {
		vars, cfg := fakeEnv(t, s, "rewritten")
		path := fakeBackup(t, cfg.BackupDir, "full", "", time.Now().Add(-20*day), 8192)
		if _, err := ops.OffsiteSync(ctx, cfg, ops.OffsiteSyncOptions{}, nil); err != nil {
			t.Fatal(err)
		}
		// The same name, new bytes, same size, a matching new sidecar.
		tmp := fakeBackup(t, t.TempDir(), "full", "", time.Now().Add(-20*day+time.Second), 8192)
		copyFile(t, tmp, path)
		m, err := archive.ReadSidecar(tmp)
		if err != nil {
			t.Fatal(err)
		}
		m.Archive.Name = filepath.Base(path)
		if err := archive.WriteSidecar(path, m); err != nil {
			t.Fatal(err)
		}
		vars["LOCAL_RETENTION_DAYS"] = "1"
		pcfg := pgharness.LoadConfig(t, vars)
		res, err := ops.Cleanup(ctx, pcfg, ops.CleanupOptions{}, nil)
		if res == nil {
			t.Fatalf("cleanup: %v", err)
		}
		if _, serr := os.Stat(path); serr != nil {
			t.Fatalf("cleanup pruned a local archive whose bytes are not off-site (pruned %v, err %v)", res.LocalPruned, err)
		}
	})

	// A local archive damaged after its copy, and a state that no longer
	// knows the copy (the endpoint spelled differently): the sync must not
	// replace the good off-site copy with the damaged bytes, nor remove it.
	t.Run("damaged-local-keeps-good-copy", func(t *testing.T) {
		vars, cfg := fakeEnv(t, s, "rot")
		path := fakeBackup(t, cfg.BackupDir, "full", "", time.Now().Add(-time.Hour), 8192)
		if _, err := ops.OffsiteSync(ctx, cfg, ops.OffsiteSyncOptions{}, nil); err != nil {
			t.Fatal(err)
		}
		good, _ := os.ReadFile(path)
		bad := append([]byte{}, good...)
		bad[100] ^= 0x80
		os.WriteFile(path, bad, 0o600)
		vars["OFFSITE_ENDPOINT"] += "/"
		res, err := ops.OffsiteSync(ctx, pgharness.LoadConfig(t, vars), ops.OffsiteSyncOptions{}, nil)
		if ops.CodeOf(err) != "VERIFY_FAILED" {
			t.Errorf("sync of a damaged local archive: %v %+v", err, res)
		}
		got, rerr := os.ReadFile(objPath("rot", "full/"+filepath.Base(path)))
		if rerr != nil || string(got) != string(good) {
			t.Fatalf("the good off-site copy was replaced or removed by the sync of a damaged local archive (%v)", rerr)
		}
	})

	// OFFSITE_RETENTION_DAYS shorter than BACKUP_RETENTION_DAYS, local
	// copies pruned after LOCAL_RETENTION_DAYS: the off-site copy is then
	// the only one and stays while BACKUP_RETENTION_DAYS keeps it.
	t.Run("only-copy-kept", func(t *testing.T) {
		_, cfg := fakeEnv(t, s, "only", "BACKUP_RETENTION_DAYS=60", "OFFSITE_RETENTION_DAYS=30", "LOCAL_RETENTION_DAYS=10")
		old := filepath.Base(fakeBackup(t, cfg.BackupDir, "full", "", time.Now().Add(-40*day), 2048))
		ancient := filepath.Base(fakeBackup(t, cfg.BackupDir, "full", "", time.Now().Add(-70*day), 2048))
		fakeBackup(t, cfg.BackupDir, "full", "", time.Now().Add(-day), 2048)
		if res, err := ops.OffsiteSync(ctx, cfg, ops.OffsiteSyncOptions{}, nil); err != nil || len(res.Pruned) != 2 {
			t.Fatalf("sync: %v %+v, want the two old local copies pruned", err, res)
		}
		res, err := ops.Cleanup(ctx, cfg, ops.CleanupOptions{}, nil)
		if res == nil {
			t.Fatalf("cleanup: %v", err)
		}
		objs := s.Objects("only")
		if _, ok := objs["only/full/"+old]; !ok {
			t.Errorf("off-site retention removed %s, 40 days old, its only copy, which BACKUP_RETENTION_DAYS=60 keeps", old)
		}
		if _, ok := objs["only/full/"+ancient]; ok {
			t.Errorf("%s (70 days old) was kept", ancient)
		}
	})

	// Two installations share one prefix: retention of one never removes
	// the other's backups, and keeps its own newest full backup even when
	// the other has a newer one.
	t.Run("second-installation", func(t *testing.T) {
		_, other := fakeEnv(t, s, "shared")
		g1 := filepath.Base(fakeBackup(t, other.BackupDir, "full", "", time.Now().Add(-50*day), 2048))
		g2 := filepath.Base(fakeBackup(t, other.BackupDir, "full", "", time.Now().Add(-1*day), 2048))
		if _, err := ops.OffsiteSync(ctx, other, ops.OffsiteSyncOptions{}, nil); err != nil {
			t.Fatal(err)
		}
		_, ours := fakeEnv(t, s, "shared", "OFFSITE_RETENTION_DAYS=30", "BACKUP_RETENTION_DAYS=0")
		f1 := filepath.Base(fakeBackup(t, ours.BackupDir, "full", "", time.Now().Add(-40*day), 2048))
		f0 := filepath.Base(fakeBackup(t, ours.BackupDir, "full", "", time.Now().Add(-45*day), 2048))
		if _, err := ops.OffsiteSync(ctx, ours, ops.OffsiteSyncOptions{}, nil); err != nil {
			t.Fatal(err)
		}
		res, err := ops.Cleanup(ctx, ours, ops.CleanupOptions{}, nil)
		if res == nil {
			t.Fatalf("cleanup: %v", err)
		}
		objs := s.Objects("shared")
		for _, n := range []string{g1, g2} {
			if _, ok := objs["shared/full/"+n]; !ok {
				t.Errorf("our retention removed %s, a backup of another installation", n)
			}
		}
		if _, ok := objs["shared/full/"+f1]; !ok {
			t.Errorf("our retention removed our newest full backup %s because another installation has a newer one", f1)
		}
		if _, ok := objs["shared/full/"+f0]; ok {
			t.Errorf("our retention kept %s (45 days old, not our newest)", f0)
		}
	})

	// Object keys that climb out of the repository (../) are never
	// written outside BACKUP_DIR.
	t.Run("dotdot-keys", func(t *testing.T) {
		_, cfg := fakeEnv(t, s, "dots")
		r, err := offsite.Open(cfg)
		if err != nil {
			t.Fatal(err)
		}
		src := fakeBackup(t, t.TempDir(), "full", "", time.Now().Add(-time.Hour), 1024)
		body, _ := os.ReadFile(src)
		side, _ := os.ReadFile(archive.SidecarPath(src))
		name := "escaped-" + filepath.Base(src)
		evil := "full/../../" + name
		for rel, b := range map[string][]byte{evil: body, evil + archive.SidecarSuffix: side} {
			if _, err := r.Put(ctx, rel, strings.NewReader(string(b)), int64(len(b))); err != nil {
				t.Fatalf("put %s: %v", rel, err)
			}
		}
		// An S3 server keeps the key as it is and lists it below full/;
		// this gateway resolves it, so the fetch is asked directly.
		_, err = r.Fetch(ctx, cfg, evil)
		if err == nil || !strings.Contains(err.Error(), "not a backup") {
			t.Errorf("fetch of %s: %v", evil, err)
		}
		filepath.Walk(filepath.Dir(filepath.Dir(cfg.BackupDir)), func(p string, fi os.FileInfo, err error) error {
			if err == nil && strings.HasPrefix(fi.Name(), name) {
				t.Errorf("the fetch of %s wrote %s", evil, p)
			}
			return nil
		})
	})
}

// TestHugeSidecarNotRead: a "sidecar" of more than 64 MiB put in the
// bucket (by anyone who can write there) is neither listed nor read into
// memory by a sync, and a fetch of it is refused.
func TestHugeSidecarNotRead(t *testing.T) {
	s := s3harness.Start(t)
	ctx := context.Background()
	_, cfg := fakeEnv(t, s, "huge")
	r, err := offsite.Open(cfg)
	if err != nil {
		t.Fatal(err)
	}
	name := "full_backup_2026-01-01T00-00-00-000Z.tar"
	if _, err := r.Put(ctx, "full/"+name, strings.NewReader("x"), 1); err != nil {
		t.Fatal(err)
	}
	const size = offsite.MaxSmallObject + 1<<20
	if _, err := r.Put(ctx, "full/"+name+archive.SidecarSuffix, io.LimitReader(zeros{}, size), size); err != nil {
		t.Fatal(err)
	}
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	res, err := ops.OffsiteSync(ctx, cfg, ops.OffsiteSyncOptions{}, nil)
	runtime.ReadMemStats(&after)
	if err != nil || len(res.Adopted) != 0 {
		t.Fatalf("sync: %v %+v", err, res)
	}
	if grew := after.TotalAlloc - before.TotalAlloc; grew > 32<<20 {
		t.Errorf("the sync allocated %d MiB: it read the huge object", grew>>20)
	}
	if _, err := r.Fetch(ctx, cfg, "full/"+name); ops.CodeOf(err) != "VERIFY_FAILED" {
		t.Errorf("fetch with a huge sidecar: %v", err)
	}
}

type zeros struct{}

func (zeros) Read(p []byte) (int, error) {
	clear(p)
	return len(p), nil
}

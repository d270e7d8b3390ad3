package crypt_test

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pme2go/pme2go-backup/engine/apply"
	"github.com/pme2go/pme2go-backup/engine/backup"
	"github.com/pme2go/pme2go-backup/engine/backupdir"
	"github.com/pme2go/pme2go-backup/engine/config"
	"github.com/pme2go/pme2go-backup/engine/crypt"
	"github.com/pme2go/pme2go-backup/engine/drill"
	"github.com/pme2go/pme2go-backup/engine/errs"
	"github.com/pme2go/pme2go-backup/engine/fsutil"
	"github.com/pme2go/pme2go-backup/engine/incremental"
	"github.com/pme2go/pme2go-backup/engine/ops"
	"github.com/pme2go/pme2go-backup/engine/restore"
	"github.com/pme2go/pme2go-backup/tests/pgharness"
)

// tempLeft fails the test when a temporary file or directory (.*.tmp-*)
// is left directly in one of dirs.
func tempLeft(t *testing.T, dirs ...string) {
	t.Helper()
	for _, d := range dirs {
		entries, _ := os.ReadDir(d)
		for _, e := range entries {
			if fsutil.IsTemp(e.Name()) {
				t.Errorf("temporary %s left in %s", e.Name(), d)
			}
		}
	}
}

// TestHostileEncrypted tries an encrypted repository the way an operator
// under stress or an attacker would, on one cluster: a chain that starts
// in plaintext and continues encrypted, recipients changed in the middle of
// a chain, drills of such chains, a drill with a scratch database a killed
// drill left, a drill while a backup starts, and archives damaged at their
// end; restores always match the source or refuse before writing, and no
// plaintext or temporary file is left behind.
func TestHostileEncrypted(t *testing.T) {
	c := pgharness.Start(t)
	c.CreateDB(t, "app")
	const marker = "HOSTILE-MARKER-7d2e"
	c.Exec(t, "app", `CREATE TABLE t (id int PRIMARY KEY, v text)`)
	c.Exec(t, "app", `INSERT INTO t SELECT g, $1 || repeat(md5(g::text), 20) FROM generate_series(1, 20000) g`, marker)
	ctx := context.Background()
	defer crypt.Configure(crypt.Settings{})
	k1, k2 := newKeys(t, "k1"), newKeys(t, "k2")
	both := filepath.Join(t.TempDir(), "both.key")
	a, _ := os.ReadFile(k1.key)
	b, _ := os.ReadFile(k2.key)
	os.WriteFile(both, append(a, b...), 0o600)
	env := pgharness.ConfigEnv(t, c, []string{"app"}, "BACKUP_COMPRESSION=zstd", "BACKUP_COMPRESSION_LEVEL=1", "REPLICA_IDENTITY_FIX=full")
	plain := load(t, env)

	// A full backup in plaintext, then encryption turned on: the chain's
	// incrementals are encrypted, the open segment goes on.
	if _, err := backup.Full(ctx, plain, backup.Options{Chain: incremental.NewChainStarter(plain, nil)}); err != nil {
		t.Fatal(err)
	}
	c.Exec(t, "app", `UPDATE t SET v = v || '-1' WHERE id % 5 = 0`)
	enc1 := load(t, env, "BACKUP_ENCRYPTION_RECIPIENTS="+k1.pub, "BACKUP_ENCRYPTION_IDENTITY_FILE="+k1.key)
	if _, err := incremental.Take(ctx, enc1, incremental.Options{}); err != nil {
		t.Fatalf("encrypted incremental after a plaintext full backup: %v", err)
	}
	t.Run("mixed-chain", func(t *testing.T) {
		cfg := load(t, env, "BACKUP_ENCRYPTION_RECIPIENTS="+k1.pub, "BACKUP_ENCRYPTION_IDENTITY_FILE="+k1.key)
		if _, err := restore.Run(ctx, cfg, restore.Options{Target: &apply.Target{Kind: apply.Latest}, TargetDB: "mixed", NoSafetyBackup: true}); err != nil {
			t.Fatalf("point-in-time restore of a plaintext-then-encrypted chain: %v", err)
		}
		pgharness.CompareDatabases(t, c, "app", "mixed")
	})

	// Recipients changed in the middle of the chain.
	c.Exec(t, "app", `DELETE FROM t WHERE id % 7 = 0`)
	enc2 := load(t, env, "BACKUP_ENCRYPTION_RECIPIENTS="+k2.pub, "BACKUP_ENCRYPTION_IDENTITY_FILE="+both)
	if _, err := incremental.Take(ctx, enc2, incremental.Options{}); err != nil {
		t.Fatalf("incremental after the recipients changed: %v", err)
	}
	t.Run("recipients-changed-mid-chain", func(t *testing.T) {
		if _, err := restore.Run(ctx, enc2, restore.Options{Target: &apply.Target{Kind: apply.Latest}, TargetDB: "rotated", NoSafetyBackup: true}); err != nil {
			t.Fatalf("restore across two keys: %v", err)
		}
		pgharness.CompareDatabases(t, c, "app", "rotated")
		// The new key alone cannot open the chain's older archives: refused
		// before anything is written.
		only2 := load(t, env, "BACKUP_ENCRYPTION_RECIPIENTS="+k2.pub, "BACKUP_ENCRYPTION_IDENTITY_FILE="+k2.key)
		_, err := restore.Run(ctx, only2, restore.Options{Target: &apply.Target{Kind: apply.Latest}, TargetDB: "only_k2", NoSafetyBackup: true})
		if errs.CodeOf(err) != crypt.KeyErr {
			t.Fatalf("restore with the new key only: %v (code %s)", err, errs.CodeOf(err))
		}
		mustNotExist(t, c, "only_k2")
		tempLeft(t, enc2.StateDir(), filepath.Join(enc2.StateDir(), "pitr"))
	})

	// Drills of the mixed, rotated chain; one finds the scratch database
	// a killed drill left behind (with a table in it).
	t.Run("drill-leftover-scratch", func(t *testing.T) {
		enc2 := load(t, env, "BACKUP_ENCRYPTION_RECIPIENTS="+k2.pub, "BACKUP_ENCRYPTION_IDENTITY_FILE="+both) // keys are process-wide
		id, err := config.InstallationShortID(enc2)
		if err != nil {
			t.Fatal(err)
		}
		scratch := drill.ScratchName(id, "app")
		c.CreateDB(t, scratch)
		c.Exec(t, scratch, `CREATE TABLE left_behind (x int)`)
		res, err := ops.Drill(ctx, enc2, ops.DrillOptions{}, nil)
		if err != nil || !res.OK {
			t.Fatalf("drill of an encrypted chain with a leftover scratch database: %v %+v", err, res)
		}
		d := res.Databases[0]
		if d.Tables == 0 || d.Incrementals != 2 || !d.ScratchDropped {
			t.Fatalf("drill: %+v", d)
		}
		mustNotExist(t, c, scratch)
		tempLeft(t, enc2.StateDir())
	})

	// A full backup starting while a drill runs: its sweep of leftover
	// temporary files must not remove the drill's work directories.
	t.Run("drill-during-backup-start", func(t *testing.T) {
		enc2 := load(t, env, "BACKUP_ENCRYPTION_RECIPIENTS="+k2.pub, "BACKUP_ENCRYPTION_IDENTITY_FILE="+both)
		type out struct {
			res *ops.DrillResult
			err error
		}
		done := make(chan out, 1)
		go func() {
			r, err := ops.Drill(ctx, enc2, ops.DrillOptions{}, nil)
			done <- out{r, err}
		}()
		finished := false
		defer func() {
			if !finished {
				<-done // never leave the drill running into the next case
			}
		}()
		swept, busy := 0, 0
		deadline := time.Now().Add(5 * time.Minute)
	wait:
		for time.Now().Before(deadline) {
			select {
			case o := <-done:
				finished = true
				if o.err != nil || !o.res.OK {
					t.Fatalf("drill while a backup started (%d sweeps): %v", swept, o.err)
				}
				break wait
			default:
			}
			entries, _ := os.ReadDir(enc2.StateDir())
			for _, e := range entries {
				if fsutil.IsTemp(e.Name()) && e.IsDir() {
					// While the drill restores it holds the backup lock
					// (BUSY); while it checks, a backup may start.
					unlock, err := backupdir.Prepare(enc2, enc2.FullDir())
					if errs.CodeOf(err) == errs.Busy {
						busy++
						break
					}
					if err != nil {
						t.Fatalf("backup start: %v", err)
					}
					unlock()
					swept++
					break
				}
			}
			time.Sleep(20 * time.Millisecond)
		}
		if swept == 0 {
			pgharness.Require(t, "drill-sweep", "the drill ended before a backup could start during it")
		}
		t.Logf("the drill survived %d backup starts (%d refused while it restored)", swept, busy)
	})

	// A drill that starts while a backup holds the backup directory is
	// BUSY, not a failed drill: no false alarm, the last result stays.
	t.Run("drill-while-backup-runs", func(t *testing.T) {
		enc2 := load(t, env, "BACKUP_ENCRYPTION_RECIPIENTS="+k2.pub, "BACKUP_ENCRYPTION_IDENTITY_FILE="+both)
		before, err := drill.Last(enc2)
		if err != nil || before == nil || !before.OK {
			t.Fatalf("last drill before: %v %+v", err, before)
		}
		unlock, err := backupdir.Prepare(enc2, enc2.FullDir())
		if err != nil {
			t.Fatal(err)
		}
		_, err = ops.Drill(ctx, enc2, ops.DrillOptions{}, nil)
		unlock()
		if ops.CodeOf(err) != "BUSY" {
			t.Errorf("drill while a backup holds the directory: %v (code %s), want BUSY", err, ops.CodeOf(err))
		}
		if after, _ := drill.Last(enc2); after == nil || !after.OK || !after.Time.Equal(before.Time) {
			t.Errorf("a drill that could not run replaced the last result: %+v", after)
		}
		if id, err := config.InstallationShortID(enc2); err == nil {
			mustNotExist(t, c, drill.ScratchName(id, "app"))
		}
	})

	// Archives damaged at their very end, or cut at a chunk boundary of
	// age's 64 KiB STREAM chunks: refused, nothing written, nothing left.
	t.Run("damaged-end", func(t *testing.T) {
		enc2 := load(t, env, "BACKUP_ENCRYPTION_RECIPIENTS="+k2.pub, "BACKUP_ENCRYPTION_IDENTITY_FILE="+both)
		full, err := backup.Full(ctx, enc2, backup.Options{})
		if err != nil {
			t.Fatal(err)
		}
		orig, _ := os.ReadFile(full.Path)
		defer os.WriteFile(full.Path, orig, 0o600)
		hdr := bytes.Index(orig, []byte("\n--- ")) // the header ends with its MAC line
		end := bytes.IndexByte(orig[hdr+1:], '\n') + hdr + 2 + 16
		if hdr < 0 || len(orig) < end+2*(64*1024+16) {
			t.Fatalf("archive of %d bytes: too small for the cases", len(orig))
		}
		cases := map[string][]byte{
			"last byte flipped": append(bytes.Clone(orig[:len(orig)-1]), orig[len(orig)-1]^1),
			"cut at a chunk":    orig[:end+(64*1024+16)],
			"one byte appended": append(bytes.Clone(orig), 0),
		}
		for what, data := range cases {
			os.WriteFile(full.Path, data, 0o600)
			db := "damaged_" + strings.ReplaceAll(what, " ", "_")
			_, err := restore.Run(ctx, enc2, restore.Options{Backup: full.Path, TargetDB: db, NoSafetyBackup: true})
			if err == nil {
				t.Errorf("%s: restore succeeded", what)
				continue
			}
			t.Logf("%s: %v", what, err)
			mustNotExist(t, c, db)
			if v, err := ops.Verify(ctx, enc2, ops.VerifyOptions{Backups: []string{full.Path}}, nil); err == nil || v.Failed != 1 {
				t.Errorf("%s: verify passed: %v", what, err)
			}
		}
		tempLeft(t, enc2.StateDir(), enc2.FullDir())
	})
}

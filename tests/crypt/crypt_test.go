// Package crypt_test checks encrypted repositories end to end against real
// PostgreSQL: every codec through full, incremental and point-in-time
// restore compared with the source; recovery with the age and tar tools
// alone; wrong key, truncated and corrupted archives refused before anything
// is written; no plaintext table data anywhere in BACKUP_DIR.
package crypt_test

import (
	"bytes"
	"context"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/pme2go/pme2go-backup/engine/apply"
	"github.com/pme2go/pme2go-backup/engine/archive"
	"github.com/pme2go/pme2go-backup/engine/backup"
	"github.com/pme2go/pme2go-backup/engine/capture"
	"github.com/pme2go/pme2go-backup/engine/chain"
	"github.com/pme2go/pme2go-backup/engine/config"
	"github.com/pme2go/pme2go-backup/engine/crypt"
	"github.com/pme2go/pme2go-backup/engine/errs"
	"github.com/pme2go/pme2go-backup/engine/incremental"
	"github.com/pme2go/pme2go-backup/engine/ops"
	"github.com/pme2go/pme2go-backup/engine/restore"
	"github.com/pme2go/pme2go-backup/tests/pgharness"
)

// keys is a recipients file and the identity that opens it.
type keys struct{ pub, key string }

func newKeys(t *testing.T, name string) keys {
	t.Helper()
	pub, key, err := crypt.TestKeys(t.TempDir(), name)
	if err != nil {
		t.Fatal(err)
	}
	return keys{pub, key}
}

// load builds a configuration (which installs its keys process-wide).
func load(t *testing.T, env map[string]string, mod ...string) *config.Config {
	t.Helper()
	e := map[string]string{}
	for k, v := range env {
		e[k] = v
	}
	for _, kv := range mod {
		k, v, _ := strings.Cut(kv, "=")
		e[k] = v
	}
	return pgharness.LoadConfig(t, e)
}

// grepTree fails the test when any file below dir holds needle.
func grepTree(t *testing.T, dir string, needle []byte) {
	t.Helper()
	n := 0
	filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || !d.Type().IsRegular() {
			return err
		}
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatalf("read %s: %v", p, err)
		}
		n++
		if bytes.Contains(b, needle) {
			t.Errorf("plaintext %q found in %s", needle, p)
		}
		return nil
	})
	if n == 0 {
		t.Fatalf("no file below %s", dir)
	}
}

func mustNotExist(t *testing.T, c *pgharness.Cluster, db string) {
	t.Helper()
	var n int
	if err := c.Conn(t, "postgres").QueryRow(context.Background(), "SELECT count(*) FROM pg_database WHERE datname = $1", db).Scan(&n); err != nil {
		t.Fatal(err)
	}
	if n != 0 {
		t.Fatalf("database %s exists: something was written before the refusal", db)
	}
}

// TestEncryptedRoundTrips takes an encrypted full and incremental backup with
// every codec and restores them (full only, and point in time), comparing
// with the source; it then searches BACKUP_DIR for the rows' marker.
func TestEncryptedRoundTrips(t *testing.T) {
	ageBin := pgharness.LookTool(t, "age")
	tarBin := pgharness.LookTool(t, "tar")
	c := pgharness.Start(t)
	c.CreateDB(t, "app")
	c.Exec(t, "app", `CREATE TABLE t (id int PRIMARY KEY, v text)`)
	k := newKeys(t, "current")
	ctx := context.Background()
	defer crypt.Configure(crypt.Settings{})
	for i, codec := range archive.Codecs {
		t.Run(string(codec), func(t *testing.T) {
			marker := "ENC-MARKER-" + strings.ToUpper(string(codec)) + "-5f1c"
			env := pgharness.ConfigEnv(t, c, []string{"app"}, "BACKUP_COMPRESSION="+string(codec), "BACKUP_COMPRESSION_LEVEL=1",
				"REPLICA_IDENTITY_FIX=full", "BACKUP_ENCRYPTION_RECIPIENTS="+k.pub, "BACKUP_ENCRYPTION_IDENTITY_FILE="+k.key)
			cfg := load(t, env)
			c.Exec(t, "app", `TRUNCATE t`)
			c.Exec(t, "app", `SELECT lo_unlink(oid) FROM pg_largeobject_metadata`)
			c.Exec(t, "app", `INSERT INTO t SELECT g, $1 || g FROM generate_series(1, 2000) g`, marker+"-full-")
			full, err := backup.Full(ctx, cfg, backup.Options{Chain: incremental.NewChainStarter(cfg, nil)})
			if err != nil {
				t.Fatalf("full backup: %v", err)
			}
			if !strings.HasSuffix(full.Path, codec.Ext()+".age") {
				t.Fatalf("full backup %s is not named .age", full.Path)
			}
			c.Exec(t, "app", `INSERT INTO t SELECT g, $1 || g FROM generate_series(2001, 3000) g`, marker+"-incr-")
			c.Exec(t, "app", `UPDATE t SET v = v || '-updated' WHERE id % 7 = 0`)
			c.Exec(t, "app", `SELECT lo_from_bytea(0, convert_to($1, 'UTF8'))`, marker+"-largeobject")
			// Capture into the open segment (no seal) and look for the
			// marker in the state directory: the segment is encrypted.
			st, err := chain.OpenFor(cfg, "app")
			if err != nil {
				t.Fatal(err)
			}
			if _, err := capture.Drain(ctx, cfg, st, capture.Options{}); err != nil {
				t.Fatalf("drain: %v", err)
			}
			segs, _ := capture.Segments(st)
			if len(segs) == 0 {
				t.Fatal("no open segment after the drain")
			}
			grepTree(t, cfg.BackupDir, []byte(marker))
			incs, err := incremental.Take(ctx, cfg, incremental.Options{})
			if err != nil || len(incs) == 0 || incs[0].Path == "" {
				t.Fatalf("incremental: %v %v", incs, err)
			}
			if !strings.HasSuffix(incs[0].Path, ".age") {
				t.Fatalf("incremental %s is not named .age", incs[0].Path)
			}
			// Point in time (latest) restore into a new database.
			db := "pitr_" + string(codec)
			_, err = restore.Run(ctx, cfg, restore.Options{Target: &apply.Target{Kind: apply.Latest}, TargetDB: db, NoSafetyBackup: true})
			if err != nil {
				t.Fatalf("point-in-time restore: %v", err)
			}
			pgharness.CompareDatabases(t, c, "app", db)

			// Nothing in BACKUP_DIR holds the rows in clear.
			grepTree(t, cfg.BackupDir, []byte(marker))

			if i == 0 {
				// Full restore of the full backup alone, then the standard
				// tools: age -d | tar -x, pg_restore.
				c.CreateDB(t, "fullonly")
				if _, err := restore.Run(ctx, cfg, restore.Options{Backup: full.Path, TargetDB: "fullonly", Force: true, NoSafetyBackup: true}); err != nil {
					t.Fatalf("full restore: %v", err)
				}
				var n int
				c.Conn(t, "fullonly").QueryRow(ctx, "SELECT count(*) FROM t").Scan(&n)
				if n != 2000 {
					t.Fatalf("full restore has %d rows, want 2000", n)
				}
				byHand(t, c, ageBin, tarBin, k.key, full.Path, codec)
				refusals(t, c, env, full.Path, k)
			}
		})
	}
}

// byHand recovers an archive with age, tar and pg_restore only.
func byHand(t *testing.T, c *pgharness.Cluster, ageBin, tarBin, key, path string, codec archive.Codec) {
	t.Helper()
	dir := t.TempDir()
	flag := map[archive.Codec]string{archive.CodecXZ: "-xJ", archive.CodecZstd: "--zstd -x", archive.CodecGzip: "-xz", archive.CodecNone: "-x"}[codec]
	sh := ageBin + " -d -i " + key + " " + path + " | " + tarBin + " " + flag + " -C " + dir
	if out, err := exec.Command("sh", "-c", sh).CombinedOutput(); err != nil {
		t.Fatalf("%s: %v\n%s", sh, err, out)
	}
	c.CreateDB(t, "by_hand")
	cmd := exec.Command(c.Bin("pg_restore"), "-d", "by_hand", filepath.Join(dir, "database", "app"))
	cmd.Env = append(os.Environ(), c.Env("by_hand")...)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("pg_restore: %v\n%s", err, out)
	}
	pgharness.CompareDatabases(t, c, "fullonly", "by_hand")
}

// refusals: a wrong key, no key, a truncated and a corrupted archive are
// each refused with a clear error before any database is created.
func refusals(t *testing.T, c *pgharness.Cluster, env map[string]string, path string, k keys) {
	t.Helper()
	ctx := context.Background()
	other := newKeys(t, "other")
	try := func(what string, cfg *config.Config, wantCode errs.Code) {
		t.Helper()
		db := "refused_" + strings.ReplaceAll(what, " ", "_")
		_, err := restore.Run(ctx, cfg, restore.Options{Backup: path, TargetDB: db, NoSafetyBackup: true})
		if err == nil {
			t.Fatalf("%s: restore succeeded", what)
		}
		if wantCode != "" && errs.CodeOf(err) != wantCode {
			t.Fatalf("%s: code %s, want %s: %v", what, errs.CodeOf(err), wantCode, err)
		}
		if wantCode == crypt.KeyErr && errs.FixOf(err) == nil {
			t.Fatalf("%s: no fix in %v", what, err)
		}
		t.Logf("%s: %v", what, err)
		mustNotExist(t, c, db)
	}
	// A recipients file that cannot be read stops a backup before the dump.
	before, _ := filepath.Glob(filepath.Join(env["BACKUP_DIR"], "full", "*"))
	if _, err := ops.Full(ctx, load(t, env, "BACKUP_ENCRYPTION_RECIPIENTS=/nonexistent/recipients.txt"), ops.FullOptions{}, nil); errs.CodeOf(err) != errs.Config {
		t.Fatalf("full backup with a missing recipients file: %v", err)
	}
	if after, _ := filepath.Glob(filepath.Join(env["BACKUP_DIR"], "full", "*")); len(after) != len(before) {
		t.Fatalf("files left in full/: %v", after)
	}
	try("wrong key", load(t, env, "BACKUP_ENCRYPTION_IDENTITY_FILE="+other.key), crypt.KeyErr)
	try("no key", load(t, env, "BACKUP_ENCRYPTION_IDENTITY_FILE="), crypt.KeyErr)
	orig, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	defer os.WriteFile(path, orig, 0o600)
	cfg := load(t, env)
	os.WriteFile(path, orig[:len(orig)*2/3], 0o600)
	try("truncated", cfg, "")
	b := bytes.Clone(orig)
	b[len(b)/2] ^= 1
	os.WriteFile(path, b, 0o600)
	try("corrupted", cfg, "")
	if err := os.WriteFile(path, orig, 0o600); err != nil {
		t.Fatal(err)
	}
}

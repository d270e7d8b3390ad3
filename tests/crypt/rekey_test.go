package crypt_test

import (
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/pme2go/pme2go-backup/engine/apply"
	"github.com/pme2go/pme2go-backup/engine/backup"
	"github.com/pme2go/pme2go-backup/engine/crypt"
	"github.com/pme2go/pme2go-backup/engine/errs"
	"github.com/pme2go/pme2go-backup/engine/incremental"
	"github.com/pme2go/pme2go-backup/engine/ops"
	"github.com/pme2go/pme2go-backup/engine/restore"
	"github.com/pme2go/pme2go-backup/tests/pgharness"
)

// buildCLI builds the pme2go-backup binary.
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

// cli runs the binary in process mode with env as its configuration.
func cli(t *testing.T, bin string, env map[string]string, extra []string, args ...string) ([]byte, error) {
	conf := filepath.Join(t.TempDir(), "empty.conf")
	os.WriteFile(conf, nil, 0o600)
	cmd := exec.Command(bin, append([]string{"--config", conf, "--direct"}, args...)...)
	cmd.Env = os.Environ()
	for k, v := range env {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	cmd.Env = append(cmd.Env, extra...)
	return cmd.CombinedOutput()
}

// TestRekey rotates the key of an encrypted repository: status names the
// retired key as still needed, rekey is killed right after replacing an
// archive and resumed, after which the retired key is needed by nothing and
// a point-in-time restore with the new key alone matches the source.
func TestRekey(t *testing.T) {
	bin := buildCLI(t)
	c := pgharness.Start(t)
	c.CreateDB(t, "app")
	c.Exec(t, "app", `CREATE TABLE t (id int PRIMARY KEY, v text)`)
	c.Exec(t, "app", `INSERT INTO t SELECT g, 'row ' || g FROM generate_series(1, 1000) g`)
	ctx := context.Background()
	defer crypt.Configure(crypt.Settings{})
	old, next := newKeys(t, "old"), newKeys(t, "new")
	env := pgharness.ConfigEnv(t, c, []string{"app"}, "BACKUP_COMPRESSION=zstd", "REPLICA_IDENTITY_FIX=full",
		"BACKUP_ENCRYPTION_RECIPIENTS="+old.pub, "BACKUP_ENCRYPTION_IDENTITY_FILE="+old.key)
	cfg := load(t, env)
	if _, err := backup.Full(ctx, cfg, backup.Options{Chain: incremental.NewChainStarter(cfg, nil)}); err != nil {
		t.Fatal(err)
	}
	c.Exec(t, "app", `UPDATE t SET v = v || ' changed' WHERE id < 100`)
	if _, err := incremental.Take(ctx, cfg, incremental.Options{}); err != nil {
		t.Fatal(err)
	}
	c.Exec(t, "app", `DELETE FROM t WHERE id > 900`)
	if _, err := incremental.Take(ctx, cfg, incremental.Options{}); err != nil {
		t.Fatal(err)
	}

	// Rotate: new archives go to the new key; both private keys decrypt.
	both := filepath.Join(t.TempDir(), "both.key")
	a, _ := os.ReadFile(old.key)
	b, _ := os.ReadFile(next.key)
	os.WriteFile(both, append(a, b...), 0o600)
	env["BACKUP_ENCRYPTION_RECIPIENTS"], env["BACKUP_ENCRYPTION_IDENTITY_FILE"] = next.pub, both
	cfg = load(t, env)
	st, err := ops.Status(ctx, cfg, ops.StatusOptions{NoServer: true}, nil)
	if err != nil {
		t.Fatal(err)
	}
	e := st.Encryption
	if e == nil || e.Encrypted != 3 || e.NeedRekey != 3 || len(e.Keys) != 1 || e.Keys[0].Current || e.Keys[0].NeededBy != 3 {
		t.Fatalf("status before rekey: %+v", e)
	}

	// Killed right after replacing the first archive: its sidecar is old.
	out, err := cli(t, bin, env, []string{"PME2GO_TEST_REKEY_KILL=after-rename"}, "rekey")
	if err == nil {
		t.Fatalf("rekey was not killed:\n%s", out)
	}
	journals, _ := filepath.Glob(filepath.Join(cfg.StateDir(), "rekey", "*.json"))
	if len(journals) != 1 {
		t.Fatalf("journals after the kill: %v (output %s)", journals, out)
	}
	out, err = cli(t, bin, env, nil, "rekey", "--json")
	if err != nil {
		t.Fatalf("rekey resumed: %v\n%s", err, out)
	}
	var res ops.RekeyResult
	if err := json.Unmarshal(out, &res); err != nil || res.Rekeyed != 3 {
		t.Fatalf("rekey result %s: %v", out, err)
	}
	if !strings.Contains(string(out), `"resumed"`) {
		t.Fatalf("rekey did not resume the interrupted replacement: %s", out)
	}
	if out, err := cli(t, bin, env, nil, "rekey", "--json"); err != nil || !strings.Contains(string(out), `"current": 3`) {
		t.Fatalf("second rekey: %v\n%s", err, out)
	}

	// The old key is needed by nothing: restore with the new key alone.
	env["BACKUP_ENCRYPTION_IDENTITY_FILE"] = next.key
	cfg = load(t, env)
	st, _ = ops.Status(ctx, cfg, ops.StatusOptions{NoServer: true}, nil)
	if e := st.Encryption; e.NeedRekey != 0 || len(e.Keys) != 1 || !e.Keys[0].Current || e.Keys[0].Archives != 3 {
		t.Fatalf("status after rekey: %+v", e)
	}
	if out, err := cli(t, bin, env, nil, "status"); err != nil || !strings.Contains(string(out), "Encryption:       on") {
		t.Fatalf("status output: %v\n%s", err, out)
	}
	if l, err := ops.List(ctx, cfg, ops.ListOptions{}, nil); err != nil || len(l) != 3 || len(l[0].Recipients) != 1 || l[0].Recipients[0] != crypt.Fingerprint(readKey(t, next.pub)) {
		t.Fatalf("list after rekey: %v %+v", err, l)
	}
	if v, err := ops.Verify(ctx, cfg, ops.VerifyOptions{}, nil); err != nil || v.Failed != 0 {
		t.Fatalf("verify after rekey: %v %+v", err, v)
	}
	if _, err := restore.Run(ctx, cfg, restore.Options{Target: &apply.Target{Kind: apply.Latest}, TargetDB: "after_rekey", NoSafetyBackup: true}); err != nil {
		t.Fatalf("restore after rekey: %v", err)
	}
	pgharness.CompareDatabases(t, c, "app", "after_rekey")

	// The old key alone opens nothing any more.
	env["BACKUP_ENCRYPTION_IDENTITY_FILE"] = old.key
	cfg = load(t, env)
	if _, err := restore.Run(ctx, cfg, restore.Options{Target: &apply.Target{Kind: apply.Latest}, TargetDB: "old_key", NoSafetyBackup: true}); errs.CodeOf(err) != crypt.KeyErr {
		t.Fatalf("restore with the retired key: %v", err)
	}
	mustNotExist(t, c, "old_key")
}

// readKey returns the one public key of a recipients file.
func readKey(t *testing.T, path string) string {
	t.Helper()
	r, err := crypt.ReadRecipients(path)
	if err != nil {
		t.Fatal(err)
	}
	return r.Keys[0]
}

package integration

import (
	"archive/tar"
	"bytes"
	"encoding/json"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ulikunitz/xz"

	"github.com/pme2go/pme2go-backup/engine/archive"
	"github.com/pme2go/pme2go-backup/tests/pgharness"
)

// takeBackup runs `pme2go-backup full` and returns the archive path.
func takeBackup(t *testing.T, env map[string]string) string {
	t.Helper()
	r := runCLI(t, env, "full")
	if r.code != 0 {
		t.Fatalf("full: exit %d\n%s", r.code, r.stderr)
	}
	path, _, _ := strings.Cut(r.stdout, "\t")
	return path
}

// listed returns the names `list --json` shows.
func listed(t *testing.T, env map[string]string) []string {
	t.Helper()
	r := runCLI(t, env, "list", "--json")
	if r.code != 0 {
		t.Fatalf("list: exit %d: %s", r.code, r.stderr)
	}
	var bs []struct{ Name, Problem string }
	if err := json.Unmarshal([]byte(r.stdout), &bs); err != nil {
		t.Fatalf("list --json: %v\n%s", err, r.stdout)
	}
	var names []string
	for _, b := range bs {
		names = append(names, b.Name+b.Problem)
	}
	return names
}

func expectFailure(t *testing.T, r cliResult, wants ...string) {
	t.Helper()
	if r.code == 0 {
		t.Fatalf("exit 0, want failure; stdout:\n%s", r.stdout)
	}
	for _, w := range wants {
		if !strings.Contains(r.stdout+r.stderr, w) {
			t.Errorf("output lacks %q:\n%s%s", w, r.stdout, r.stderr)
		}
	}
}

// TestDamagedArchives corrupts, truncates and forges archives: verify names
// the problem and exits non-zero, restore refuses before touching anything.
func TestDamagedArchives(t *testing.T) {
	c := pgharness.Start(t)
	c.CreateDB(t, "app")
	c.Exec(t, "app", `CREATE TABLE t AS SELECT g AS id, md5(g::text) AS v FROM generate_series(1, 20000) g`)
	env := cfgEnv(t, c, []string{"app"})
	good := takeBackup(t, env)
	data, err := os.ReadFile(good)
	if err != nil {
		t.Fatal(err)
	}
	sidecar, _ := os.ReadFile(archive.SidecarPath(good))
	damage := func(name string, content []byte) string {
		p := filepath.Join(filepath.Dir(good), name)
		os.WriteFile(p, content, 0o600)
		os.WriteFile(archive.SidecarPath(p), sidecar, 0o600)
		return p
	}
	flipped := append([]byte(nil), data...)
	flipped[len(flipped)/2] ^= 0x40
	cases := []struct {
		name, path string
		wants      []string
	}{
		{"corrupt byte", damage("full_backup_corrupt.tar.xz", flipped), []string{"FAILED", "checksum"}},
		{"truncated", damage("full_backup_truncated.tar.xz", data[:len(data)*2/3]), []string{"FAILED", "truncated"}},
		{"path traversal", damage("full_backup_evil.tar.xz", evilArchive(t)), []string{"FAILED", "../evil"}},
		{"foreign file", damage("full_backup_foreign.tar.xz", []byte("just some text, not an archive\n")), []string{"FAILED"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			expectFailure(t, runCLI(t, env, "verify", tc.path), tc.wants...)
			expectFailure(t, runCLI(t, env, "restore", "--backup", tc.path, "--target-db", "never_created"), "verification")
			var exists bool
			if err := c.Conn(t, "postgres").QueryRow(t.Context(), `SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = 'never_created')`).Scan(&exists); err != nil {
				t.Fatal(err)
			}
			if exists {
				t.Fatal("a refused restore created its target database")
			}
		})
	}
	// restore extracts below BACKUP_DIR/state (a private work directory),
	// so "../evil-pme2go" would land in BACKUP_DIR/state; look everywhere
	// under BACKUP_DIR and in the temporary directory.
	stateDir := filepath.Join(env["BACKUP_DIR"], "state")
	if _, err := os.Stat(stateDir); err != nil {
		t.Fatalf("no state directory %s: the check below would look in the wrong place: %v", stateDir, err)
	}
	filepath.WalkDir(env["BACKUP_DIR"], func(p string, d os.DirEntry, err error) error {
		if err == nil && d.Name() == "evil-pme2go" {
			t.Errorf("extraction wrote outside its directory: %s", p)
		}
		return nil
	})
	if _, err := os.Stat(filepath.Join(os.TempDir(), "evil-pme2go")); err == nil {
		t.Fatal("extraction wrote outside its directory")
	}
	if r := runCLI(t, env, "verify", good); r.code != 0 {
		t.Fatalf("the intact archive no longer verifies: %s", r.stdout)
	}
}

// evilArchive builds a tar.xz with a member escaping the extraction directory.
func evilArchive(t *testing.T) []byte {
	var buf bytes.Buffer
	xw, _ := xz.NewWriter(&buf)
	tw := tar.NewWriter(xw)
	body := []byte("owned\n")
	tw.WriteHeader(&tar.Header{Name: "../evil-pme2go", Mode: 0o600, Size: int64(len(body)), Typeflag: tar.TypeReg})
	tw.Write(body)
	m := []byte(`{"type":"full","formatVersion":1,"checksums":{}}`)
	tw.WriteHeader(&tar.Header{Name: "manifest.json", Mode: 0o600, Size: int64(len(m)), Typeflag: tar.TypeReg})
	tw.Write(m)
	tw.Close()
	xw.Close()
	return buf.Bytes()
}

// TestConnectionFailures: a wrong password and an unreachable server give a
// clear message, a non-zero exit and no archive.
func TestConnectionFailures(t *testing.T) {
	c := pgharness.Start(t)
	tcp := cfgEnv(t, c, []string{"postgres"}, "DB_HOST=127.0.0.1", "DB_PASSWORD=wrong-password")
	expectFailure(t, runCLI(t, tcp, "full"), "authentication failed", "password")
	if names := listed(t, tcp); len(names) != 0 {
		t.Fatalf("a failed backup is listed: %v", names)
	}
	r := runCLI(t, tcp, "full")
	if strings.Contains(r.stdout+r.stderr, "wrong-password") {
		t.Fatal("the password appears in the output")
	}
	ok := cfgEnv(t, c, []string{"postgres"}, "DB_HOST=127.0.0.1", "DB_PASSWORD="+c.Password)
	takeBackup(t, ok)

	down := cfgEnv(t, c, []string{"postgres"}, "DB_HOST=127.0.0.1", "DB_PORT=1")
	expectFailure(t, runCLI(t, down, "full"), "server unreachable", "DB_HOST")
	expectFailure(t, runCLI(t, down, "test"), "fail", "connection")
}

// TestBackupDirNotWritable: a BACKUP_DIR the service user cannot write is
// refused with the directory's name.
func TestBackupDirNotWritable(t *testing.T) {
	c := pgharness.Start(t)
	env := cfgEnv(t, c, []string{"postgres"})
	parent := filepath.Dir(env["BACKUP_DIR"])
	if os.Geteuid() == 0 {
		// root writes anywhere: run the CLI as nobody against a root-owned directory.
		nobody, err := user.Lookup("nobody")
		if err != nil {
			pgharness.Require(t, "user nobody", "running as root, this test runs the CLI as the unprivileged user nobody: "+err.Error())
		}
		os.Chmod(filepath.Dir(parent), 0o755)
		os.Chmod(parent, 0o755)
		uid, _ := strconv.Atoi(nobody.Uid)
		gid, _ := strconv.Atoi(nobody.Gid)
		cmd := cliCmd(env, "full")
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}}
		out, err := cmd.CombinedOutput()
		if err == nil || !strings.Contains(string(out), env["BACKUP_DIR"]) || !strings.Contains(string(out), "BACKUP_DIR") {
			t.Fatalf("want a failure naming BACKUP_DIR, got %v:\n%s", err, out)
		}
		return
	}
	os.Chmod(parent, 0o500)
	defer os.Chmod(parent, 0o700)
	expectFailure(t, runCLI(t, env, "full"), env["BACKUP_DIR"], "BACKUP_DIR")
}

// TestKilledBackupLeavesNothing kills a backup with SIGKILL midway: nothing
// is listed, and the next run removes the leftovers and succeeds.
func TestKilledBackupLeavesNothing(t *testing.T) {
	c := pgharness.Start(t)
	c.CreateDB(t, "big")
	pgharness.LoadBulk(t, c, "big", 60)
	env := cfgEnv(t, c, []string{"big"}, "BACKUP_COMPRESSION=xz", "BACKUP_JOBS=1")
	full := filepath.Join(env["BACKUP_DIR"], "full")
	// SIGTERM (systemctl stop, Ctrl-C) cancels cleanly: pg_dump is stopped
	// and the backup removes its own temporary files.
	cmd := cliCmd(env, "full")
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	if !waitPhase(full, "staging") {
		t.Fatal("the backup never reached its staging phase within a minute")
	}
	cmd.Process.Signal(syscall.SIGTERM)
	if err := cmd.Wait(); err == nil || !strings.Contains(stderr.String(), "cancel") {
		t.Fatalf("SIGTERM: want a failure saying the backup was cancelled, got %v:\n%s", err, stderr.String())
	}
	if names := listed(t, env); len(names) != 0 || leftovers(full) {
		t.Fatalf("cancelled backup listed (%v) or left temporary files", names)
	}

	for _, wait := range []string{"staging", "archive"} {
		cmd := cliCmd(env, "full")
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		if !waitPhase(full, wait) {
			t.Fatalf("the backup never reached its %s phase within a minute", wait)
		}
		cmd.Process.Kill()
		cmd.Wait()
		if names := listed(t, env); len(names) != 0 {
			t.Fatalf("killed during %s: listed %v", wait, names)
		}
		if !leftovers(full) {
			t.Logf("killed during %s: no leftovers to clean (backup may have finished its phase)", wait)
		}
	}
	path := takeBackup(t, env)
	if leftovers(full) {
		t.Fatal("leftovers of the killed runs remain after the next backup")
	}
	if names := listed(t, env); len(names) != 1 || names[0] != filepath.Base(path) {
		t.Fatalf("after recovery: %v", names)
	}
	if r := runCLI(t, env, "verify"); r.code != 0 {
		t.Fatalf("verify after recovery: %s%s", r.stdout, r.stderr)
	}
}

// phaseReached reports whether the backup in dir has reached the phase:
// "staging" once pg_dump writes, "archive" once the temporary archive exists.
// waitPhase polls until the backup in dir reaches phase; false after a minute.
func waitPhase(dir, phase string) bool {
	for deadline := time.Now().Add(time.Minute); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if phaseReached(dir, phase) {
			return true
		}
	}
	return false
}

func phaseReached(dir, phase string) bool {
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		if phase == "staging" && strings.HasSuffix(e.Name(), "staging") {
			return true
		}
		if phase == "archive" && strings.Contains(e.Name(), ".tar.xz.tmp-") {
			return true
		}
	}
	return false
}

func leftovers(dir string) bool {
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), ".") {
			return true
		}
	}
	return false
}

// TestFullDisk runs a backup into a BACKUP_DIR on a tiny tmpfs: it fails with
// a message about space, leaves no partial archive, and the backup taken
// before it stays intact.
func TestFullDisk(t *testing.T) {
	c := pgharness.Start(t)
	c.CreateDB(t, "app")
	c.Exec(t, "app", `CREATE TABLE small AS SELECT g FROM generate_series(1, 10) g`)
	mnt := filepath.Join(t.TempDir(), "tiny")
	os.MkdirAll(mnt, 0o700)
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=4m,mode=0700", "tmpfs", mnt).CombinedOutput(); err != nil {
		pgharness.Require(t, "tmpfs", "cannot mount a small tmpfs to fill (needs root): "+strings.TrimSpace(string(out)))
	}
	t.Cleanup(func() { exec.Command("umount", "-l", mnt).Run() })
	env := cfgEnv(t, c, []string{"app"}, "BACKUP_DIR="+filepath.Join(mnt, "backups"))
	first := takeBackup(t, env)
	c.Exec(t, "app", `CREATE TABLE big AS SELECT g, md5(g::text) || md5((g+1)::text) || md5((g+2)::text) AS v FROM generate_series(1, 200000) g`)
	expectFailure(t, runCLI(t, env, "full"), "no space left", "BACKUP_DIR")
	if names := listed(t, env); len(names) != 1 || names[0] != filepath.Base(first) {
		t.Fatalf("after the failed backup: %v", names)
	}
	if leftovers(filepath.Join(env["BACKUP_DIR"], "full")) {
		t.Fatal("the failed backup left temporary files behind")
	}
	if r := runCLI(t, env, "verify", first); r.code != 0 {
		t.Fatalf("the earlier backup no longer verifies: %s", r.stdout)
	}
}

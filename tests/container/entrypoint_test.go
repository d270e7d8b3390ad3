// Package container_test runs the container image's entry point
// (packaging/container/entrypoint.sh) directly on this machine, the way the
// image runs it, since no container runtime is assumed here: the private bus
// from the image's bus.conf, the daemon in the foreground with its own
// scheduler, BACKUP_DIR in a directory standing for the volume, the password
// from a file standing for the secret; a scheduled full backup, a restore
// drill asked through the bus as `docker exec … pme2go-backup drill` would,
// the CLI pass-through of the entry point, and a clean stop on SIGTERM. It
// also parses the Kubernetes manifest.
package container_test

import (
	"bytes"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/pme2go/pme2go-backup/tests/busharness"
	"github.com/pme2go/pme2go-backup/tests/pgharness"
)

func build(t *testing.T, dir, pkg, name string) {
	t.Helper()
	if out, err := exec.Command("go", "build", "-o", filepath.Join(dir, name), pkg).CombinedOutput(); err != nil {
		t.Fatalf("build %s: %v\n%s", name, err, out)
	}
}

// TestEntrypoint: see the package comment.
func TestEntrypoint(t *testing.T) {
	if os.Getuid() != 0 {
		pgharness.Require(t, "root", "the bus policy lets root call the daemon (the container's user is in the group instead)")
	}
	if _, err := exec.LookPath("dbus-daemon"); err != nil {
		pgharness.Require(t, "dbus-daemon", "the entry point starts a private bus")
	}
	c := pgharness.Start(t)
	c.CreateDB(t, "app")
	c.Exec(t, "app", `CREATE TABLE t (id int PRIMARY KEY, v text); INSERT INTO t SELECT g, md5(g::text) FROM generate_series(1, 1000) g`)

	tmp, err := os.MkdirTemp("", "pme2go-container-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(tmp) })
	os.Chmod(tmp, 0o755)
	bin := filepath.Join(tmp, "bin")
	build(t, bin, "github.com/pme2go/pme2go-backup/cmd/pme2go-backupd", "pme2go-backupd")
	build(t, bin, "github.com/pme2go/pme2go-backup/cmd/pme2go-backup", "pme2go-backup")

	// The image's bus configuration, with the socket and the package's
	// policy at this machine's paths.
	conf, err := os.ReadFile(busharness.RepoFile("packaging/container/bus.conf"))
	if err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(tmp, "bus")
	busConf := strings.NewReplacer("unix:path=/run/pme2go-backup/bus", "unix:path="+sock,
		"/usr/share/dbus-1/system.d/org.pme2go.Backup1.conf", busharness.RepoFile("systemd/org.pme2go.Backup1.conf")).Replace(string(conf))
	if !strings.Contains(busConf, sock) {
		t.Fatalf("bus.conf no longer listens on /run/pme2go-backup/bus:\n%s", conf)
	}
	busConfPath := filepath.Join(tmp, "container-bus.conf")
	os.WriteFile(busConfPath, []byte(busConf), 0o644)
	secret := filepath.Join(tmp, "secrets", "db-password")
	os.MkdirAll(filepath.Dir(secret), 0o700)
	os.WriteFile(secret, []byte(pgharness.DefaultPassword+"\n"), 0o400)
	emptyConf := filepath.Join(tmp, "pme2go-backup.conf")
	os.WriteFile(emptyConf, nil, 0o600)
	backupDir := filepath.Join(tmp, "volume")

	env := []string{"PATH=" + bin + ":" + os.Getenv("PATH"), "HOME=" + tmp,
		"PME2GO_BUS_CONFIG=" + busConfPath, "PME2GO_DAEMON=" + filepath.Join(bin, "pme2go-backupd"),
		"DBUS_SYSTEM_BUS_ADDRESS=unix:path=" + sock,
		"BACKUP_DIR=" + backupDir, "DB_HOST=127.0.0.1", "DB_PORT=" + strconv.Itoa(c.Port), "DB_USER=postgres",
		"DB_NAME=app", "DB_PASSWORD_FILE=" + secret, "BACKUP_COMPRESSION_LEVEL=1",
		"FULL_BACKUP_SCHEDULE=* * * * *", "INCREMENTAL_BACKUP_SCHEDULE=0 0 1 1 *", "CLEANUP_SCHEDULE=0 0 1 1 *",
		"DRILL_SCHEDULE=0 0 1 1 *"}
	entry := busharness.RepoFile("packaging/container/entrypoint.sh")
	var logs bytes.Buffer
	daemon := exec.Command("sh", entry, "--config", emptyConf)
	daemon.Env = env
	daemon.Stdout, daemon.Stderr = &logs, &logs
	if err := daemon.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- daemon.Wait() }()
	t.Cleanup(func() {
		if daemon.ProcessState == nil {
			daemon.Process.Kill()
			<-done
		}
		killBus(busConfPath)
		if t.Failed() {
			t.Logf("entry point output:\n%s", logs.String())
		}
	})
	cli := func(args ...string) (string, error) {
		cmd := exec.Command(filepath.Join(bin, "pme2go-backup"), args...)
		cmd.Env = env
		out, err := cmd.CombinedOutput()
		return string(out), err
	}

	// The scheduler takes the full backup within the minute.
	deadline := time.Now().Add(150 * time.Second)
	for {
		out, err := cli("list", "--json")
		var list []struct{ Type string }
		if err == nil && json.Unmarshal([]byte(out), &list) == nil && len(list) > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no scheduled full backup within 150 s: %v\n%s", err, out)
		}
		time.Sleep(2 * time.Second)
	}
	if !strings.Contains(logs.String(), "scheduled job started") {
		t.Errorf("the daemon's log does not show the scheduled job")
	}
	// A drill asked through the container's bus, as `docker exec` would.
	if out, err := cli("drill"); err != nil || !strings.Contains(out, "OK app") {
		t.Fatalf("drill through the daemon: %v\n%s", err, out)
	}
	// The entry point with a CLI command runs it in process.
	cmd := exec.Command("sh", entry, "status")
	cmd.Env = env
	out, err := cmd.CombinedOutput()
	if err != nil || !strings.Contains(string(out), "Last drill:       OK") || !strings.Contains(string(out), "Last full backup: full_backup_") {
		t.Fatalf("entry point status: %v\n%s", err, out)
	}
	if strings.Contains(logs.String(), pgharness.DefaultPassword) {
		t.Errorf("the password is in the daemon's log")
	}
	// SIGTERM (docker stop) ends the daemon cleanly.
	daemon.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("daemon exit after SIGTERM: %v", err)
		}
	case <-time.After(60 * time.Second):
		t.Fatal("the daemon did not stop within 60 s of SIGTERM")
	}
	st, err := os.Stat(backupDir)
	if err != nil || st.Mode().Perm() != 0o700 {
		t.Errorf("BACKUP_DIR: %v %v", st, err)
	}
}

// killBus ends the dbus-daemon the entry point forked for busConf (found by
// its command line, which names that file).
func killBus(busConf string) {
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		cmdline, _ := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if bytes.Contains(cmdline, []byte("dbus-daemon")) && bytes.Contains(cmdline, []byte(busConf)) {
			syscall.Kill(pid, syscall.SIGTERM)
		}
	}
}

// TestKubernetesManifest parses the example manifest (no cluster is assumed
// here) and checks what the examples promise: one replica recreated, never
// two pods on the archives; the archives on a claim; the password as a
// file from a Secret; the daemon's own scheduler with a drill schedule.
func TestKubernetesManifest(t *testing.T) {
	data, err := os.ReadFile(busharness.RepoFile("packaging/kubernetes/pme2go-backup.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	kinds := map[string]map[string]any{}
	for {
		var doc map[string]any
		if err := dec.Decode(&doc); err != nil {
			if err.Error() == "EOF" {
				break
			}
			t.Fatalf("manifest: %v", err)
		}
		if doc == nil {
			continue
		}
		kinds[doc["kind"].(string)] = doc
	}
	for _, k := range []string{"ConfigMap", "PersistentVolumeClaim", "Deployment"} {
		if kinds[k] == nil {
			t.Fatalf("manifest lacks a %s", k)
		}
	}
	conf := kinds["ConfigMap"]["data"].(map[string]any)["pme2go-backup.conf"].(string)
	for _, want := range []string{"DB_PASSWORD_FILE=/run/secrets/", "BACKUP_DIR=/var/lib/pme2go-backup", "DRILL_SCHEDULE="} {
		if !strings.Contains(conf, want) {
			t.Errorf("configuration lacks %s", want)
		}
	}
	spec := kinds["Deployment"]["spec"].(map[string]any)
	if spec["replicas"] != 1 || spec["strategy"].(map[string]any)["type"] != "Recreate" {
		t.Errorf("deployment: replicas %v strategy %v", spec["replicas"], spec["strategy"])
	}
	js, _ := json.Marshal(spec)
	for _, want := range []string{`"claimName":"pme2go-backup-archives"`, `"secretName":"pme2go-backup-db"`, `"readOnlyRootFilesystem":true`, `"mountPath":"/var/lib/pme2go-backup"`} {
		if !strings.Contains(string(js), want) {
			t.Errorf("deployment lacks %s", want)
		}
	}
}

// Package busharness starts a private dbus-daemon configured like the
// system bus (EXTERNAL authentication, method calls denied unless a policy
// allows them, signals and replies allowed) with the project's policy file
// systemd/org.pme2go.Backup1.conf included, and points
// DBUS_SYSTEM_BUS_ADDRESS at it. Tests needing it skip through
// pgharness.Require when dbus-daemon is missing.
package busharness

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/pme2go/pme2go-backup/tests/pgharness"
)

// Bus is a running private bus.
type Bus struct {
	Address string // unix:path=...
	Dir     string // world-readable directory holding the socket and config
	cmd     *exec.Cmd
}

// RepoFile returns the path of a file in the repository.
func RepoFile(rel string) string {
	_, here, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(here), "..", "..", rel)
}

// Policy returns the project's bus policy with its group pme2go-backup
// replaced by group (the machine running the tests has no pme2go-backup
// group).
func Policy(t testing.TB, group string) string {
	t.Helper()
	data, err := os.ReadFile(RepoFile("systemd/org.pme2go.Backup1.conf"))
	if err != nil {
		t.Fatal(err)
	}
	s := string(data)
	if group != "pme2go-backup" {
		s = strings.ReplaceAll(s, `group="pme2go-backup"`, `group="`+group+`"`)
	}
	return s
}

const configHead = `<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>system</type>
  <auth>EXTERNAL</auth>
  <listen>unix:path=%s</listen>
  <policy context="default">
    <allow user="*"/>
    <deny own="*"/>
    <deny send_type="method_call"/>
    <allow send_type="signal"/>
    <allow send_requested_reply="true" send_type="method_return"/>
    <allow send_requested_reply="true" send_type="error"/>
    <allow receive_type="method_call"/>
    <allow receive_type="method_return"/>
    <allow receive_type="error"/>
    <allow receive_type="signal"/>
    <allow send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus"/>
    <allow send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus.Introspectable"/>
    <allow send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus.Properties"/>
    <deny send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus" send_member="UpdateActivationEnvironment"/>
  </policy>
  <policy user="root">
    <allow send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus.Monitoring"/>
  </policy>
`

// Start starts the bus with the given policy documents (the text of files
// like systemd/org.pme2go.Backup1.conf) included, sets
// DBUS_SYSTEM_BUS_ADDRESS for the test, and stops the bus at cleanup.
func Start(t testing.TB, policies ...string) *Bus {
	t.Helper()
	bin, err := exec.LookPath("dbus-daemon")
	if err != nil {
		pgharness.Require(t, "dbus-daemon", "dbus-daemon not in PATH (Debian: apt-get install dbus-daemon)")
		return nil
	}
	dir, err := os.MkdirTemp("", "pme2go-bus-")
	if err != nil {
		t.Fatal(err)
	}
	// Unprivileged test clients must reach the socket.
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	sock := filepath.Join(dir, "system_bus_socket")
	var cfg strings.Builder
	fmt.Fprintf(&cfg, configHead, sock)
	for i, p := range policies {
		f := filepath.Join(dir, fmt.Sprintf("policy-%d.conf", i))
		if err := os.WriteFile(f, []byte(p), 0o644); err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(&cfg, "  <include>%s</include>\n", f)
	}
	cfg.WriteString("</busconfig>\n")
	cfgPath := filepath.Join(dir, "system.conf")
	if err := os.WriteFile(cfgPath, []byte(cfg.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "--config-file="+cfgPath, "--nofork", "--nopidfile", "--print-address=1")
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	b := &Bus{Dir: dir, cmd: cmd}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	})
	lines := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(out)
		if sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
		for sc.Scan() {
		}
	}()
	select {
	case addr, ok := <-lines:
		if !ok {
			t.Fatalf("dbus-daemon exited: %s", stderr.String())
		}
		b.Address = strings.TrimSpace(addr)
	case <-time.After(10 * time.Second):
		t.Fatalf("dbus-daemon did not start: %s", stderr.String())
	}
	t.Setenv("DBUS_SYSTEM_BUS_ADDRESS", b.Address)
	return b
}

package daemon_test

import (
	"errors"
	"os"
	"os/exec"
	"os/user"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/godbus/dbus/v5"

	"github.com/pme2go/pme2go-backup/dbusapi"
	"github.com/pme2go/pme2go-backup/tests/busharness"
)

// polkitStandIn answers org.freedesktop.PolicyKit1.Authority.CheckAuthorization
// on the private bus (polkitd itself cannot run on a private bus without
// installing files into the host), granting the actions in allow and
// recording every request, so that the daemon's requests can be checked.
type polkitStandIn struct {
	allow map[string]bool
	mu    sync.Mutex
	calls []polkitCall
}

type polkitCall struct {
	Kind, Name, Action string
	Flags              uint32
}

type subject struct {
	Kind    string
	Details map[string]dbus.Variant
}

type authResult struct {
	Authorized bool
	Challenge  bool
	Details    map[string]string
}

func (p *polkitStandIn) CheckAuthorization(s subject, action string, _ map[string]string, flags uint32, _ string) (authResult, *dbus.Error) {
	name, _ := s.Details["name"].Value().(string)
	p.mu.Lock()
	p.calls = append(p.calls, polkitCall{s.Kind, name, action, flags})
	p.mu.Unlock()
	return authResult{Authorized: p.allow[action], Details: map[string]string{}}, nil
}

const polkitOwnerPolicy = `<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <policy user="root">
    <allow own="org.freedesktop.PolicyKit1"/>
    <allow send_destination="org.freedesktop.PolicyKit1"/>
  </policy>
</busconfig>
`

// TestPolkit: with polkit on the bus, the daemon asks it, with the caller's
// unique bus name as subject and the method's action, and follows its
// answer even for a member of the group.
func TestPolkit(t *testing.T) {
	requireGroups(t)
	busharness.Start(t, busharness.Policy(t, allowedGroup), polkitOwnerPolicy)
	conn, err := dbus.ConnectSystemBus()
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	pk := &polkitStandIn{allow: map[string]bool{dbusapi.ActionRead: true}}
	if err := conn.Export(pk, "/org/freedesktop/PolicyKit1/Authority", "org.freedesktop.PolicyKit1.Authority"); err != nil {
		t.Fatal(err)
	}
	if r, err := conn.RequestName("org.freedesktop.PolicyKit1", dbus.NameFlagDoNotQueue); err != nil || r != dbus.RequestNameReplyPrimaryOwner {
		t.Fatalf("own org.freedesktop.PolicyKit1: %v %v", r, err)
	}
	env := map[string]string{"BACKUP_DIR": t.TempDir(), "DB_NAME": "app", "DB_HOST": "/nonexistent"}
	d := startDaemon(t, env, nil, "--group", allowedGroup)
	cl := dial(t)

	if _, err := cl.ListBackups(ctxT(t, 10*time.Second)); err != nil {
		t.Fatalf("ListBackups granted by polkit: %v", err)
	}
	_, err = cl.Restore(ctxT(t, 10*time.Second), "x", dbusapi.RestoreOptions{}, nil, false)
	var e *dbusapi.Error
	if !errors.As(err, &e) || e.Code != dbusapi.CodeNotAuthorized || !strings.Contains(e.Fix, "polkit") {
		t.Fatalf("Restore refused by polkit (even for root): %v", err)
	}
	// A member of the group is refused when polkit says no.
	g, _ := user.LookupGroup(allowedGroup)
	out, err := asUser(t, g.Gid, "busctl", "--address="+os.Getenv("DBUS_SYSTEM_BUS_ADDRESS"), "call", dbusapi.BusName, string(dbusapi.ManagerPath), dbusapi.ManagerIface, "StartBackup", "sa{sv}", "full", "0")
	if err == nil || !strings.Contains(out, "not authorized") {
		t.Fatalf("group member, polkit refusing: %v\n%s", err, out)
	}
	pk.mu.Lock()
	calls := append([]polkitCall(nil), pk.calls...)
	pk.mu.Unlock()
	if len(calls) < 2 {
		t.Fatalf("polkit asked %d times: %+v", len(calls), calls)
	}
	for _, c := range calls[:2] {
		if c.Kind != "system-bus-name" || !strings.HasPrefix(c.Name, ":") {
			t.Fatalf("polkit subject: %+v", c)
		}
	}
	if calls[0].Action != dbusapi.ActionRead || calls[1].Action != dbusapi.ActionRestore {
		t.Fatalf("actions asked: %+v", calls)
	}
	if calls[1].Flags != 1 {
		t.Fatalf("the CLI's client allows interactive authorization; flags %d", calls[1].Flags)
	}
	if !strings.Contains(d.stderr.String(), dbusapi.ActionRestore) {
		for i := 0; i < 50 && !strings.Contains(d.stderr.String(), dbusapi.ActionRestore); i++ {
			time.Sleep(100 * time.Millisecond)
		}
		if !strings.Contains(d.stderr.String(), dbusapi.ActionRestore) {
			t.Fatalf("refusal not logged:\n%s", d.stderr.String())
		}
	}
}

// TestIdleExit: with --idle-timeout and nothing to do, the daemon releases
// its name and exits 0.
func TestIdleExit(t *testing.T) {
	busharness.Start(t, busharness.Policy(t, allowedGroup))
	env := map[string]string{"BACKUP_DIR": t.TempDir(), "DB_NAME": "app", "DB_HOST": "/nonexistent"}
	d := startDaemon(t, env, nil, "--idle-timeout", "2s")
	t0 := time.Now()
	select {
	case err := <-d.done:
		if err != nil {
			t.Fatalf("idle exit: %v\n%s", err, d.stderr.String())
		}
	case <-time.After(20 * time.Second):
		t.Fatal("no idle exit within 20 s of a 2 s idle timeout")
	}
	if took := time.Since(t0); took < 1500*time.Millisecond {
		t.Fatalf("exited after %s, before the idle timeout", took)
	}
	if !strings.Contains(d.stderr.String(), `"reason":"idle"`) {
		t.Fatalf("log:\n%s", d.stderr.String())
	}
}

// TestSchedulerWithoutBus: in a container without D-Bus, --scheduler still
// runs (the D-Bus API is off); without anything to do the daemon refuses to
// start.
func TestSchedulerWithoutBus(t *testing.T) {
	t.Setenv("DBUS_SYSTEM_BUS_ADDRESS", "unix:path=/nonexistent/system_bus_socket")
	env := map[string]string{"BACKUP_DIR": t.TempDir(), "DB_NAME": "app", "DB_HOST": "/nonexistent"}
	d := startDaemon(t, env, nil, "--scheduler")
	for i := 0; !strings.Contains(d.stderr.String(), "without the D-Bus API"); i++ {
		if i == 50 {
			t.Fatalf("log:\n%s", d.stderr.String())
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err := d.stop(t); err != nil {
		t.Fatalf("exit: %v\n%s", err, d.stderr.String())
	}
	cmd := exec.Command(daemonBin)
	cmd.Env = []string{"DBUS_SYSTEM_BUS_ADDRESS=unix:path=/nonexistent/system_bus_socket", "BACKUP_DIR=" + t.TempDir()}
	out, err := cmd.CombinedOutput()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 1 || !strings.Contains(string(out), "system bus") {
		t.Fatalf("without a bus and without --scheduler: %v\n%s", err, out)
	}
}

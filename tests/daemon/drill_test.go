package daemon_test

import (
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/godbus/dbus/v5"

	"github.com/pme2go/pme2go-backup/dbusapi"
	"github.com/pme2go/pme2go-backup/engine/ops"
	"github.com/pme2go/pme2go-backup/tests/busharness"
	"github.com/pme2go/pme2go-backup/tests/pgharness"
)

// TestDrillOverBus: Drill() runs a restore drill as a job whose ResultJSON
// is the drill's result; the Manager's LastDrill properties and the CLI's
// status show it; a failed drill (a damaged archive) fails its job with
// DRILL_FAILED and emits BackupFailed with backup type "drill".
func TestDrillOverBus(t *testing.T) {
	requireGroups(t)
	busharness.Start(t, busharness.Policy(t, allowedGroup))
	c := pgharness.Start(t)
	c.CreateDB(t, "app")
	c.Exec(t, "app", `CREATE TABLE t (id int PRIMARY KEY, v text); INSERT INTO t SELECT g, md5(g::text) FROM generate_series(1, 2000) g`)
	env := pgharness.ConfigEnv(t, c, []string{"app"}, "BACKUP_COMPRESSION_LEVEL=1")
	full, err := ops.Full(context.Background(), pgharness.LoadConfig(t, env), ops.FullOptions{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	startDaemon(t, env, nil, "--group", allowedGroup)
	cl := dial(t)
	sigs := subscribe(t)
	prop := func(name string) any {
		var v dbus.Variant
		if err := cl.Conn().Object(dbusapi.BusName, dbusapi.ManagerPath).Call("org.freedesktop.DBus.Properties.Get", 0, dbusapi.ManagerIface, name).Store(&v); err != nil {
			t.Fatalf("property %s: %v", name, err)
		}
		return v.Value()
	}
	// waitProp polls a property until ok accepts it (the daemon refreshes
	// its properties when a job ends).
	waitProp := func(name string, ok func(any) bool) any {
		deadline := time.Now().Add(15 * time.Second)
		for {
			v := prop(name)
			if ok(v) || time.Now().After(deadline) {
				return v
			}
			time.Sleep(200 * time.Millisecond)
		}
	}
	if v := prop("LastDrillTimestamp"); v != uint64(0) {
		t.Fatalf("LastDrillTimestamp before any drill: %v", v)
	}

	ctx := ctxT(t, 3*time.Minute)
	p, err := cl.Drill(ctx, nil, "")
	if err != nil {
		t.Fatal(err)
	}
	j, err := cl.Follow(ctx, p, nil)
	if err != nil || j.State != dbusapi.JobSucceeded || j.Kind != "drill" {
		t.Fatalf("drill job: %+v %v", j, err)
	}
	var res ops.DrillResult
	if err := json.Unmarshal([]byte(j.ResultJSON), &res); err != nil || !res.OK || len(res.Databases) != 1 || res.Databases[0].Tables != 1 || res.Databases[0].Rows != 2000 {
		t.Fatalf("drill result: %+v %v\n%s", res, err, j.ResultJSON)
	}
	if v := waitProp("LastDrillOK", func(v any) bool { return v == true }); v != true {
		t.Errorf("LastDrillOK: %v", v)
	}
	if v := prop("LastDrillDatabases"); v != "app" {
		t.Errorf("LastDrillDatabases: %v", v)
	}
	if v, _ := prop("LastDrillTimestamp").(uint64); v == 0 {
		t.Errorf("LastDrillTimestamp: %v", v)
	}
	cli := buildCLI(t)
	cmd := exec.Command(cli, "status")
	cmd.Env = append(os.Environ(), "DBUS_SYSTEM_BUS_ADDRESS="+os.Getenv("DBUS_SYSTEM_BUS_ADDRESS"))
	out, err := cmd.CombinedOutput()
	if err != nil || !strings.Contains(string(out), "Last drill:       OK") {
		t.Errorf("status through the daemon: %v\n%s", err, out)
	}

	// A damaged archive: the drill fails, and says so everywhere.
	data, err := os.ReadFile(full.Path)
	if err != nil {
		t.Fatal(err)
	}
	data[len(data)/2] ^= 0x55
	if err := os.WriteFile(full.Path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	cmd = exec.Command(cli, "drill")
	cmd.Env = append(os.Environ(), "DBUS_SYSTEM_BUS_ADDRESS="+os.Getenv("DBUS_SYSTEM_BUS_ADDRESS"))
	out, err = cmd.CombinedOutput()
	if code := cmd.ProcessState.ExitCode(); code != 1 || !strings.Contains(string(out), "DRILL_FAILED") && !strings.Contains(string(out), "FAILED app") {
		t.Errorf("pme2go-backup drill of a damaged archive: exit %d %v\n%s", code, err, out)
	}
	sigs.until(t, 30*time.Second, func(s *dbus.Signal) bool {
		return s.Name == dbusapi.ManagerIface+".BackupFailed" && len(s.Body) > 2 && s.Body[0] == "drill" && s.Body[2] == "DRILL_FAILED"
	})
	if v := waitProp("LastDrillOK", func(v any) bool { return v == false }); v != false {
		t.Errorf("LastDrillOK after a failed drill: %v", v)
	}
	if v, _ := prop("LastDrillError").(string); !strings.Contains(v, "verification") {
		t.Errorf("LastDrillError: %q", v)
	}
}

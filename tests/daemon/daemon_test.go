package daemon_test

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/godbus/dbus/v5"

	"github.com/pme2go/pme2go-backup/dbusapi"
	"github.com/pme2go/pme2go-backup/tests/busharness"
	"github.com/pme2go/pme2go-backup/tests/daemonharness"
	"github.com/pme2go/pme2go-backup/tests/pgharness"
)

const (
	allowedGroup = "users" // stands for pme2go-backup
	busOnlyGroup = "games" // let through by the bus policy, refused by the daemon
)

func requireGroups(t *testing.T) {
	for _, g := range []string{allowedGroup, busOnlyGroup} {
		if _, err := user.LookupGroup(g); err != nil {
			pgharness.Require(t, "group-"+g, "the tests use the existing group "+g)
		}
	}
	if os.Getuid() != 0 {
		pgharness.Require(t, "root", "the daemon tests run clients as other users and need root")
	}
}

// signalLog subscribes to every signal the daemon sends.
type signalLog struct {
	ch chan *dbus.Signal
}

func subscribe(t *testing.T) *signalLog {
	t.Helper()
	conn, err := dbus.ConnectSystemBus()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	if err := conn.AddMatchSignal(dbus.WithMatchSender(dbusapi.BusName)); err != nil {
		t.Fatal(err)
	}
	s := &signalLog{ch: make(chan *dbus.Signal, 4096)}
	conn.Signal(s.ch)
	return s
}

// until collects signals until one satisfies stop or the timeout passes.
func (s *signalLog) until(t *testing.T, timeout time.Duration, stop func(*dbus.Signal) bool) []*dbus.Signal {
	t.Helper()
	var got []*dbus.Signal
	deadline := time.After(timeout)
	for {
		select {
		case sig := <-s.ch:
			got = append(got, sig)
			if stop(sig) {
				return got
			}
		case <-deadline:
			var names []string
			for _, g := range got {
				names = append(names, string(g.Path)+" "+g.Name)
			}
			t.Fatalf("signal not seen within %s; saw %v", timeout, names)
		}
	}
}

func TestDaemonOverBus(t *testing.T) {
	requireGroups(t)
	// The project's policy for the allowed group, and the same policy for a
	// second group, as an administrator might add, which the daemon's own
	// check still refuses.
	busharness.Start(t, busharness.Policy(t, allowedGroup), busharness.Policy(t, busOnlyGroup))
	c := pgharness.Start(t)
	c.CreateDB(t, "small")
	c.CreateDB(t, "big")
	pgharness.LoadAwkward(t, c, "small")
	pgharness.LoadBulk(t, c, "big", 60)
	env := pgharness.ConfigEnv(t, c, []string{"small", "big"}, "BACKUP_COMPRESSION_LEVEL=1")
	backupDir := env["BACKUP_DIR"]
	d := startDaemon(t, env, nil, "--group", allowedGroup)
	cl := dial(t)
	sigs := subscribe(t)

	t.Run("introspection is the repository's XML", func(t *testing.T) {
		var xml string
		if err := cl.Conn().Object(dbusapi.BusName, dbusapi.ManagerPath).Call("org.freedesktop.DBus.Introspectable.Introspect", 0).Store(&xml); err != nil {
			t.Fatal(err)
		}
		data, _ := os.ReadFile(busharness.RepoFile("dbusapi/org.pme2go.Backup1.xml"))
		file := string(data)
		i := strings.Index(file, `<interface name="org.pme2go.Backup1.Manager">`)
		j := strings.Index(file[i:], "</interface>")
		if !strings.Contains(xml, file[i:i+j]) {
			t.Fatalf("served introspection does not contain the Manager interface verbatim:\n%s", xml)
		}
		out, err := exec.Command("busctl", "--address="+os.Getenv("DBUS_SYSTEM_BUS_ADDRESS"), "introspect", dbusapi.BusName, string(dbusapi.ManagerPath)).CombinedOutput()
		if err != nil || !strings.Contains(string(out), ".StartBackup") || !strings.Contains(string(out), "sa{sv}") {
			t.Fatalf("busctl introspect: %v\n%s", err, out)
		}
	})

	t.Run("status and list round trip", func(t *testing.T) {
		st, err := cl.GetStatus(ctxT(t, 10*time.Second))
		if err != nil {
			t.Fatal(err)
		}
		if st["state"] != "idle" || st["version"] == "" {
			t.Fatalf("status: %v", st)
		}
		if dbs, _ := st["databases"].([]string); strings.Join(dbs, ",") != "small,big" {
			t.Fatalf("databases: %v", st["databases"])
		}
		list, err := cl.ListBackups(ctxT(t, 10*time.Second))
		if err != nil || len(list) != 0 {
			t.Fatalf("list: %v %v", list, err)
		}
		var v dbus.Variant
		if err := cl.Conn().Object(dbusapi.BusName, dbusapi.ManagerPath).Call("org.freedesktop.DBus.Properties.Get", 0, dbusapi.ManagerIface, "State").Store(&v); err != nil || v.Value() != "idle" {
			t.Fatalf("State property: %v %v", v, err)
		}
	})

	var fullPath string
	t.Run("full backup: job, signals, PropertiesChanged, history", func(t *testing.T) {
		p, err := cl.StartBackup(ctxT(t, 10*time.Second), "full", []string{"small"}, "")
		if err != nil {
			t.Fatal(err)
		}
		got := sigs.until(t, 2*time.Minute, func(s *dbus.Signal) bool {
			return s.Path == p && s.Name == dbusapi.JobIface+".Completed"
		})
		var started, propsChanged, completedMgr bool
		for _, s := range got {
			switch {
			case s.Name == dbusapi.ManagerIface+".BackupStarted" && s.Body[2] == p:
				started = true
			case s.Path == p && s.Name == "org.freedesktop.DBus.Properties.PropertiesChanged":
				propsChanged = true
			}
		}
		last := got[len(got)-1]
		if ok, _ := last.Body[0].(bool); !ok {
			t.Fatalf("job failed: %v\n%s", last.Body, d.stderr.String())
		}
		more := sigs.until(t, 10*time.Second, func(s *dbus.Signal) bool { return s.Name == dbusapi.ManagerIface+".BackupCompleted" })
		bc := more[len(more)-1]
		completedMgr = bc.Body[0] == "full" && bc.Body[5] == p
		fullPath, _ = bc.Body[2].(string)
		if !started || !propsChanged || !completedMgr {
			t.Fatalf("signals: started %v, PropertiesChanged %v, BackupCompleted %v (%v)", started, propsChanged, completedMgr, bc.Body)
		}
		if _, err := os.Stat(fullPath); err != nil {
			t.Fatalf("archive named in BackupCompleted: %v", err)
		}
		for _, s := range append(got, more...) {
			for _, b := range s.Body {
				if strings.Contains(strings.ToLower(strings.TrimSpace(toString(b))), "password") || strings.Contains(toString(b), pgharness.DefaultPassword) {
					t.Fatalf("a signal carries a secret: %v", s.Body)
				}
			}
		}
		j, err := cl.Job(ctxT(t, 10*time.Second), p)
		if err != nil {
			t.Fatal(err)
		}
		if j.State != dbusapi.JobSucceeded || j.Kind != "full" || j.StartedByUID != 0 || j.Result != fullPath || j.Bytes == 0 || j.Progress != 1 || j.Cancelable {
			t.Fatalf("job after completion: %+v", j)
		}
		out, err := exec.Command("busctl", "--address="+os.Getenv("DBUS_SYSTEM_BUS_ADDRESS"), "get-property", dbusapi.BusName, string(p), dbusapi.JobIface, "State").CombinedOutput()
		if err != nil || strings.TrimSpace(string(out)) != `s "succeeded"` {
			t.Fatalf("busctl get-property: %v %s", err, out)
		}
		st, err := cl.GetStatus(ctxT(t, 10*time.Second))
		if err != nil {
			t.Fatal(err)
		}
		hist, _ := st["history"].([]map[string]any)
		if len(hist) != 1 || hist[0]["state"] != "succeeded" || hist[0]["result"] != fullPath {
			t.Fatalf("history: %v", st["history"])
		}
		var lf dbus.Variant
		_ = cl.Conn().Object(dbusapi.BusName, dbusapi.ManagerPath).Call("org.freedesktop.DBus.Properties.Get", 0, dbusapi.ManagerIface, "LastFullBackup").Store(&lf)
		if lf.Value() != fullPath {
			t.Fatalf("LastFullBackup = %v, want %s", lf.Value(), fullPath)
		}
	})

	t.Run("restore through the daemon equals the source", func(t *testing.T) {
		if fullPath == "" {
			t.Fatal("no full backup: the backup subtest before this one did not produce it")
		}
		p, err := cl.Restore(ctxT(t, 10*time.Second), fullPath, dbusapi.RestoreOptions{TargetDB: "small_copy"}, []string{"small"}, false)
		if err != nil {
			t.Fatal(err)
		}
		j, err := cl.Follow(ctxT(t, 3*time.Minute), p, nil)
		if err != nil {
			t.Fatal(err)
		}
		if j.State != dbusapi.JobSucceeded {
			t.Fatalf("restore: %+v %v", j, j.Error)
		}
		if n := pgharness.CompareDatabases(t, c, "small", "small_copy"); n == 0 {
			t.Fatal("no tables compared")
		}
	})

	t.Run("second backup of a database is busy; cancelled job leaves nothing", func(t *testing.T) {
		before := archives(t, backupDir+"/full")
		slotsBefore := slots(t, c)
		p, err := cl.StartBackup(ctxT(t, 10*time.Second), "full", []string{"big"}, "")
		if err != nil {
			t.Fatal(err)
		}
		_, err = cl.StartBackup(ctxT(t, 10*time.Second), "full", []string{"big"}, "")
		var e *dbusapi.Error
		if !errors.As(err, &e) || e.Code != dbusapi.CodeBusy || !strings.Contains(e.Message, "job") || !strings.Contains(e.Message, strings.TrimPrefix(string(p), dbusapi.JobPathPrefix)) {
			t.Fatalf("second backup: %v", err)
		}
		// Wait until the job is well under way, then cancel it.
		deadline := time.Now().Add(2 * time.Minute)
		for {
			j, err := cl.Job(ctxT(t, 10*time.Second), p)
			if err != nil {
				t.Fatal(err)
			}
			if dbusapi.Finished(j.State) {
				t.Fatalf("the job ended before it could be cancelled: %+v", j)
			}
			// Cancel while pg_dump runs (the dump phase reports when each
			// database starts).
			if strings.HasPrefix(j.Phase, "dump") {
				time.Sleep(500 * time.Millisecond)
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("no progress: %+v", j)
			}
			time.Sleep(100 * time.Millisecond)
		}
		t0 := time.Now()
		if err := cl.CancelJob(ctxT(t, 10*time.Second), p); err != nil {
			t.Fatal(err)
		}
		j, err := cl.Follow(ctxT(t, time.Minute), p, nil)
		if err != nil {
			t.Fatal(err)
		}
		took := time.Since(t0)
		if j.State != dbusapi.JobCancelled || j.Error == nil || j.Error.Code != dbusapi.CodeCancelled {
			t.Fatalf("cancelled job: %+v %v", j, j.Error)
		}
		if took > 10*time.Second {
			t.Fatalf("cancellation took %s", took)
		}
		t.Logf("cancelled in %s", took)
		after := archives(t, backupDir+"/full")
		if strings.Join(after, "\n") != strings.Join(before, "\n") {
			t.Fatalf("files left by the cancelled job:\nbefore %v\nafter  %v", before, after)
		}
		if out, _ := exec.Command("pgrep", "-P", strconv.Itoa(d.cmd.Process.Pid)).Output(); len(out) > 0 {
			t.Fatalf("child processes of the daemon still running after the cancellation: %s", out)
		}
		// pg_dump's sessions end with it (its parallel workers included).
		for i := 0; ; i++ {
			if n := sessions(t, c, "pg_dump"); n == 0 {
				break
			} else if i == 50 {
				t.Fatalf("%d pg_dump sessions still open 5 s after the cancellation", n)
			}
			time.Sleep(100 * time.Millisecond)
		}
		if n := slots(t, c); n != slotsBefore {
			t.Errorf("replication slots: %d after the cancelled backup, %d before", n, slotsBefore)
		}
		// The database is free again.
		p2, err := cl.StartBackup(ctxT(t, 10*time.Second), "full", []string{"big"}, "")
		if err != nil {
			t.Fatalf("after cancellation: %v", err)
		}
		_ = cl.CancelJob(ctxT(t, 10*time.Second), p2)
		_, _ = cl.Follow(ctxT(t, time.Minute), p2, nil)
	})

	t.Run("unprivileged callers", func(t *testing.T) {
		addr := "--address=" + os.Getenv("DBUS_SYSTEM_BUS_ADDRESS")
		call := []string{addr, "call", dbusapi.BusName, string(dbusapi.ManagerPath), dbusapi.ManagerIface, "GetStatus"}
		out, err := asUser(t, "", "busctl", call...)
		if err == nil || !strings.Contains(out, "ccess denied") {
			t.Fatalf("nobody without the group: %v\n%s", err, out)
		}
		gBus, _ := user.LookupGroup(busOnlyGroup)
		out, err = asUser(t, gBus.Gid, "busctl", call...)
		if err == nil || !strings.Contains(out, "not authorized") {
			t.Fatalf("nobody in a group the daemon does not trust: %v\n%s", err, out)
		}
		// The daemon's stderr reaches the test through a pipe: give it a moment.
		for i := 0; !strings.Contains(d.stderr.String(), `"caller_uid":65534`); i++ {
			if i == 50 {
				t.Fatalf("the refusal is not logged with the caller's uid:\n%s", d.stderr.String())
			}
			time.Sleep(100 * time.Millisecond)
		}
		gOK, _ := user.LookupGroup(allowedGroup)
		out, err = asUser(t, gOK.Gid, "busctl", call...)
		if err != nil || !strings.Contains(out, "a{sv}") {
			t.Fatalf("nobody in the allowed group: %v\n%s", err, out)
		}
		out, err = asUser(t, gOK.Gid, "busctl", addr, "call", dbusapi.BusName, string(dbusapi.ManagerPath), dbusapi.ManagerIface, "StartBackup", "sa{sv}", "full", "1", "databases", "as", "1", "small")
		if err != nil || !strings.Contains(out, "/org/pme2go/Backup1/job/") {
			t.Fatalf("group member starting a backup: %v\n%s", err, out)
		}
		p := dbus.ObjectPath(strings.Trim(strings.TrimPrefix(strings.TrimSpace(out), "o "), `"`))
		j, err := cl.Follow(ctxT(t, 2*time.Minute), p, nil)
		if err != nil || j.State != dbusapi.JobSucceeded || j.StartedByUID != 65534 {
			t.Fatalf("group member's job: %+v %v", j, err)
		}
		// Restore is its own action; without polkit the group may restore.
		// The bus policy still refuses a member of no group.
		out, err = asUser(t, "", "busctl", addr, "call", dbusapi.BusName, string(dbusapi.ManagerPath), dbusapi.ManagerIface, "Restore", "sa{sv}", "x", "0")
		if err == nil || !strings.Contains(out, "ccess denied") {
			t.Fatalf("nobody restoring: %v\n%s", err, out)
		}
	})

	t.Run("every method refuses a caller the daemon does not trust", func(t *testing.T) {
		// The bus policy lets busOnlyGroup call; each method must check
		// the caller itself. Arguments are valid, so that only the
		// authorization can refuse.
		gBus, _ := user.LookupGroup(busOnlyGroup)
		addr := "--address=" + os.Getenv("DBUS_SYSTEM_BUS_ADDRESS")
		manager := []string{addr, "call", dbusapi.BusName, string(dbusapi.ManagerPath), dbusapi.ManagerIface}
		before := len(archives(t, backupDir))
		for _, m := range [][]string{
			{"StartBackup", "sa{sv}", "full", "1", "databases", "as", "1", "small"},
			{"StartBackup", "sa{sv}", "incremental", "0"},
			{"Restore", "sa{sv}", "", "2", "latest", "b", "true", "target-db", "s", "stolen"},
			{"Cleanup", "a{sv}", "0"},
			{"Verify", "s", ""},
			{"VerifyOffsite", "s", ""},
			{"Drill", "a{sv}", "0"},
			{"OffsiteSync", "a{sv}", "0"},
			{"Rekey", "a{sv}", "1", "dry-run", "b", "true"},
			{"ListBackups"},
			{"GetStatus"},
			{"Mark", "s", "refused-mark"},
			{"MarkWithOptions", "sa{sv}", "refused-mark", "0"},
		} {
			out, err := asUser(t, gBus.Gid, "busctl", append(append([]string{}, manager...), m...)...)
			if err == nil || !strings.Contains(out, "not authorized") {
				t.Errorf("%s as a caller the daemon does not trust: %v\n%s", m[0], err, out)
			}
		}
		// Cancel on a job object (the first job of this test).
		out, err := asUser(t, gBus.Gid, "busctl", addr, "call", dbusapi.BusName, "/org/pme2go/Backup1/job/1", dbusapi.JobIface, "Cancel")
		if err == nil || !strings.Contains(out, "not authorized") {
			t.Errorf("Cancel as a caller the daemon does not trust: %v\n%s", err, out)
		}
		// Properties tell what GetStatus tells: the same check.
		for _, obj := range [][2]string{{string(dbusapi.ManagerPath), dbusapi.ManagerIface}, {"/org/pme2go/Backup1/job/1", dbusapi.JobIface}} {
			for _, args := range [][]string{{"get-property", dbusapi.BusName, obj[0], obj[1], "State"},
				{"call", dbusapi.BusName, obj[0], "org.freedesktop.DBus.Properties", "GetAll", "s", obj[1]}} {
				out, err := asUser(t, gBus.Gid, "busctl", append([]string{addr}, args...)...)
				if err == nil || !strings.Contains(out, "not authorized") {
					t.Errorf("%v as a caller the daemon does not trust: %v\n%s", args, err, out)
				}
				gOK, _ := user.LookupGroup(allowedGroup)
				if out, err := asUser(t, gOK.Gid, "busctl", append([]string{addr}, args...)...); err != nil {
					t.Errorf("%v as a member of the group: %v\n%s", args, err, out)
				}
			}
		}
		if n := len(archives(t, backupDir)); n != before {
			t.Errorf("a refused call changed BACKUP_DIR: %d files, %d before", n, before)
		}
	})

	t.Run("malformed arguments are errors, never a crash", func(t *testing.T) {
		obj := cl.Conn().Object(dbusapi.BusName, dbusapi.ManagerPath)
		cases := []struct {
			name   string
			method string
			args   []any
			want   string
		}{
			{"unknown kind", "StartBackup", []any{"weekly", map[string]dbus.Variant{}}, dbusapi.ErrorPrefix + "InvalidArgs"},
			{"missing options", "StartBackup", []any{"full"}, "org.freedesktop.DBus.Error.InvalidArgs"},
			{"wrong types", "StartBackup", []any{uint32(1), "x"}, "org.freedesktop.DBus.Error.InvalidArgs"},
			{"unknown option", "StartBackup", []any{"full", map[string]dbus.Variant{"compress": dbus.MakeVariant(true)}}, dbusapi.ErrorPrefix + "InvalidArgs"},
			{"option of the wrong type", "StartBackup", []any{"full", map[string]dbus.Variant{"databases": dbus.MakeVariant("small")}}, dbusapi.ErrorPrefix + "InvalidArgs"},
			{"restore without backup or target", "Restore", []any{"", map[string]dbus.Variant{}}, dbusapi.ErrorPrefix + "InvalidArgs"},
			{"restore with a bad target", "Restore", []any{"", map[string]dbus.Variant{"target-lsn": dbus.MakeVariant("nonsense")}}, dbusapi.ErrorPrefix + "InvalidArgs"},
			{"backup of an unknown database", "StartBackup", []any{"full", map[string]dbus.Variant{"databases": dbus.MakeVariant([]string{"nope"})}}, dbusapi.ErrorPrefix + "InvalidArgs"},
			{"a huge database name", "StartBackup", []any{"full", map[string]dbus.Variant{"databases": dbus.MakeVariant([]string{strings.Repeat("x", 100000)})}}, dbusapi.ErrorPrefix + "InvalidArgs"},
			{"empty mark", "Mark", []any{""}, dbusapi.ErrorPrefix + "InvalidArgs"},
			{"empty mark with options", "MarkWithOptions", []any{"", map[string]dbus.Variant{}}, dbusapi.ErrorPrefix + "InvalidArgs"},
			{"mark with an unknown option", "MarkWithOptions", []any{"m", map[string]dbus.Variant{"database": dbus.MakeVariant("small")}}, dbusapi.ErrorPrefix + "InvalidArgs"},
			{"mark option of the wrong type", "MarkWithOptions", []any{"m", map[string]dbus.Variant{"databases": dbus.MakeVariant("small")}}, dbusapi.ErrorPrefix + "InvalidArgs"},
			{"mark of an unknown database", "MarkWithOptions", []any{"m", map[string]dbus.Variant{"databases": dbus.MakeVariant([]string{"nope"})}}, dbusapi.ErrorPrefix + "InvalidArgs"},
			{"mark naming a database twice", "MarkWithOptions", []any{"m", map[string]dbus.Variant{"databases": dbus.MakeVariant([]string{"small", "small"})}}, dbusapi.ErrorPrefix + "InvalidArgs"},
			{"unknown method", "Explode", nil, "org.freedesktop.DBus.Error.UnknownMethod"},
		}
		for _, tc := range cases {
			call := obj.Call(dbusapi.ManagerIface+"."+tc.method, 0, tc.args...)
			var de dbus.Error
			if !errors.As(call.Err, &de) {
				t.Fatalf("%s: want an error, got %v (%v)", tc.name, call.Err, call.Body)
			}
			if tc.want != "" && de.Name != tc.want {
				t.Fatalf("%s: error %s (%v), want %s", tc.name, de.Name, de.Body, tc.want)
			}
		}
		bad := obj.Call(dbusapi.ManagerIface+".Cancel", 0)
		if bad.Err == nil {
			t.Fatal("Cancel on the manager accepted")
		}
		var finished dbus.ObjectPath = dbusapi.JobPath(1)
		if err := cl.CancelJob(ctxT(t, 10*time.Second), finished); err == nil || dbusapi.FromDBus(err).Code != dbusapi.CodeNoSuchJob {
			t.Fatalf("cancelling a finished job: %v", err)
		}
		if _, err := cl.GetStatus(ctxT(t, 10*time.Second)); err != nil {
			t.Fatalf("daemon after malformed calls: %v", err)
		}
	})

	t.Run("the CLI as client", func(t *testing.T) {
		cli := buildCLI(t)
		addr := os.Getenv("DBUS_SYSTEM_BUS_ADDRESS")
		run := func(env []string, args ...string) (string, string, int) {
			cmd := exec.Command(cli, args...)
			cmd.Env = append([]string{"PATH=" + os.Getenv("PATH"), "DBUS_SYSTEM_BUS_ADDRESS=" + addr}, env...)
			var stdout, stderr strings.Builder
			cmd.Stdout, cmd.Stderr = &stdout, &stderr
			err := cmd.Run()
			code := 0
			var ee *exec.ExitError
			if errors.As(err, &ee) {
				code = ee.ExitCode()
			} else if err != nil {
				t.Fatal(err)
			}
			return stdout.String(), stderr.String(), code
		}
		out, errOut, code := run(nil, "full", "--database", "small")
		if code != 0 || !strings.Contains(out, "full_backup_") || !strings.Contains(errOut, "job /org/pme2go/Backup1/job/") {
			t.Fatalf("full through the daemon: exit %d\n%s\n%s", code, out, errOut)
		}
		// The cost of going through the daemon against --direct for a small
		// full backup (the same database, one after the other).
		var cfgEnv []string
		for k, v := range env {
			cfgEnv = append(cfgEnv, k+"="+v)
		}
		t0 := time.Now()
		if out, errOut, code := run(nil, "full", "--database", "small"); code != 0 {
			t.Fatalf("full through the daemon: exit %d\n%s\n%s", code, out, errOut)
		}
		viaDaemon := time.Since(t0)
		t0 = time.Now()
		if out, errOut, code := run(cfgEnv, "full", "--direct", "--database", "small"); code != 0 {
			t.Fatalf("full --direct: exit %d\n%s\n%s", code, out, errOut)
		}
		direct := time.Since(t0)
		t.Logf("bench: small full backup through the daemon %.2fs, --direct %.2fs (difference %+.2fs)", viaDaemon.Seconds(), direct.Seconds(), (viaDaemon - direct).Seconds())
		// mark --database goes through the daemon (MarkWithOptions) and
		// reaches that database only: neither database has a chain here
		// (small has tables without a key, big's backups were cancelled), so
		// the refusal names small and not big. TestStreamingSurvivesServerRestart
		// writes one and restores to it.
		_, errOut, code = run(nil, "mark", "--database", "small", "before-cli-tests")
		if code == 0 || !strings.Contains(errOut, "in small: no open chain") || strings.Contains(errOut, "big") {
			t.Fatalf("mark --database small through the daemon: exit %d\n%s", code, errOut)
		}
		if _, errOut, code = run(nil, "mark", "--database", "nope", "x"); code == 0 || !strings.Contains(errOut, "not configured") {
			t.Fatalf("mark --database nope through the daemon: exit %d\n%s", code, errOut)
		}
		out, _, code = run(nil, "list", "--json")
		var list []map[string]any
		if code != 0 || json.Unmarshal([]byte(out), &list) != nil || len(list) < 3 || list[0]["name"] == "" {
			t.Fatalf("list --json through the daemon: exit %d\n%s", code, out)
		}
		out, errOut, code = run(nil, "status")
		if code != 0 || !strings.Contains(out, "Daemon:") || !strings.Contains(out, "Recent jobs:") || !strings.Contains(out, "Backup directory:") {
			t.Fatalf("status through the daemon: exit %d\n%s\n%s", code, out, errOut)
		}
		out, errOut, code = run(nil, "verify", filepath.Base(fullPath))
		if code != 0 || !strings.Contains(out, "OK\t") {
			t.Fatalf("verify through the daemon: exit %d\n%s\n%s", code, out, errOut)
		}
		_, errOut, code = run(nil, "restore", "--backup", filepath.Base(fullPath), "--database", "small", "--target-db", "small_copy")
		if code == 0 || !strings.Contains(errOut, "--force") {
			t.Fatalf("restore over a database with data: exit %d, want the fix worded with --force\n%s", code, errOut)
		}
		// Unreachable daemon: say so and how to proceed.
		_, errOut, code = run([]string{"DBUS_SYSTEM_BUS_ADDRESS=unix:path=/nonexistent/bus"}, "list")
		if code == 0 || !strings.Contains(errOut, "not reachable") || !strings.Contains(errOut, "--direct") {
			t.Fatalf("unreachable daemon: exit %d\n%s", code, errOut)
		}
		// Not authorized: its own exit status.
		outU, errU := asUser(t, "", cli, "list")
		if errU == nil || !strings.Contains(outU, "pme2go-backup group") {
			t.Fatalf("nobody running the CLI: %v\n%s", errU, outU)
		}
		var ee *exec.ExitError
		if errors.As(errU, &ee) && ee.ExitCode() != 3 {
			t.Fatalf("nobody running the CLI: exit %d, want 3 (not authorized)", ee.ExitCode())
		}
		// Ctrl-C cancels the job.
		cmd := exec.Command(cli, "full", "--database", "big")
		cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "DBUS_SYSTEM_BUS_ADDRESS=" + addr}
		var stderr daemonharness.SyncBuffer
		cmd.Stderr = &stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		for i := 0; !strings.Contains(stderr.String(), "dump big"); i++ {
			if i > 600 {
				t.Fatalf("no progress line from the CLI:\n%s", stderr.String())
			}
			time.Sleep(100 * time.Millisecond)
		}
		_ = cmd.Process.Signal(os.Interrupt)
		err := cmd.Wait()
		if err == nil || !strings.Contains(stderr.String(), "cancel") {
			t.Fatalf("CLI after Ctrl-C: %v\n%s", err, stderr.String())
		}
		st, _ := cl.GetStatus(ctxT(t, 10*time.Second))
		hist, _ := st["history"].([]map[string]any)
		if last := hist[len(hist)-1]; last["kind"] != "full" || last["state"] != "cancelled" {
			t.Fatalf("the job after Ctrl-C: %v", last)
		}
	})

	t.Run("history survives a restart; STOPPING and READY", func(t *testing.T) {
		if err := d.stop(t); err != nil {
			t.Fatalf("exit after SIGTERM: %v\n%s", err, d.stderr.String())
		}
		d.notify.waitFor(t, "STOPPING=1", 5*time.Second)
		d2 := startDaemon(t, env, nil, "--group", allowedGroup)
		cl2 := dial(t)
		st, err := cl2.GetStatus(ctxT(t, 10*time.Second))
		if err != nil {
			t.Fatal(err)
		}
		hist, _ := st["history"].([]map[string]any)
		var kinds []string
		for _, h := range hist {
			kinds = append(kinds, h["kind"].(string)+":"+h["state"].(string))
		}
		if len(hist) < 4 || kinds[0] != "full:succeeded" || !strings.Contains(strings.Join(kinds, " "), "full:cancelled") {
			t.Fatalf("history after restart: %v", kinds)
		}
		// New job ids continue after the recorded ones.
		p, err := cl2.Verify(ctxT(t, 10*time.Second), "")
		if err != nil {
			t.Fatal(err)
		}
		id, _ := dbusapi.JobID(p)
		if id <= uint64(len(hist)) {
			t.Fatalf("job id %d reused after restart (history holds %d)", id, len(hist))
		}
		j, err := cl2.Follow(ctxT(t, 2*time.Minute), p, nil)
		if err != nil || j.State != dbusapi.JobSucceeded {
			t.Fatalf("verify: %+v %v %v", j, j.Error, err)
		}
		var rep struct {
			Archives []struct{ OK bool } `json:"archives"`
			Failed   int                 `json:"failed"`
		}
		if err := json.Unmarshal([]byte(j.ResultJSON), &rep); err != nil || len(rep.Archives) < 2 || rep.Failed != 0 {
			t.Fatalf("verify result: %s %v", j.ResultJSON, err)
		}
		_ = d2
		data, err := os.ReadFile(filepath.Join(backupDir, "state", "daemon-history.json"))
		if err != nil || strings.Contains(string(data), pgharness.DefaultPassword) {
			t.Fatalf("history file: %v", err)
		}
	})
}

func sessions(t *testing.T, c *pgharness.Cluster, app string) int {
	conn := c.Conn(t, "postgres")
	defer conn.Close(context.Background())
	var n int
	if err := conn.QueryRow(context.Background(), "SELECT count(*) FROM pg_stat_activity WHERE application_name = $1 AND pid <> pg_backend_pid()", app).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

func buildCLI(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(filepath.Dir(daemonBin), "pme2go-backup")
	if _, err := os.Stat(bin); err == nil {
		return bin
	}
	if out, err := exec.Command("go", "build", "-o", bin, "github.com/pme2go/pme2go-backup/cmd/pme2go-backup").CombinedOutput(); err != nil {
		t.Fatalf("build pme2go-backup: %v\n%s", err, out)
	}
	return bin
}

func slots(t *testing.T, c *pgharness.Cluster) int {
	conn := c.Conn(t, "postgres")
	defer conn.Close(context.Background())
	var n int
	if err := conn.QueryRow(context.Background(), "SELECT count(*) FROM pg_replication_slots").Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

func toString(v any) string {
	s, _ := v.(string)
	return s
}

// TestNotify checks the notify protocol against a fake socket: READY=1 only
// once the name is owned, STATUS= lines, watchdog pings at half of
// WATCHDOG_USEC, STOPPING=1 on SIGTERM.
func TestNotify(t *testing.T) {
	busharness.Start(t, busharness.Policy(t, allowedGroup))
	dir := t.TempDir()
	env := map[string]string{"BACKUP_DIR": dir, "DB_NAME": "postgres", "DB_HOST": "/nonexistent"}
	conn, err := dbus.ConnectSystemBus()
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	d := startDaemon(t, env, []string{"WATCHDOG_USEC=1000000"})
	// READY=1 has been received: the name must be owned by now.
	var has bool
	if err := conn.BusObject().Call("org.freedesktop.DBus.NameHasOwner", 0, dbusapi.BusName).Store(&has); err != nil || !has {
		t.Fatalf("READY=1 sent before the name was owned (%v)", err)
	}
	first := d.notify.waitFor(t, "WATCHDOG=1", 3*time.Second)
	var pings []time.Time
	pings = append(pings, first.at)
	for len(pings) < 5 {
		pings = append(pings, d.notify.waitFor(t, "WATCHDOG=1", 3*time.Second).at)
	}
	for i := 1; i < len(pings); i++ {
		gap := pings[i].Sub(pings[i-1])
		if gap < 350*time.Millisecond || gap > 800*time.Millisecond {
			t.Fatalf("watchdog gap %s, want about 500ms (half of WATCHDOG_USEC=1s)", gap)
		}
	}
	var status bool
	for _, m := range d.notify.all() {
		status = status || strings.Contains(m, "STATUS=idle")
	}
	if !status {
		t.Fatalf("no STATUS line: %q", d.notify.all())
	}
	if err := d.stop(t); err != nil {
		t.Fatalf("exit: %v", err)
	}
	d.notify.waitFor(t, "STOPPING=1", 5*time.Second)
}

package daemon_test

import (
	"context"
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/godbus/dbus/v5"

	"github.com/pme2go/pme2go-backup/dbusapi"
	"github.com/pme2go/pme2go-backup/engine/lsn"
	"github.com/pme2go/pme2go-backup/tests/busharness"
	"github.com/pme2go/pme2go-backup/tests/pgharness"
)

// TestStreamingSurvivesServerRestart runs the daemon with
// BACKUP_STREAMING=true: it takes the first full backup by itself, streams,
// keeps streaming while the PostgreSQL server is stopped and started under
// it, and afterwards a point-in-time restore to the last transaction before
// the stop and to the latest one each equal the source at that point.
func TestStreamingSurvivesServerRestart(t *testing.T) {
	busharness.Start(t, busharness.Policy(t, allowedGroup))
	c := pgharness.Start(t)
	c.CreateDB(t, "app")
	c.Exec(t, "app", "CREATE TABLE t (id bigint PRIMARY KEY, v text NOT NULL)")
	c.Exec(t, "app", "INSERT INTO t SELECT g, 'seed ' || g FROM generate_series(1, 1000) g")
	env := pgharness.ConfigEnv(t, c, []string{"app"}, "BACKUP_STREAMING=true", "BACKUP_COMPRESSION_LEVEL=1")
	d := startDaemon(t, env, nil)
	cl := dial(t)
	mgr := cl.Conn().Object(dbusapi.BusName, dbusapi.ManagerPath)
	prop := func(name string) any {
		var v dbus.Variant
		if err := mgr.Call("org.freedesktop.DBus.Properties.Get", 0, dbusapi.ManagerIface, name).Store(&v); err != nil {
			t.Fatal(err)
		}
		return v.Value()
	}

	// No chain yet: the daemon takes a full backup and then streams.
	deadline := time.Now().Add(3 * time.Minute)
	for {
		list, err := cl.ListBackups(ctxT(t, 10*time.Second))
		if err != nil {
			t.Fatal(err)
		}
		if len(list) > 0 && prop("Streaming") == true && len(prop("Jobs").([]dbus.ObjectPath)) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no full backup and streaming within 3 minutes\n%s", d.stderr.String())
		}
		time.Sleep(500 * time.Millisecond)
	}

	write := func(from, to int) {
		conn := c.Conn(t, "app")
		defer conn.Close(context.Background())
		for i := from; i <= to; i++ {
			if _, err := conn.Exec(context.Background(), "INSERT INTO t VALUES ($1, $2)", i, fmt.Sprintf("row %d", i)); err != nil {
				t.Fatal(err)
			}
			if i%10 == 0 {
				if _, err := conn.Exec(context.Background(), "UPDATE t SET v = v || ' updated' WHERE id = $1", i-1005); err != nil {
					t.Fatal(err)
				}
			}
		}
	}
	write(1001, 1200)
	beforeLSN, err := cl.Mark(ctxT(t, 10*time.Second), "before-stop")
	if err != nil {
		t.Fatal(err)
	}
	before, err := pgharness.Checksums(context.Background(), c.ConnString("app"))
	if err != nil {
		t.Fatal(err)
	}

	c.Stop(t)
	time.Sleep(3 * time.Second)
	c.Restart(t)
	write(1201, 1400)
	// Through MarkWithOptions, naming the database.
	afterLSN, err := cl.MarkDatabases(ctxT(t, 20*time.Second), "after-restart", []string{"app"})
	if err != nil {
		t.Fatal(err)
	}
	want, _ := lsn.Parse(afterLSN)

	// Seal incrementals until they hold the mark written after the restart.
	deadline = time.Now().Add(2 * time.Minute)
	for {
		p, err := cl.StartBackup(ctxT(t, 10*time.Second), "incremental", nil, "")
		if err != nil {
			t.Fatal(err)
		}
		j, err := cl.Follow(ctxT(t, time.Minute), p, nil)
		if err != nil {
			t.Fatal(err)
		}
		if j.State != dbusapi.JobSucceeded {
			t.Fatalf("incremental: %+v %v", j, j.Error)
		}
		var res struct {
			Archives []struct {
				EndLSN string `json:"endLsn"`
			} `json:"archives"`
		}
		_ = json.Unmarshal([]byte(j.ResultJSON), &res)
		reached := false
		for _, a := range res.Archives {
			if end, err := lsn.Parse(a.EndLSN); err == nil && end >= want {
				reached = true
			}
		}
		if reached {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the stream did not reach %s (after the restart) within 2 minutes; last incremental %s\n%s", afterLSN, j.ResultJSON, d.stderr.String())
		}
		time.Sleep(2 * time.Second)
	}
	t.Logf("marks: before the stop %s, after the restart %s", beforeLSN, afterLSN)

	restore := func(target string, ro dbusapi.RestoreOptions) {
		ro.TargetDB = target
		p, err := cl.Restore(ctxT(t, 10*time.Second), "", ro, []string{"app"}, false)
		if err != nil {
			t.Fatal(err)
		}
		j, err := cl.Follow(ctxT(t, 3*time.Minute), p, nil)
		if err != nil || j.State != dbusapi.JobSucceeded {
			t.Fatalf("restore into %s: %+v %v %v", target, j, j.Error, err)
		}
	}
	restore("app_before", dbusapi.RestoreOptions{TargetName: "before-stop"})
	got, err := pgharness.Checksums(context.Background(), c.ConnString("app_before"))
	if err != nil {
		t.Fatal(err)
	}
	if n := pgharness.AssertSameData(t, before, got); n == 0 {
		t.Fatal("nothing compared")
	}
	restore("app_latest", dbusapi.RestoreOptions{Latest: true})
	if n := pgharness.CompareDatabases(t, c, "app", "app_latest"); n == 0 {
		t.Fatal("nothing compared")
	}
	if lag, ok := prop("StreamingLagBytes").(uint64); !ok {
		t.Fatalf("StreamingLagBytes: %v", prop("StreamingLagBytes"))
	} else {
		t.Logf("StreamingLagBytes %d, window %v..%v", lag, prop("RecoveryWindowStart"), prop("RecoveryWindowEnd"))
	}
}

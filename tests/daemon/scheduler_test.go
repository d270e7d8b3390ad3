package daemon_test

import (
	"testing"
	"time"

	"github.com/godbus/dbus/v5"

	"github.com/pme2go/pme2go-backup/dbusapi"
	"github.com/pme2go/pme2go-backup/tests/busharness"
	"github.com/pme2go/pme2go-backup/tests/pgharness"
)

// TestScheduler runs pme2go-backupd --scheduler with a full backup every
// minute: NextScheduled shows the four schedules, and a scheduled full
// backup runs within the minute and lands in the history.
func TestScheduler(t *testing.T) {
	busharness.Start(t, busharness.Policy(t, allowedGroup))
	c := pgharness.Start(t)
	c.CreateDB(t, "app")
	c.Exec(t, "app", "CREATE TABLE t (id int PRIMARY KEY)")
	env := pgharness.ConfigEnv(t, c, []string{"app"}, "FULL_BACKUP_SCHEDULE=* * * * *", "BACKUP_COMPRESSION_LEVEL=1")
	startDaemon(t, env, nil, "--scheduler")
	cl := dial(t)
	var v dbus.Variant
	if err := cl.Conn().Object(dbusapi.BusName, dbusapi.ManagerPath).Call("org.freedesktop.DBus.Properties.Get", 0, dbusapi.ManagerIface, "NextScheduled").Store(&v); err != nil {
		t.Fatal(err)
	}
	next, _ := v.Value().(map[string]uint64)
	// The four default schedules (DRILL_SCHEDULE included).
	if len(next) != 4 || next["full"] == 0 || next["incremental"] == 0 || next["cleanup"] == 0 || next["drill"] == 0 {
		t.Fatalf("NextScheduled: %v", v)
	}
	if at := time.UnixMicro(int64(next["full"])); at.Second() != 0 || time.Until(at) > time.Minute {
		t.Fatalf("next full backup at %s", at)
	}
	deadline := time.Now().Add(90 * time.Second)
	for {
		st, err := cl.GetStatus(ctxT(t, 10*time.Second))
		if err != nil {
			t.Fatal(err)
		}
		hist, _ := st["history"].([]map[string]any)
		if len(hist) > 0 {
			h := hist[0]
			if h["kind"] != "full" || h["trigger"] != "scheduled" || h["state"] != "succeeded" {
				t.Fatalf("scheduled job: %v", h)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("no scheduled full backup within 90 seconds")
		}
		time.Sleep(time.Second)
	}
}

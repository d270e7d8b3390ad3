package daemon

import (
	"context"
	"time"

	"github.com/godbus/dbus/v5"
)

// timerUnits are the shipped timers whose next run NextScheduled shows when
// the built-in scheduler is off.
var timerUnits = map[string]string{
	"full":        "pme2go-backup-full.timer",
	"incremental": "pme2go-backup-incremental.timer",
	"cleanup":     "pme2go-backup-cleanup.timer",
	"drill":       "pme2go-backup-drill.timer",
}

// systemdTimers asks systemd (org.freedesktop.systemd1 on the same bus) for
// the next elapse of each loaded timer of ours (NextElapseUSecRealtime of
// org.freedesktop.systemd1.Timer). Timers that are not loaded, and hosts
// without systemd, give no entry.
func systemdTimers(ctx context.Context, conn *dbus.Conn) map[string]time.Time {
	out := map[string]time.Time{}
	if conn == nil {
		return out
	}
	mgr := conn.Object("org.freedesktop.systemd1", "/org/freedesktop/systemd1")
	for kind, unit := range timerUnits {
		var p dbus.ObjectPath
		if err := mgr.CallWithContext(ctx, "org.freedesktop.systemd1.Manager.GetUnit", dbus.FlagNoAutoStart, unit).Store(&p); err != nil {
			continue
		}
		var v dbus.Variant
		err := conn.Object("org.freedesktop.systemd1", p).CallWithContext(ctx, "org.freedesktop.DBus.Properties.Get", dbus.FlagNoAutoStart,
			"org.freedesktop.systemd1.Timer", "NextElapseUSecRealtime").Store(&v)
		if err != nil {
			continue
		}
		if us, ok := v.Value().(uint64); ok && us > 0 && us < 1<<62 {
			out[kind] = time.UnixMicro(int64(us)).UTC()
		}
	}
	return out
}

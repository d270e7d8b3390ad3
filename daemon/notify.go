package daemon

import (
	"context"
	"log/slog"
	"sync"
	"time"

	sd "github.com/coreos/go-systemd/v22/daemon"
)

// Notifier speaks systemd's notify protocol (sd_notify(3)): READY=1,
// STATUS=..., STOPPING=1 and WATCHDOG=1. Its fields are the functions of
// go-systemd's daemon package by default; tests replace them. Without
// NOTIFY_SOCKET every call is a no-op, so the daemon runs the same in the
// foreground.
type Notifier struct {
	// Send sends one notification (daemon.SdNotify).
	Send func(unsetEnvironment bool, state string) (bool, error)
	// WatchdogEnabled returns the watchdog interval, 0 when none is set
	// (daemon.SdWatchdogEnabled: WATCHDOG_USEC, WATCHDOG_PID).
	WatchdogEnabled func(unsetEnvironment bool) (time.Duration, error)
	Log             *slog.Logger

	mu     sync.Mutex
	status string
}

func (n *Notifier) send(state string) {
	f := n.Send
	if f == nil {
		f = sd.SdNotify
	}
	if _, err := f(false, state); err != nil && n.Log != nil {
		n.Log.Debug("sd_notify", "state", state, "error", err)
	}
}

// Ready reports READY=1 with a status line.
func (n *Notifier) Ready(status string) {
	n.mu.Lock()
	n.status = status
	n.mu.Unlock()
	n.send(sd.SdNotifyReady + "\nSTATUS=" + status)
}

// Status reports a STATUS= line when it differs from the last one.
func (n *Notifier) Status(status string) {
	n.mu.Lock()
	same := n.status == status
	n.status = status
	n.mu.Unlock()
	if !same {
		n.send("STATUS=" + status)
	}
}

// Stopping reports STOPPING=1.
func (n *Notifier) Stopping(status string) {
	n.send(sd.SdNotifyStopping + "\nSTATUS=" + status)
}

// Heartbeats tracks the daemon's loops: each loop beats at least once per
// its period; the watchdog is fed only while every registered loop has
// beaten within the watchdog interval.
type Heartbeats struct {
	mu    sync.Mutex
	beats map[string]time.Time
}

// Beat records that loop name is alive now.
func (h *Heartbeats) Beat(name string) {
	h.mu.Lock()
	if h.beats == nil {
		h.beats = map[string]time.Time{}
	}
	h.beats[name] = time.Now()
	h.mu.Unlock()
}

// Forget removes a loop that ended on purpose.
func (h *Heartbeats) Forget(name string) {
	h.mu.Lock()
	delete(h.beats, name)
	h.mu.Unlock()
}

// Stale returns the loops that have not beaten within d.
func (h *Heartbeats) Stale(d time.Duration) []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	var out []string
	now := time.Now()
	for name, t := range h.beats {
		if now.Sub(t) > d {
			out = append(out, name)
		}
	}
	return out
}

// Watchdog sends WATCHDOG=1 at half the interval systemd asked for, as long
// as no loop in hb is stale, until ctx ends. It returns at once when no
// watchdog is configured.
func (n *Notifier) Watchdog(ctx context.Context, hb *Heartbeats) {
	f := n.WatchdogEnabled
	if f == nil {
		f = sd.SdWatchdogEnabled
	}
	interval, err := f(false)
	if err != nil || interval <= 0 {
		return
	}
	t := time.NewTicker(interval / 2)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if stale := hb.Stale(interval); len(stale) > 0 {
				if n.Log != nil {
					n.Log.Error("watchdog not fed: loops stuck", "loops", stale)
				}
				continue
			}
			n.send(sd.SdNotifyWatchdog)
		}
	}
}

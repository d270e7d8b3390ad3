package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"time"

	"github.com/godbus/dbus/v5"

	"github.com/pme2go/pme2go-backup/dbusapi"
	"github.com/pme2go/pme2go-backup/engine/config"
	"github.com/pme2go/pme2go-backup/engine/errs"
	"github.com/pme2go/pme2go-backup/engine/lsn"
	"github.com/pme2go/pme2go-backup/engine/ops"
)

// The commands full, incremental, cleanup, status, list, verify, restore and
// mark go through the daemon (org.pme2go.Backup1 on the system bus) unless
// --direct is given; this file is that client side.

// directEnv, when set to a true value, has the same effect as --direct.
const directEnv = "PME2GO_DIRECT"

// daemonError turns an API error into the engine's error type, so that the
// exit status, the fix worded with this CLI's flags and --json come out as
// for the same failure in process.
func daemonError(err error) error {
	if err == nil {
		return nil
	}
	e := dbusapi.FromDBus(err)
	out := &errs.Error{Code: errs.Code(e.Code), Message: e.Message}
	if e.Fix != "" || e.Action != "" {
		out.Fix = &errs.Fix{Action: errs.Action(e.Action), Text: e.Fix}
	}
	return out
}

// dial connects to the daemon; when it cannot be reached, the error says so
// and how to proceed.
func (g common) dial(ctx context.Context) (*dbusapi.Client, error) {
	if g.ConfigPath != "" {
		fmt.Fprintln(g.Stderr, "pme2go-backup: note: --config applies with --direct only; the daemon works with its own configuration")
	}
	c, err := dbusapi.Dial(ctx)
	if err != nil {
		e := dbusapi.FromDBus(err)
		return nil, &errs.Error{Code: errs.Code(dbusapi.CodeUnavailable),
			Message: "the pme2go-backup daemon is not reachable: " + e.Message,
			Fix: &errs.Fix{Text: "start it (systemctl start pme2go-backupd, or pme2go-backupd in the foreground), " +
				"or run this command with --direct to work in this process (bare-metal recovery; set " + directEnv + "=1 in scripts)"}}
	}
	return c, nil
}

// runJob starts a job through the daemon, follows it (a progress bar on a
// terminal, plain lines otherwise, on g.Stderr) and decodes the job's
// result into res (a pointer to the front door's result type). Ctrl-C
// cancels the job. A failed job's error is returned after res is filled
// with whatever partial result it had.
func (g common) runJob(ctx context.Context, start func(context.Context, *dbusapi.Client) (dbus.ObjectPath, error), res any) error {
	c, err := g.dial(ctx)
	if err != nil {
		return err
	}
	defer c.Close()
	p, err := start(ctx, c)
	if err != nil {
		return daemonError(err)
	}
	jp := newJobPrinter(g.Stderr, p)
	j, err := c.Follow(ctx, p, jp.update)
	jp.finish()
	if err != nil {
		return daemonError(err)
	}
	if j.ResultJSON != "" && res != nil {
		if err := json.Unmarshal([]byte(j.ResultJSON), res); err != nil {
			return fmt.Errorf("job %s: unreadable result: %w", p, err)
		}
	}
	if j.Error != nil {
		return daemonError(j.Error)
	}
	if j.State != dbusapi.JobSucceeded {
		return &errs.Error{Code: errs.Failed, Message: fmt.Sprintf("job %s ended in state %s", p, j.State)}
	}
	return nil
}

// jobOrDirect runs one operation as a daemon job (start makes the D-Bus call
// that starts it; the job is followed as runJob does) or, with --direct, in
// this process: direct gets the loaded configuration and logger. It returns
// the operation's result, which may be partly filled when it failed, and the
// error; a configuration that cannot be loaded is an error with a nil
// result.
func jobOrDirect[R any](ctx context.Context, g common, start func(context.Context, *dbusapi.Client) (dbus.ObjectPath, error),
	direct func(*config.Config, *slog.Logger) (R, error)) (R, error) {
	var res R
	if !g.Direct {
		err := g.runJob(ctx, start, &res)
		return res, err
	}
	cfg, log, err := g.load()
	if err != nil {
		return res, err
	}
	return direct(cfg, log)
}

// call runs a short request through the daemon.
func (g common) call(ctx context.Context, f func(context.Context, *dbusapi.Client) error) error {
	c, err := g.dial(ctx)
	if err != nil {
		return err
	}
	defer c.Close()
	return daemonError(f(ctx, c))
}

// jobPrinter shows a job's progress: a bar on a terminal, and otherwise
// one line per phase and per tenth.
type jobPrinter struct {
	w     io.Writer
	tty   bool
	path  dbus.ObjectPath
	said  bool
	phase string
	tick  int
}

func newJobPrinter(w io.Writer, p dbus.ObjectPath) *jobPrinter {
	return &jobPrinter{w: w, tty: isTerminal(w), path: p}
}

func (p *jobPrinter) update(j dbusapi.JobInfo) {
	if !p.said {
		p.said = true
		fmt.Fprintf(p.w, "job %s: %s\n", p.path, j.Kind)
	}
	if dbusapi.Finished(j.State) || j.Phase == "done" {
		return
	}
	bytes := ""
	if j.Bytes > 0 {
		bytes = " " + humanBytes(int64(j.Bytes))
	}
	if p.tty {
		if !j.ProgressValid {
			fmt.Fprintf(p.w, "\r\033[K%s%s", j.Phase, bytes)
			return
		}
		n := int(j.Progress * 30)
		fmt.Fprintf(p.w, "\r\033[K[%s%s] %3.0f%% %s%s", strings.Repeat("#", n), strings.Repeat(".", 30-n), j.Progress*100, j.Phase, bytes)
		return
	}
	tick := int(j.Progress * 10)
	if j.Phase == p.phase && tick == p.tick {
		return
	}
	p.phase, p.tick = j.Phase, tick
	if j.ProgressValid {
		fmt.Fprintf(p.w, "%s: %.0f%%%s\n", j.Phase, j.Progress*100, bytes)
	} else {
		fmt.Fprintf(p.w, "%s\n", j.Phase)
	}
}

func (p *jobPrinter) finish() {
	if p.tty && p.said {
		fmt.Fprint(p.w, "\r\033[K")
	}
}

// daemonStatus is what `status` adds when it asks the daemon.
type daemonStatus struct {
	Version       string               `json:"version"`
	State         string               `json:"state"`
	Jobs          []string             `json:"jobs"`
	NextScheduled map[string]time.Time `json:"nextScheduled"`
	History       []map[string]any     `json:"history"`
}

// statusFromDaemon asks the daemon for its status; engine receives the
// front door's status result.
func (g common) statusFromDaemon(ctx context.Context, engine any) (*daemonStatus, error) {
	var st map[string]any
	err := g.call(ctx, func(ctx context.Context, c *dbusapi.Client) error {
		var err error
		st, err = c.GetStatus(ctx)
		return err
	})
	if err != nil {
		return nil, err
	}
	if s, _ := st["engine"].(string); s != "" {
		if err := json.Unmarshal([]byte(s), engine); err != nil {
			return nil, fmt.Errorf("daemon status: %w", err)
		}
	}
	ds := &daemonStatus{NextScheduled: map[string]time.Time{}, Jobs: []string{}, History: []map[string]any{}}
	ds.Version, _ = st["version"].(string)
	ds.State, _ = st["state"].(string)
	if jobs, ok := st["jobs"].([]dbus.ObjectPath); ok {
		for _, j := range jobs {
			ds.Jobs = append(ds.Jobs, string(j))
		}
	}
	if ns, ok := st["nextScheduled"].(map[string]uint64); ok {
		for k, v := range ns {
			if v > 0 {
				ds.NextScheduled[k] = time.UnixMicro(int64(v)).UTC()
			}
		}
	}
	if h, ok := st["history"].([]map[string]any); ok {
		for _, r := range h {
			m := map[string]any{}
			for k, v := range r {
				if (k == "startedAt" || k == "finishedAt") && v != nil {
					if u, ok := v.(uint64); ok && u > 0 {
						v = time.UnixMicro(int64(u)).UTC()
					}
				}
				m[k] = v
			}
			ds.History = append(ds.History, m)
		}
	}
	return ds, nil
}

// printDaemonStatus prints the daemon's part of `status`.
func printDaemonStatus(out io.Writer, ds *daemonStatus) {
	fmt.Fprintf(out, "Daemon:           %s, version %s\n", ds.State, ds.Version)
	for _, j := range ds.Jobs {
		fmt.Fprintf(out, "Running job:      %s\n", j)
	}
	for _, k := range []string{"full", "incremental", "cleanup", "drill"} {
		if t, ok := ds.NextScheduled[k]; ok {
			fmt.Fprintf(out, "Next %-12s  %s\n", k+":", t.Format("2006-01-02 15:04:05 MST"))
		}
	}
	if len(ds.History) == 0 {
		return
	}
	fmt.Fprintln(out, "Recent jobs:")
	from := max(0, len(ds.History)-10)
	for _, r := range ds.History[from:] {
		line := fmt.Sprintf("  %v %-11v %-9v", r["id"], r["kind"], r["state"])
		if t, ok := r["finishedAt"].(time.Time); ok {
			line += " " + t.Format("2006-01-02 15:04:05")
		}
		if d, ok := r["duration"].(float64); ok {
			line += fmt.Sprintf(" %6.1fs", d)
		}
		if b, ok := r["bytes"].(uint64); ok && b > 0 {
			line += " " + humanBytes(int64(b))
		}
		if e, _ := r["errorCode"].(string); e != "" {
			msg, _ := r["error"].(string)
			msg, _, _ = strings.Cut(msg, "\n")
			line += " " + e + ": " + msg
		} else if s, _ := r["result"].(string); s != "" {
			line += " " + s
		}
		fmt.Fprintln(out, line)
	}
}

// markThroughDaemon writes a mark in databases (empty: every configured
// database) through the daemon and returns the front door's result shape.
func (g common) markThroughDaemon(ctx context.Context, name string, databases []string) (*ops.MarkResult, error) {
	res := &ops.MarkResult{Name: name, Marks: []ops.MarkPoint{}}
	err := g.call(ctx, func(ctx context.Context, c *dbusapi.Client) error {
		var text string
		var err error
		if len(databases) > 0 {
			text, err = c.MarkDatabases(ctx, name, databases)
		} else {
			text, err = c.Mark(ctx, name)
		}
		if err != nil {
			return err
		}
		if !strings.Contains(text, "=") && len(databases) == 1 {
			text = databases[0] + "=" + text
		} else if !strings.Contains(text, "=") {
			st, err := c.GetStatus(ctx)
			if err != nil {
				return err
			}
			dbs, _ := st["databases"].([]string)
			if len(dbs) == 1 {
				text = dbs[0] + "=" + text
			} else {
				text = "?=" + text
			}
		}
		for _, part := range strings.Split(text, ",") {
			db, at, _ := strings.Cut(part, "=")
			l, err := lsn.Parse(at)
			if err != nil {
				return fmt.Errorf("mark: the daemon answered %q: %w", text, err)
			}
			res.Marks = append(res.Marks, ops.MarkPoint{Database: db, LSN: l})
		}
		return nil
	})
	return res, err
}

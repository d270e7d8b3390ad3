package dbusapi

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/godbus/dbus/v5"
)

// Client is the typed client of org.pme2go.Backup1 used by the CLI. Every
// error it returns is an *Error (code, message, fix); CodeUnavailable means
// the daemon could not be reached.
type Client struct {
	conn *dbus.Conn
	obj  dbus.BusObject
}

// Dial connects to the system bus (DBUS_SYSTEM_BUS_ADDRESS when set) and
// checks that the daemon is running or activatable.
func Dial(ctx context.Context) (*Client, error) {
	conn, err := dbus.ConnectSystemBus()
	if err != nil {
		return nil, &Error{Code: CodeUnavailable, Message: fmt.Sprintf("cannot connect to the system bus: %v", err),
			Fix: "start the daemon (systemctl start pme2go-backupd), or run the command with --direct"}
	}
	c := &Client{conn: conn, obj: conn.Object(BusName, ManagerPath)}
	var has bool
	_ = conn.BusObject().CallWithContext(ctx, "org.freedesktop.DBus.NameHasOwner", 0, BusName).Store(&has)
	if !has {
		var names []string
		_ = conn.BusObject().CallWithContext(ctx, "org.freedesktop.DBus.ListActivatableNames", 0).Store(&names)
		found := false
		for _, n := range names {
			found = found || n == BusName
		}
		if !found {
			conn.Close()
			return nil, &Error{Code: CodeUnavailable, Message: "the daemon pme2go-backupd is not running on the system bus (name " + BusName + " has no owner)",
				Fix: "start it (systemctl start pme2go-backupd), or run the command with --direct"}
		}
	}
	return c, nil
}

// Close closes the connection.
func (c *Client) Close() error { return c.conn.Close() }

// Conn is the underlying connection.
func (c *Client) Conn() *dbus.Conn { return c.conn }

// interactiveCall calls a method with the ALLOW_INTERACTIVE_AUTHORIZATION
// flag set (godbus's Call drops it), so that polkit may ask the user for a
// password on a terminal with an agent.
func (c *Client) interactiveCall(ctx context.Context, path dbus.ObjectPath, iface, method string, args ...any) *dbus.Call {
	msg := &dbus.Message{Type: dbus.TypeMethodCall, Flags: dbus.FlagAllowInteractiveAuthorization, Headers: map[dbus.HeaderField]dbus.Variant{
		dbus.FieldDestination: dbus.MakeVariant(BusName),
		dbus.FieldPath:        dbus.MakeVariant(path),
		dbus.FieldInterface:   dbus.MakeVariant(iface),
		dbus.FieldMember:      dbus.MakeVariant(method),
	}, Body: args}
	if len(args) > 0 {
		msg.Headers[dbus.FieldSignature] = dbus.MakeVariant(dbus.SignatureOf(args...))
	}
	ch := make(chan *dbus.Call, 1)
	c.conn.SendWithContext(ctx, msg, ch)
	select {
	case call := <-ch:
		return call
	case <-ctx.Done():
		return &dbus.Call{Err: ctx.Err()}
	}
}

func (c *Client) call(ctx context.Context, method string, out []any, args ...any) error {
	call := c.interactiveCall(ctx, ManagerPath, ManagerIface, method, args...)
	if call.Err != nil {
		return FromDBus(call.Err)
	}
	if len(out) > 0 {
		if err := call.Store(out...); err != nil {
			return &Error{Code: CodeFailed, Message: fmt.Sprintf("%s: unexpected reply: %v", method, err)}
		}
	}
	return nil
}

// StartBackup starts a "full" or "incremental" backup and returns its job.
func (c *Client) StartBackup(ctx context.Context, kind string, databases []string, trigger string) (dbus.ObjectPath, error) {
	opts := map[string]dbus.Variant{}
	if len(databases) > 0 {
		opts["databases"] = dbus.MakeVariant(databases)
	}
	if trigger != "" {
		opts["trigger"] = dbus.MakeVariant(trigger)
	}
	var p dbus.ObjectPath
	err := c.call(ctx, "StartBackup", []any{&p}, kind, opts)
	return p, err
}

// Restore starts a restore job.
func (c *Client) Restore(ctx context.Context, backup string, ro RestoreOptions, databases []string, dryRun bool) (dbus.ObjectPath, error) {
	opts := map[string]dbus.Variant{}
	str := func(k, v string) {
		if v != "" {
			opts[k] = dbus.MakeVariant(v)
		}
	}
	flag := func(k string, v bool) {
		if v {
			opts[k] = dbus.MakeVariant(true)
		}
	}
	str("target-time", ro.TargetTime)
	str("target-lsn", ro.TargetLSN)
	str("target-xid", ro.TargetXid)
	str("target-name", ro.TargetName)
	str("target-db", ro.TargetDB)
	flag("latest", ro.Latest)
	flag("target-exclusive", ro.TargetExclusive)
	flag("force", ro.Force)
	flag("no-safety-backup", ro.NoSafetyBackup)
	flag("restore-logs", ro.RestoreLogs)
	flag("restore-globals", ro.RestoreGlobals)
	flag("no-owner", ro.NoOwner)
	flag("resume", ro.Resume)
	flag("dry-run", dryRun)
	if len(databases) > 0 {
		opts["databases"] = dbus.MakeVariant(databases)
	}
	var p dbus.ObjectPath
	err := c.call(ctx, "Restore", []any{&p}, backup, opts)
	return p, err
}

// Cleanup starts a cleanup job.
func (c *Client) Cleanup(ctx context.Context, dryRun bool) (dbus.ObjectPath, error) {
	opts := map[string]dbus.Variant{}
	if dryRun {
		opts["dry-run"] = dbus.MakeVariant(true)
	}
	var p dbus.ObjectPath
	err := c.call(ctx, "Cleanup", []any{&p}, opts)
	return p, err
}

// Verify starts a verify job for backup ("" for every archive).
func (c *Client) Verify(ctx context.Context, backup string) (dbus.ObjectPath, error) {
	var p dbus.ObjectPath
	err := c.call(ctx, "Verify", []any{&p}, backup)
	return p, err
}

// VerifyOffsite starts a verify job for backup ("" for every archive)
// that also checks the off-site copies.
func (c *Client) VerifyOffsite(ctx context.Context, backup string) (dbus.ObjectPath, error) {
	var p dbus.ObjectPath
	err := c.call(ctx, "VerifyOffsite", []any{&p}, backup)
	return p, err
}

// Drill starts a restore drill job; databases empty drills every
// configured database with a backup.
func (c *Client) Drill(ctx context.Context, databases []string, trigger string) (dbus.ObjectPath, error) {
	opts := map[string]dbus.Variant{}
	if len(databases) > 0 {
		opts["databases"] = dbus.MakeVariant(databases)
	}
	if trigger != "" {
		opts["trigger"] = dbus.MakeVariant(trigger)
	}
	var p dbus.ObjectPath
	err := c.call(ctx, "Drill", []any{&p}, opts)
	return p, err
}

// OffsiteSync starts an off-site sync job.
func (c *Client) OffsiteSync(ctx context.Context) (dbus.ObjectPath, error) {
	var p dbus.ObjectPath
	err := c.call(ctx, "OffsiteSync", []any{&p}, map[string]dbus.Variant{})
	return p, err
}

// Rekey starts a rekey job for backups (empty: every encrypted backup).
func (c *Client) Rekey(ctx context.Context, backups []string, dryRun bool) (dbus.ObjectPath, error) {
	opts := map[string]dbus.Variant{}
	if len(backups) > 0 {
		opts["backups"] = dbus.MakeVariant(backups)
	}
	if dryRun {
		opts["dry-run"] = dbus.MakeVariant(true)
	}
	var p dbus.ObjectPath
	err := c.call(ctx, "Rekey", []any{&p}, opts)
	return p, err
}

// ListBackups lists the archives, oldest first.
func (c *Client) ListBackups(ctx context.Context) ([]BackupEntry, error) {
	var raw []backupTuple
	if err := c.call(ctx, "ListBackups", []any{&raw}); err != nil {
		return nil, err
	}
	out := make([]BackupEntry, 0, len(raw))
	for _, b := range raw {
		d := map[string]any{}
		for k, v := range b.Details {
			d[k] = v.Value()
		}
		js, _ := d["json"].(string)
		delete(d, "json")
		out = append(out, BackupEntry{Name: b.Name, Type: b.Type, Path: b.Path, Time: fromUsec(b.Time), Size: int64(b.Size), Details: d, JSON: js})
	}
	return out, nil
}

// GetStatus returns the daemon's status map with variants unwrapped
// (nested a{sv} become map[string]any).
func (c *Client) GetStatus(ctx context.Context) (map[string]any, error) {
	var raw map[string]dbus.Variant
	if err := c.call(ctx, "GetStatus", []any{&raw}); err != nil {
		return nil, err
	}
	return unwrap(raw), nil
}

func unwrap(m map[string]dbus.Variant) map[string]any {
	out := make(map[string]any, len(m))
	for k, v := range m {
		switch x := v.Value().(type) {
		case map[string]dbus.Variant:
			out[k] = unwrap(x)
		case []map[string]dbus.Variant:
			l := make([]map[string]any, len(x))
			for i := range x {
				l[i] = unwrap(x[i])
			}
			out[k] = l
		default:
			out[k] = x
		}
	}
	return out
}

// Mark writes a named restore point in every configured database and
// returns its LSN ("X/Y", or "db=X/Y,db2=X/Y" for several databases).
func (c *Client) Mark(ctx context.Context, name string) (string, error) {
	var lsn string
	err := c.call(ctx, "Mark", []any{&lsn}, name)
	return lsn, err
}

// MarkDatabases writes a named restore point in the given databases (empty:
// every configured one) through MarkWithOptions; the answer is as Mark's.
func (c *Client) MarkDatabases(ctx context.Context, name string, databases []string) (string, error) {
	opts := map[string]dbus.Variant{}
	if len(databases) > 0 {
		opts["databases"] = dbus.MakeVariant(databases)
	}
	var lsn string
	err := c.call(ctx, "MarkWithOptions", []any{&lsn}, name, opts)
	return lsn, err
}

// Job reads a job's properties.
func (c *Client) Job(ctx context.Context, p dbus.ObjectPath) (JobInfo, error) {
	var props map[string]dbus.Variant
	err := c.conn.Object(BusName, p).CallWithContext(ctx, propsIface+".GetAll", 0, JobIface).Store(&props)
	if err != nil {
		return JobInfo{}, FromDBus(err)
	}
	id, _ := JobID(p)
	return jobFromProps(id, props), nil
}

func jobFromProps(id uint64, p map[string]dbus.Variant) JobInfo {
	j := JobInfo{ID: id}
	get := func(k string, dst any) {
		if v, ok := p[k]; ok {
			_ = v.Store(dst)
		}
	}
	var started, finished uint64
	var errName, errMsg, errCode, errFix, errAction string
	get("Kind", &j.Kind)
	get("State", &j.State)
	get("Phase", &j.Phase)
	get("Progress", &j.Progress)
	get("ProgressValid", &j.ProgressValid)
	get("Bytes", &j.Bytes)
	get("StartedByUID", &j.StartedByUID)
	get("Databases", &j.Databases)
	get("Cancelable", &j.Cancelable)
	get("StartedAt", &started)
	get("FinishedAt", &finished)
	get("Result", &j.Result)
	get("ResultJSON", &j.ResultJSON)
	get("ErrorName", &errName)
	get("ErrorMessage", &errMsg)
	get("ErrorCode", &errCode)
	get("ErrorFix", &errFix)
	get("ErrorAction", &errAction)
	j.StartedAt, j.FinishedAt = fromUsec(started), fromUsec(finished)
	if errName != "" {
		j.Error = &Error{Code: errCode, Message: errMsg, Fix: errFix, Action: errAction}
		if errCode == "" {
			j.Error.Code = codeFromName(errName)
		}
		if j.Error.Code == "" {
			j.Error.Code = CodeFailed
		}
	}
	return j
}

// CancelJob asks the daemon to cancel the job.
func (c *Client) CancelJob(ctx context.Context, p dbus.ObjectPath) error {
	call := c.interactiveCall(ctx, p, JobIface, "Cancel")
	if call.Err != nil {
		return FromDBus(call.Err)
	}
	return nil
}

// Follow watches job p until it finishes, calling update (may be nil) with
// each new state, and returns the final state. When ctx is cancelled (the
// user pressed Ctrl-C) it cancels the job and keeps following until the job
// has stopped, for at most a minute. A failed job is returned with its
// Error set and a nil error; the error is for failures to follow.
func (c *Client) Follow(ctx context.Context, p dbus.ObjectPath, update func(JobInfo)) (JobInfo, error) {
	ch := make(chan *dbus.Signal, 64)
	c.conn.Signal(ch)
	defer c.conn.RemoveSignal(ch)
	match := []dbus.MatchOption{dbus.WithMatchSender(BusName), dbus.WithMatchObjectPath(p)}
	if err := c.conn.AddMatchSignalContext(ctx, match...); err != nil {
		return JobInfo{}, FromDBus(err)
	}
	defer c.conn.RemoveMatchSignal(match...)
	bg := context.Background()
	j, err := c.Job(bg, p)
	if err != nil {
		return j, err
	}
	if update != nil {
		update(j)
	}
	done := ctx.Done()
	var deadline <-chan time.Time
	tick := time.NewTicker(2 * time.Second)
	defer tick.Stop()
	for !Finished(j.State) {
		select {
		case <-done:
			done = nil
			deadline = time.After(time.Minute)
			if err := c.CancelJob(bg, p); err != nil {
				var e *Error
				if !errors.As(err, &e) || e.Code != CodeNoSuchJob {
					return j, err
				}
			}
			continue
		case <-deadline:
			return j, &Error{Code: CodeFailed, Message: "the job did not stop within a minute of being cancelled"}
		case <-tick.C:
			// A periodic read covers a signal lost to a full channel.
		case sig := <-ch:
			if sig.Path != p {
				continue
			}
		}
		nj, err := c.Job(bg, p)
		if err != nil {
			return j, err
		}
		j = nj
		if update != nil {
			update(j)
		}
	}
	return j, nil
}

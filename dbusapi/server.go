package dbusapi

import (
	"context"
	"fmt"
	"log/slog"
	"reflect"
	"runtime/debug"
	"sync"
	"time"

	"github.com/godbus/dbus/v5"
	"github.com/godbus/dbus/v5/prop"
)

// Backend is what the exported objects need from the daemon (declared here,
// implemented by the daemon's job manager). StartJob must call the server's
// JobStarted before it returns, so that the job's object exists when the
// caller receives its path.
type Backend interface {
	StartJob(req JobRequest) (JobInfo, error)
	CancelJob(id uint64, by Caller) error
	ListBackups(ctx context.Context) ([]BackupEntry, error)
	Status(ctx context.Context) (map[string]any, error)
	// Mark writes the named restore point in databases (empty: every
	// configured database).
	Mark(ctx context.Context, name string, databases []string) (string, error)
}

// KeepFinishedJobs is how many finished job objects stay exported (so that a
// client can read a short job's outcome after it ended).
const KeepFinishedJobs = 32

// callTimeout bounds the synchronous methods (D-Bus clients wait 25 s by
// default).
const callTimeout = 24 * time.Second

// Server exports the Manager object and one object per job on a bus
// connection.
type Server struct {
	conn    *dbus.Conn
	backend Backend
	auth    *Authorizer
	log     *slog.Logger
	ctx     context.Context

	mu       sync.Mutex
	jobs     map[uint64]*jobObject
	finished []uint64
	mprops   *prop.Properties
	mstate   ManagerState
}

type jobObject struct {
	s     *Server
	id    uint64
	props *prop.Properties
	info  JobInfo
}

// NewServer prepares a server; Export makes it visible. ctx bounds every
// call the server makes (authorization, backend calls).
func NewServer(ctx context.Context, conn *dbus.Conn, backend Backend, auth *Authorizer, log *slog.Logger) *Server {
	if log == nil {
		log = slog.Default()
	}
	return &Server{conn: conn, backend: backend, auth: auth, log: log, ctx: ctx, jobs: map[uint64]*jobObject{},
		mstate: ManagerState{State: "idle"}}
}

// Export exports the Manager object (its methods, properties and
// introspection). Request the bus name after it returns.
func (s *Server) Export(version string) error {
	if err := s.conn.Export(managerObj{s}, ManagerPath, ManagerIface); err != nil {
		return fmt.Errorf("export manager: %w", err)
	}
	props, err := prop.Export(s.conn, ManagerPath, prop.Map{ManagerIface: managerProps(version, s.mstate)})
	if err != nil {
		return fmt.Errorf("export manager properties: %w", err)
	}
	s.mprops = props
	if err := s.guardProps(ManagerPath, props); err != nil {
		return fmt.Errorf("export manager properties: %w", err)
	}
	if err := s.conn.Export(introspectable(func() string {
		var children []string
		s.mu.Lock()
		if len(s.jobs) > 0 {
			children = []string{"job"}
		}
		s.mu.Unlock()
		return objectXML(ManagerIface, children)
	}), ManagerPath, introIface); err != nil {
		return fmt.Errorf("export introspection: %w", err)
	}
	return nil
}

// authProps serves org.freedesktop.DBus.Properties for an object whose
// values are in p, after checking the caller for ActionRead as GetStatus
// does: the bus policy alone would let a caller read the state, the last
// backups and the jobs' progress that the daemon's own check refuses it.
type authProps struct {
	s *Server
	p *prop.Properties
}

// guardProps puts authProps in front of the properties prop.Export
// exported at path.
func (s *Server) guardProps(path dbus.ObjectPath, p *prop.Properties) error {
	return s.conn.Export(authProps{s, p}, path, propsIface)
}

func (a authProps) check(msg dbus.Message) *dbus.Error {
	_, _, cancel, derr := a.s.authorize(msg, ActionRead)
	if derr != nil {
		return derr
	}
	cancel()
	return nil
}

// Get implements org.freedesktop.DBus.Properties.Get.
func (a authProps) Get(msg dbus.Message, iface, name string) (v dbus.Variant, derr *dbus.Error) {
	defer a.s.guard("Properties.Get", &derr)
	if derr := a.check(msg); derr != nil {
		return dbus.Variant{}, derr
	}
	return a.p.Get(iface, name)
}

// GetAll implements org.freedesktop.DBus.Properties.GetAll.
func (a authProps) GetAll(msg dbus.Message, iface string) (m map[string]dbus.Variant, derr *dbus.Error) {
	defer a.s.guard("Properties.GetAll", &derr)
	if derr := a.check(msg); derr != nil {
		return nil, derr
	}
	return a.p.GetAll(iface)
}

// Set implements org.freedesktop.DBus.Properties.Set: every property is
// read-only.
func (a authProps) Set(msg dbus.Message, iface, name string, v dbus.Variant) (derr *dbus.Error) {
	defer a.s.guard("Properties.Set", &derr)
	if derr := a.check(msg); derr != nil {
		return derr
	}
	return a.p.Set(iface, name, v)
}

type introspectable func() string

func (f introspectable) Introspect() (string, *dbus.Error) { return f(), nil }

func constProp(v any) *prop.Prop { return &prop.Prop{Value: v, Emit: prop.EmitConst} }

// prop's own emission is off (EmitFalse); the server emits one
// PropertiesChanged per update carrying every changed property.
func varProp(v any) *prop.Prop { return &prop.Prop{Value: v, Emit: prop.EmitFalse} }

func managerValues(st ManagerState) map[string]any {
	next := map[string]uint64{}
	for k, t := range st.NextScheduled {
		next[k] = usec(t)
	}
	jobs := make([]dbus.ObjectPath, 0, len(st.Jobs))
	for _, id := range st.Jobs {
		jobs = append(jobs, JobPath(id))
	}
	return map[string]any{
		"State":                          st.State,
		"Jobs":                           jobs,
		"LastFullBackup":                 st.LastFull,
		"LastFullBackupTimestamp":        usec(st.LastFullTime),
		"LastIncrementalBackup":          st.LastIncremental,
		"LastIncrementalBackupTimestamp": usec(st.LastIncrTime),
		"Streaming":                      st.Streaming,
		"StreamingLagBytes":              st.StreamingLagBytes,
		"RecoveryWindowStart":            usec(st.WindowStart),
		"RecoveryWindowEnd":              usec(st.WindowEnd),
		"NextScheduled":                  next,
		"LastDrillTimestamp":             usec(st.LastDrillTime),
		"LastDrillOK":                    st.LastDrillOK,
		"LastDrillDatabases":             st.LastDrillDatabases,
		"LastDrillDuration":              st.LastDrillDuration,
		"LastDrillError":                 st.LastDrillError,
	}
}

func managerProps(version string, st ManagerState) map[string]*prop.Prop {
	m := map[string]*prop.Prop{"Version": constProp(version)}
	for k, v := range managerValues(st) {
		m[k] = varProp(v)
	}
	return m
}

func jobValues(j JobInfo) map[string]any {
	dbs := j.Databases
	if dbs == nil {
		dbs = []string{}
	}
	var e Error
	errName := ""
	if j.Error != nil {
		e, errName = *j.Error, j.Error.Name()
	}
	return map[string]any{
		"ErrorCode":     e.Code,
		"ErrorFix":      e.Fix,
		"ErrorAction":   e.Action,
		"Kind":          j.Kind,
		"State":         j.State,
		"Phase":         j.Phase,
		"Progress":      j.Progress,
		"ProgressValid": j.ProgressValid,
		"Bytes":         j.Bytes,
		"StartedByUID":  j.StartedByUID,
		"Databases":     dbs,
		"Cancelable":    j.Cancelable,
		"StartedAt":     usec(j.StartedAt),
		"FinishedAt":    usec(j.FinishedAt),
		"Result":        j.Result,
		"ResultJSON":    j.ResultJSON,
		"ErrorName":     errName,
		"ErrorMessage":  e.Message,
	}
}

var constJobProps = map[string]bool{"Kind": true, "StartedByUID": true, "Databases": true, "StartedAt": true}

// update sets the changed values of iface on props and emits one
// PropertiesChanged signal listing them.
func (s *Server) update(path dbus.ObjectPath, props *prop.Properties, iface string, values map[string]any) {
	changed := map[string]dbus.Variant{}
	for k, v := range values {
		if reflect.DeepEqual(props.GetMust(iface, k), v) {
			continue
		}
		props.SetMust(iface, k, v)
		changed[k] = dbus.MakeVariant(v)
	}
	if len(changed) == 0 {
		return
	}
	if err := s.conn.Emit(path, propsIface+".PropertiesChanged", iface, changed, []string{}); err != nil {
		s.log.Debug("emit PropertiesChanged", "path", string(path), "error", err)
	}
}

// SetManagerState updates the Manager's properties (PropertiesChanged for
// those that changed).
func (s *Server) SetManagerState(st ManagerState) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.mstate = st
	if s.mprops != nil {
		s.update(ManagerPath, s.mprops, ManagerIface, managerValues(st))
	}
}

// JobStarted exports the job's object.
func (s *Server) JobStarted(j JobInfo) {
	s.mu.Lock()
	defer s.mu.Unlock()
	path := j.Path()
	jo := &jobObject{s: s, id: j.ID, info: j}
	m := map[string]*prop.Prop{}
	for k, v := range jobValues(j) {
		if constJobProps[k] {
			m[k] = constProp(v)
		} else {
			m[k] = varProp(v)
		}
	}
	props, err := prop.Export(s.conn, path, prop.Map{JobIface: m})
	if err != nil {
		s.log.Error("export job properties", "job", j.ID, "error", err)
		return
	}
	jo.props = props
	if err := s.guardProps(path, props); err != nil {
		s.log.Error("export job properties", "job", j.ID, "error", err)
	}
	if err := s.conn.Export(jobMethods{jo}, path, JobIface); err != nil {
		s.log.Error("export job", "job", j.ID, "error", err)
	}
	_ = s.conn.Export(introspectable(func() string { return objectXML(JobIface, nil) }), path, introIface)
	s.jobs[j.ID] = jo
}

// BackupSignal is one of the Manager's BackupStarted, BackupCompleted and
// BackupFailed signals (the seed's notifications). The daemon's event
// broadcaster sends them, so that D-Bus, WebSocket and server-sent-event
// clients see the same events.
type BackupSignal struct {
	Type      string // "backup_started", "backup_completed", "backup_failed"
	Kind      string // "full", "incremental", "drill"
	Time      time.Time
	Result    string        // backup_completed: the archive written
	Duration  time.Duration // backup_completed
	Bytes     uint64        // backup_completed
	ErrorCode string        // backup_failed
	Message   string        // backup_failed: message and fix, as in a job's Completed signal
	JobID     uint64        // 0: no job object ("/")
}

// EmitBackupSignal emits sig on the Manager object.
func (s *Server) EmitBackupSignal(sig BackupSignal) {
	path := dbus.ObjectPath("/")
	if sig.JobID != 0 {
		path = JobPath(sig.JobID)
	}
	var err error
	switch sig.Type {
	case "backup_started":
		err = s.conn.Emit(ManagerPath, ManagerIface+".BackupStarted", sig.Kind, usec(sig.Time), path)
	case "backup_completed":
		err = s.conn.Emit(ManagerPath, ManagerIface+".BackupCompleted", sig.Kind, usec(sig.Time), sig.Result,
			sig.Duration.Seconds(), sig.Bytes, path)
	case "backup_failed":
		code := sig.ErrorCode
		if code == "" {
			code = CodeFailed
		}
		err = s.conn.Emit(ManagerPath, ManagerIface+".BackupFailed", sig.Kind, usec(sig.Time), code, sig.Message, path)
	}
	if err != nil {
		s.log.Debug("emit backup signal", "type", sig.Type, "error", err)
	}
}

// JobUpdated publishes a running job's new state (PropertiesChanged).
func (s *Server) JobUpdated(j JobInfo) {
	s.mu.Lock()
	defer s.mu.Unlock()
	jo, ok := s.jobs[j.ID]
	if !ok {
		return
	}
	jo.info = j
	s.update(j.Path(), jo.props, JobIface, jobValues(j))
}

// JobFinished publishes a job's outcome: its properties and its Completed
// signal (BackupCompleted and BackupFailed come from EmitBackupSignal). Old finished
// jobs beyond KeepFinishedJobs are unexported.
func (s *Server) JobFinished(j JobInfo) {
	s.mu.Lock()
	defer s.mu.Unlock()
	jo, ok := s.jobs[j.ID]
	if !ok {
		return
	}
	jo.info = j
	path := j.Path()
	s.update(path, jo.props, JobIface, jobValues(j))
	success := j.State == JobSucceeded
	errName, msg := "", ""
	if j.Error != nil {
		errName, msg = j.Error.Name(), j.Error.Error()
	}
	_ = s.conn.Emit(path, JobIface+".Completed", success, errName, msg)
	s.finished = append(s.finished, j.ID)
	for len(s.finished) > KeepFinishedJobs {
		old := s.finished[0]
		s.finished = s.finished[1:]
		p := JobPath(old)
		_ = s.conn.Export(nil, p, JobIface)
		_ = s.conn.Export(nil, p, propsIface)
		_ = s.conn.Export(nil, p, introIface)
		delete(s.jobs, old)
	}
}

// guard turns a panic in a method into an error reply, so that every method
// replies exactly once and the daemon keeps running.
func (s *Server) guard(method string, derr **dbus.Error) {
	if r := recover(); r != nil {
		s.log.Error("panic in method", "method", method, "panic", fmt.Sprint(r), "stack", string(debug.Stack()))
		*derr = toDBus(Errorf(CodeFailed, "", fmt.Sprintf("%s: internal error", method)))
	}
}

func (s *Server) authorize(msg dbus.Message, action string) (Caller, context.Context, context.CancelFunc, *dbus.Error) {
	ctx, cancel := context.WithTimeout(s.ctx, callTimeout)
	sender, _ := msg.Headers[dbus.FieldSender].Value().(string)
	interactive := msg.Flags&0x4 != 0 // ALLOW_INTERACTIVE_AUTHORIZATION
	c, err := s.auth.Authorize(ctx, sender, action, interactive)
	if err != nil {
		cancel()
		return c, nil, nil, toDBus(err)
	}
	return c, ctx, cancel, nil
}

type managerObj struct{ s *Server }

func (m managerObj) start(msg dbus.Message, action string, req JobRequest) (dbus.ObjectPath, *dbus.Error) {
	c, _, cancel, derr := m.s.authorize(msg, action)
	if derr != nil {
		return "/", derr
	}
	defer cancel()
	req.Caller = c
	j, err := m.s.backend.StartJob(req)
	if err != nil {
		m.s.log.Info("job refused", "kind", req.Kind, "caller_uid", c.UID, "error_code", AsError(err).Code, "error", err)
		return "/", toDBus(err)
	}
	m.s.log.Info("job started", "job", j.ID, "kind", req.Kind, "caller_uid", c.UID, "admin", true)
	return j.Path(), nil
}

// StartBackup implements org.pme2go.Backup1.Manager.StartBackup.
func (m managerObj) StartBackup(msg dbus.Message, kind string, opts map[string]dbus.Variant) (p dbus.ObjectPath, derr *dbus.Error) {
	defer m.s.guard("StartBackup", &derr)
	if kind != KindFull && kind != KindIncremental {
		return "/", toDBus(Errorf(CodeInvalidArgs, `use "full" or "incremental"`, fmt.Sprintf("StartBackup: unknown kind %q", kind)))
	}
	return m.startJob(msg, "StartBackup", kind, opts)
}

var restoreOptions = map[string]string{
	"target-time": "s", "target-lsn": "s", "target-xid": "s", "target-name": "s", "latest": "b",
	"target-exclusive": "b", "target-db": "s", "databases": "as", "force": "b", "no-safety-backup": "b",
	"restore-logs": "b", "restore-globals": "b", "no-owner": "b", "resume": "b", "dry-run": "b",
}

// Restore implements org.pme2go.Backup1.Manager.Restore.
func (m managerObj) Restore(msg dbus.Message, backup string, opts map[string]dbus.Variant) (p dbus.ObjectPath, derr *dbus.Error) {
	defer m.s.guard("Restore", &derr)
	d := newOptionDecoder("Restore", opts, restoreOptions)
	if d.err != nil {
		return "/", toDBus(d.err)
	}
	ro := RestoreOptions{
		TargetTime: d.str("target-time"), TargetLSN: d.str("target-lsn"), TargetXid: d.str("target-xid"),
		TargetName: d.str("target-name"), Latest: d.boolean("latest"), TargetExclusive: d.boolean("target-exclusive"),
		TargetDB: d.str("target-db"), Force: d.boolean("force"), NoSafetyBackup: d.boolean("no-safety-backup"),
		RestoreLogs: d.boolean("restore-logs"), RestoreGlobals: d.boolean("restore-globals"), NoOwner: d.boolean("no-owner"),
		Resume: d.boolean("resume"),
	}
	if backup == "" && !ro.HasTarget() {
		return "/", toDBus(Errorf(CodeInvalidArgs, `name an archive, or give "target-time", "target-lsn", "target-xid", "target-name" or "latest"`,
			"Restore: no backup and no target"))
	}
	return m.start(msg, ActionRestore, JobRequest{Kind: KindRestore, Backup: backup, Restore: ro,
		Databases: d.strs("databases"), DryRun: d.boolean("dry-run")})
}

// Cleanup implements org.pme2go.Backup1.Manager.Cleanup.
func (m managerObj) Cleanup(msg dbus.Message, opts map[string]dbus.Variant) (p dbus.ObjectPath, derr *dbus.Error) {
	defer m.s.guard("Cleanup", &derr)
	d := newOptionDecoder("Cleanup", opts, map[string]string{"dry-run": "b"})
	if d.err != nil {
		return "/", toDBus(d.err)
	}
	return m.start(msg, ActionManage, JobRequest{Kind: KindCleanup, DryRun: d.boolean("dry-run")})
}

// Verify implements org.pme2go.Backup1.Manager.Verify.
func (m managerObj) Verify(msg dbus.Message, backup string) (p dbus.ObjectPath, derr *dbus.Error) {
	defer m.s.guard("Verify", &derr)
	return m.start(msg, ActionBackup, JobRequest{Kind: KindVerify, Backup: backup})
}

// VerifyOffsite implements org.pme2go.Backup1.Manager.VerifyOffsite: Verify
// plus the off-site copies.
func (m managerObj) VerifyOffsite(msg dbus.Message, backup string) (p dbus.ObjectPath, derr *dbus.Error) {
	defer m.s.guard("VerifyOffsite", &derr)
	return m.start(msg, ActionBackup, JobRequest{Kind: KindVerify, Backup: backup, Offsite: true})
}

// Drill implements org.pme2go.Backup1.Manager.Drill: a restore drill
// restores into scratch databases of its own and never touches the
// configured databases, so it needs the backup action (as Verify), not the
// restore action.
func (m managerObj) Drill(msg dbus.Message, opts map[string]dbus.Variant) (p dbus.ObjectPath, derr *dbus.Error) {
	defer m.s.guard("Drill", &derr)
	return m.startJob(msg, "Drill", KindDrill, opts)
}

// startJob starts a job of kind (a backup or a drill: the backup action)
// from the options they share, "databases" (as) and "trigger" (s, default
// "manual").
func (m managerObj) startJob(msg dbus.Message, method, kind string, opts map[string]dbus.Variant) (dbus.ObjectPath, *dbus.Error) {
	d := newOptionDecoder(method, opts, map[string]string{"databases": "as", "trigger": "s"})
	if d.err != nil {
		return "/", toDBus(d.err)
	}
	trigger := d.str("trigger")
	if trigger == "" {
		trigger = "manual"
	}
	return m.start(msg, ActionBackup, JobRequest{Kind: kind, Databases: d.strs("databases"), Trigger: trigger})
}

// OffsiteSync implements org.pme2go.Backup1.Manager.OffsiteSync: copy
// every backup not yet verified off-site, record the repository's backups,
// prune local copies under LOCAL_RETENTION_DAYS. It may remove local
// copies, so it needs the manage action (as Cleanup).
func (m managerObj) OffsiteSync(msg dbus.Message, opts map[string]dbus.Variant) (p dbus.ObjectPath, derr *dbus.Error) {
	defer m.s.guard("OffsiteSync", &derr)
	d := newOptionDecoder("OffsiteSync", opts, map[string]string{})
	if d.err != nil {
		return "/", toDBus(d.err)
	}
	return m.start(msg, ActionManage, JobRequest{Kind: KindOffsiteSync, Trigger: "manual"})
}

// Rekey implements org.pme2go.Backup1.Manager.Rekey: re-encrypt archives
// (local and off-site) to the current recipients. It replaces archives, so
// it needs the manage action.
func (m managerObj) Rekey(msg dbus.Message, opts map[string]dbus.Variant) (p dbus.ObjectPath, derr *dbus.Error) {
	defer m.s.guard("Rekey", &derr)
	d := newOptionDecoder("Rekey", opts, map[string]string{"backups": "as", "dry-run": "b"})
	if d.err != nil {
		return "/", toDBus(d.err)
	}
	return m.start(msg, ActionManage, JobRequest{Kind: KindRekey, Backups: d.strs("backups"), DryRun: d.boolean("dry-run"), Trigger: "manual"})
}

// backupTuple is one ListBackups entry, (ssstta{sv}).
type backupTuple struct {
	Name    string
	Type    string
	Path    string
	Time    uint64
	Size    uint64
	Details map[string]dbus.Variant
}

// ListBackups implements org.pme2go.Backup1.Manager.ListBackups.
func (m managerObj) ListBackups(msg dbus.Message) (out []backupTuple, derr *dbus.Error) {
	defer m.s.guard("ListBackups", &derr)
	_, ctx, cancel, derr := m.s.authorize(msg, ActionRead)
	if derr != nil {
		return nil, derr
	}
	defer cancel()
	list, err := m.s.backend.ListBackups(ctx)
	if err != nil {
		return nil, toDBus(err)
	}
	out = make([]backupTuple, 0, len(list))
	for _, b := range list {
		size := uint64(0)
		if b.Size > 0 {
			size = uint64(b.Size)
		}
		d := toVariantMap(b.Details)
		if b.JSON != "" {
			d["json"] = dbus.MakeVariant(b.JSON)
		}
		out = append(out, backupTuple{b.Name, b.Type, b.Path, usec(b.Time), size, d})
	}
	return out, nil
}

// GetStatus implements org.pme2go.Backup1.Manager.GetStatus.
func (m managerObj) GetStatus(msg dbus.Message) (out map[string]dbus.Variant, derr *dbus.Error) {
	defer m.s.guard("GetStatus", &derr)
	_, ctx, cancel, derr := m.s.authorize(msg, ActionRead)
	if derr != nil {
		return nil, derr
	}
	defer cancel()
	st, err := m.s.backend.Status(ctx)
	if err != nil {
		return nil, toDBus(err)
	}
	return toVariantMap(st), nil
}

// Mark implements org.pme2go.Backup1.Manager.Mark: every configured
// database.
func (m managerObj) Mark(msg dbus.Message, name string) (lsn string, derr *dbus.Error) {
	defer m.s.guard("Mark", &derr)
	return m.mark(msg, "Mark", name, nil)
}

// MarkWithOptions implements org.pme2go.Backup1.Manager.MarkWithOptions:
// Mark with options, "databases" (as) naming the databases to mark (as the
// CLI's mark --database).
func (m managerObj) MarkWithOptions(msg dbus.Message, name string, opts map[string]dbus.Variant) (lsn string, derr *dbus.Error) {
	defer m.s.guard("MarkWithOptions", &derr)
	d := newOptionDecoder("MarkWithOptions", opts, map[string]string{"databases": "as"})
	if d.err != nil {
		return "", toDBus(d.err)
	}
	return m.mark(msg, "MarkWithOptions", name, d.strs("databases"))
}

func (m managerObj) mark(msg dbus.Message, method, name string, databases []string) (string, *dbus.Error) {
	if name == "" {
		return "", toDBus(Errorf(CodeInvalidArgs, "give the mark a name", method+": empty name"))
	}
	c, ctx, cancel, derr := m.s.authorize(msg, ActionBackup)
	if derr != nil {
		return "", derr
	}
	defer cancel()
	lsn, err := m.s.backend.Mark(ctx, name, databases)
	if err != nil {
		return "", toDBus(err)
	}
	m.s.log.Info("mark written", "mark", name, "lsn", lsn, "caller_uid", c.UID, "admin", true)
	return lsn, nil
}

type jobMethods struct{ jo *jobObject }

// Cancel implements org.pme2go.Backup1.Job.Cancel. The job's starter needs
// the action that started it; anyone else needs ActionManage.
func (j jobMethods) Cancel(msg dbus.Message) (derr *dbus.Error) {
	s := j.jo.s
	defer s.guard("Cancel", &derr)
	s.mu.Lock()
	info := j.jo.info
	s.mu.Unlock()
	sender, _ := msg.Headers[dbus.FieldSender].Value().(string)
	ctx, cancel := context.WithTimeout(s.ctx, callTimeout)
	defer cancel()
	var uid uint32
	if err := s.conn.BusObject().CallWithContext(ctx, "org.freedesktop.DBus.GetConnectionUnixUser", 0, sender).Store(&uid); err != nil {
		return toDBus(Errorf(CodeNotAuthorized, "", "cannot identify the caller"))
	}
	action := ActionManage
	if uid == info.StartedByUID {
		action = ActionBackup
		if info.Kind == KindRestore {
			action = ActionRestore
		} else if info.Kind == KindCleanup {
			action = ActionManage
		}
	}
	c, _, cancel2, derr := s.authorize(msg, action)
	if derr != nil {
		return derr
	}
	defer cancel2()
	if err := s.backend.CancelJob(info.ID, c); err != nil {
		return toDBus(err)
	}
	s.log.Info("job cancel requested", "job", info.ID, "caller_uid", c.UID, "admin", true)
	return nil
}

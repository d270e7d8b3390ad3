package dbusapi

import (
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/godbus/dbus/v5"
)

// Caller is who called a method: the unique bus name and the uid the bus
// daemon vouches for.
type Caller struct {
	Sender string
	UID    uint32
}

// RestoreOptions are the options of a restore job; they mirror the CLI's
// restore flags.
type RestoreOptions struct {
	TargetTime      string
	TargetLSN       string
	TargetXid       string
	TargetName      string
	Latest          bool
	TargetExclusive bool
	TargetDB        string
	Force           bool
	NoSafetyBackup  bool
	RestoreLogs     bool
	RestoreGlobals  bool
	NoOwner         bool
	Resume          bool
}

// HasTarget reports whether a point-in-time target was given.
func (o RestoreOptions) HasTarget() bool {
	return o.TargetTime != "" || o.TargetLSN != "" || o.TargetXid != "" || o.TargetName != "" || o.Latest
}

// JobRequest is one operation asked of the daemon.
type JobRequest struct {
	Kind      string   // KindFull, KindIncremental, KindRestore, KindVerify, KindCleanup, KindDrill, KindOffsiteSync, KindRekey
	Databases []string // empty: every configured database
	Trigger   string   // recorded in a backup's manifest ("manual", "scheduled", ...)
	Backup    string   // restore, verify: archive name or path
	Backups   []string // rekey: archive names or paths (empty: every encrypted backup)
	Offsite   bool     // verify: check the off-site copies too
	Restore   RestoreOptions
	DryRun    bool // restore, cleanup, rekey
	Caller    Caller
	// Compression (full, incremental), when set, is the job's archive
	// codec instead of BACKUP_COMPRESSION: "xz", "zstd", "gzip" or "none".
	Compression string
}

// JobInfo is the observable state of a job, as its D-Bus object shows it.
type JobInfo struct {
	ID            uint64
	Kind          string
	State         string
	Phase         string
	Progress      float64 // 0-1, meaningful when ProgressValid
	ProgressValid bool
	Bytes         uint64
	StartedByUID  uint32
	Databases     []string
	Cancelable    bool
	StartedAt     time.Time
	FinishedAt    time.Time
	Result        string // archive written or checked
	ResultJSON    string
	Trigger       string
	Error         *Error // set when State is JobFailed or JobCancelled
	// OffsiteError is set for a backup that succeeded but whose off-site
	// copy failed (the archive is safe locally; the next backup or
	// off-site sync copies it).
	OffsiteError *Error
}

// Path is the job's object path.
func (j JobInfo) Path() dbus.ObjectPath { return JobPath(j.ID) }

// Duration is how long the job ran (so far).
func (j JobInfo) Duration() time.Duration {
	end := j.FinishedAt
	if end.IsZero() {
		end = time.Now()
	}
	return end.Sub(j.StartedAt)
}

// BackupEntry is one archive in ListBackups.
type BackupEntry struct {
	Name    string
	Type    string // "full" or "incremental"
	Path    string
	Time    time.Time
	Size    int64
	Details map[string]any // values: string, []string, bool, int64, uint64, float64, time.Time
	// JSON is the entry as the CLI's list --json prints it (details key "json").
	JSON string
}

// ManagerState is the value of the Manager's changing properties.
type ManagerState struct {
	State             string // "idle", "running", "streaming", "stopping"
	Jobs              []uint64
	LastFull          string
	LastFullTime      time.Time
	LastIncremental   string
	LastIncrTime      time.Time
	Streaming         bool
	StreamingLagBytes uint64
	WindowStart       time.Time
	WindowEnd         time.Time
	NextScheduled     map[string]time.Time
	// The last restore drill: when it started, whether it passed, the
	// databases drilled (comma-separated), how long it took (seconds) and
	// why it failed.
	LastDrillTime      time.Time
	LastDrillOK        bool
	LastDrillDatabases string
	LastDrillDuration  float64
	LastDrillError     string
}

// usec renders t as microseconds since the epoch, 0 for the zero time.
func usec(t time.Time) uint64 {
	if t.IsZero() || t.Unix() < 0 {
		return 0
	}
	return uint64(t.UnixMicro())
}

// fromUsec is the inverse of usec.
func fromUsec(u uint64) time.Time {
	if u == 0 {
		return time.Time{}
	}
	return time.UnixMicro(int64(u)).UTC()
}

// optionDecoder reads a{sv} option maps, rejecting unknown keys and values
// of the wrong type with CodeInvalidArgs.
type optionDecoder struct {
	opts    map[string]dbus.Variant
	allowed map[string]string // key -> signature
	err     *Error
}

func newOptionDecoder(method string, opts map[string]dbus.Variant, allowed map[string]string) *optionDecoder {
	d := &optionDecoder{opts: opts, allowed: allowed}
	keys := make([]string, 0, len(allowed))
	for k := range allowed {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for k, v := range opts {
		want, ok := allowed[k]
		if !ok {
			d.err = Errorf(CodeInvalidArgs, fmt.Sprintf("use one of: %s", strings.Join(keys, ", ")),
				fmt.Sprintf("%s: unknown option %q", method, k))
			return d
		}
		if got := v.Signature().String(); got != want {
			d.err = Errorf(CodeInvalidArgs, fmt.Sprintf("pass %q as a variant of type %s", k, want),
				fmt.Sprintf("%s: option %q has type %s, want %s", method, k, got, want))
			return d
		}
	}
	return d
}

func (d *optionDecoder) str(k string) string {
	v, _ := d.opts[k].Value().(string)
	return v
}

func (d *optionDecoder) boolean(k string) bool {
	v, _ := d.opts[k].Value().(bool)
	return v
}

func (d *optionDecoder) strs(k string) []string {
	v, _ := d.opts[k].Value().([]string)
	return v
}

// toVariantMap converts plain Go values for an a{sv} reply.
func toVariantMap(m map[string]any) map[string]dbus.Variant {
	out := make(map[string]dbus.Variant, len(m))
	for k, v := range m {
		switch x := v.(type) {
		case nil:
			continue
		case time.Time:
			out[k] = dbus.MakeVariant(usec(x))
		case time.Duration:
			out[k] = dbus.MakeVariant(x.Seconds())
		case int:
			out[k] = dbus.MakeVariant(int64(x))
		case map[string]any:
			out[k] = dbus.MakeVariant(toVariantMap(x))
		case []map[string]any:
			l := make([]map[string]dbus.Variant, len(x))
			for i := range x {
				l[i] = toVariantMap(x[i])
			}
			out[k] = dbus.MakeVariant(l)
		case map[string]time.Time:
			t := make(map[string]uint64, len(x))
			for kk, vv := range x {
				t[kk] = usec(vv)
			}
			out[k] = dbus.MakeVariant(t)
		default:
			out[k] = dbus.MakeVariant(v)
		}
	}
	return out
}

package daemon

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/coreos/go-systemd/v22/journal"
)

// LogOptions configures NewLogger.
type LogOptions struct {
	Level  slog.Level
	Stderr io.Writer // default os.Stderr
	// Journal sends records to the journal with their attributes as fields
	// (BACKUP_TYPE=full, DURATION_MS=...). NewLogger turns it on when stderr
	// is the journal (JOURNAL_STREAM).
	Journal bool
	// LogDir, when set, also receives the seed's daily files:
	// combined-YYYY-MM-DD.log (everything), error-YYYY-MM-DD.log (errors)
	// and admin-YYYY-MM-DD.log (operations callers asked for), JSON lines,
	// files older than RetentionDays removed.
	LogDir        string
	RetentionDays int
	// Secrets are strings never written: every occurrence in a message or a
	// value is replaced by "[redacted]" (the database password).
	Secrets []string
}

// NewLogger builds the daemon's logger: journal fields when stderr is the
// journal, JSON lines on stderr otherwise, plus the daily files under
// LogDir. Attributes whose key names a password, secret or token are
// redacted whatever their value. The returned function closes the files.
func NewLogger(o LogOptions) (*slog.Logger, func() error, error) {
	if o.Stderr == nil {
		o.Stderr = os.Stderr
		if ok, _ := journal.StderrIsJournalStream(); ok {
			o.Journal = true
		}
	}
	hopts := &slog.HandlerOptions{Level: o.Level}
	var main slog.Handler = slog.NewJSONHandler(o.Stderr, hopts)
	if o.Journal {
		main = &journalHandler{level: o.Level, fallback: main}
	}
	handlers := []slog.Handler{main}
	closeFn := func() error { return nil }
	if o.LogDir != "" {
		d, err := newDailyFiles(o.LogDir, o.RetentionDays)
		if err != nil {
			return nil, nil, err
		}
		handlers = append(handlers, &dailyHandler{files: d,
			combined: slog.NewJSONHandler(d.writer("combined"), hopts),
			errors:   slog.NewJSONHandler(d.writer("error"), hopts),
			admin:    slog.NewJSONHandler(d.writer("admin"), hopts)})
		closeFn = d.Close
	}
	var secrets []string
	for _, s := range o.Secrets {
		if s != "" {
			secrets = append(secrets, s)
		}
	}
	var h slog.Handler = fanout(handlers)
	h = &scrubHandler{inner: h, secrets: secrets}
	return slog.New(h), closeFn, nil
}

// scrubHandler removes secrets from records before any handler sees them.
type scrubHandler struct {
	inner   slog.Handler
	secrets []string
}

func isSecretKey(k string) bool {
	k = strings.ToLower(k)
	return strings.Contains(k, "password") || strings.Contains(k, "secret") || strings.Contains(k, "token") || k == "pgpassword"
}

func (h *scrubHandler) scrub(s string) string {
	for _, sec := range h.secrets {
		s = strings.ReplaceAll(s, sec, "[redacted]")
	}
	return s
}

func (h *scrubHandler) attr(a slog.Attr) slog.Attr {
	if isSecretKey(a.Key) {
		return slog.String(a.Key, "[redacted]")
	}
	v := a.Value.Resolve()
	switch v.Kind() {
	case slog.KindString:
		return slog.String(a.Key, h.scrub(v.String()))
	case slog.KindGroup:
		g := v.Group()
		out := make([]any, len(g))
		for i := range g {
			out[i] = h.attr(g[i])
		}
		return slog.Group(a.Key, out...)
	case slog.KindAny:
		if err, ok := v.Any().(error); ok {
			return slog.String(a.Key, h.scrub(err.Error()))
		}
		return slog.String(a.Key, h.scrub(fmt.Sprint(v.Any())))
	}
	return slog.Attr{Key: a.Key, Value: v}
}

func (h *scrubHandler) Enabled(ctx context.Context, l slog.Level) bool {
	return h.inner.Enabled(ctx, l)
}

func (h *scrubHandler) Handle(ctx context.Context, r slog.Record) error {
	nr := slog.NewRecord(r.Time, r.Level, h.scrub(r.Message), r.PC)
	r.Attrs(func(a slog.Attr) bool {
		nr.AddAttrs(h.attr(a))
		return true
	})
	return h.inner.Handle(ctx, nr)
}

func (h *scrubHandler) WithAttrs(as []slog.Attr) slog.Handler {
	out := make([]slog.Attr, len(as))
	for i := range as {
		out[i] = h.attr(as[i])
	}
	return &scrubHandler{inner: h.inner.WithAttrs(out), secrets: h.secrets}
}

func (h *scrubHandler) WithGroup(name string) slog.Handler {
	return &scrubHandler{inner: h.inner.WithGroup(name), secrets: h.secrets}
}

type fanout []slog.Handler

func (f fanout) Enabled(ctx context.Context, l slog.Level) bool {
	for _, h := range f {
		if h.Enabled(ctx, l) {
			return true
		}
	}
	return false
}

func (f fanout) Handle(ctx context.Context, r slog.Record) error {
	var errs []error
	for _, h := range f {
		if h.Enabled(ctx, r.Level) {
			errs = append(errs, h.Handle(ctx, r.Clone()))
		}
	}
	return errors.Join(errs...)
}

func (f fanout) WithAttrs(as []slog.Attr) slog.Handler {
	out := make(fanout, len(f))
	for i, h := range f {
		out[i] = h.WithAttrs(as)
	}
	return out
}

func (f fanout) WithGroup(name string) slog.Handler {
	out := make(fanout, len(f))
	for i, h := range f {
		out[i] = h.WithGroup(name)
	}
	return out
}

// journalHandler sends records to the journal's native socket, each
// attribute as a field named by its upper-cased key (backup_type ->
// BACKUP_TYPE); a record the journal refuses goes to the fallback.
type journalHandler struct {
	level    slog.Level
	fallback slog.Handler
	attrs    []slog.Attr
	group    string
}

func (h *journalHandler) Enabled(_ context.Context, l slog.Level) bool { return l >= h.level }

// JournalField turns an attribute key into a journal field name.
func JournalField(key string) string {
	var b strings.Builder
	for _, r := range strings.ToUpper(key) {
		if (r >= 'A' && r <= 'Z') || (r >= '0' && r <= '9') || r == '_' {
			b.WriteRune(r)
		} else {
			b.WriteByte('_')
		}
	}
	s := strings.TrimLeft(b.String(), "_")
	if s == "" || (s[0] >= '0' && s[0] <= '9') {
		s = "F_" + s
	}
	switch s {
	case "MESSAGE", "PRIORITY", "SYSLOG_IDENTIFIER", "CODE_FILE", "CODE_LINE", "CODE_FUNC", "MESSAGE_ID":
		s = "PME2GO_" + s
	}
	return s
}

func addField(vars map[string]string, prefix string, a slog.Attr) {
	v := a.Value.Resolve()
	key := a.Key
	if prefix != "" {
		key = prefix + "_" + key
	}
	if v.Kind() == slog.KindGroup {
		for _, ga := range v.Group() {
			addField(vars, key, ga)
		}
		return
	}
	vars[JournalField(key)] = v.String()
}

func (h *journalHandler) Handle(ctx context.Context, r slog.Record) error {
	vars := map[string]string{"SYSLOG_IDENTIFIER": "pme2go-backupd"}
	for _, a := range h.attrs {
		addField(vars, "", a)
	}
	r.Attrs(func(a slog.Attr) bool {
		addField(vars, h.group, a)
		return true
	})
	prio := journal.PriInfo
	switch {
	case r.Level >= slog.LevelError:
		prio = journal.PriErr
	case r.Level >= slog.LevelWarn:
		prio = journal.PriWarning
	case r.Level < slog.LevelInfo:
		prio = journal.PriDebug
	}
	if err := journal.Send(r.Message, prio, vars); err != nil {
		return h.fallback.Handle(ctx, r)
	}
	return nil
}

func (h *journalHandler) WithAttrs(as []slog.Attr) slog.Handler {
	n := *h
	n.attrs = append([]slog.Attr(nil), h.attrs...)
	for _, a := range as {
		if h.group != "" {
			a.Key = h.group + "_" + a.Key
		}
		n.attrs = append(n.attrs, a)
	}
	n.fallback = h.fallback.WithAttrs(as)
	return &n
}

func (h *journalHandler) WithGroup(name string) slog.Handler {
	n := *h
	if n.group != "" {
		name = n.group + "_" + name
	}
	n.group = name
	n.fallback = h.fallback.WithGroup(name)
	return &n
}

// dailyHandler writes the seed's three daily files.
type dailyHandler struct {
	files                   *dailyFiles
	combined, errors, admin slog.Handler
	adminPreset             bool
}

func (h *dailyHandler) Enabled(ctx context.Context, l slog.Level) bool {
	return h.combined.Enabled(ctx, l)
}

func (h *dailyHandler) Handle(ctx context.Context, r slog.Record) error {
	err := h.combined.Handle(ctx, r)
	if r.Level >= slog.LevelError {
		err = errors.Join(err, h.errors.Handle(ctx, r))
	}
	admin := h.adminPreset
	r.Attrs(func(a slog.Attr) bool {
		if a.Key == "admin" && a.Value.Kind() == slog.KindBool && a.Value.Bool() {
			admin = true
		}
		return !admin
	})
	if admin {
		err = errors.Join(err, h.admin.Handle(ctx, r))
	}
	return err
}

func (h *dailyHandler) WithAttrs(as []slog.Attr) slog.Handler {
	n := *h
	for _, a := range as {
		if a.Key == "admin" && a.Value.Kind() == slog.KindBool && a.Value.Bool() {
			n.adminPreset = true
		}
	}
	n.combined, n.errors, n.admin = h.combined.WithAttrs(as), h.errors.WithAttrs(as), h.admin.WithAttrs(as)
	return &n
}

func (h *dailyHandler) WithGroup(name string) slog.Handler {
	n := *h
	n.combined, n.errors, n.admin = h.combined.WithGroup(name), h.errors.WithGroup(name), h.admin.WithGroup(name)
	return &n
}

// dailyFiles opens PREFIX-YYYY-MM-DD.log in dir (local date), switching at
// midnight and removing files older than the retention.
type dailyFiles struct {
	dir       string
	retention int
	mu        sync.Mutex
	day       string
	files     map[string]*os.File
	now       func() time.Time
}

func newDailyFiles(dir string, retention int) (*dailyFiles, error) {
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return nil, fmt.Errorf("LOG_DIR: %w", err)
	}
	return &dailyFiles{dir: dir, retention: retention, files: map[string]*os.File{}, now: time.Now}, nil
}

type dailyWriter struct {
	d      *dailyFiles
	prefix string
}

func (d *dailyFiles) writer(prefix string) io.Writer { return dailyWriter{d, prefix} }

func (w dailyWriter) Write(p []byte) (int, error) {
	d := w.d
	d.mu.Lock()
	defer d.mu.Unlock()
	day := d.now().Format("2006-01-02")
	if day != d.day {
		for _, f := range d.files {
			f.Close()
		}
		d.files = map[string]*os.File{}
		d.day = day
		d.prune()
	}
	f, ok := d.files[w.prefix]
	if !ok {
		var err error
		f, err = os.OpenFile(filepath.Join(d.dir, w.prefix+"-"+day+".log"), os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o640)
		if err != nil {
			return 0, err
		}
		d.files[w.prefix] = f
	}
	return f.Write(p)
}

// prune removes daily files older than the retention (0 keeps them).
func (d *dailyFiles) prune() {
	if d.retention <= 0 {
		return
	}
	cutoff := d.now().AddDate(0, 0, -d.retention).Format("2006-01-02")
	for _, prefix := range []string{"combined", "error", "admin"} {
		matches, _ := filepath.Glob(filepath.Join(d.dir, prefix+"-????-??-??.log"))
		for _, m := range matches {
			day := strings.TrimSuffix(strings.TrimPrefix(filepath.Base(m), prefix+"-"), ".log")
			if day < cutoff {
				_ = os.Remove(m)
			}
		}
	}
}

func (d *dailyFiles) Close() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	var errs []error
	for _, f := range d.files {
		errs = append(errs, f.Close())
	}
	d.files = map[string]*os.File{}
	return errors.Join(errs...)
}

// Package rest is the daemon's REST API: the seed's admin endpoints under
// /api/admin/system/backups, job resources, the seed's notifications as a
// WebSocket and as server-sent events, and /metrics in the Prometheus text
// format. It is a thin adapter: jobs, authorization rules and error codes
// are the daemon's, the same as over D-Bus.
//
// Callers on a Unix socket are identified by their peer credentials
// (SO_PEERCRED, SO_PEERGROUPS) and authorized like D-Bus callers (polkit
// with a unix-process subject where polkit runs, else root, the daemon's
// own uid and the members of its group). A TCP listener is accepted only
// with a bearer token (REST_TOKEN_FILE), compared in constant time; a token
// holder may do everything.
package rest

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/pme2go/pme2go-backup/daemon/events"
	"github.com/pme2go/pme2go-backup/dbusapi"
)

// Base is the path prefix of the seed's endpoints.
const Base = "/api/admin/system/backups"

// Limits of the HTTP server.
const (
	MaxBodyBytes      = 64 << 10 // request bodies larger than this are refused with 413
	MaxHeaderBytes    = 16 << 10
	ReadHeaderTimeout = 10 * time.Second
	ReadTimeout       = 30 * time.Second // a whole request, body included
	WriteTimeout      = 60 * time.Second // a response (event streams clear it and set one per message)
	IdleTimeout       = 120 * time.Second
	eventWriteTimeout = 10 * time.Second // one event to one subscriber; a slower one is dropped
	keepAliveInterval = 30 * time.Second // SSE comments and WebSocket pings on a quiet stream
)

// Backend is what the API needs from the daemon.
type Backend interface {
	StartJob(req dbusapi.JobRequest) (dbusapi.JobInfo, error)
	CancelJob(id uint64, by dbusapi.Caller) error
	// Job returns a running or finished job; ok is false when unknown.
	Job(id uint64) (info dbusapi.JobInfo, ok bool)
	ListBackups(ctx context.Context) ([]dbusapi.BackupEntry, error)
	// Status is the daemon's status as GetStatus returns it over D-Bus,
	// with JSON-marshallable values.
	Status(ctx context.Context) (map[string]any, error)
	// Snapshot returns the figures /metrics shows.
	Snapshot(ctx context.Context) (Snapshot, error)
}

// Authorizer checks a Unix-socket caller (dbusapi.Authorizer).
type Authorizer interface {
	AuthorizeProcess(ctx context.Context, p dbusapi.Process, action string) (dbusapi.Caller, error)
}

// Options configure a Server.
type Options struct {
	Backend Backend
	Auth    Authorizer
	Events  *events.Broadcaster
	// Token is the bearer token TCP callers must send; empty refuses every
	// TCP listener at New.
	Token string
	Log   *slog.Logger
	// Activity, when set, is called at the start of every request (the
	// daemon's idle timer).
	Activity func()
	// Secrets are strings never sent (the database password): a response
	// or event containing one has it replaced by "[redacted]". The token is
	// always among them.
	Secrets []string
}

// Server serves the API on listeners.
type Server struct {
	o         Options
	srv       *http.Server
	tokenHash [sha256.Size]byte
	ctx       context.Context
	cancel    context.CancelFunc
	wg        sync.WaitGroup
	listeners []net.Listener
	secrets   [][]byte
}

// scrub replaces every secret in data.
func (s *Server) scrub(data []byte) []byte {
	for _, sec := range s.secrets {
		if bytes.Contains(data, sec) {
			data = bytes.ReplaceAll(data, sec, []byte("[redacted]"))
		}
	}
	return data
}

// ErrTCPWithoutToken is returned by New for a TCP listener when no token is
// configured.
var ErrTCPWithoutToken = errors.New("a TCP listener for the REST API needs a bearer token: set REST_TOKEN_FILE, or listen on a Unix socket")

// New checks the listeners (a TCP one needs a token; only Unix and TCP
// stream sockets are accepted) and prepares the server.
func New(o Options, listeners []net.Listener) (*Server, error) {
	if o.Log == nil {
		o.Log = slog.Default()
	}
	if o.Events == nil {
		o.Events = &events.Broadcaster{}
	}
	for _, l := range listeners {
		switch l.Addr().Network() {
		case "unix":
		case "tcp", "tcp4", "tcp6":
			if o.Token == "" {
				return nil, fmt.Errorf("%w (listener %s)", ErrTCPWithoutToken, l.Addr())
			}
		default:
			return nil, fmt.Errorf("REST API listener %s: network %q is not supported (use a Unix or TCP stream socket)", l.Addr(), l.Addr().Network())
		}
	}
	s := &Server{o: o, listeners: listeners, tokenHash: sha256.Sum256([]byte(o.Token))}
	for _, sec := range append([]string{o.Token}, o.Secrets...) {
		if len(sec) >= 4 {
			s.secrets = append(s.secrets, []byte(sec))
			if q, err := json.Marshal(sec); err == nil {
				s.secrets = append(s.secrets, q[1:len(q)-1]) // as it appears inside a JSON string
			}
		}
	}
	s.ctx, s.cancel = context.WithCancel(context.Background())
	s.srv = &http.Server{
		Handler:           s.routes(),
		ReadHeaderTimeout: ReadHeaderTimeout,
		ReadTimeout:       ReadTimeout,
		WriteTimeout:      WriteTimeout,
		IdleTimeout:       IdleTimeout,
		MaxHeaderBytes:    MaxHeaderBytes,
		BaseContext:       func(net.Listener) context.Context { return s.ctx },
		ConnContext:       connContext,
		ErrorLog:          slog.NewLogLogger(o.Log.Handler(), slog.LevelDebug),
	}
	return s, nil
}

// Start serves every listener in the background.
func (s *Server) Start() {
	for _, l := range s.listeners {
		s.wg.Add(1)
		go func(l net.Listener) {
			defer s.wg.Done()
			if err := s.srv.Serve(l); err != nil && !errors.Is(err, http.ErrServerClosed) {
				s.o.Log.Error("REST API listener stopped", "listener", l.Addr().String(), "error", err)
			}
		}(l)
		s.o.Log.Info("REST API listening", "listener", l.Addr().Network()+":"+l.Addr().String())
	}
}

// Shutdown ends the event streams, stops accepting, and waits up to ctx for
// the requests in progress.
func (s *Server) Shutdown(ctx context.Context) error {
	s.cancel()
	err := s.srv.Shutdown(ctx)
	if err != nil {
		_ = s.srv.Close()
	}
	s.wg.Wait()
	return err
}

func (s *Server) routes() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc(Base+"/status", s.method("GET", dbusapi.ActionRead, s.status))
	mux.HandleFunc(Base, s.method("GET", dbusapi.ActionRead, s.list))
	mux.HandleFunc(Base+"/{$}", s.method("GET", dbusapi.ActionRead, s.list))
	mux.HandleFunc(Base+"/create", s.method("POST", dbusapi.ActionBackup, s.create))
	mux.HandleFunc(Base+"/restore", s.method("POST", dbusapi.ActionRestore, s.restore))
	mux.HandleFunc(Base+"/offsite/sync", s.method("POST", dbusapi.ActionManage, s.offsiteSync))
	mux.HandleFunc(Base+"/rekey", s.method("POST", dbusapi.ActionManage, s.rekey))
	mux.HandleFunc(Base+"/drill", s.method("POST", dbusapi.ActionBackup, s.drill))
	mux.HandleFunc(Base+"/jobs/{id}", s.job)
	mux.HandleFunc(Base+"/events", s.method("GET", dbusapi.ActionRead, s.events))
	mux.HandleFunc("/metrics", s.method("GET", dbusapi.ActionRead, s.metrics))
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		s.fail(w, r, http.StatusNotFound, &dbusapi.Error{Code: "NOT_FOUND", Message: fmt.Sprintf("no such endpoint: %s", r.URL.Path),
			Fix: "see pme2go-backupd(8), REST API"})
	})
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if s.o.Activity != nil {
			s.o.Activity()
		}
		r.Body = http.MaxBytesReader(w, r.Body, MaxBodyBytes)
		// A TCP caller without the token learns nothing, not even which
		// paths exist: 401 comes before 404 and 405.
		if ci, _ := r.Context().Value(connKey{}).(*connInfo); ci == nil || !ci.unix {
			if _, ok := s.checkToken(w, r); !ok {
				return
			}
		}
		// ServeMux would answer a path that is not in canonical form
		// (//api, /api/../api, a %2e%2e segment) with an HTML redirect;
		// the API answers in JSON and names the canonical path instead.
		if p := r.URL.Path; p == "" || p[0] != '/' || path.Clean(p) != p && path.Clean(p)+"/" != p {
			s.fail(w, r, http.StatusNotFound, &dbusapi.Error{Code: "NOT_FOUND",
				Message: fmt.Sprintf("no such endpoint: %.200q is not a canonical path", p),
				Fix:     "send the path without empty, \".\" or \"..\" segments, e.g. " + Base + "/status"})
			return
		}
		mux.ServeHTTP(w, r)
	})
}

// handler serves an authorized request.
type handler func(w http.ResponseWriter, r *http.Request, c dbusapi.Caller)

// method allows one HTTP method (and HEAD with GET) and authorizes the
// caller for action.
func (s *Server) method(m, action string, h handler) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if r.Method != m && !(m == "GET" && r.Method == "HEAD") {
			allow := m
			if m == "GET" {
				allow = "GET, HEAD"
			}
			w.Header().Set("Allow", allow)
			s.fail(w, r, http.StatusMethodNotAllowed, dbusapi.Errorf(dbusapi.CodeInvalidArgs, "use "+m,
				fmt.Sprintf("%s is not allowed on %s", r.Method, r.URL.Path)))
			return
		}
		c, ok := s.authorize(w, r, action)
		if !ok {
			return
		}
		h(w, r, c)
	}
}

// authorize identifies and authorizes the caller; on refusal it has
// answered 401 or 403.
func (s *Server) authorize(w http.ResponseWriter, r *http.Request, action string) (dbusapi.Caller, bool) {
	ci, _ := r.Context().Value(connKey{}).(*connInfo)
	if ci == nil {
		s.fail(w, r, http.StatusForbidden, dbusapi.Errorf(dbusapi.CodeNotAuthorized, "", "the caller cannot be identified"))
		return dbusapi.Caller{}, false
	}
	if !ci.unix {
		return s.checkToken(w, r)
	}
	if ci.err != nil {
		s.fail(w, r, http.StatusForbidden, dbusapi.Errorf(dbusapi.CodeNotAuthorized, "", "cannot read the caller's peer credentials: "+ci.err.Error()))
		return dbusapi.Caller{}, false
	}
	ctx, cancel := context.WithTimeout(r.Context(), 25*time.Second)
	defer cancel()
	c, err := s.o.Auth.AuthorizeProcess(ctx, ci.proc, action)
	if err != nil {
		s.fail(w, r, http.StatusForbidden, err)
		return c, false
	}
	return c, true
}

// checkToken checks the bearer token of a TCP caller; on refusal it has
// answered 401. The authentication scheme is matched without regard to
// case (RFC 9110, 11.1); the token is compared in constant time (as
// SHA-256 digests, so that its length is not revealed either).
func (s *Server) checkToken(w http.ResponseWriter, r *http.Request) (dbusapi.Caller, bool) {
	scheme, got, _ := strings.Cut(strings.TrimSpace(r.Header.Get("Authorization")), " ")
	h := sha256.Sum256([]byte(strings.TrimSpace(got)))
	if !strings.EqualFold(scheme, "Bearer") || subtle.ConstantTimeCompare(h[:], s.tokenHash[:]) != 1 || s.o.Token == "" {
		w.Header().Set("WWW-Authenticate", `Bearer realm="pme2go-backup"`)
		s.o.Log.Warn("REST call refused: missing or wrong bearer token", "remote", r.RemoteAddr, "path", fmt.Sprintf("%.200q", r.URL.Path))
		s.fail(w, r, http.StatusUnauthorized, dbusapi.Errorf(dbusapi.CodeNotAuthorized,
			"send the token of REST_TOKEN_FILE as Authorization: Bearer <token>", "a valid bearer token is required on this listener"))
		return dbusapi.Caller{}, false
	}
	return dbusapi.Caller{UID: uint32(os.Getuid()), Sender: "token " + r.RemoteAddr}, true
}

// statusOf maps an error code to the HTTP status.
func statusOf(code string) int {
	switch code {
	case dbusapi.CodeInvalidArgs:
		return http.StatusBadRequest
	case dbusapi.CodeNotAuthorized, "EACCES":
		return http.StatusForbidden
	case dbusapi.CodeNoSuchJob, "NOT_FOUND", "ENOENT":
		return http.StatusNotFound
	case dbusapi.CodeBusy:
		return http.StatusConflict
	case dbusapi.CodeUnavailable, "CONN_ERR":
		return http.StatusServiceUnavailable
	}
	return http.StatusInternalServerError
}

type errorBody struct {
	Error errorJSON `json:"error"`
}

type errorJSON struct {
	Code    string `json:"code"`
	Message string `json:"message"`
	Fix     string `json:"fix,omitempty"`
	Action  string `json:"action,omitempty"`
}

func errJSON(e *dbusapi.Error) *errorJSON {
	if e == nil {
		return nil
	}
	return &errorJSON{Code: e.Code, Message: e.Message, Fix: e.Fix, Action: e.Action}
}

// fail answers {"error": {"code", "message", "fix"}} with status (0: from
// the code).
func (s *Server) fail(w http.ResponseWriter, r *http.Request, status int, err error) {
	e := dbusapi.AsError(err)
	if status == 0 {
		status = statusOf(e.Code)
	}
	if status >= 500 {
		s.o.Log.Warn("REST call failed", "path", r.URL.Path, "status", status, "error_code", e.Code, "error", e.Message)
	}
	s.writeJSON(w, status, errorBody{Error: *errJSON(e)})
}

func (s *Server) writeJSON(w http.ResponseWriter, status int, v any) {
	data, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		status = http.StatusInternalServerError
		data, _ = json.Marshal(errorBody{Error: errorJSON{Code: dbusapi.CodeFailed, Message: "cannot encode the response: " + err.Error()}})
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
	_, _ = w.Write(append(s.scrub(data), '\n'))
}

// decode reads a JSON object body into v: unknown fields, trailing data, a
// body over MaxBodyBytes are refused (400, 413). An empty body is {}.
func (s *Server) decode(w http.ResponseWriter, r *http.Request, v any) bool {
	data, err := io.ReadAll(r.Body)
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			s.fail(w, r, http.StatusRequestEntityTooLarge, dbusapi.Errorf(dbusapi.CodeInvalidArgs, "send a smaller body",
				fmt.Sprintf("the request body is larger than %d bytes", mbe.Limit)))
			return false
		}
		s.fail(w, r, http.StatusBadRequest, dbusapi.Errorf(dbusapi.CodeInvalidArgs, "", "cannot read the request body: "+err.Error()))
		return false
	}
	if strings.TrimSpace(string(data)) == "" {
		data = []byte("{}")
	}
	dec := json.NewDecoder(strings.NewReader(string(data)))
	dec.DisallowUnknownFields()
	err = dec.Decode(v)
	if err == nil && dec.More() {
		err = errors.New("data after the JSON object")
	}
	if err == nil {
		var extra json.RawMessage
		if dec.Decode(&extra) != io.EOF {
			err = errors.New("data after the JSON object")
		}
	}
	if err != nil {
		s.fail(w, r, http.StatusBadRequest, dbusapi.Errorf(dbusapi.CodeInvalidArgs, "send one JSON object with the fields of pme2go-backupd(8)",
			"malformed request body: "+jsonProblem(err)))
		return false
	}
	return true
}

// jsonProblem words a decoding error for the caller, in terms of the JSON
// it sent rather than of Go types (encoding/json names the Go struct).
func jsonProblem(err error) string {
	var te *json.UnmarshalTypeError
	var se *json.SyntaxError
	switch {
	case errors.As(err, &te):
		want := "a " + jsonKind(te.Type.Kind().String())
		if te.Field == "" {
			return fmt.Sprintf("the body is %s, not a JSON object", article(te.Value))
		}
		return fmt.Sprintf("field %q: want %s, got %s", te.Field, want, article(te.Value))
	case errors.As(err, &se):
		return fmt.Sprintf("invalid JSON at byte %d: %s", se.Offset, strings.TrimPrefix(se.Error(), "json: "))
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return "the JSON object is incomplete"
	}
	msg := strings.TrimPrefix(err.Error(), "json: ")
	if f, ok := strings.CutPrefix(msg, "unknown field "); ok {
		return "unknown field " + f + " (see pme2go-backupd(8) for the fields of this request)"
	}
	return msg
}

// jsonKind names a Go kind as the JSON type that decodes into it.
func jsonKind(kind string) string {
	switch kind {
	case "string":
		return "string"
	case "bool":
		return "boolean (true or false)"
	case "slice", "array":
		return "list"
	case "struct", "map":
		return "JSON object"
	case "int", "int8", "int16", "int32", "int64", "uint", "uint8", "uint16", "uint32", "uint64", "float32", "float64":
		return "number"
	}
	return "value of another type"
}

func article(jsonValue string) string {
	switch jsonValue {
	case "array":
		return "a list"
	case "object":
		return "an object"
	case "":
		return "a value of another type"
	}
	if strings.HasPrefix(jsonValue, "number") {
		return "a number"
	}
	return "a " + jsonValue
}

// jobJSON is a job resource.
type jobJSON struct {
	ID            uint64          `json:"id"`
	URL           string          `json:"url"`
	Kind          string          `json:"kind"`
	State         string          `json:"state"`
	Phase         string          `json:"phase,omitempty"`
	Progress      *float64        `json:"progress,omitempty"` // 0-1, when known
	Bytes         uint64          `json:"bytes"`
	Databases     []string        `json:"databases"`
	Trigger       string          `json:"trigger,omitempty"`
	StartedByUID  uint32          `json:"startedByUid"`
	StartedAt     time.Time       `json:"startedAt"`
	FinishedAt    *time.Time      `json:"finishedAt,omitempty"`
	Duration      float64         `json:"duration"` // seconds
	Cancelable    bool            `json:"cancelable"`
	BackupPath    string          `json:"backupPath,omitempty"` // the archive written or read
	Result        json.RawMessage `json:"result,omitempty"`     // the operation's result, as the CLI's --json prints it
	Error         *errorJSON      `json:"error,omitempty"`
	ProgressValid bool            `json:"-"`
}

func toJob(j dbusapi.JobInfo) jobJSON {
	out := jobJSON{ID: j.ID, URL: Base + "/jobs/" + strconv.FormatUint(j.ID, 10), Kind: j.Kind, State: j.State, Phase: j.Phase,
		Bytes: j.Bytes, Databases: j.Databases, Trigger: j.Trigger, StartedByUID: j.StartedByUID, StartedAt: j.StartedAt.UTC(),
		Duration: j.Duration().Seconds(), Cancelable: j.Cancelable, BackupPath: j.Result, Error: errJSON(j.Error)}
	if out.Databases == nil {
		out.Databases = []string{}
	}
	if j.ProgressValid {
		p := j.Progress
		out.Progress = &p
	}
	if !j.FinishedAt.IsZero() {
		t := j.FinishedAt.UTC()
		out.FinishedAt = &t
	}
	if j.ResultJSON != "" && json.Valid([]byte(j.ResultJSON)) {
		out.Result = json.RawMessage(j.ResultJSON)
	}
	return out
}

func (s *Server) status(w http.ResponseWriter, r *http.Request, _ dbusapi.Caller) {
	st, err := s.o.Backend.Status(r.Context())
	if err != nil {
		s.fail(w, r, 0, err)
		return
	}
	s.writeJSON(w, http.StatusOK, st)
}

func (s *Server) list(w http.ResponseWriter, r *http.Request, _ dbusapi.Caller) {
	list, err := s.o.Backend.ListBackups(r.Context())
	if err != nil {
		s.fail(w, r, 0, err)
		return
	}
	out := make([]json.RawMessage, 0, len(list))
	for _, b := range list {
		if b.JSON != "" && json.Valid([]byte(b.JSON)) {
			out = append(out, json.RawMessage(b.JSON))
			continue
		}
		data, _ := json.Marshal(map[string]any{"name": b.Name, "type": b.Type, "path": b.Path, "timestamp": b.Time, "size": b.Size})
		out = append(out, data)
	}
	s.writeJSON(w, http.StatusOK, map[string]any{"backups": out, "count": len(out)})
}

// createBody is the seed's create request, plus the databases to back up.
type createBody struct {
	Type      string   `json:"type"`     // "full" (default) or "incremental"
	Compress  *bool    `json:"compress"` // the seed's flag: false writes an uncompressed tar
	Databases []string `json:"databases"`
}

func (s *Server) create(w http.ResponseWriter, r *http.Request, c dbusapi.Caller) {
	var b createBody
	if !s.decode(w, r, &b) {
		return
	}
	if b.Type == "" {
		b.Type = dbusapi.KindFull
	}
	if b.Type != dbusapi.KindFull && b.Type != dbusapi.KindIncremental {
		s.fail(w, r, http.StatusBadRequest, dbusapi.Errorf(dbusapi.CodeInvalidArgs, `use "full" or "incremental"`,
			fmt.Sprintf("unknown backup type %.40q", b.Type)))
		return
	}
	req := dbusapi.JobRequest{Kind: b.Type, Databases: b.Databases, Trigger: "api", Caller: c}
	if b.Compress != nil && !*b.Compress {
		// As BACKUP_COMPRESSION=none, for this job only; true (or no
		// flag) keeps the configured codec.
		req.Compression = "none"
	}
	s.start(w, r, req)
}

// restoreBody is the seed's restore request plus the point-in-time fields
// of the CLI's restore command.
type restoreBody struct {
	BackupPath      string   `json:"backupPath"`
	IncludeLogs     bool     `json:"includeLogs"`
	TargetTime      string   `json:"targetTime"`
	TargetLSN       string   `json:"targetLsn"`
	TargetXid       string   `json:"targetXid"`
	TargetName      string   `json:"targetName"`
	TargetExclusive bool     `json:"targetExclusive"`
	Latest          bool     `json:"latest"`
	TargetDB        string   `json:"targetDb"`
	Databases       []string `json:"databases"`
	Force           bool     `json:"force"`
	NoSafetyBackup  bool     `json:"noSafetyBackup"`
	RestoreGlobals  bool     `json:"restoreGlobals"`
	NoOwner         bool     `json:"noOwner"`
	Resume          bool     `json:"resume"`
	DryRun          bool     `json:"dryRun"`
}

func (s *Server) restore(w http.ResponseWriter, r *http.Request, c dbusapi.Caller) {
	var b restoreBody
	if !s.decode(w, r, &b) {
		return
	}
	ro := dbusapi.RestoreOptions{TargetTime: b.TargetTime, TargetLSN: b.TargetLSN, TargetXid: b.TargetXid, TargetName: b.TargetName,
		Latest: b.Latest, TargetExclusive: b.TargetExclusive, TargetDB: b.TargetDB, Force: b.Force, NoSafetyBackup: b.NoSafetyBackup,
		RestoreLogs: b.IncludeLogs, RestoreGlobals: b.RestoreGlobals, NoOwner: b.NoOwner, Resume: b.Resume}
	if b.BackupPath == "" && !ro.HasTarget() {
		s.fail(w, r, http.StatusBadRequest, dbusapi.Errorf(dbusapi.CodeInvalidArgs,
			`name an archive in "backupPath", or give "targetTime", "targetLsn", "targetXid", "targetName" or "latest"`,
			"restore: no backup and no target"))
		return
	}
	s.start(w, r, dbusapi.JobRequest{Kind: dbusapi.KindRestore, Backup: b.BackupPath, Restore: ro, Databases: b.Databases,
		DryRun: b.DryRun, Trigger: "api", Caller: c})
}

// offsiteSync starts an off-site sync job (D-Bus OffsiteSync); the body is
// empty or {}.
func (s *Server) offsiteSync(w http.ResponseWriter, r *http.Request, c dbusapi.Caller) {
	var b struct{}
	if !s.decode(w, r, &b) {
		return
	}
	s.start(w, r, dbusapi.JobRequest{Kind: dbusapi.KindOffsiteSync, Trigger: "api", Caller: c})
}

// rekeyBody names the archives to re-encrypt (empty: every encrypted one).
type rekeyBody struct {
	Backups []string `json:"backups"`
	DryRun  bool     `json:"dryRun"`
}

// rekey starts a rekey job (D-Bus Rekey).
func (s *Server) rekey(w http.ResponseWriter, r *http.Request, c dbusapi.Caller) {
	var b rekeyBody
	if !s.decode(w, r, &b) {
		return
	}
	s.start(w, r, dbusapi.JobRequest{Kind: dbusapi.KindRekey, Backups: b.Backups, DryRun: b.DryRun, Trigger: "api", Caller: c})
}

// drillBody is a restore drill request: the databases to drill (default:
// every configured one).
type drillBody struct {
	Databases []string `json:"databases"`
}

// drill starts a restore drill, as Drill over D-Bus: it restores into
// scratch databases of its own, so it needs the backup action (as Verify),
// not the restore action.
func (s *Server) drill(w http.ResponseWriter, r *http.Request, c dbusapi.Caller) {
	var b drillBody
	if !s.decode(w, r, &b) {
		return
	}
	s.start(w, r, dbusapi.JobRequest{Kind: dbusapi.KindDrill, Databases: b.Databases, Trigger: "api", Caller: c})
}

func (s *Server) start(w http.ResponseWriter, r *http.Request, req dbusapi.JobRequest) {
	j, err := s.o.Backend.StartJob(req)
	if err != nil {
		s.o.Log.Info("job refused", "kind", req.Kind, "caller_uid", req.Caller.UID, "error_code", dbusapi.AsError(err).Code, "error", err, "api", "rest")
		s.fail(w, r, 0, err)
		return
	}
	s.o.Log.Info("job started", "job", j.ID, "kind", req.Kind, "caller_uid", req.Caller.UID, "admin", true, "api", "rest")
	out := toJob(j)
	w.Header().Set("Location", out.URL)
	s.writeJSON(w, http.StatusAccepted, out)
}

func (s *Server) job(w http.ResponseWriter, r *http.Request) {
	id, err := strconv.ParseUint(r.PathValue("id"), 10, 64)
	if err != nil || id == 0 {
		s.fail(w, r, http.StatusNotFound, dbusapi.Errorf(dbusapi.CodeNoSuchJob, "", fmt.Sprintf("no job %.40q", r.PathValue("id"))))
		return
	}
	switch r.Method {
	case "GET", "HEAD":
		if _, ok := s.authorize(w, r, dbusapi.ActionRead); !ok {
			return
		}
		j, ok := s.o.Backend.Job(id)
		if !ok {
			s.fail(w, r, http.StatusNotFound, dbusapi.Errorf(dbusapi.CodeNoSuchJob, "", fmt.Sprintf("no job %d", id)))
			return
		}
		s.writeJSON(w, http.StatusOK, toJob(j))
	case "DELETE":
		j, ok := s.o.Backend.Job(id)
		if !ok {
			if _, ok := s.authorize(w, r, dbusapi.ActionRead); ok {
				s.fail(w, r, http.StatusNotFound, dbusapi.Errorf(dbusapi.CodeNoSuchJob, "", fmt.Sprintf("no job %d", id)))
			}
			return
		}
		// As Cancel over D-Bus: the job's starter needs the action that
		// started it, anyone else the manage action.
		action := dbusapi.ActionManage
		ci, _ := r.Context().Value(connKey{}).(*connInfo)
		if ci != nil && ci.unix && ci.proc.UID == j.StartedByUID {
			switch j.Kind {
			case dbusapi.KindRestore:
				action = dbusapi.ActionRestore
			case dbusapi.KindCleanup:
			default:
				action = dbusapi.ActionBackup
			}
		}
		c, ok := s.authorize(w, r, action)
		if !ok {
			return
		}
		if err := s.o.Backend.CancelJob(id, c); err != nil {
			s.fail(w, r, 0, err)
			return
		}
		s.o.Log.Info("job cancel requested", "job", id, "caller_uid", c.UID, "admin", true, "api", "rest")
		j, _ = s.o.Backend.Job(id)
		s.writeJSON(w, http.StatusAccepted, toJob(j))
	default:
		w.Header().Set("Allow", "GET, HEAD, DELETE")
		s.fail(w, r, http.StatusMethodNotAllowed, dbusapi.Errorf(dbusapi.CodeInvalidArgs, "use GET or DELETE",
			fmt.Sprintf("%s is not allowed on %s", r.Method, r.URL.Path)))
	}
}

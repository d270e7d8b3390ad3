package rest

import (
	"context"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pme2go/pme2go-backup/daemon/events"
	"github.com/pme2go/pme2go-backup/dbusapi"
)

// fakeBackend answers from fixed values.
type fakeBackend struct {
	status   map[string]any
	startErr error
}

func (f fakeBackend) StartJob(req dbusapi.JobRequest) (dbusapi.JobInfo, error) {
	return dbusapi.JobInfo{ID: 7, Kind: req.Kind, State: dbusapi.JobRunning, StartedAt: time.Now()}, f.startErr
}
func (fakeBackend) CancelJob(uint64, dbusapi.Caller) error { return nil }
func (fakeBackend) Job(uint64) (dbusapi.JobInfo, bool)     { return dbusapi.JobInfo{}, false }
func (fakeBackend) ListBackups(context.Context) ([]dbusapi.BackupEntry, error) {
	return nil, nil
}
func (f fakeBackend) Status(context.Context) (map[string]any, error) { return f.status, nil }
func (fakeBackend) Snapshot(context.Context) (Snapshot, error)       { return Snapshot{}, nil }

// allowUID authorizes one uid only, like the group rule would.
type allowUID struct{ uid uint32 }

func (a allowUID) AuthorizeProcess(_ context.Context, p dbusapi.Process, action string) (dbusapi.Caller, error) {
	if p.UID != a.uid || p.PID <= 0 {
		return dbusapi.Caller{UID: p.UID}, dbusapi.Errorf(dbusapi.CodeNotAuthorized, "", "refused")
	}
	return dbusapi.Caller{UID: p.UID}, nil
}

func serve(t *testing.T, b Backend, a Authorizer, secrets ...string) *http.Client {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "api.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	s, err := New(Options{Backend: b, Auth: a, Events: &events.Broadcaster{}, Secrets: secrets}, []net.Listener{l})
	if err != nil {
		t.Fatal(err)
	}
	s.Start()
	t.Cleanup(func() { _ = s.Shutdown(context.Background()) })
	return &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, "unix", sock)
	}}}
}

func get(t *testing.T, c *http.Client, method, path, body string) (int, string) {
	t.Helper()
	req, _ := http.NewRequest(method, "http://x"+path, strings.NewReader(body))
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(data)
}

func TestSecretsNeverSent(t *testing.T) {
	me := uint32(os.Getuid())
	c := serve(t, fakeBackend{status: map[string]any{"server": `host=db password=pa"ss-w0rd`, "other": "pa\"ss-w0rd"}},
		allowUID{me}, `pa"ss-w0rd`)
	code, body := get(t, c, "GET", Base+"/status", "")
	if code != 200 || strings.Contains(body, "ss-w0rd") || strings.Count(body, "[redacted]") != 2 {
		t.Fatalf("%d %s", code, body)
	}
}

func TestPeerCredentialsAndCodes(t *testing.T) {
	me := uint32(os.Getuid())
	c := serve(t, fakeBackend{status: map[string]any{}}, allowUID{me + 1})
	if code, body := get(t, c, "GET", Base+"/status", ""); code != 403 || !strings.Contains(body, `"NOT_AUTHORIZED"`) {
		t.Fatalf("another uid: %d %s", code, body)
	}
	for code, err := range map[int]error{
		409: dbusapi.Errorf(dbusapi.CodeBusy, "", "busy"),
		503: dbusapi.Errorf(dbusapi.CodeUnavailable, "", "stopping"),
		400: dbusapi.Errorf(dbusapi.CodeInvalidArgs, "", "bad"),
		500: dbusapi.Errorf("PG_DUMP_ERR", "", "dump failed"),
	} {
		c := serve(t, fakeBackend{startErr: err}, allowUID{me})
		got, body := get(t, c, "POST", Base+"/create", `{"type":"full"}`)
		if got != code || !strings.Contains(body, `"code": "`+dbusapi.AsError(err).Code+`"`) {
			t.Errorf("%v: %d %s, want %d", err, got, body, code)
		}
	}
}

func TestTCPNeedsToken(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	if _, err := New(Options{}, []net.Listener{l}); err == nil {
		t.Fatal("a TCP listener without a token was accepted")
	}
}

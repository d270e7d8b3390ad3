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

// TestSlowClientsDropped: WebSocket and SSE clients that stop reading are
// dropped; publishing (what a job does) never waits for them.
func TestSlowClientsDropped(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "api.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	b := &events.Broadcaster{}
	s, err := New(Options{Backend: fakeBackend{}, Auth: allowUID{uint32(os.Getuid())}, Events: b}, []net.Listener{l})
	if err != nil {
		t.Fatal(err)
	}
	s.Start()
	t.Cleanup(func() { _ = s.Shutdown(context.Background()) })

	// Two clients that send their request and never read again.
	var conns []net.Conn
	for _, hdr := range []string{
		"Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n",
		"Accept: text/event-stream\r\n",
	} {
		c, err := net.Dial("unix", sock)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if _, err := c.Write([]byte("GET " + Base + "/events HTTP/1.1\r\nHost: x\r\n" + hdr + "\r\n")); err != nil {
			t.Fatal(err)
		}
		conns = append(conns, c)
	}
	deadline := time.Now().Add(10 * time.Second)
	for b.Subscribers() != 2 {
		if time.Now().After(deadline) {
			t.Fatalf("subscribers: %d", b.Subscribers())
		}
		time.Sleep(10 * time.Millisecond)
	}
	// Far more than the socket buffers and the queue hold.
	big := strings.Repeat("x", 2000)
	t0 := time.Now()
	for i := 0; i < 5000; i++ {
		b.Publish(events.Event{Type: events.BackupFailed, BackupType: "full", Error: big})
	}
	if took := time.Since(t0); took > 2*time.Second {
		t.Fatalf("publishing 5000 events took %s: a slow client held it up", took)
	}
	deadline = time.Now().Add(30 * time.Second)
	for b.Subscribers() != 0 {
		if time.Now().After(deadline) {
			t.Fatalf("slow clients not dropped: %d subscribers left", b.Subscribers())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// denyAction allows everything but one polkit action.
type denyAction struct{ action string }

func (d denyAction) AuthorizeProcess(_ context.Context, p dbusapi.Process, action string) (dbusapi.Caller, error) {
	if action == d.action {
		return dbusapi.Caller{UID: p.UID}, dbusapi.Errorf(dbusapi.CodeNotAuthorized, "", "not for "+action)
	}
	return dbusapi.Caller{UID: p.UID}, nil
}

func TestRestoreNeedsRestoreAction(t *testing.T) {
	c := serve(t, fakeBackend{status: map[string]any{}}, denyAction{dbusapi.ActionRestore})
	if code, body := get(t, c, "POST", Base+"/restore", `{"backupPath": "full_backup_x", "targetDb": "copy"}`); code != 403 ||
		!strings.Contains(body, dbusapi.ActionRestore) {
		t.Fatalf("restore without the restore action: %d %s", code, body)
	}
	if code, body := get(t, c, "POST", Base+"/create", `{}`); code != 202 {
		t.Fatalf("create: %d %s", code, body)
	}
	c = serve(t, fakeBackend{status: map[string]any{}}, denyAction{dbusapi.ActionBackup})
	if code, _ := get(t, c, "POST", Base+"/create", `{}`); code != 403 {
		t.Fatalf("create without the backup action: %d", code)
	}
	if code, _ := get(t, c, "GET", Base+"/status", ""); code != 200 {
		t.Fatalf("status with the read action: %d", code)
	}
}

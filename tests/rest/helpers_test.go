// Package rest_test drives the REST API of pme2go-backupd started by
// systemd-socket-activate on a Unix socket (as pme2go-backupd.socket starts
// it), with a real HTTP client, a WebSocket client and a server-sent-events
// client, against real PostgreSQL and a private bus: every endpoint, the
// authorization of callers by peer credentials, the event stream, the
// metrics (checked with promtool), and a TCP listener with a bearer token.
package rest_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/pme2go/pme2go-backup/tests/daemonharness"
	"github.com/pme2go/pme2go-backup/tests/pgharness"
)

var daemonBin string

func TestMain(m *testing.M) { daemonharness.Main(m, &daemonBin) }

// proc is a process started by the test.
type proc struct {
	cmd    *exec.Cmd
	stderr *daemonharness.SyncBuffer
	done   chan error
}

// socketDir returns a directory every user may enter (the socket is
// reached by clients running as nobody).
func socketDir(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "pme2go-rest-")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

func daemonEnv(env map[string]string) []string {
	out := []string{"PATH=" + os.Getenv("PATH"), "HOME=" + os.Getenv("HOME"),
		"DBUS_SYSTEM_BUS_ADDRESS=" + os.Getenv("DBUS_SYSTEM_BUS_ADDRESS")}
	for k, v := range env {
		out = append(out, k+"="+v)
	}
	return out
}

func emptyConf(t *testing.T) string {
	conf := filepath.Join(t.TempDir(), "empty.conf")
	if err := os.WriteFile(conf, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	return conf
}

// startActivated runs pme2go-backupd under systemd-socket-activate on the
// Unix socket sock: the daemon starts at the first connection and receives
// the listening socket (LISTEN_FDS).
func startActivated(t *testing.T, sock string, env map[string]string, args ...string) *proc {
	t.Helper()
	sa, err := exec.LookPath("systemd-socket-activate")
	if err != nil {
		pgharness.Require(t, "systemd-socket-activate", "systemd-socket-activate not installed (package systemd)")
	}
	a := []string{"-l", sock}
	for _, kv := range daemonEnv(env) {
		a = append(a, "-E", kv)
	}
	a = append(a, daemonBin, "--config", emptyConf(t))
	a = append(a, args...)
	return startProc(t, exec.Command(sa, a...), func() bool {
		_, err := os.Stat(sock)
		return err == nil
	})
}

// startProc starts cmd and waits until ready() holds.
func startProc(t *testing.T, cmd *exec.Cmd, ready func() bool) *proc {
	t.Helper()
	p := &proc{cmd: cmd, stderr: &daemonharness.SyncBuffer{}, done: make(chan error, 1)}
	cmd.Stderr = p.stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { p.done <- cmd.Wait() }()
	t.Cleanup(func() {
		if p.cmd.ProcessState == nil {
			_ = p.cmd.Process.Signal(syscall.SIGTERM)
			select {
			case <-p.done:
			case <-time.After(30 * time.Second):
				_ = p.cmd.Process.Kill()
			}
		}
		if t.Failed() {
			t.Logf("daemon log:\n%s", p.stderr.String())
		}
	})
	deadline := time.Now().Add(20 * time.Second)
	for !ready() {
		select {
		case err := <-p.done:
			t.Fatalf("%s exited before it was ready: %v\n%s", cmd.Path, err, p.stderr.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s not ready within 20 s\n%s", cmd.Path, p.stderr.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
	return p
}

// unixClient is an HTTP client whose every connection goes to sock.
func unixClient(sock string) *http.Client {
	return &http.Client{Timeout: 60 * time.Second, Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", sock)
		}}}
}

// apiResp is a decoded response.
type apiResp struct {
	Status int
	Header http.Header
	Body   []byte
}

func (r apiResp) json(t *testing.T) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(r.Body, &m); err != nil {
		t.Fatalf("response %d is not a JSON object: %v\n%s", r.Status, err, r.Body)
	}
	return m
}

// errCode returns error.code of an error body.
func (r apiResp) errCode(t *testing.T) string {
	t.Helper()
	m := r.json(t)
	e, ok := m["error"].(map[string]any)
	if !ok {
		t.Fatalf("no error object in the %d response: %s", r.Status, r.Body)
	}
	if _, ok := e["message"].(string); !ok {
		t.Fatalf("error without message: %s", r.Body)
	}
	code, _ := e["code"].(string)
	return code
}

func call(t *testing.T, c *http.Client, method, path string, body any, hdr ...string) apiResp {
	t.Helper()
	return callURL(t, c, method, "http://localhost"+path, body, hdr...)
}

// callURL sends one request to url and reads the whole answer.
func callURL(t *testing.T, c *http.Client, method, url string, body any, hdr ...string) apiResp {
	t.Helper()
	var rd io.Reader
	switch b := body.(type) {
	case nil:
	case string:
		rd = strings.NewReader(b)
	case []byte:
		rd = bytes.NewReader(b)
	default:
		data, _ := json.Marshal(b)
		rd = bytes.NewReader(data)
	}
	req, err := http.NewRequest(method, url, rd)
	if err != nil {
		t.Fatal(err)
	}
	if rd != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	return apiResp{Status: resp.StatusCode, Header: resp.Header, Body: data}
}

// eventLog collects events from one stream.
type eventLog struct {
	name string
	ch   chan map[string]any
}

func (l *eventLog) next(t *testing.T, timeout time.Duration) map[string]any {
	t.Helper()
	select {
	case ev, ok := <-l.ch:
		if !ok {
			t.Fatalf("%s stream ended", l.name)
		}
		return ev
	case <-time.After(timeout):
		t.Fatalf("%s: no event within %s", l.name, timeout)
	}
	return nil
}

// expect reads events until one of type typ arrives (failing on an event
// of another type in between unless skip allows it).
func (l *eventLog) expect(t *testing.T, typ string, timeout time.Duration) map[string]any {
	t.Helper()
	ev := l.next(t, timeout)
	if ev["type"] != typ {
		t.Fatalf("%s: got event %v, want %s", l.name, ev, typ)
	}
	return ev
}

// openWebSocket subscribes to the events with a WebSocket over sock.
func openWebSocket(t *testing.T, sock string) *eventLog {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	dctx, dcancel := context.WithTimeout(ctx, 30*time.Second)
	defer dcancel()
	conn, resp, err := websocket.Dial(dctx, "ws://localhost/api/admin/system/backups/events", &websocket.DialOptions{HTTPClient: unixClient(sock)})
	if err != nil {
		t.Fatalf("websocket: %v (%v)", err, resp)
	}
	t.Cleanup(func() { conn.CloseNow() })
	l := &eventLog{name: "websocket", ch: make(chan map[string]any, 64)}
	go func() {
		defer close(l.ch)
		for {
			_, data, err := conn.Read(ctx)
			if err != nil {
				return
			}
			var m map[string]any
			if json.Unmarshal(data, &m) == nil {
				l.ch <- m
			}
		}
	}()
	return l
}

// openSSE subscribes to the events as server-sent events over sock.
func openSSE(t *testing.T, sock string) *eventLog {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	req, _ := http.NewRequestWithContext(ctx, "GET", "http://localhost/api/admin/system/backups/events", nil)
	req.Header.Set("Accept", "text/event-stream")
	c := unixClient(sock)
	c.Timeout = 0
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != 200 || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/event-stream") {
		t.Fatalf("SSE: %d %s", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	t.Cleanup(func() { resp.Body.Close() })
	l := &eventLog{name: "sse", ch: make(chan map[string]any, 64)}
	go func() {
		defer close(l.ch)
		sc := bufio.NewScanner(resp.Body)
		var event string
		for sc.Scan() {
			line := sc.Text()
			switch {
			case strings.HasPrefix(line, "event: "):
				event = strings.TrimPrefix(line, "event: ")
			case strings.HasPrefix(line, "data: "):
				var m map[string]any
				if json.Unmarshal([]byte(strings.TrimPrefix(line, "data: ")), &m) == nil {
					if m["type"] != event {
						m["sseEventMismatch"] = event
					}
					l.ch <- m
				}
			}
		}
	}()
	return l
}

// asUser runs name with args as uid nobody with the given supplementary
// groups, returning the output and the error.
func asUser(t *testing.T, groups string, name string, args ...string) (string, error) {
	t.Helper()
	return daemonharness.AsUser(t, groups, nil, name, args...)
}

// promtool returns the path of promtool: PROMTOOL, PATH, or the copy that
// tests/install-deps.sh unpacks from Debian's prometheus package.
func promtool(t *testing.T) string {
	t.Helper()
	if p := os.Getenv("PROMTOOL"); p != "" {
		return p
	}
	if p, err := exec.LookPath("promtool"); err == nil {
		return p
	}
	for _, p := range []string{"/var/cache/pme2go-backup-tools/prometheus/usr/bin/promtool"} {
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	pgharness.Require(t, "promtool", "promtool not found (tests/install-deps.sh unpacks it from the prometheus package)")
	return ""
}

// checkMetrics runs promtool check metrics on text.
func checkMetrics(t *testing.T, text []byte) {
	t.Helper()
	cmd := exec.Command(promtool(t), "check", "metrics")
	cmd.Stdin = bytes.NewReader(text)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("promtool check metrics: %v\n%s\n--- input ---\n%s", err, out, text)
	}
}

package rest_test

import (
	"context"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/pme2go/pme2go-backup/dbusapi"
	"github.com/pme2go/pme2go-backup/tests/busharness"
	"github.com/pme2go/pme2go-backup/tests/pgharness"
)

const (
	allowedGroup = "users" // stands for pme2go-backup
	api          = "/api/admin/system/backups"
)

func requireRoot(t *testing.T) {
	if _, err := user.LookupGroup(allowedGroup); err != nil {
		pgharness.Require(t, "group-"+allowedGroup, "the tests use the existing group "+allowedGroup)
	}
	if os.Getuid() != 0 {
		pgharness.Require(t, "root", "the REST tests run clients as other users and need root")
	}
}

// follow polls a job resource until it has finished.
func follow(t *testing.T, hc *http.Client, url string, timeout time.Duration) map[string]any {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		r := call(t, hc, "GET", url, nil)
		if r.Status != 200 {
			t.Fatalf("GET %s: %d %s", url, r.Status, r.Body)
		}
		j := r.json(t)
		switch j["state"] {
		case dbusapi.JobSucceeded, dbusapi.JobFailed, dbusapi.JobCancelled:
			return j
		}
		if time.Now().After(deadline) {
			t.Fatalf("job %s not finished within %s: %s", url, timeout, r.Body)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func TestRESTOverSocketActivation(t *testing.T) {
	requireRoot(t)
	busharness.Start(t, busharness.Policy(t, allowedGroup))
	c := pgharness.Start(t)
	c.CreateDB(t, "app")
	c.CreateDB(t, "big")
	pgharness.LoadAwkward(t, c, "app")
	pgharness.LoadBulk(t, c, "big", 30)
	textfile := filepath.Join(t.TempDir(), "pme2go-backup.prom")
	env := pgharness.ConfigEnv(t, c, []string{"app", "big"}, "BACKUP_COMPRESSION_LEVEL=1", "METRICS_TEXTFILE="+textfile)
	sock := filepath.Join(socketDir(t), "api.sock")
	startActivated(t, sock, env, "--group", allowedGroup)
	// pme2go-backupd.socket makes it 0660 root:pme2go-backup; here every
	// user may connect, so that the daemon's own check is what refuses.
	if err := os.Chmod(sock, 0o666); err != nil {
		t.Fatal(err)
	}
	hc := unixClient(sock)

	t.Run("status starts the daemon at the first request", func(t *testing.T) {
		r := call(t, hc, "GET", api+"/status", nil)
		if r.Status != 200 {
			t.Fatalf("status: %d %s", r.Status, r.Body)
		}
		m := r.json(t)
		eng, ok := m["engine"].(map[string]any)
		if !ok || m["state"] == nil || m["version"] == nil || eng["backupDir"] != env["BACKUP_DIR"] {
			t.Fatalf("status lacks state, version or the engine's status: %s", r.Body)
		}
		if r.Header.Get("Content-Type") != "application/json" {
			t.Fatalf("content type %q", r.Header.Get("Content-Type"))
		}
	})

	t.Run("list of an empty directory", func(t *testing.T) {
		r := call(t, hc, "GET", api, nil)
		if r.Status != 200 || r.json(t)["count"] != float64(0) {
			t.Fatalf("list: %d %s", r.Status, r.Body)
		}
	})

	ws := openWebSocket(t, sock)
	sse := openSSE(t, sock)
	streams := []*eventLog{ws, sse}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cl, err := dbusapi.Dial(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()

	t.Run("events of a failing backup started over D-Bus", func(t *testing.T) {
		// No full backup of big yet: an incremental backup has no chain.
		if _, err := cl.StartBackup(ctx, "incremental", []string{"big"}, ""); err != nil {
			t.Fatal(err)
		}
		for _, s := range streams {
			ev := s.expect(t, "backup_started", time.Minute)
			if ev["backupType"] != "incremental" || ev["timestamp"] == nil || ev["sseEventMismatch"] != nil {
				t.Fatalf("%s: %v", s.name, ev)
			}
			ev = s.expect(t, "backup_failed", time.Minute)
			if ev["backupType"] != "incremental" || ev["errorCode"] != "NOT_FOUND" || ev["error"] == "" || ev["timestamp"] == nil {
				t.Fatalf("%s: %v", s.name, ev)
			}
		}
	})

	t.Run("events of a backup started over D-Bus", func(t *testing.T) {
		if _, err := cl.StartBackup(ctx, "full", []string{"app"}, ""); err != nil {
			t.Fatal(err)
		}
		for _, s := range streams {
			ev := s.expect(t, "backup_started", time.Minute)
			if ev["backupType"] != "full" {
				t.Fatalf("%s: %v", s.name, ev)
			}
			ev = s.expect(t, "backup_completed", 3*time.Minute)
			path, _ := ev["backupPath"].(string)
			size, _ := ev["size"].(float64)
			if ev["backupType"] != "full" || size <= 0 || ev["timestamp"] == nil || ev["duration"] == nil {
				t.Fatalf("%s: %v", s.name, ev)
			}
			if fi, err := os.Stat(path); err != nil || fi.Size() != int64(size) {
				t.Fatalf("%s: backupPath %q: %v (size %v)", s.name, path, err, size)
			}
		}
	})

	var fullPath string
	t.Run("create followed to completion", func(t *testing.T) {
		r := call(t, hc, "POST", api+"/create", `{"type": "full", "compress": true, "databases": ["app"]}`)
		if r.Status != http.StatusAccepted || r.Header.Get("Location") == "" {
			t.Fatalf("create: %d %s", r.Status, r.Body)
		}
		j := follow(t, hc, r.Header.Get("Location"), 3*time.Minute)
		fullPath, _ = j["backupPath"].(string)
		if j["state"] != dbusapi.JobSucceeded || j["kind"] != "full" || fullPath == "" || j["result"] == nil {
			t.Fatalf("job: %v", j)
		}
		if _, err := os.Stat(fullPath); err != nil {
			t.Fatalf("archive: %v", err)
		}
		for _, s := range streams {
			s.expect(t, "backup_started", time.Minute)
			if ev := s.expect(t, "backup_completed", time.Minute); ev["backupPath"] != fullPath {
				t.Fatalf("%s: %v, want %s", s.name, ev, fullPath)
			}
		}
		l := call(t, hc, "GET", api, nil)
		if l.Status != 200 || !strings.Contains(string(l.Body), filepath.Base(fullPath)) || l.json(t)["count"] != float64(2) {
			t.Fatalf("list: %d %s", l.Status, l.Body)
		}
	})

	t.Run("restore into a new database", func(t *testing.T) {
		if fullPath == "" {
			t.Fatal("no archive: the backup subtest before this one did not produce it")
		}
		r := call(t, hc, "POST", api+"/restore", map[string]any{"backupPath": fullPath, "includeLogs": false, "targetDb": "app_restored"})
		if r.Status != http.StatusAccepted {
			t.Fatalf("restore: %d %s", r.Status, r.Body)
		}
		j := follow(t, hc, r.Header.Get("Location"), 3*time.Minute)
		if j["state"] != dbusapi.JobSucceeded || j["kind"] != "restore" {
			t.Fatalf("restore job: %v", j)
		}
		if n := pgharness.CompareDatabases(t, c, "app", "app_restored"); n == 0 {
			t.Fatal("no table compared")
		}
	})

	t.Run("compress false writes an uncompressed tar", func(t *testing.T) {
		// The seed's clients send "compress": false; it means
		// BACKUP_COMPRESSION=none for that job.
		r := call(t, hc, "POST", api+"/create", `{"type": "full", "compress": false, "databases": ["app"]}`)
		if r.Status != http.StatusAccepted {
			t.Fatalf("create: %d %s", r.Status, r.Body)
		}
		j := follow(t, hc, r.Header.Get("Location"), 3*time.Minute)
		path, _ := j["backupPath"].(string)
		if j["state"] != dbusapi.JobSucceeded || !strings.HasSuffix(path, ".tar") {
			t.Fatalf("job: %v", j)
		}
		head := make([]byte, 512)
		f, err := os.Open(path)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		if _, err := io.ReadFull(f, head); err != nil || string(head[257:262]) != "ustar" {
			t.Fatalf("%s is not a plain tar: %v %q", path, err, head[257:262])
		}
		for _, s := range streams {
			s.expect(t, "backup_started", time.Minute)
			s.expect(t, "backup_completed", time.Minute)
		}
		if l := call(t, hc, "GET", api, nil); !strings.Contains(string(l.Body), filepath.Base(path)) {
			t.Fatalf("list lacks %s: %s", filepath.Base(path), l.Body)
		}
	})

	t.Run("busy and cancel", func(t *testing.T) {
		r := call(t, hc, "POST", api+"/create", `{"databases": ["big"]}`)
		if r.Status != http.StatusAccepted {
			t.Fatalf("create: %d %s", r.Status, r.Body)
		}
		loc := r.Header.Get("Location")
		busy := call(t, hc, "POST", api+"/create", `{"type": "full", "databases": ["big"]}`)
		if busy.Status != http.StatusConflict || busy.errCode(t) != dbusapi.CodeBusy {
			t.Fatalf("second backup of big: %d %s", busy.Status, busy.Body)
		}
		for _, s := range streams {
			s.expect(t, "backup_started", time.Minute)
		}
		d := call(t, hc, "DELETE", loc, nil)
		if d.Status != http.StatusAccepted {
			t.Fatalf("cancel: %d %s", d.Status, d.Body)
		}
		j := follow(t, hc, loc, time.Minute)
		e, _ := j["error"].(map[string]any)
		if j["state"] != dbusapi.JobCancelled || e["code"] != dbusapi.CodeCancelled {
			t.Fatalf("cancelled job: %v", j)
		}
		for _, s := range streams {
			if ev := s.expect(t, "backup_failed", time.Minute); ev["errorCode"] != dbusapi.CodeCancelled {
				t.Fatalf("%s: %v", s.name, ev)
			}
		}
		if again := call(t, hc, "DELETE", loc, nil); again.Status != http.StatusNotFound || again.errCode(t) != dbusapi.CodeNoSuchJob {
			t.Fatalf("cancelling a finished job: %d %s", again.Status, again.Body)
		}
	})

	t.Run("bad requests", func(t *testing.T) {
		for _, tc := range []struct {
			method, path, body string
			status             int
			code               string
		}{
			{"POST", api + "/create", `{"type": "full",`, 400, "USAGE"},
			{"POST", api + "/create", `{"type": "full"} {}`, 400, "USAGE"},
			{"POST", api + "/create", `{"type": "full", "password": "x"}`, 400, "USAGE"},
			{"POST", api + "/create", `{"type": "weekly"}`, 400, "USAGE"},
			{"POST", api + "/create", `{"databases": ["nope"]}`, 400, "USAGE"},
			{"POST", api + "/create", `["full"]`, 400, "USAGE"},
			{"POST", api + "/restore", `{}`, 400, "USAGE"},
			{"POST", api + "/restore", `{"latest": true, "targetTime": "yesterday"}`, 400, "USAGE"},
			{"POST", api + "/create", `{"type": "full", "pad": "` + strings.Repeat("x", 100<<10) + `"}`, 413, "USAGE"},
			{"PUT", api + "/create", `{}`, 405, "USAGE"},
			{"GET", api + "/jobs/999999", "", 404, dbusapi.CodeNoSuchJob},
			{"GET", api + "/jobs/abc", "", 404, dbusapi.CodeNoSuchJob},
			{"DELETE", api + "/jobs/999999", "", 404, dbusapi.CodeNoSuchJob},
			{"GET", api + "/nothing", "", 404, "NOT_FOUND"},
			{"GET", api + "/events", "", 406, "USAGE"},
		} {
			var body any
			if tc.body != "" {
				body = tc.body
			}
			r := call(t, hc, tc.method, tc.path, body)
			if r.Status != tc.status || r.errCode(t) != tc.code {
				t.Errorf("%s %s %.60s: %d %s, want %d %s", tc.method, tc.path, tc.body, r.Status, r.Body, tc.status, tc.code)
			}
		}
	})

	t.Run("callers outside the group are refused", func(t *testing.T) {
		if _, err := exec.LookPath("curl"); err != nil {
			pgharness.Require(t, "curl", "curl not installed")
		}
		get := func(groups, method, path string) string {
			out, _ := asUser(t, groups, "curl", "-sS", "--max-time", "30", "--unix-socket", sock, "-X", method,
				"-w", "\nHTTP %{http_code}", "http://localhost"+path)
			return out
		}
		for _, m := range [][2]string{{"GET", api + "/status"}, {"GET", api}, {"POST", api + "/create"}, {"GET", "/metrics"}} {
			out := get("", m[0], m[1])
			if !strings.HasSuffix(out, "HTTP 403") || !strings.Contains(out, `"NOT_AUTHORIZED"`) {
				t.Errorf("nobody, %s %s: %s", m[0], m[1], out)
			}
		}
		if out := get(allowedGroup, "GET", api+"/status"); !strings.HasSuffix(out, "HTTP 200") {
			t.Errorf("a member of the group: %s", out)
		}
	})

	t.Run("restore drills over D-Bus: a failed one is an event, the last one a metric", func(t *testing.T) {
		dctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
		defer cancel()
		// big has no full backup (its only one was cancelled).
		if _, err := cl.Drill(dctx, []string{"big"}, ""); err != nil {
			t.Fatal(err)
		}
		for _, s := range streams {
			ev := s.expect(t, "backup_failed", 2*time.Minute)
			if ev["backupType"] != "drill" || ev["error"] == "" {
				t.Fatalf("%s: %v", s.name, ev)
			}
		}
		p, err := cl.Drill(dctx, []string{"app"}, "")
		if err != nil {
			t.Fatal(err)
		}
		j, err := cl.Follow(dctx, p, nil)
		if err != nil || j.State != dbusapi.JobSucceeded {
			t.Fatalf("drill of app: %v %+v %v", err, j, j.Error)
		}
	})

	t.Run("metrics and textfile pass promtool", func(t *testing.T) {
		r := call(t, hc, "GET", "/metrics", nil)
		if r.Status != 200 {
			t.Fatalf("metrics: %d %s", r.Status, r.Body)
		}
		text := string(r.Body)
		for _, want := range []string{
			`pme2go_backup_last_success_timestamp_seconds{database="app",kind="full"}`,
			`pme2go_backup_last_success_size_bytes{database="app",kind="full"}`,
			`pme2go_backup_last_success_duration_seconds{database="app",kind="full"}`,
			`pme2go_backup_failures_total{kind="incremental"} 1`,
			`pme2go_backup_failures_total{kind="full"} 1`,
			`pme2go_backup_jobs_running{kind="full"} 0`,
			`pme2go_backup_recovery_window_start_timestamp_seconds`,
			`pme2go_backup_event_subscribers 2`,
			`pme2go_backup_server_up 1`,
			`pme2go_backup_last_drill_success{databases="app"} 1`,
			`pme2go_backup_failures_total{kind="drill"} 1`,
		} {
			if !strings.Contains(text, want) {
				t.Errorf("metrics lack %s", want)
			}
		}
		checkMetrics(t, r.Body)
		data, err := os.ReadFile(textfile)
		if err != nil {
			t.Fatalf("METRICS_TEXTFILE: %v", err)
		}
		if !strings.Contains(string(data), `pme2go_backup_last_success_timestamp_seconds{database="app",kind="full"}`) {
			t.Fatalf("textfile lacks the last full backup:\n%s", data)
		}
		checkMetrics(t, data)
	})
}

// freePort returns a TCP port nothing listens on now.
func freePort(t *testing.T) int {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

func TestRESTOverTCP(t *testing.T) {
	dir := t.TempDir()
	// No PostgreSQL and no bus: status answers without them (the daemon
	// runs without D-Bus when it has a REST listener).
	env := map[string]string{"BACKUP_DIR": filepath.Join(dir, "backups"), "DB_HOST": filepath.Join(dir, "nosuchdir"),
		"DB_NAME": "app", "DBUS_SYSTEM_BUS_ADDRESS": "unix:path=" + filepath.Join(dir, "nobus")}
	run := func(extra map[string]string) *exec.Cmd {
		cmd := exec.Command(daemonBin, "--config", emptyConf(t), "--polkit", "off")
		e := map[string]string{}
		for k, v := range env {
			e[k] = v
		}
		for k, v := range extra {
			e[k] = v
		}
		cmd.Env = daemonEnv(e)
		for i, kv := range cmd.Env {
			if strings.HasPrefix(kv, "DBUS_SYSTEM_BUS_ADDRESS=") && e["DBUS_SYSTEM_BUS_ADDRESS"] != "" {
				cmd.Env[i] = "DBUS_SYSTEM_BUS_ADDRESS=" + e["DBUS_SYSTEM_BUS_ADDRESS"]
			}
		}
		return cmd
	}
	addr := "127.0.0.1:" + strconv.Itoa(freePort(t))

	t.Run("refused at start without a token", func(t *testing.T) {
		out, err := run(map[string]string{"REST_LISTEN": addr}).CombinedOutput()
		ee, ok := err.(*exec.ExitError)
		if !ok || ee.ExitCode() != 2 || !strings.Contains(string(out), "REST_TOKEN_FILE") {
			t.Fatalf("daemon with a TCP listener and no token: %v\n%s", err, out)
		}
	})

	tokenFile := filepath.Join(dir, "token")
	token := "s3cr3t-token-0123456789abcdef"
	if err := os.WriteFile(tokenFile, []byte(token+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Run("refused at start with a token others may read", func(t *testing.T) {
		out, err := run(map[string]string{"REST_LISTEN": addr, "REST_TOKEN_FILE": tokenFile}).CombinedOutput()
		if err == nil || !strings.Contains(string(out), "other users") {
			t.Fatalf("daemon with a world-readable token: %v\n%s", err, out)
		}
	})
	if err := os.Chmod(tokenFile, 0o600); err != nil {
		t.Fatal(err)
	}

	cmd := run(map[string]string{"REST_LISTEN": addr, "REST_TOKEN_FILE": tokenFile})
	cmd.Args = append(cmd.Args, "--idle-timeout=4s")
	daemon := startProc(t, cmd, func() bool {
		c, err := net.Dial("tcp", addr)
		if err == nil {
			c.Close()
		}
		return err == nil
	})
	t.Run("with a token, requests without it get 401", func(t *testing.T) {
		hc := &http.Client{Timeout: 30 * time.Second}
		get := func(hdr ...string) apiResp {
			req, _ := http.NewRequest("GET", "http://"+addr+api+"/status", nil)
			for i := 0; i+1 < len(hdr); i += 2 {
				req.Header.Set(hdr[i], hdr[i+1])
			}
			resp, err := hc.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			var b strings.Builder
			buf := make([]byte, 64<<10)
			for {
				n, err := resp.Body.Read(buf)
				b.Write(buf[:n])
				if err != nil {
					break
				}
			}
			return apiResp{Status: resp.StatusCode, Header: resp.Header, Body: []byte(b.String())}
		}
		for _, hdr := range [][]string{nil, {"Authorization", "Bearer wrong"}, {"Authorization", token}, {"Authorization", "Bearer " + token + "x"}} {
			r := get(hdr...)
			if r.Status != 401 || r.errCode(t) != dbusapi.CodeNotAuthorized || r.Header.Get("WWW-Authenticate") == "" {
				t.Errorf("%v: %d %s", hdr, r.Status, r.Body)
			}
			if strings.Contains(string(r.Body), token) {
				t.Fatal("the token is in a response")
			}
		}
		r := get("Authorization", "Bearer "+token)
		if r.Status != 200 || strings.Contains(string(r.Body), token) {
			t.Fatalf("with the token: %d %s", r.Status, r.Body)
		}
	})

	auth := "Bearer " + token

	t.Run("a backup without a reachable server fails with CONN_ERR", func(t *testing.T) {
		hc := &http.Client{Timeout: 30 * time.Second}
		r := callURL(t, hc, "POST", "http://"+addr+api+"/create", `{"type": "full"}`, "Authorization", auth)
		if r.Status != http.StatusAccepted {
			t.Fatalf("create: %d %s", r.Status, r.Body)
		}
		deadline := time.Now().Add(time.Minute)
		for {
			j := callURL(t, hc, "GET", "http://"+addr+r.Header.Get("Location"), nil, "Authorization", auth).json(t)
			if j["state"] == dbusapi.JobFailed {
				// The server's socket file is missing (ENOENT below the
				// connection error): still a connection failure.
				if e, _ := j["error"].(map[string]any); e["code"] != "CONN_ERR" {
					t.Fatalf("job: %v", j)
				}
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("job not failed within a minute: %v", j)
			}
			time.Sleep(100 * time.Millisecond)
		}
	})

	var streams []*http.Response
	t.Run("event streams are capped; open streams keep the daemon from exiting idle", func(t *testing.T) {
		open := func() *http.Response {
			req, _ := http.NewRequest("GET", "http://"+addr+api+"/events", nil)
			req.Header.Set("Accept", "text/event-stream")
			req.Header.Set("Authorization", auth)
			resp, err := (&http.Client{}).Do(req)
			if err != nil {
				t.Fatal(err)
			}
			return resp
		}
		for i := 0; i < 64; i++ {
			resp := open()
			if resp.StatusCode != 200 {
				t.Fatalf("stream %d: %d", i+1, resp.StatusCode)
			}
			streams = append(streams, resp)
		}
		over := open()
		body := make([]byte, 4096)
		n, _ := over.Body.Read(body)
		over.Body.Close()
		if over.StatusCode != http.StatusServiceUnavailable || !strings.Contains(string(body[:n]), `"BUSY"`) {
			t.Fatalf("stream 65: %d %s", over.StatusCode, body[:n])
		}
		req, _ := http.NewRequest("GET", "http://"+addr+"/metrics", nil)
		req.Header.Set("Authorization", auth)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		var b strings.Builder
		_, _ = io.Copy(&b, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || !strings.Contains(b.String(), "pme2go_backup_event_subscribers 64") ||
			!strings.Contains(b.String(), "pme2go_backup_server_up 0") {
			t.Fatalf("metrics: %d\n%s", resp.StatusCode, b.String())
		}
		checkMetrics(t, []byte(b.String()))
	})

	t.Run("a client that never finishes its headers is cut off", func(t *testing.T) {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		t0 := time.Now()
		if _, err := c.Write([]byte("GET " + api + "/status HTTP/1.1\r\nHost: x\r\n")); err != nil {
			t.Fatal(err)
		}
		_ = c.SetReadDeadline(time.Now().Add(30 * time.Second))
		_, err = io.ReadAll(c)
		if took := time.Since(t0); err != nil || took > 20*time.Second || took < 5*time.Second {
			t.Fatalf("connection closed after %s (%v); want about 10 s", took, err)
		}
	})

	t.Run("idle exit once the streams are closed", func(t *testing.T) {
		select {
		case err := <-daemon.done:
			t.Fatalf("the daemon exited while event streams were open: %v", err)
		default:
		}
		for _, r := range streams {
			r.Body.Close()
		}
		select {
		case err := <-daemon.done:
			if err != nil {
				t.Fatalf("idle exit: %v\n%s", err, daemon.stderr.String())
			}
		case <-time.After(20 * time.Second):
			t.Fatalf("the daemon did not exit idle within 20 s of the last stream closing")
		}
	})
}

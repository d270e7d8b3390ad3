package rest_test

import (
	"context"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/pme2go/pme2go-backup/dbusapi"
	"github.com/pme2go/pme2go-backup/tests/busharness"
	"github.com/pme2go/pme2go-backup/tests/daemonharness"
	"github.com/pme2go/pme2go-backup/tests/pgharness"
)

// TestRESTHostile attacks one socket-activated daemon (a Unix socket and a
// TCP socket with a token, both passed by systemd-socket-activate) the way
// a careless client or an attacker would, and ends it with SIGTERM during
// a job while event streams are open.
func TestRESTHostile(t *testing.T) {
	requireRoot(t)
	busharness.Start(t, busharness.Policy(t, allowedGroup))
	c := pgharness.Start(t)
	c.CreateDB(t, "app")
	c.CreateDB(t, "blocked")
	c.Exec(t, "app", "CREATE TABLE t (id int PRIMARY KEY, v text); INSERT INTO t SELECT g, 'row ' || g FROM generate_series(1, 100) g")
	c.Exec(t, "blocked", "CREATE TABLE held (id int PRIMARY KEY)")
	password := "db-pa55word-never-shown"
	env := pgharness.ConfigEnv(t, c, []string{"app", "blocked"}, "BACKUP_COMPRESSION_LEVEL=1", "DB_PASSWORD="+password)
	dir := socketDir(t)
	sock := filepath.Join(dir, "api.sock")
	token := "hostile-token-0123456789abcdef"
	tokenFile := filepath.Join(dir, "token")
	// A token file as editors write it: CRLF line end.
	if err := os.WriteFile(tokenFile, []byte(token+"\r\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	env["REST_TOKEN_FILE"] = tokenFile
	addr := "127.0.0.1:" + strconv.Itoa(freePort(t))
	sa, err := exec.LookPath("systemd-socket-activate")
	if err != nil {
		pgharness.Require(t, "systemd-socket-activate", "systemd-socket-activate not installed (package systemd)")
	}
	args := []string{"-l", sock, "-l", addr}
	for _, kv := range daemonEnv(env) {
		args = append(args, "-E", kv)
	}
	args = append(args, daemonBin, "--config", emptyConf(t), "--group", allowedGroup)
	daemon := startProc(t, exec.Command(sa, args...), func() bool {
		_, err := os.Stat(sock)
		return err == nil
	})
	if err := os.Chmod(sock, 0o666); err != nil {
		t.Fatal(err)
	}
	hc := unixClient(sock)
	hc.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	tc := &http.Client{Timeout: 30 * time.Second, CheckRedirect: hc.CheckRedirect}
	tcp := func(method, path, auth string, body any) apiResp {
		t.Helper()
		hdr := []string{}
		if auth != "" {
			hdr = append(hdr, "Authorization", auth)
		}
		r := callURL(t, tc, method, "http://"+addr+path, body, hdr...)
		return r
	}
	if r := call(t, hc, "GET", api+"/status", nil); r.Status != 200 {
		t.Fatalf("status: %d %s", r.Status, r.Body)
	}

	t.Run("TCP: every route without the token is 401, before 404 or 405", func(t *testing.T) {
		routes := [][2]string{
			{"GET", api + "/status"}, {"HEAD", api + "/status"}, {"OPTIONS", api + "/status"}, {"GET", api},
			{"POST", api + "/create"}, {"POST", api + "/restore"}, {"GET", api + "/jobs/1"}, {"DELETE", api + "/jobs/1"},
			{"GET", api + "/jobs/abc"}, {"GET", api + "/events"}, {"GET", "/metrics"}, {"GET", "/"}, {"GET", "/nothing"},
			{"PUT", api + "/create"}, {"GET", "//" + api[1:] + "/status"}, {"GET", api + "/../backups/status"},
			{"GET", api + "/status/"},
		}
		for _, rt := range routes {
			for _, auth := range []string{"", "Bearer wrong-token-0123456789abcdef", "Basic " + token, token, "Bearer"} {
				r := tcp(rt[0], rt[1], auth, nil)
				if r.Status != 401 || r.Header.Get("WWW-Authenticate") == "" {
					t.Errorf("%s %s with %q: %d %s", rt[0], rt[1], auth, r.Status, r.Body)
					continue
				}
				if rt[0] != "HEAD" && r.errCode(t) != dbusapi.CodeNotAuthorized {
					t.Errorf("%s %s: %s", rt[0], rt[1], r.Body)
				}
			}
		}
		// The scheme is case-insensitive (RFC 9110, 11.1); the token file's
		// CRLF is not part of the token.
		for _, auth := range []string{"Bearer " + token, "bearer " + token, "BEARER  " + token + " "} {
			if r := tcp("GET", api+"/status", auth, nil); r.Status != 200 {
				t.Errorf("%q: %d %s", auth, r.Status, r.Body)
			}
		}
	})

	t.Run("paths not in canonical form are answered in JSON, never redirected", func(t *testing.T) {
		for _, p := range []string{"//" + api[1:] + "/status", api + "/../backups/status", api + "/./status",
			api + "/%2e%2e/backups/status", "/api//admin/system/backups", "/metrics/"} {
			for _, cl := range []func() apiResp{
				func() apiResp { return call(t, hc, "GET", p, nil) },
				func() apiResp { return tcp("GET", p, "Bearer "+token, nil) },
			} {
				r := cl()
				if r.Status != 404 || r.errCode(t) != "NOT_FOUND" || r.Header.Get("Location") != "" {
					t.Errorf("GET %s: %d %v %s", p, r.Status, r.Header, r.Body)
				}
			}
		}
		r := call(t, hc, "OPTIONS", api+"/status", nil)
		if r.Status != 405 || !strings.Contains(r.Header.Get("Allow"), "HEAD") {
			t.Errorf("OPTIONS: %d Allow %q", r.Status, r.Header.Get("Allow"))
		}
		if r := call(t, hc, "HEAD", api+"/events", nil, "Accept", "text/event-stream"); r.Status != 405 {
			t.Errorf("HEAD on the event stream: %d", r.Status)
		}
	})

	t.Run("malformed bodies are answered in the terms of JSON, not of Go", func(t *testing.T) {
		for _, tc := range []struct{ body, want string }{
			{`{"type": 1}`, `field \"type\": want a string, got a number`},
			{`{"compress": "yes"}`, `field \"compress\": want a boolean`},
			{`{"databases": "app"}`, `field \"databases\": want a list, got a string`},
			{`["full"]`, `not a JSON object`},
			{`{"type": "full", "password": "x"}`, `unknown field \"password\"`},
			{`{"type": "full",`, `incomplete`},
			{`{"type" "full"}`, `invalid JSON at byte`},
		} {
			r := call(t, hc, "POST", api+"/create", tc.body)
			if r.Status != 400 || r.errCode(t) != "USAGE" || !strings.Contains(string(r.Body), tc.want) ||
				strings.Contains(string(r.Body), "Go ") || strings.Contains(string(r.Body), "createBody") {
				t.Errorf("%s: %d %s, want 400 with %s", tc.body, r.Status, r.Body, tc.want)
			}
		}
	})

	t.Run("a database named twice is refused", func(t *testing.T) {
		r := call(t, hc, "POST", api+"/create", `{"databases": ["app", "app"]}`)
		if r.Status != 400 || r.errCode(t) != "USAGE" || !strings.Contains(string(r.Body), "twice") {
			t.Fatalf("%d %s", r.Status, r.Body)
		}
	})

	// A real archive, and a copy of it (with its manifest) outside
	// BACKUP_DIR.
	var archive string
	t.Run("a full backup to work with", func(t *testing.T) {
		r := call(t, hc, "POST", api+"/create", `{"databases": ["app"]}`)
		if r.Status != 202 {
			t.Fatalf("create: %d %s", r.Status, r.Body)
		}
		j := follow(t, hc, r.Header.Get("Location"), 3*time.Minute)
		archive, _ = j["backupPath"].(string)
		if j["state"] != dbusapi.JobSucceeded || !strings.HasPrefix(archive, env["BACKUP_DIR"]+"/") {
			t.Fatalf("job: %v", j)
		}
	})
	if archive == "" {
		t.Fatal("no archive")
	}
	outside := filepath.Join(dir, "copy")
	if err := os.Mkdir(outside, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{archive, archive + ".manifest.json"} {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(outside, filepath.Base(f)), data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	copied := filepath.Join(outside, filepath.Base(archive))
	// A symbolic link inside BACKUP_DIR to the copy outside.
	link := filepath.Join(env["BACKUP_DIR"], "full", "link_"+filepath.Base(archive))
	if err := os.Symlink(copied, link); err != nil {
		t.Fatal(err)
	}
	defer os.Remove(link)

	t.Run("restore, verify and rekey open archives inside BACKUP_DIR only", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		cl, err := dbusapi.Dial(ctx)
		if err != nil {
			t.Fatal(err)
		}
		defer cl.Close()
		rel, _ := filepath.Rel(env["BACKUP_DIR"], archive)
		for _, ref := range []string{"/etc/passwd", "../../../../etc/passwd", copied, "full/../../" + filepath.Base(dir) + "/copy/" + filepath.Base(archive),
			link, "/nonexistent/" + filepath.Base(archive), "full/x\x00y", rel + "/../../../etc/passwd"} {
			r := call(t, hc, "POST", api+"/restore", map[string]any{"backupPath": ref, "targetDb": "app_copy"})
			if r.Status != 400 || r.errCode(t) != "USAGE" {
				t.Errorf("REST restore of %q: %d %s", ref, r.Status, r.Body)
			}
			if strings.Contains(string(r.Body), "root:") {
				t.Errorf("REST restore of %q shows the file: %s", ref, r.Body)
			}
			if r := call(t, hc, "POST", api+"/rekey", map[string]any{"backups": []string{filepath.Base(archive), ref}}); r.Status != 400 || r.errCode(t) != "USAGE" {
				t.Errorf("REST rekey of %q: %d %s", ref, r.Status, r.Body)
			}
			if strings.ContainsRune(ref, 0) {
				continue // D-Bus strings cannot hold NUL
			}
			if _, err := cl.Restore(ctx, ref, dbusapi.RestoreOptions{TargetDB: "app_copy"}, nil, false); dbusapi.AsError(err).Code != "USAGE" {
				t.Errorf("D-Bus Restore of %q: %v", ref, err)
			}
			if _, err := cl.Verify(ctx, ref); dbusapi.AsError(err).Code != "USAGE" {
				t.Errorf("D-Bus Verify of %q: %v", ref, err)
			}
		}
		// Inside BACKUP_DIR: the absolute path, the path relative to it,
		// the name.
		for _, ref := range []string{archive, rel, filepath.Base(archive)} {
			p, err := cl.Verify(ctx, ref)
			if err != nil {
				t.Fatalf("Verify %q: %v", ref, err)
			}
			if j, err := cl.Follow(ctx, p, nil); err != nil || j.State != dbusapi.JobSucceeded {
				t.Fatalf("Verify %q: %v %+v %v", ref, err, j, j.Error)
			}
		}
		if st := call(t, hc, "GET", api+"/status", nil); strings.Contains(string(st.Body), "app_copy") {
			t.Fatalf("a refused restore left a trace: %s", st.Body)
		}
	})

	t.Run("signals reach the callers the bus policy lets call, nobody else", func(t *testing.T) {
		if _, err := exec.LookPath("dbus-monitor"); err != nil {
			pgharness.Require(t, "dbus-monitor", "dbus-monitor not installed (package dbus)")
		}
		gOK, err := user.LookupGroup(allowedGroup)
		if err != nil {
			t.Fatal(err)
		}
		monitor := func(groups string) (*exec.Cmd, *daemonharness.SyncBuffer) {
			cmd := daemonharness.AsUserCmd(t, groups, []string{"DBUS_SYSTEM_BUS_ADDRESS=" + os.Getenv("DBUS_SYSTEM_BUS_ADDRESS")},
				"dbus-monitor", "--system", "type='signal',interface='"+dbusapi.ManagerIface+"'")
			out := &daemonharness.SyncBuffer{}
			cmd.Stdout, cmd.Stderr = out, out
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
			return cmd, out
		}
		_, outsider := monitor("")
		_, member := monitor(gOK.Gid)
		// Both monitors are connected once they print their greeting.
		deadline := time.Now().Add(30 * time.Second)
		for !strings.Contains(outsider.String(), "NameAcquired") || !strings.Contains(member.String(), "NameAcquired") {
			if time.Now().After(deadline) {
				t.Fatalf("monitors not connected:\n%s\n%s", outsider, member)
			}
			time.Sleep(50 * time.Millisecond)
		}
		// No chain for blocked: the incremental fails at once.
		r := call(t, hc, "POST", api+"/create", `{"type": "incremental", "databases": ["blocked"]}`)
		if r.Status != 202 {
			t.Fatalf("create: %d %s", r.Status, r.Body)
		}
		follow(t, hc, r.Header.Get("Location"), time.Minute)
		for !strings.Contains(member.String(), "member=BackupFailed") {
			if time.Now().After(deadline.Add(time.Minute)) {
				t.Fatalf("the group member saw no BackupFailed:\n%s", member)
			}
			time.Sleep(50 * time.Millisecond)
		}
		if out := outsider.String(); strings.Contains(out, "member=Backup") {
			t.Fatalf("a user outside the group received the daemon's signals:\n%s", out)
		}
	})

	t.Run("restore drill over REST", func(t *testing.T) {
		if r := call(t, hc, "POST", api+"/drill", `{"databases": ["app", "app"]}`); r.Status != 400 || r.errCode(t) != "USAGE" {
			t.Fatalf("a database named twice: %d %s", r.Status, r.Body)
		}
		if r := call(t, hc, "GET", api+"/drill", nil); r.Status != 405 {
			t.Fatalf("GET: %d %s", r.Status, r.Body)
		}
		r := call(t, hc, "POST", api+"/drill", `{"databases": ["app"]}`)
		if r.Status != 202 {
			t.Fatalf("drill: %d %s", r.Status, r.Body)
		}
		j := follow(t, hc, r.Header.Get("Location"), 3*time.Minute)
		res, _ := j["result"].(map[string]any)
		if j["state"] != dbusapi.JobSucceeded || j["kind"] != "drill" || res == nil {
			t.Fatalf("drill job: %v", j)
		}
		if m := call(t, hc, "GET", "/metrics", nil); !strings.Contains(string(m.Body), `pme2go_backup_last_drill_success{databases="app"} 1`) {
			t.Fatalf("metrics lack the drill:\n%s", m.Body)
		}
	})

	t.Run("SIGTERM during a job: open streams get its backup_failed, then end", func(t *testing.T) {
		// A lock held on blocked's table keeps the backup waiting.
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
		defer cancel()
		conn := c.Conn(t, "blocked")
		tx, err := conn.Begin(ctx)
		if err != nil {
			t.Fatal(err)
		}
		defer func() { _ = tx.Rollback(context.Background()) }()
		if _, err := tx.Exec(ctx, "LOCK TABLE held IN ACCESS EXCLUSIVE MODE"); err != nil {
			t.Fatal(err)
		}
		ws := openWebSocket(t, sock)
		sse := openSSE(t, sock)
		r := call(t, hc, "POST", api+"/create", `{"databases": ["blocked"]}`)
		if r.Status != 202 {
			t.Fatalf("create: %d %s", r.Status, r.Body)
		}
		for _, s := range []*eventLog{ws, sse} {
			s.expect(t, "backup_started", time.Minute)
		}
		// Wait until the backup waits for the lock.
		deadline := time.Now().Add(2 * time.Minute)
		for {
			var n int
			if err := conn.QueryRow(ctx, "SELECT count(*) FROM pg_locks l JOIN pg_class c ON c.oid = l.relation WHERE c.relname = 'held' AND NOT l.granted").Scan(&n); err != nil {
				t.Fatal(err)
			}
			if n > 0 {
				break
			}
			if time.Now().After(deadline) {
				t.Fatal("the backup never waited for the lock")
			}
			time.Sleep(100 * time.Millisecond)
		}
		if err := daemon.cmd.Process.Signal(syscall.SIGTERM); err != nil {
			t.Fatal(err)
		}
		for _, s := range []*eventLog{ws, sse} {
			ev := s.expect(t, "backup_failed", time.Minute)
			if ev["errorCode"] != dbusapi.CodeCancelled || ev["backupType"] != "full" {
				t.Errorf("%s: %v", s.name, ev)
			}
			select {
			case ev, ok := <-s.ch:
				if ok {
					t.Errorf("%s: event after the failure: %v", s.name, ev)
				}
			case <-time.After(time.Minute):
				t.Errorf("%s: the stream did not end", s.name)
			}
		}
		select {
		case err := <-daemon.done:
			if err != nil {
				t.Fatalf("exit: %v", err)
			}
		case <-time.After(time.Minute):
			t.Fatal("the daemon did not exit within a minute of SIGTERM")
		}
		log := daemon.stderr.String()
		for _, secret := range []string{password, token} {
			if strings.Contains(log, secret) {
				t.Errorf("the log holds a secret")
			}
		}
		if files := filesBelow(t, filepath.Join(env["BACKUP_DIR"], "full")); len(files) != 3 {
			t.Errorf("files in full/ after the cancelled backup: %v", files)
		}
	})
}

// filesBelow lists the files below dir.
func filesBelow(t *testing.T, dir string) []string {
	t.Helper()
	var out []string
	_ = filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			out = append(out, p)
		}
		return nil
	})
	return out
}

// TestSocketActivationRefusesWrongSockets passes the daemon sockets a
// wrong pme2go-backupd.socket would (ListenDatagram=, Accept=yes): it must
// stop at once with exit status 2 and say why, rather than run without
// the API the socket promised.
func TestSocketActivationRefusesWrongSockets(t *testing.T) {
	sa, err := exec.LookPath("systemd-socket-activate")
	if err != nil {
		pgharness.Require(t, "systemd-socket-activate", "systemd-socket-activate not installed (package systemd)")
	}
	dir := socketDir(t)
	env := map[string]string{"BACKUP_DIR": filepath.Join(dir, "backups"), "DB_HOST": filepath.Join(dir, "nosuchdir"),
		"DB_NAME": "app", "DBUS_SYSTEM_BUS_ADDRESS": "unix:path=" + filepath.Join(dir, "nobus")}
	run := func(t *testing.T, saFlags []string, sock string, poke func() error, want string) *proc {
		args := append([]string{}, saFlags...)
		args = append(args, "-l", sock)
		for _, kv := range daemonEnv(env) {
			if !strings.HasPrefix(kv, "DBUS_SYSTEM_BUS_ADDRESS=") {
				args = append(args, "-E", kv)
			}
		}
		args = append(args, "-E", "DBUS_SYSTEM_BUS_ADDRESS="+env["DBUS_SYSTEM_BUS_ADDRESS"], daemonBin, "--config", emptyConf(t), "--polkit", "off")
		p := startProc(t, exec.Command(sa, args...), func() bool {
			_, err := os.Stat(sock)
			return err == nil
		})
		if err := poke(); err != nil {
			t.Fatal(err)
		}
		deadline := time.Now().Add(30 * time.Second)
		for !strings.Contains(p.stderr.String(), want) {
			if time.Now().After(deadline) {
				t.Fatalf("no %q within 30 s:\n%s", want, p.stderr.String())
			}
			time.Sleep(100 * time.Millisecond)
		}
		if log := p.stderr.String(); strings.Contains(log, `"msg":"ready"`) {
			t.Fatalf("the daemon went on:\n%s", log)
		}
		return p
	}
	t.Run("a datagram socket", func(t *testing.T) {
		sock := filepath.Join(dir, "dgram.sock")
		p := run(t, []string{"--datagram"}, sock, func() error {
			c, err := net.Dial("unixgram", sock)
			if err != nil {
				return err
			}
			defer c.Close()
			_, err = c.Write([]byte("GET / HTTP/1.0\r\n\r\n"))
			return err
		}, "is not a stream socket")
		// systemd-socket-activate has exec'd the daemon: its exit is the
		// daemon's.
		select {
		case err := <-p.done:
			if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 2 {
				t.Fatalf("exit: %v, want status 2", err)
			}
		case <-time.After(30 * time.Second):
			t.Fatal("the daemon did not exit")
		}
	})
	t.Run("a connection (Accept=yes)", func(t *testing.T) {
		sock := filepath.Join(dir, "accept.sock")
		run(t, []string{"--accept"}, sock, func() error {
			c, err := net.Dial("unix", sock)
			if err != nil {
				return err
			}
			// Held open until the daemon has refused it.
			t.Cleanup(func() { c.Close() })
			return nil
		}, "must use Accept=no")
	})
}

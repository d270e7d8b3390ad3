// Package daemon_test drives pme2go-backupd on a private bus configured like
// the system bus with the project's policy file, against real PostgreSQL:
// method round trips, signals, PropertiesChanged, cancellation, busy
// refusal, authorization of unprivileged callers, malformed arguments,
// sd_notify against a fake notify socket, and the job history across a
// restart.
package daemon_test

import (
	"context"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/pme2go/pme2go-backup/dbusapi"
	"github.com/pme2go/pme2go-backup/tests/daemonharness"
)

var daemonBin string

func TestMain(m *testing.M) { daemonharness.Main(m, &daemonBin) }

// notifyMsg is one datagram received on the fake notify socket.
type notifyMsg struct {
	at   time.Time
	text string
}

// fakeNotify is a unixgram socket standing in for systemd's NOTIFY_SOCKET.
type fakeNotify struct {
	path string
	conn *net.UnixConn
	mu   sync.Mutex
	msgs []notifyMsg
	ch   chan notifyMsg
}

func newFakeNotify(t *testing.T) *fakeNotify {
	t.Helper()
	dir, err := os.MkdirTemp("", "pme2go-notify-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	p := filepath.Join(dir, "notify.sock")
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: p, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	f := &fakeNotify{path: p, conn: conn, ch: make(chan notifyMsg, 1024)}
	t.Cleanup(func() { conn.Close() })
	go func() {
		buf := make([]byte, 4096)
		for {
			n, err := conn.Read(buf)
			if err != nil {
				return
			}
			m := notifyMsg{at: time.Now(), text: string(buf[:n])}
			f.mu.Lock()
			f.msgs = append(f.msgs, m)
			f.mu.Unlock()
			select {
			case f.ch <- m:
			default:
			}
		}
	}()
	return f
}

// waitFor waits for a datagram containing line (e.g. "READY=1").
func (f *fakeNotify) waitFor(t *testing.T, line string, timeout time.Duration) notifyMsg {
	t.Helper()
	deadline := time.After(timeout)
	for {
		select {
		case m := <-f.ch:
			for _, l := range strings.Split(m.text, "\n") {
				if l == line {
					return m
				}
			}
		case <-deadline:
			t.Fatalf("no %q on the notify socket within %s; got %q", line, timeout, f.all())
		}
	}
}

func (f *fakeNotify) all() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []string
	for _, m := range f.msgs {
		out = append(out, m.text)
	}
	return out
}

// daemonProc is a running pme2go-backupd.
type daemonProc struct {
	cmd    *exec.Cmd
	stderr *daemonharness.SyncBuffer
	notify *fakeNotify
	done   chan error
}

// startDaemon runs pme2go-backupd with the configuration env (no
// configuration file is read: --config names an empty one), a fake notify
// socket, and extra environment, and waits for READY=1.
func startDaemon(t *testing.T, cfgEnv map[string]string, extraEnv []string, args ...string) *daemonProc {
	t.Helper()
	conf := filepath.Join(t.TempDir(), "empty.conf")
	if err := os.WriteFile(conf, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	fn := newFakeNotify(t)
	cmd := exec.Command(daemonBin, append([]string{"--config", conf}, args...)...)
	env := []string{"PATH=" + os.Getenv("PATH"), "HOME=" + os.Getenv("HOME"),
		"DBUS_SYSTEM_BUS_ADDRESS=" + os.Getenv("DBUS_SYSTEM_BUS_ADDRESS"), "NOTIFY_SOCKET=" + fn.path}
	for k, v := range cfgEnv {
		env = append(env, k+"="+v)
	}
	cmd.Env = append(env, extraEnv...)
	p := &daemonProc{cmd: cmd, stderr: &daemonharness.SyncBuffer{}, notify: fn, done: make(chan error, 1)}
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
			case <-time.After(20 * time.Second):
				_ = p.cmd.Process.Kill()
			}
		}
		if t.Failed() {
			t.Logf("daemon log:\n%s", p.stderr.String())
		}
	})
	select {
	case m := <-waitReady(t, fn):
		_ = m
	case err := <-p.done:
		t.Fatalf("pme2go-backupd exited before READY: %v\n%s", err, p.stderr.String())
	}
	return p
}

func waitReady(t *testing.T, fn *fakeNotify) <-chan notifyMsg {
	ch := make(chan notifyMsg, 1)
	go func() {
		for m := range fn.ch {
			if strings.Contains(m.text, "READY=1") {
				ch <- m
				return
			}
		}
	}()
	return ch
}

// stop sends SIGTERM and waits for the exit.
func (p *daemonProc) stop(t *testing.T) error {
	t.Helper()
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-p.done:
		return err
	case <-time.After(30 * time.Second):
		t.Fatalf("pme2go-backupd did not stop within 30 s of SIGTERM")
	}
	return nil
}

func dial(t *testing.T) *dbusapi.Client {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := dbusapi.Dial(ctx)
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func ctxT(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// asUser runs name with args as uid nobody with the given supplementary
// groups, on the test's bus, returning combined output and the error.
func asUser(t *testing.T, groups string, name string, args ...string) (string, error) {
	t.Helper()
	return daemonharness.AsUser(t, groups, []string{"DBUS_SYSTEM_BUS_ADDRESS=" + os.Getenv("DBUS_SYSTEM_BUS_ADDRESS")}, name, args...)
}

// archives lists the files (all, including temporary ones) below dir.
func archives(t *testing.T, dir string) []string {
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

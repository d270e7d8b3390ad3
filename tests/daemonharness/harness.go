// Package daemonharness holds what the tests that run pme2go-backupd as a
// process share (tests/daemon, tests/rest): building the daemon once per
// test binary, a goroutine-safe buffer for its log, and running a client
// as an unprivileged user.
package daemonharness

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"

	"github.com/pme2go/pme2go-backup/tests/pgharness"
)

// Main builds pme2go-backupd into a temporary directory, sets *bin to its
// path, runs the tests and exits with their status (for TestMain).
func Main(m *testing.M, bin *string) {
	dir, err := os.MkdirTemp("", "pme2go-daemon-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	*bin = filepath.Join(dir, "pme2go-backupd")
	if out, err := exec.Command("go", "build", "-o", *bin, "github.com/pme2go/pme2go-backup/cmd/pme2go-backupd").CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "build pme2go-backupd: %v\n%s", err, out)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// SyncBuffer is a bytes.Buffer safe for a process's writes and the
// test's reads at once.
type SyncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *SyncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

// String returns what was written so far.
func (s *SyncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// AsUser runs name with args as uid and gid 65534 (nobody) with the given
// supplementary groups (a comma-separated list for setpriv --groups; none
// when empty) and the environment env plus PATH, returning the combined
// output and the error. It needs root and setpriv (util-linux).
func AsUser(t testing.TB, groups string, env []string, name string, args ...string) (string, error) {
	t.Helper()
	out, err := AsUserCmd(t, groups, env, name, args...).CombinedOutput()
	return string(out), err
}

// AsUserCmd is AsUser's command, not started.
func AsUserCmd(t testing.TB, groups string, env []string, name string, args ...string) *exec.Cmd {
	t.Helper()
	setpriv, err := exec.LookPath("setpriv")
	if err != nil {
		pgharness.Require(t, "setpriv", "setpriv (util-linux) not installed")
	}
	pa := []string{"--reuid=65534", "--regid=65534"}
	if groups == "" {
		pa = append(pa, "--clear-groups")
	} else {
		pa = append(pa, "--groups="+groups)
	}
	cmd := exec.Command(setpriv, append(append(pa, name), args...)...)
	cmd.Env = append([]string{"PATH=" + os.Getenv("PATH")}, env...)
	return cmd
}

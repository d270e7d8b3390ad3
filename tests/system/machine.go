// Package system is the booted-system test of pme2go-backup (`make
// system-test`): a Debian bookworm root file system built with debootstrap
// (cached between runs), booted with systemd-nspawn, the built .deb
// installed into it, and the service driven the way an administrator would:
// systemctl, the timers, busctl, the CLI, a point-in-time restore, the
// journal, package removal.
//
// The machine running the test need not run systemd itself: nspawn is run
// with --register=no --keep-unit, and commands enter the container with
// nsenter. This file holds the machinery; system_test.go the operator's
// story.
package system

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// Suite is the Debian release the root file system is built from.
const Suite = "bookworm"

// Packages are installed into the root file system besides debootstrap's
// minbase variant: an init, the bus, polkit, logind, the PostgreSQL server
// (which brings the client the .deb depends on), and curl for the REST API.
var Packages = []string{
	"systemd", "systemd-sysv", "dbus", "polkitd", "libpam-systemd",
	"postgresql", "curl", "xz-utils",
}

// CacheDir holds the built root file systems, one per package list, outside
// the work tree (PME2GO_SYSTEST_CACHE overrides it).
func CacheDir() string {
	if d := os.Getenv("PME2GO_SYSTEST_CACHE"); d != "" {
		return d
	}
	return "/var/cache/pme2go-backup-systest"
}

// cacheKey names a root file system by what it was built from.
func cacheKey() string {
	pk := append([]string(nil), Packages...)
	sort.Strings(pk)
	sum := sha256.Sum256([]byte(Suite + " minbase " + strings.Join(pk, ",")))
	return Suite + "-" + hex.EncodeToString(sum[:])[:16]
}

// Mirror returns the Debian mirror to build from: PME2GO_DEBIAN_MIRROR, else
// the first URI of this machine's apt sources that serves Suite (one-line
// sources.list files or deb822 .sources files). No host name is written in
// the repository.
func Mirror() (string, error) {
	if m := os.Getenv("PME2GO_DEBIAN_MIRROR"); m != "" {
		return m, nil
	}
	files, _ := filepath.Glob("/etc/apt/sources.list.d/*.sources")
	lists, _ := filepath.Glob("/etc/apt/sources.list.d/*.list")
	files = append(append(files, "/etc/apt/sources.list"), lists...)
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		if strings.HasSuffix(f, ".sources") {
			for _, stanza := range strings.Split(string(data), "\n\n") {
				fields := map[string]string{}
				for _, line := range strings.Split(stanza, "\n") {
					if k, v, ok := strings.Cut(line, ":"); ok && !strings.HasPrefix(line, "#") {
						fields[strings.ToLower(strings.TrimSpace(k))] = strings.TrimSpace(v)
					}
				}
				if !strings.Contains(" "+fields["types"]+" ", " deb ") || strings.EqualFold(fields["enabled"], "no") {
					continue
				}
				if !strings.Contains(" "+fields["suites"]+" ", " "+Suite+" ") {
					continue
				}
				if uris := strings.Fields(fields["uris"]); len(uris) > 0 {
					return uris[0], nil
				}
			}
			continue
		}
		sc := bufio.NewScanner(strings.NewReader(string(data)))
		for sc.Scan() {
			f := strings.Fields(sc.Text())
			if len(f) < 3 || f[0] != "deb" {
				continue
			}
			i := 1
			if strings.HasPrefix(f[1], "[") { // options
				for i < len(f) && !strings.HasSuffix(f[i], "]") {
					i++
				}
				i++
			}
			if i+1 < len(f) && f[i+1] == Suite {
				return f[i], nil
			}
		}
	}
	return "", fmt.Errorf("no apt source for Debian %s on this machine (set PME2GO_DEBIAN_MIRROR)", Suite)
}

// RootFS returns a cached root file system, building it first when missing.
// Builds are serialized by a lock file and published by a rename, so an
// interrupted build leaves nothing that is taken for a root file system.
func RootFS(t *testing.T, logf func(string, ...any)) string {
	t.Helper()
	base := CacheDir()
	dir := filepath.Join(base, cacheKey())
	rootfs := filepath.Join(dir, "rootfs")
	if _, err := os.Stat(filepath.Join(dir, "complete")); err == nil {
		logf("root file system from the cache: %s", rootfs)
		return rootfs
	}
	if err := os.MkdirAll(base, 0o755); err != nil {
		t.Fatal(err)
	}
	lock, err := os.OpenFile(filepath.Join(base, "lock"), os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer lock.Close()
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX); err != nil {
		t.Fatal(err)
	}
	defer syscall.Flock(int(lock.Fd()), syscall.LOCK_UN)
	if _, err := os.Stat(filepath.Join(dir, "complete")); err == nil {
		return rootfs // built by another run while we waited
	}
	mirror, err := Mirror()
	if err != nil {
		t.Fatal(err)
	}
	tmp := dir + ".building"
	os.RemoveAll(tmp)
	if err := os.MkdirAll(tmp, 0o755); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	logf("building the root file system: debootstrap --variant=minbase --include=%s %s (mirror from this machine's apt sources)", strings.Join(Packages, ","), Suite)
	cmd := exec.Command("debootstrap", "--variant=minbase", "--include="+strings.Join(Packages, ","), Suite, filepath.Join(tmp, "rootfs"), mirror)
	out, err := cmd.CombinedOutput()
	if err != nil {
		os.RemoveAll(tmp)
		t.Fatalf("debootstrap: %v\n%s", err, tail(string(out), 40))
	}
	// Apt caches are of no use in the image.
	os.RemoveAll(filepath.Join(tmp, "rootfs/var/cache/apt/archives"))
	os.MkdirAll(filepath.Join(tmp, "rootfs/var/cache/apt/archives/partial"), 0o755)
	if err := os.WriteFile(filepath.Join(tmp, "complete"), []byte(time.Now().UTC().Format(time.RFC3339)+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	os.RemoveAll(dir)
	if err := os.Rename(tmp, dir); err != nil {
		t.Fatal(err)
	}
	logf("root file system built in %s", time.Since(start).Round(time.Second))
	return rootfs
}

// Machine is a booted container.
type Machine struct {
	t       *testing.T
	dir     string // the run's directory: upper, work, merged, console.log
	Root    string // the container's root as seen from the host
	nspawn  *exec.Cmd
	exited  chan struct{} // closed when nspawn has exited
	console *os.File
	pid     int // the container's PID 1, in the host's PID namespace
	mounted bool
	Logf    func(string, ...any)
}

// Boot starts a container on a copy-on-write view of rootfs (overlayfs; a
// full copy where overlayfs is not available) and waits until its systemd
// has finished booting.
func Boot(t *testing.T, rootfs string, logf func(string, ...any)) *Machine {
	t.Helper()
	runs := filepath.Join(CacheDir(), "runs")
	if err := os.MkdirAll(runs, 0o755); err != nil {
		t.Fatal(err)
	}
	dir, err := os.MkdirTemp(runs, "run-")
	if err != nil {
		t.Fatal(err)
	}
	m := &Machine{t: t, dir: dir, Root: filepath.Join(dir, "merged"), Logf: logf}
	t.Cleanup(m.shutdown)
	for _, d := range []string{"upper", "work", "merged"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	opts := fmt.Sprintf("lowerdir=%s,upperdir=%s,workdir=%s", rootfs, filepath.Join(dir, "upper"), filepath.Join(dir, "work"))
	if err := syscall.Mount("overlay", m.Root, "overlay", 0, opts); err != nil {
		logf("overlayfs unavailable (%v): copying the root file system", err)
		if out, err := exec.Command("cp", "-a", "--reflink=auto", rootfs+"/.", m.Root).CombinedOutput(); err != nil {
			t.Fatalf("copy root file system: %v\n%s", err, out)
		}
	} else {
		m.mounted = true
	}

	m.console, err = os.Create(filepath.Join(dir, "console.log"))
	if err != nil {
		t.Fatal(err)
	}
	name := "pme2go-systest-" + strconv.Itoa(os.Getpid())
	args := []string{"-D", m.Root, "-b", "--register=no", "--keep-unit", "--private-network",
		"-M", name, "--hostname=pme2go-systest"}
	logf("systemd-nspawn %s", strings.Join(args, " "))
	m.nspawn = exec.Command("systemd-nspawn", args...)
	m.nspawn.Stdout, m.nspawn.Stderr = m.console, m.console
	m.nspawn.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	start := time.Now()
	if err := m.nspawn.Start(); err != nil {
		t.Fatalf("systemd-nspawn: %v", err)
	}
	m.exited = make(chan struct{})
	var waitErr error
	go func() { waitErr = m.nspawn.Wait(); close(m.exited) }()
	deadline := time.Now().Add(60 * time.Second)
	for m.pid == 0 {
		select {
		case <-m.exited:
			t.Fatalf("systemd-nspawn exited before the container booted: %v\n%s", waitErr, m.consoleTail())
		case <-time.After(100 * time.Millisecond):
		}
		m.pid = containerInit(m.nspawn.Process.Pid)
		if time.Now().After(deadline) {
			t.Fatalf("no container init after 60s\n%s", m.consoleTail())
		}
	}
	// The manager's bus may not be up yet when PID 1 exists: retry.
	var state string
	for {
		out, _ := m.Exec(context.Background(), "systemctl is-system-running --wait")
		state = strings.TrimSpace(out)
		if state == "running" || state == "degraded" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("container not booted after 60s: %s\n%s", state, m.consoleTail())
		}
		time.Sleep(200 * time.Millisecond)
	}
	logf("booted in %s: systemctl is-system-running: %s", time.Since(start).Round(10*time.Millisecond), state)
	if state == "degraded" {
		out, _ := m.Exec(context.Background(), "systemctl --failed --no-pager")
		logf("failed units:\n%s", indent(out))
	}
	return m
}

// containerInit finds the container's PID 1 among the descendants of the
// nspawn process: a process whose innermost PID is 1.
func containerInit(nspawn int) int {
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		status, err := os.ReadFile(filepath.Join("/proc", e.Name(), "status"))
		if err != nil {
			continue
		}
		var nspid []string
		ppid := 0
		for _, line := range strings.Split(string(status), "\n") {
			if v, ok := strings.CutPrefix(line, "NSpid:"); ok {
				nspid = strings.Fields(v)
			}
			if v, ok := strings.CutPrefix(line, "PPid:"); ok {
				ppid, _ = strconv.Atoi(strings.TrimSpace(v))
			}
		}
		if len(nspid) < 2 || nspid[len(nspid)-1] != "1" {
			continue
		}
		for p, hops := ppid, 0; p > 1 && hops < 5; hops++ {
			if p == nspawn {
				return pid
			}
			p = parentOf(p)
		}
	}
	return 0
}

func parentOf(pid int) int {
	status, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "status"))
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(status), "\n") {
		if v, ok := strings.CutPrefix(line, "PPid:"); ok {
			n, _ := strconv.Atoi(strings.TrimSpace(v))
			return n
		}
	}
	return 0
}

// Exec runs a shell command inside the container (all its namespaces, as
// root) and returns its combined output.
func (m *Machine) Exec(ctx context.Context, script string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "nsenter", "--target", strconv.Itoa(m.pid),
		"--mount", "--uts", "--ipc", "--net", "--pid", "--cgroup", "--",
		"/bin/sh", "-c", script)
	cmd.Env = []string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin", "LANG=C.UTF-8", "HOME=/root",
		"SYSTEMD_PAGER=", "SYSTEMD_COLORS=0", "TERM=dumb"}
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// Run runs script as the administrator would type it, writes it and its
// output to the transcript, and fails the test when it exits non-zero.
func (m *Machine) Run(script string) string {
	m.t.Helper()
	out, err := m.Try(script)
	if err != nil {
		m.t.Fatalf("%s: %v", script, err)
	}
	return out
}

// Try is Run without the failure: the exit status is returned.
func (m *Machine) Try(script string) (string, error) {
	m.t.Helper()
	out, err := m.Exec(context.Background(), script)
	status := ""
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		status = fmt.Sprintf("  [exit status %d]\n", ee.ExitCode())
	}
	m.Logf("# %s\n%s%s", script, indent(out), status)
	return out, err
}

// CopyIn copies a host file into the container's file system.
func (m *Machine) CopyIn(src, dst string) {
	m.t.Helper()
	data, err := os.ReadFile(src)
	if err != nil {
		m.t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(m.Root, dst), data, 0o644); err != nil {
		m.t.Fatal(err)
	}
}

// WriteFile writes a file into the container's file system (owned by root).
func (m *Machine) WriteFile(path, content string, mode os.FileMode) {
	m.t.Helper()
	p := filepath.Join(m.Root, path)
	if err := os.WriteFile(p, []byte(content), mode); err != nil {
		m.t.Fatal(err)
	}
	if err := os.Chmod(p, mode); err != nil {
		m.t.Fatal(err)
	}
}

func (m *Machine) consoleTail() string {
	data, _ := os.ReadFile(filepath.Join(m.dir, "console.log"))
	return tail(string(data), 30)
}

// shutdown powers the container off (nspawn turns SIGTERM into an orderly
// shutdown of a booted container), then removes the run's directory.
func (m *Machine) shutdown() {
	if m.exited != nil {
		_ = m.nspawn.Process.Signal(syscall.SIGTERM)
		select {
		case <-m.exited:
		case <-time.After(30 * time.Second):
			_ = syscall.Kill(-m.nspawn.Process.Pid, syscall.SIGKILL)
			<-m.exited
		}
	}
	if m.console != nil {
		m.console.Close()
	}
	if m.mounted {
		if err := syscall.Unmount(m.Root, 0); err != nil {
			_ = syscall.Unmount(m.Root, syscall.MNT_DETACH)
		}
	}
	if os.Getenv("PME2GO_TEST_KEEP") == "" {
		os.RemoveAll(m.dir)
	} else {
		m.Logf("kept %s", m.dir)
	}
}

func indent(s string) string {
	s = strings.TrimRight(s, "\n")
	if s == "" {
		return ""
	}
	return "  " + strings.ReplaceAll(s, "\n", "\n  ") + "\n"
}

func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

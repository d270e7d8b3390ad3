// Package packages builds the deb and rpm packages with `make package` and
// checks them with the distributions' own tools: lintian reports no error on
// the .deb, `rpm -qpl` lists the expected files and `rpm -qp --scripts` the
// expected scriptlets, and the .deb's files, conffiles and maintainer scripts
// are what nfpm.yaml asks for.
//
// lintian and rpm come from tests/install-deps.sh; without them the tests
// skip (pgharness.Require), or fail under PME2GO_TEST_REQUIRE=all.
package packages

import (
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"

	"github.com/pme2go/pme2go-backup/tests/pgharness"
)

const root = "../.."

var (
	buildOnce sync.Once
	debPath   string
	rpmPath   string
	buildErr  string
)

// build runs `make package` once for all tests of this package.
func build(t *testing.T) (deb, rpm string) {
	t.Helper()
	buildOnce.Do(func() {
		cmd := exec.Command("make", "-s", "package")
		cmd.Dir = root
		out, err := cmd.CombinedOutput()
		if err != nil {
			buildErr = "make package: " + err.Error() + "\n" + string(out)
			return
		}
		debs, _ := filepath.Glob(filepath.Join(root, "bin/packages/pme2go-backup_*.deb"))
		rpms, _ := filepath.Glob(filepath.Join(root, "bin/packages/pme2go-backup-*.rpm"))
		if len(debs) != 1 || len(rpms) != 1 {
			buildErr = "make package left " + strings.Join(append(debs, rpms...), ", ") + "; want one .deb and one .rpm\n" + string(out)
			return
		}
		debPath, rpmPath = debs[0], rpms[0]
	})
	if buildErr != "" {
		t.Fatal(buildErr)
	}
	return debPath, rpmPath
}

// expectedFiles are the files both packages install (the documentation
// directory and copyright differ between the formats and are checked apart).
var expectedFiles = []string{
	"/etc/pme2go-backup/pme2go-backup.conf",
	"/usr/bin/pme2go-backup",
	"/usr/libexec/pme2go-backupd",
	"/usr/lib/systemd/system/pme2go-backupd.service",
	"/usr/lib/systemd/system/pme2go-backupd.socket",
	"/usr/lib/systemd/system/pme2go-backup-full.service",
	"/usr/lib/systemd/system/pme2go-backup-full.timer",
	"/usr/lib/systemd/system/pme2go-backup-incremental.service",
	"/usr/lib/systemd/system/pme2go-backup-incremental.timer",
	"/usr/lib/systemd/system/pme2go-backup-cleanup.service",
	"/usr/lib/systemd/system/pme2go-backup-cleanup.timer",
	"/usr/lib/systemd/system/pme2go-backup-drill.service",
	"/usr/lib/systemd/system/pme2go-backup-drill.timer",
	"/usr/lib/systemd/system-preset/50-pme2go-backup.preset",
	"/usr/lib/sysusers.d/pme2go-backup.conf",
	"/usr/lib/tmpfiles.d/pme2go-backup.conf",
	"/usr/share/dbus-1/system-services/org.pme2go.Backup1.service",
	"/usr/share/dbus-1/system.d/org.pme2go.Backup1.conf",
	"/usr/share/dbus-1/interfaces/org.pme2go.Backup1.xml",
	"/usr/share/polkit-1/actions/org.pme2go.backup1.policy",
	"/usr/share/polkit-1/rules.d/50-org.pme2go.backup1.rules",
	"/usr/share/man/man1/pme2go-backup.1.gz",
	"/usr/share/man/man5/pme2go-backup.conf.5.gz",
}

// manPages adds the compressed page of every man/ source: a page written
// later (the daemon's) must be packaged too.
func manPages(t *testing.T) []string {
	t.Helper()
	pages, err := filepath.Glob(filepath.Join(root, "man/*.[0-9]"))
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, p := range pages {
		b := filepath.Base(p)
		out = append(out, "/usr/share/man/man"+b[len(b)-1:]+"/"+b+".gz")
	}
	return out
}

func missing(have map[string]bool, want []string) []string {
	var m []string
	for _, w := range want {
		if !have[w] {
			m = append(m, w)
		}
	}
	sort.Strings(m)
	return m
}

// TestDeb checks the .deb's files, conffiles, control fields and maintainer
// scripts, then runs lintian (no errors allowed; warnings are logged).
func TestDeb(t *testing.T) {
	deb, _ := build(t)
	out, err := exec.Command("dpkg-deb", "--contents", deb).CombinedOutput()
	if err != nil {
		t.Fatalf("dpkg-deb --contents: %v\n%s", err, out)
	}
	have := map[string]bool{}
	for _, line := range strings.Split(string(out), "\n") {
		f := strings.Fields(line)
		if len(f) >= 6 && !strings.HasSuffix(f[5], "/") {
			have[strings.TrimPrefix(f[5], ".")] = true
		}
	}
	want := append(append([]string{}, expectedFiles...), manPages(t)...)
	want = append(want, "/usr/share/doc/pme2go-backup/copyright", "/usr/share/doc/pme2go-backup/changelog.Debian.gz")
	if m := missing(have, want); len(m) > 0 {
		t.Errorf(".deb lacks %v; it holds:\n%s", m, out)
	}
	for f := range have {
		if strings.HasPrefix(f, "/var/lib/pme2go-backup") {
			t.Errorf(".deb ships %s: the archive directory must not be a package file (removal would touch it)", f)
		}
	}

	ctl := t.TempDir()
	if out, err := exec.Command("dpkg-deb", "--control", deb, ctl).CombinedOutput(); err != nil {
		t.Fatalf("dpkg-deb --control: %v\n%s", err, out)
	}
	conffiles, _ := os.ReadFile(filepath.Join(ctl, "conffiles"))
	if strings.TrimSpace(string(conffiles)) != "/etc/pme2go-backup/pme2go-backup.conf" {
		t.Errorf("conffiles = %q, want the configuration file only", conffiles)
	}
	control, _ := os.ReadFile(filepath.Join(ctl, "control"))
	for _, s := range []string{"Package: pme2go-backup", "Depends: ", "postgresql-client", "init-system-helpers"} {
		if !strings.Contains(string(control), s) {
			t.Errorf("control lacks %q:\n%s", s, control)
		}
	}
	scripts := map[string][]string{
		"postinst": {"systemd-sysusers pme2go-backup.conf", "systemd-tmpfiles --create pme2go-backup.conf",
			"deb-systemd-helper --quiet was-enabled", "deb-systemd-helper enable", "deb-systemd-invoke",
			"pme2go-backupd.socket", "pme2go-backup-full.timer", "pme2go-backup-drill.timer"},
		"prerm":  {"deb-systemd-invoke stop", "pme2go-backupd.service", "pme2go-backup-full.service"},
		"postrm": {"deb-systemd-helper purge", "deb-systemd-helper mask", "NOT deleted"},
	}
	for name, wants := range scripts {
		data, err := os.ReadFile(filepath.Join(ctl, name))
		if err != nil {
			t.Errorf("no %s: %v", name, err)
			continue
		}
		for _, w := range wants {
			if !strings.Contains(string(data), w) {
				t.Errorf("%s lacks %q", name, w)
			}
		}
		if out, err := exec.Command("sh", "-n", filepath.Join(ctl, name)).CombinedOutput(); err != nil {
			t.Errorf("sh -n %s: %v\n%s", name, err, out)
		}
		if strings.Contains(string(data), "rm -rf /var/lib") {
			t.Errorf("%s deletes the archives", name)
		}
	}

	lintian, err := exec.LookPath("lintian")
	if err != nil {
		pgharness.Require(t, "lintian", "lintian not on PATH (Debian package lintian)")
	}
	cmd := exec.Command(lintian, "--tag-display-limit", "0", "--fail-on", "error", deb)
	out, err = cmd.CombinedOutput()
	t.Logf("lintian %s:\n%s", filepath.Base(deb), out)
	for _, line := range strings.Split(string(out), "\n") {
		if strings.HasPrefix(line, "E: ") {
			t.Errorf("lintian error: %s", line)
		}
	}
	if err != nil {
		t.Errorf("lintian: %v", err)
	}
}

// TestRPM checks `rpm -qpl`, the configuration flags and `rpm -qp
// --scripts` of the .rpm.
func TestRPM(t *testing.T) {
	_, rpmFile := build(t)
	rpmBin, err := exec.LookPath("rpm")
	if err != nil {
		pgharness.Require(t, "rpm", "rpm not on PATH (Debian package rpm)")
	}
	out, err := exec.Command(rpmBin, "-qpl", rpmFile).CombinedOutput()
	t.Logf("rpm -qpl %s:\n%s", filepath.Base(rpmFile), out)
	if err != nil {
		t.Fatalf("rpm -qpl: %v", err)
	}
	have := map[string]bool{}
	for _, f := range strings.Fields(string(out)) {
		have[f] = true
	}
	want := append(append([]string{}, expectedFiles...), manPages(t)...)
	want = append(want, "/usr/share/licenses/pme2go-backup/copyright")
	if m := missing(have, want); len(m) > 0 {
		t.Errorf("rpm -qpl lacks %v", m)
	}
	for f := range have {
		if strings.HasPrefix(f, "/var/lib/pme2go-backup") || f == "/usr/bin" || f == "/usr/lib/systemd/system" {
			t.Errorf(".rpm owns %s", f)
		}
	}

	out, err = exec.Command(rpmBin, "-qp", "--qf", "[%{FILEFLAGS:fflags} %{FILENAMES}\n]", rpmFile).CombinedOutput()
	if err != nil {
		t.Fatalf("rpm -qp --qf: %v\n%s", err, out)
	}
	if !strings.Contains(string(out), "cn /etc/pme2go-backup/pme2go-backup.conf") {
		t.Errorf("the configuration is not %%config(noreplace):\n%s", out)
	}

	out, err = exec.Command(rpmBin, "-qp", "--scripts", rpmFile).CombinedOutput()
	t.Logf("rpm -qp --scripts %s:\n%s", filepath.Base(rpmFile), out)
	if err != nil {
		t.Fatalf("rpm -qp --scripts: %v", err)
	}
	s := string(out)
	sections := map[string][]string{
		"preinstall scriptlet":    {"useradd -r", "groupadd -r", "systemd-sysusers"},
		"postinstall scriptlet":   {"systemctl --no-reload preset", "pme2go-backupd.socket", "pme2go-backup-full.timer", "systemd-tmpfiles --create"},
		"preuninstall scriptlet":  {"systemctl --no-reload disable --now", "pme2go-backup-drill.timer"},
		"postuninstall scriptlet": {"systemctl daemon-reload", "try-restart pme2go-backupd.service", "NOT deleted"},
	}
	for sec, wants := range sections {
		i := strings.Index(s, sec)
		if i < 0 {
			t.Errorf("no %s", sec)
			continue
		}
		body := s[i:]
		if j := strings.Index(body[len(sec):], "scriptlet (using"); j >= 0 {
			body = body[:len(sec)+j]
		}
		for _, w := range wants {
			if !strings.Contains(body, w) {
				t.Errorf("%s lacks %q", sec, w)
			}
		}
	}
	out, err = exec.Command(rpmBin, "-qp", "--requires", rpmFile).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "postgresql") {
		t.Errorf("rpm -qp --requires: %v, no postgresql:\n%s", err, out)
	}
}

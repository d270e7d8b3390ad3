// Package units checks the systemd units, bus and polkit files shipped in
// systemd/ and packaging/: `systemd-analyze verify` on every unit inside a
// temporary root laid out as the package installs it, the exposure score of
// `systemd-analyze security --offline=true` for the services, the timers'
// calendars against the configuration's cron defaults, and the polkit and
// D-Bus files' names and contents.
//
// systemd-analyze comes from the systemd package (tests/install-deps.sh); a
// missing one skips the tests through pgharness.Require, or fails them under
// PME2GO_TEST_REQUIRE=all.
package units

import (
	"bufio"
	"encoding/xml"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/pme2go/pme2go-backup/engine/config"
	"github.com/pme2go/pme2go-backup/engine/schedule"
	"github.com/pme2go/pme2go-backup/tests/pgharness"
)

// root is the top of the work tree, seen from this package's directory.
const root = "../.."

// unitFiles returns the unit files in systemd/ (services, sockets, timers).
func unitFiles(t *testing.T) []string {
	t.Helper()
	var units []string
	for _, pat := range []string{"*.service", "*.socket", "*.timer"} {
		m, err := filepath.Glob(filepath.Join(root, "systemd", pat))
		if err != nil {
			t.Fatal(err)
		}
		for _, p := range m {
			if filepath.Base(p) == "org.pme2go.Backup1.service" {
				continue // the D-Bus activation file, not a unit
			}
			units = append(units, filepath.Base(p))
		}
	}
	sort.Strings(units)
	if len(units) == 0 {
		t.Fatal("no unit files in systemd/")
	}
	return units
}

// packageDestinations returns the installed path of each source file in
// nfpm.yaml's contents (src -> dst).
func packageDestinations(t *testing.T) map[string]string {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(root, "nfpm.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	dst := map[string]string{}
	var src string
	for _, line := range strings.Split(string(data), "\n") {
		line = strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(line), "- "))
		if v, ok := strings.CutPrefix(line, "src:"); ok {
			src = strings.Fields(v)[0]
		} else if v, ok := strings.CutPrefix(line, "dst:"); ok && src != "" {
			if _, seen := dst[src]; !seen {
				dst[src] = strings.Fields(v)[0]
			}
			src = ""
		}
	}
	return dst
}

// unitDirectives returns the values of directive key in a unit file.
func unitDirectives(t *testing.T, unit, key string) []string {
	t.Helper()
	f, err := os.Open(filepath.Join(root, "systemd", unit))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var vals []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if k, v, ok := strings.Cut(line, "="); ok && strings.TrimSpace(k) == key {
			vals = append(vals, strings.TrimSpace(v))
		}
	}
	return vals
}

// installRoot lays the units out in a temporary root as the package installs
// them (usr/lib/systemd/system), beside the host's own units (for
// sysinit.target and the like), with a stand-in executable at each path an
// ExecStart= names. Each such path must be one the package installs.
func installRoot(t *testing.T, analyze string) string {
	t.Helper()
	dir := t.TempDir()
	sysdir := filepath.Join(dir, "usr/lib/systemd/system")
	if err := os.MkdirAll(sysdir, 0o755); err != nil {
		t.Fatal(err)
	}
	// The host's units, wherever this distribution keeps them.
	for _, d := range []string{"/usr/lib/systemd/system", "/lib/systemd/system"} {
		if fi, err := os.Stat(d); err == nil && fi.IsDir() {
			out, err := exec.Command("cp", "-a", d+"/.", sysdir).CombinedOutput()
			if err != nil {
				t.Fatalf("copy %s: %v\n%s", d, err, out)
			}
			break
		}
	}
	installed := map[string]bool{}
	for _, d := range packageDestinations(t) {
		installed[d] = true
	}
	for _, u := range unitFiles(t) {
		data, err := os.ReadFile(filepath.Join(root, "systemd", u))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(sysdir, u), data, 0o644); err != nil {
			t.Fatal(err)
		}
		if !installed["/usr/lib/systemd/system/"+u] {
			t.Errorf("%s: not installed to /usr/lib/systemd/system by nfpm.yaml", u)
		}
		for _, v := range unitDirectives(t, u, "ExecStart") {
			exe := strings.Fields(strings.TrimLeft(v, "-@:+!"))[0]
			if !installed[exe] {
				t.Errorf("%s: ExecStart= runs %s, which the package does not install (nfpm.yaml)", u, exe)
			}
			p := filepath.Join(dir, exe)
			if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(p, []byte("#!/bin/sh\nexit 0\n"), 0o755); err != nil {
				t.Fatal(err)
			}
		}
	}
	return dir
}

func lookAnalyze(t *testing.T) string {
	t.Helper()
	p, err := exec.LookPath("systemd-analyze")
	if err != nil {
		pgharness.Require(t, "systemd-analyze", "systemd-analyze not on PATH (Debian package systemd)")
	}
	return p
}

// TestVerify runs `systemd-analyze verify` on every unit. Man pages are not
// looked up by systemd-analyze (they are not installed on the test host);
// TestDocumentation checks that the pages named by Documentation= exist in
// man/.
func TestVerify(t *testing.T) {
	analyze := lookAnalyze(t)
	dir := installRoot(t, analyze)
	units := unitFiles(t)
	args := append([]string{"verify", "--man=no", "--root=" + dir}, units...)
	out, err := exec.Command(analyze, args...).CombinedOutput()
	t.Logf("systemd-analyze verify %s\n%s", strings.Join(units, " "), out)
	if err != nil || len(strings.TrimSpace(string(out))) > 0 {
		t.Fatalf("systemd-analyze verify: %v (any output is a finding)\n%s", err, out)
	}

	// The check is real: a unit whose program is not installed fails.
	if err := os.Remove(filepath.Join(dir, "usr/libexec/pme2go-backupd")); err != nil {
		t.Fatal(err)
	}
	out, err = exec.Command(analyze, "verify", "--man=no", "--root="+dir, "pme2go-backupd.service").CombinedOutput()
	if err == nil || !strings.Contains(string(out), "pme2go-backupd") {
		t.Fatalf("verify accepted a unit whose ExecStart= is missing: %v\n%s", err, out)
	}
}

var exposureRE = regexp.MustCompile(`Overall exposure level for (\S+): ([0-9.]+) (\w+)`)

// TestSecurity rates every service with `systemd-analyze security
// --offline=true` and requires OK or better (exposure below 2.0; systemd's
// scale: SAFE < 1.0 <= OK < 5.0 <= MEDIUM ...). Measured when written:
// pme2go-backupd.service 1.4 OK.
func TestSecurity(t *testing.T) {
	analyze := lookAnalyze(t)
	dir := installRoot(t, analyze)
	for _, u := range unitFiles(t) {
		if !strings.HasSuffix(u, ".service") {
			continue
		}
		t.Run(u, func(t *testing.T) {
			out, err := exec.Command(analyze, "security", "--offline=true", "--no-pager", "--root="+dir, u).CombinedOutput()
			m := exposureRE.FindStringSubmatch(string(out))
			if m == nil {
				t.Fatalf("systemd-analyze security %s: %v, no overall exposure level in:\n%s", u, err, out)
			}
			t.Logf("systemd-analyze security %s: exposure %s %s", u, m[2], m[3])
			if u == "pme2go-backupd.service" {
				for _, line := range strings.Split(string(out), "\n") {
					if strings.Contains(line, "✗") {
						t.Logf("  %s", strings.Join(strings.Fields(line), " "))
					}
				}
			}
			switch m[3] {
			case "PERFECT", "SAFE", "OK":
			default:
				t.Fatalf("%s rated %s %s, want OK or better", u, m[2], m[3])
			}
			if v, err := strconv.ParseFloat(m[2], 64); err != nil || v >= 2.0 {
				t.Fatalf("%s exposure %s, want below 2.0 (it was 1.4 when written)", u, m[2])
			}
		})
	}
}

// TestTimersFollowSchedules checks that each timer fires exactly when the
// seed's cron default of its configuration key would: the next 20 elapses of
// OnCalendar= (systemd-analyze calendar, in UTC) against engine/schedule's
// reading of the default. The drill timer is monthly.
func TestTimersFollowSchedules(t *testing.T) {
	analyze := lookAnalyze(t)
	defaults := map[string]string{}
	for _, k := range config.Keys {
		defaults[k.Name] = k.Default
	}
	cases := []struct{ timer, cron string }{
		{"pme2go-backup-full.timer", defaults["FULL_BACKUP_SCHEDULE"]},
		{"pme2go-backup-incremental.timer", defaults["INCREMENTAL_BACKUP_SCHEDULE"]},
		{"pme2go-backup-cleanup.timer", defaults["CLEANUP_SCHEDULE"]},
		{"pme2go-backup-drill.timer", "0 4 1 * *"},
	}
	const n = 20
	for _, c := range cases {
		t.Run(c.timer, func(t *testing.T) {
			cals := unitDirectives(t, c.timer, "OnCalendar")
			if len(cals) != 1 {
				t.Fatalf("%s: want one OnCalendar=, have %q", c.timer, cals)
			}
			for _, key := range []string{"Persistent", "RandomizedDelaySec"} {
				if len(unitDirectives(t, c.timer, key)) == 0 {
					t.Errorf("%s: no %s=", c.timer, key)
				}
			}
			if p := unitDirectives(t, c.timer, "Persistent"); len(p) > 0 && p[0] != "true" {
				t.Errorf("%s: Persistent=%s, want true", c.timer, p[0])
			}
			cron, err := schedule.Parse(c.cron)
			if err != nil {
				t.Fatalf("cron %q: %v", c.cron, err)
			}
			now := time.Now().UTC()
			cmd := exec.Command(analyze, "calendar", "--iterations="+strconv.Itoa(n), cals[0])
			cmd.Env = append(os.Environ(), "TZ=UTC")
			out, err := cmd.CombinedOutput()
			if err != nil {
				t.Fatalf("systemd-analyze calendar %q: %v\n%s", cals[0], err, out)
			}
			var got []time.Time
			for _, line := range strings.Split(string(out), "\n") {
				_, v, ok := strings.Cut(line, ": ")
				line = strings.TrimSpace(line)
				if !ok || !(strings.HasPrefix(line, "Next elapse:") || strings.HasPrefix(line, "Iter. #")) {
					continue
				}
				tm, err := time.Parse("Mon 2006-01-02 15:04:05 MST", strings.TrimSpace(v))
				if err != nil {
					t.Fatalf("parse %q: %v", v, err)
				}
				got = append(got, tm.UTC())
			}
			if len(got) != n {
				t.Fatalf("systemd-analyze calendar gave %d elapses, want %d:\n%s", len(got), n, out)
			}
			next := now
			for i := 0; i < n; i++ {
				next = cron.Next(next)
				if !next.Equal(got[i]) {
					t.Fatalf("elapse %d: timer %s, cron %q %s", i+1, got[i].Format(time.RFC3339), c.cron, next.Format(time.RFC3339))
				}
			}
			t.Logf("%s OnCalendar=%s = cron %q; next %s", c.timer, cals[0], c.cron, got[0].Format(time.RFC3339))
		})
	}
}

// TestServiceUnits checks the settings other parts of the project rely on.
func TestServiceUnits(t *testing.T) {
	want := map[string]string{
		"Type":                    "notify",
		"BusName":                 "org.pme2go.Backup1",
		"User":                    "pme2go-backup",
		"Group":                   "pme2go-backup",
		"StateDirectory":          "pme2go-backup",
		"ProtectSystem":           "strict",
		"PrivateTmp":              "yes",
		"NoNewPrivileges":         "yes",
		"ProtectHome":             "yes",
		"CapabilityBoundingSet":   "",
		"RestrictAddressFamilies": "AF_UNIX AF_INET AF_INET6",
		"LoadCredential":          "db-password:/etc/pme2go-backup/db-password",
	}
	for k, v := range want {
		got := unitDirectives(t, "pme2go-backupd.service", k)
		found := false
		for _, g := range got {
			found = found || g == v
		}
		if !found {
			t.Errorf("pme2go-backupd.service: want %s=%s, have %q", k, v, got)
		}
	}
	if got := unitDirectives(t, "pme2go-backupd.service", "SystemCallFilter"); len(got) == 0 || got[0] != "@system-service" {
		t.Errorf("pme2go-backupd.service: SystemCallFilter=%q, want @system-service first", got)
	}
	if got := unitDirectives(t, "pme2go-backupd.socket", "ListenStream"); len(got) != 1 || !strings.HasPrefix(got[0], "/run/pme2go-backup/") {
		t.Errorf("pme2go-backupd.socket: ListenStream=%q, want one Unix socket under /run/pme2go-backup/", got)
	}
	// The oneshot services run the CLI verb of their name.
	for _, kind := range []string{"full", "incremental", "cleanup", "drill"} {
		u := "pme2go-backup-" + kind + ".service"
		got := unitDirectives(t, u, "ExecStart")
		if len(got) != 1 || !strings.HasPrefix(got[0]+" ", "/usr/bin/pme2go-backup "+kind+" ") {
			t.Errorf("%s: ExecStart=%q, want /usr/bin/pme2go-backup %s", u, got, kind)
		}
		if tp := unitDirectives(t, u, "Type"); len(tp) != 1 || tp[0] != "oneshot" {
			t.Errorf("%s: Type=%q, want oneshot", u, tp)
		}
	}
}

// TestDocumentation checks that each man page a unit names in
// Documentation= is in man/ (systemd's own pages excepted). The daemon's two
// pages (issue 9) are being written: while they are missing, that is logged.
func TestDocumentation(t *testing.T) {
	pending := map[string]bool{"pme2go-backupd.8": true, "org.pme2go.Backup1.5": true}
	manRE := regexp.MustCompile(`^man:([^()]+)\(([0-9])\)$`)
	for _, u := range unitFiles(t) {
		for _, v := range unitDirectives(t, u, "Documentation") {
			for _, ref := range strings.Fields(v) {
				m := manRE.FindStringSubmatch(ref)
				if m == nil {
					t.Errorf("%s: Documentation=%s is not a man: reference", u, ref)
					continue
				}
				if strings.HasPrefix(m[1], "systemd") {
					continue
				}
				if _, err := os.Stat(filepath.Join(root, "man", m[1]+"."+m[2])); err != nil {
					if pending[m[1]+"."+m[2]] {
						t.Logf("%s: %s not in man/ yet (the daemon's page, to come)", u, ref)
						continue
					}
					t.Errorf("%s: Documentation= names %s, which is not in man/", u, ref)
				}
			}
		}
	}
}

type policyConfig struct {
	Actions []struct {
		ID       string `xml:"id,attr"`
		Defaults struct {
			Any      string `xml:"allow_any"`
			Inactive string `xml:"allow_inactive"`
			Active   string `xml:"allow_active"`
		} `xml:"defaults"`
	} `xml:"action"`
}

// TestPolkitAndBus checks the polkit actions (the four the daemon asks
// about), the rules file granting the group, the D-Bus activation file and
// that the daemon's bus policy (once landed) admits the same group.
func TestPolkitAndBus(t *testing.T) {
	data, err := os.ReadFile(filepath.Join(root, "systemd/org.pme2go.backup1.policy"))
	if err != nil {
		t.Fatal(err)
	}
	var pc policyConfig
	if err := xml.Unmarshal(data, &pc); err != nil {
		t.Fatalf("polkit policy: %v", err)
	}
	ids := map[string]bool{}
	for _, a := range pc.Actions {
		ids[a.ID] = true
		for _, d := range []string{a.Defaults.Any, a.Defaults.Inactive, a.Defaults.Active} {
			if d == "yes" {
				t.Errorf("%s: a default of yes lets anyone in", a.ID)
			}
		}
		if a.ID == "org.pme2go.backup1.restore" && a.Defaults.Active != "auth_admin" {
			t.Errorf("%s: allow_active=%s, want auth_admin (stricter than the others)", a.ID, a.Defaults.Active)
		}
	}
	for _, id := range []string{"read", "backup", "manage", "restore"} {
		if !ids["org.pme2go.backup1."+id] {
			t.Errorf("polkit policy: no action org.pme2go.backup1.%s", id)
		}
	}
	if len(ids) != 4 {
		t.Errorf("polkit policy: actions %v, want exactly the four", ids)
	}
	rules, err := os.ReadFile(filepath.Join(root, "systemd/50-org.pme2go.backup1.rules"))
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range []string{`isInGroup("pme2go-backup")`, `"org.pme2go.backup1."`, "polkit.Result.YES"} {
		if !strings.Contains(string(rules), s) {
			t.Errorf("polkit rules: no %s", s)
		}
	}
	act, err := os.ReadFile(filepath.Join(root, "systemd/org.pme2go.Backup1.service"))
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range []string{"[D-BUS Service]", "Name=org.pme2go.Backup1", "SystemdService=pme2go-backupd.service", "Exec="} {
		if !strings.Contains(string(act), s) {
			t.Errorf("D-Bus activation file: no %s", s)
		}
	}
	dst := packageDestinations(t)
	if dst["systemd/org.pme2go.Backup1.service"] != "/usr/share/dbus-1/system-services/org.pme2go.Backup1.service" {
		t.Errorf("activation file installed as %q", dst["systemd/org.pme2go.Backup1.service"])
	}
	if pol, err := os.ReadFile(filepath.Join(root, "systemd/org.pme2go.Backup1.conf")); err == nil {
		if !strings.Contains(string(pol), `group="pme2go-backup"`) {
			t.Errorf("bus policy org.pme2go.Backup1.conf does not name the pme2go-backup group")
		}
	} else {
		t.Logf("bus policy not landed yet: %v", err)
	}
	sysusers, err := os.ReadFile(filepath.Join(root, "packaging/pme2go-backup.sysusers"))
	if err != nil {
		t.Fatal(err)
	}
	if !regexp.MustCompile(`(?m)^u\s+pme2go-backup\s`).Match(sysusers) {
		t.Errorf("sysusers.d: no u pme2go-backup line")
	}
}

package system

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/pme2go/pme2go-backup/tests/pgharness"
)

const root = "../.."

// EnvSystemTest must be set for the test to run (`make system-test` sets
// it): it boots a container and takes about a minute with a warm cache, so
// `go test ./...` leaves it out.
const EnvSystemTest = "PME2GO_SYSTEM_TEST"

// requireHost checks what booting a container needs here; what is missing
// skips the test with the reason (fails under PME2GO_TEST_REQUIRE=all).
func requireHost(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		pgharness.Require(t, "systemd-nspawn", "the booted-system test needs root (debootstrap, mounts, nspawn)")
	}
	for _, tool := range []string{"debootstrap", "systemd-nspawn", "nsenter", "dpkg-deb"} {
		if _, err := exec.LookPath(tool); err != nil {
			pgharness.Require(t, tool, tool+" not on PATH (tests/install-deps.sh installs debootstrap and systemd-container)")
		}
	}
	if _, err := Mirror(); err != nil {
		if _, cached := os.Stat(filepath.Join(CacheDir(), cacheKey(), "complete")); cached != nil {
			pgharness.Require(t, "debian-mirror", err.Error())
		}
	}
}

// TestBootedSystem is the administrator's story, from `dpkg -i` to a
// restore and the package's removal, on a booted Debian with systemd, dbus
// and polkit. Its transcript (every command and its output) is the test's
// log; the README's install section follows it.
func TestBootedSystem(t *testing.T) {
	if os.Getenv(EnvSystemTest) == "" {
		t.Skipf("the booted-system test runs with make system-test (%s=1)", EnvSystemTest)
	}
	requireHost(t)
	debs, _ := filepath.Glob(filepath.Join(root, "bin/packages/pme2go-backup_*.deb"))
	if len(debs) != 1 {
		t.Fatalf("want one built .deb in bin/packages (make package), have %v", debs)
	}
	deb := debs[0]

	start := time.Now()
	logf := func(format string, args ...any) {
		t.Helper()
		t.Logf("[%6.1fs] "+format, append([]any{time.Since(start).Seconds()}, args...)...)
	}
	rootfs := RootFS(t, logf)
	m := Boot(t, rootfs, logf)

	// --- Installation ---------------------------------------------------
	m.CopyIn(deb, "/root/"+filepath.Base(deb))
	out := m.Run("apt-get install -y /root/" + filepath.Base(deb) + " 2>&1 | grep -v '^\\(Reading\\|Building\\)'")
	mustContain(t, out, "Setting up pme2go-backup")

	out, _ = m.Try("systemctl status --no-pager --lines=0 pme2go-backupd.socket pme2go-backupd.service")
	mustContain(t, out, "active (listening)", "/run/pme2go-backup/api.sock")
	mustMatch(t, out, `(?s)pme2go-backupd\.service.*Active: inactive \(dead\)`)
	out = m.Run("systemctl list-timers --no-pager 'pme2go-backup-*'")
	for _, timer := range []string{"full", "incremental", "cleanup", "drill"} {
		// NEXT is a date, not n/a: each timer is scheduled.
		mustMatch(t, out, `(?m)^\w{3} \d{4}-\d\d-\d\d \d\d:\d\d:\d\d \w+ .* pme2go-backup-`+timer+`\.timer`)
	}
	out = m.Run("systemctl is-enabled pme2go-backupd.socket pme2go-backup-full.timer pme2go-backup-incremental.timer pme2go-backup-cleanup.timer pme2go-backup-drill.timer")
	if strings.Count(out, "enabled") != 5 {
		t.Fatalf("socket and timers not all enabled:\n%s", out)
	}
	m.Run("systemctl show -p Triggers pme2go-backupd.socket; ls -l /run/pme2go-backup; id pme2go-backup; stat -c '%A %U:%G %n' /etc/pme2go-backup /etc/pme2go-backup/pme2go-backup.conf /var/lib/pme2go-backup")

	// --- Configuration: the local server, logical decoding on -----------
	m.Run(`runuser -u postgres -- psql -qc 'CREATE ROLE "pme2go-backup" LOGIN SUPERUSER REPLICATION' -c 'ALTER SYSTEM SET wal_level = logical' && systemctl restart postgresql`)
	m.Run(`runuser -u postgres -- createdb app && runuser -u postgres -- psql -q app -c "CREATE TABLE orders(id bigserial PRIMARY KEY, item text NOT NULL, qty int NOT NULL); INSERT INTO orders(item, qty) SELECT 'item ' || g, g % 7 FROM generate_series(1, 1000) g"`)
	m.Run(`cat >>/etc/pme2go-backup/pme2go-backup.conf <<'EOF'
DB_HOST=/var/run/postgresql
DB_NAME=app
DB_USER=pme2go-backup
EOF
grep -v '^#' /etc/pme2go-backup/pme2go-backup.conf | grep .`)
	m.Run("runuser -u pme2go-backup -- pme2go-backup test")

	// --- A full backup from its timer's service -------------------------
	out = m.Run("systemctl is-active pme2go-backupd.service || true")
	mustContain(t, out, "inactive")
	m.Run("systemctl start pme2go-backup-full.service")
	out = m.Run("ls -l /var/lib/pme2go-backup/full/")
	mustMatch(t, out, `-rw------- 1 pme2go-backup pme2go-backup .* full_backup_\S+\.tar\.xz\n`)
	m.Run("journalctl --no-pager -o cat -u pme2go-backup-full.service | grep -v '%'")

	// --- The daemon on the system bus, activated by the first call ------
	// The CLI in the timer's service went through the daemon (activating
	// it); stop it, so that the call below is what starts it again.
	out = m.Run("systemctl stop pme2go-backupd.service; systemctl is-active pme2go-backupd.service || true")
	mustContain(t, out, "inactive")
	out = m.Run("busctl --no-pager call org.pme2go.Backup1 /org/pme2go/Backup1 org.pme2go.Backup1.Manager GetStatus")
	mustContain(t, out, `"lastFullBackup" s "/var/lib/pme2go-backup/full/full_backup_`)
	out = m.Run("systemctl status --no-pager --lines=0 pme2go-backupd.service")
	mustContain(t, out, "active (running)", "Status:")
	m.Run("useradd --create-home alice && useradd --create-home --groups pme2go-backup bob")
	out, err := m.Try("runuser -u alice -- busctl --no-pager call org.pme2go.Backup1 /org/pme2go/Backup1 org.pme2go.Backup1.Manager GetStatus")
	if err == nil {
		t.Fatalf("a user outside the pme2go-backup group was let in:\n%s", out)
	}
	mustContain(t, out, "Access denied")
	out = m.Run("runuser -u bob -- busctl --no-pager call org.pme2go.Backup1 /org/pme2go/Backup1 org.pme2go.Backup1.Manager StartBackup 'sa{sv}' full 0")
	job := regexp.MustCompile(`o "(/org/pme2go/Backup1/job/\d+)"`).FindStringSubmatch(out)
	if job == nil {
		t.Fatalf("StartBackup returned no job path:\n%s", out)
	}
	m.Run(`for i in $(seq 120); do s=$(busctl get-property org.pme2go.Backup1 ` + job[1] + ` org.pme2go.Backup1.Job State); case "$s" in *running*|*cancelling*) sleep 0.5;; *) break;; esac; done; busctl --no-pager get-property org.pme2go.Backup1 ` + job[1] + ` org.pme2go.Backup1.Job Kind State Progress StartedByUID`)
	out = m.Run("busctl --no-pager get-property org.pme2go.Backup1 " + job[1] + " org.pme2go.Backup1.Job State")
	mustContain(t, out, `"succeeded"`)
	out = m.Run("journalctl --no-pager -u pme2go-backupd -o verbose --output-fields=MESSAGE,BACKUP_NAME,BACKUP_TYPE,DATABASE,DURATION_MS,SIZE_BYTES,JOB | grep -A7 'MESSAGE=full backup completed'")
	mustContain(t, out, "BACKUP_TYPE=full", "DATABASE=app", "DURATION_MS=", "SIZE_BYTES=")

	// --- The REST API on its socket --------------------------------------
	restAPI(t, m)

	// --- Restore drill -----------------------------------------------------
	drill(t, m)

	// --- Point-in-time restore with the CLI ------------------------------
	const sum = `SELECT count(*) || ' ' || md5(string_agg(o::text, ',' ORDER BY id)) FROM orders o`
	psql := func(db, sql string) string {
		return strings.TrimSpace(m.Run(`runuser -u postgres -- psql -XAtq ` + db + ` -c "` + sql + `"`))
	}
	psql("app", "INSERT INTO orders(item, qty) SELECT 'late ' || g, 1 FROM generate_series(1, 500) g")
	atMark := psql("app", sum)
	m.Run("pme2go-backup mark before-cleanup")
	psql("app", "DELETE FROM orders WHERE id % 3 = 0; UPDATE orders SET qty = qty + 100 WHERE id % 5 = 0")
	latest := psql("app", sum)
	m.Run("systemctl start pme2go-backup-incremental.service")
	m.Run("ls -l /var/lib/pme2go-backup/incremental/ && pme2go-backup list")
	m.Run("pme2go-backup restore --target-name before-cleanup --target-db app_before_cleanup")
	if got := psql("app_before_cleanup", sum); got != atMark {
		t.Fatalf("restored to the mark: %s, the source at the mark: %s", got, atMark)
	}
	m.Run("pme2go-backup restore --latest --target-db app_latest")
	if got := psql("app_latest", sum); got != latest {
		t.Fatalf("restored to the latest transaction: %s, the source: %s", got, latest)
	}
	logf("restored databases equal the source: at the mark %q, latest %q", atMark, latest)
	m.Run("systemctl start pme2go-backup-cleanup.service && journalctl --no-pager -o cat -u pme2go-backup-cleanup.service | tail -n 5")

	// --- The password as a systemd credential ---------------------------
	// Over TCP the server asks for a password (scram-sha-256 in Debian's
	// pg_hba.conf); it comes from /etc/pme2go-backup/db-password, which only
	// root can read, through LoadCredential=. It never reaches the journal.
	const secret = "cr3d-Ential-7q"
	// Written from outside, so that no command line carries the password
	// (runuser logs its command line to the journal).
	m.WriteFile("/root/set-password.sql", "ALTER ROLE \"pme2go-backup\" PASSWORD '"+secret+"';\n", 0o600)
	m.WriteFile("/etc/pme2go-backup/db-password", secret+"\n", 0o600)
	m.Run(`runuser -u postgres -- psql -q </root/set-password.sql && rm /root/set-password.sql`)
	m.Run(`sed -i 's|^DB_HOST=.*|DB_HOST=127.0.0.1|' /etc/pme2go-backup/pme2go-backup.conf && ls -l /etc/pme2go-backup/`)
	m.Run("systemctl stop pme2go-backupd.service; systemctl start pme2go-backup-full.service && ls /var/lib/pme2go-backup/full/ | grep -c 'tar.xz$'")
	m.Run("journalctl --no-pager -o cat -u pme2go-backup-full.service -n 3")
	out = m.Run("journalctl --no-pager -o json | grep -F '" + secret + "' | cut -c1-2000 || true")
	if strings.Contains(out, secret) {
		t.Fatalf("the password is in the journal:\n%s", out)
	}

	// --- An upgrade keeps the administrator's choices ---------------------
	m.Run("systemctl disable --now pme2go-backup-drill.timer")
	out = m.Run("apt-get install -y --reinstall /root/" + filepath.Base(deb) + " 2>&1 | grep -v '^\\(Reading\\|Building\\)'; systemctl is-enabled pme2go-backup-drill.timer pme2go-backup-full.timer || true; grep -c '^DB_HOST=127.0.0.1' /etc/pme2go-backup/pme2go-backup.conf")
	mustMatch(t, out, `(?m)^disabled\nenabled\n1$`)
	if strings.Contains(out, "Could not execute systemctl") {
		t.Fatalf("the upgrade's maintainer script failed a systemctl call:\n%s", out)
	}
	m.Run("systemctl is-active pme2go-backupd.socket pme2go-backup-full.timer")

	// --- Removal keeps the archives --------------------------------------
	out = m.Run("apt-get remove -y pme2go-backup 2>&1 | grep -v '^\\(Reading\\|Building\\)'")
	mustContain(t, out, "backups in /var/lib/pme2go-backup are kept")
	out, _ = m.Try("systemctl is-active pme2go-backupd.socket pme2go-backupd.service pme2go-backup-full.timer")
	for _, line := range strings.Split(out, "\n") {
		if strings.TrimSpace(line) == "active" {
			t.Fatalf("units still active after removal:\n%s", out)
		}
	}
	out = m.Run("systemctl list-timers --no-pager 'pme2go-backup-*'; ls /var/lib/pme2go-backup/full/ /var/lib/pme2go-backup/incremental/")
	mustContain(t, out, "0 timers listed", ".tar.xz")
	out = m.Run("dpkg --purge pme2go-backup")
	mustContain(t, out, "NOT deleted", "/var/lib/pme2go-backup holds")
	out = m.Run("ls /var/lib/pme2go-backup/full/ | grep -c 'tar.xz$'; test ! -e /usr/bin/pme2go-backup && echo binaries gone")
	mustContain(t, out, "binaries gone")
	logf("done in %s", time.Since(start).Round(time.Second))
}

// restAPI drives the REST API through the socket the way an operator or the
// seed's application would: the first request starts the daemon (socket
// activation), a member of the group starts a backup and follows its job
// while an event stream watches, /metrics is scraped, and a user outside
// the group is refused.
func restAPI(t *testing.T, m *Machine) {
	t.Helper()
	const curl = "curl -sS --max-time 30 --unix-socket /run/pme2go-backup/api.sock "
	const url = "http://localhost/api/admin/system/backups"
	out := m.Run("systemctl stop pme2go-backupd.service; systemctl is-active pme2go-backupd.service || true")
	mustContain(t, out, "inactive")
	out = m.Run(curl + url + "/status; echo; systemctl is-active pme2go-backupd.service")
	mustContain(t, out, `"state"`, `"lastFullBackup": "/var/lib/pme2go-backup/full/full_backup_`, "\nactive")
	out = m.Run(curl + url + " | head -c 600")
	mustContain(t, out, `"backups"`, `"type": "full"`)

	// An event stream (server-sent events) while bob starts a backup.
	m.Run("setsid -f runuser -u bob -- timeout 300 curl -sS -N --unix-socket /run/pme2go-backup/api.sock -H 'Accept: text/event-stream' " +
		url + "/events >/root/events.txt 2>&1 </dev/null; sleep 1")
	out = m.Run("runuser -u bob -- " + curl + "-D - -d '{\"type\": \"full\", \"compress\": true}' " + url + "/create")
	mustContain(t, out, "HTTP/1.1 202", "Location: /api/admin/system/backups/jobs/")
	loc := regexp.MustCompile(`Location: (\S+)`).FindStringSubmatch(out)[1]
	out = m.Run(`for i in $(seq 240); do s=$(` + curl + `http://localhost` + loc + `); case "$s" in *'"state": "running"'*) sleep 0.5;; *) echo "$s"; break;; esac; done`)
	mustContain(t, out, `"state": "succeeded"`, `"backupPath": "/var/lib/pme2go-backup/full/full_backup_`)
	out = m.Run("sleep 1; cat /root/events.txt")
	mustContain(t, out, "event: backup_started", "event: backup_completed", `"backupType":"full"`)
	out = m.Run(curl + "http://localhost/metrics | grep '^pme2go_backup_\\(last_success\\|failures_total\\|jobs_running\\)'")
	mustContain(t, out, `pme2go_backup_last_success_timestamp_seconds{database="app",kind="full"}`)

	// alice is not in the group: the socket's mode (0660) keeps her out.
	out, err := m.Try("runuser -u alice -- " + curl + url + "/status")
	if err == nil && !strings.Contains(out, "error") {
		t.Fatalf("a user outside the group reached the REST API:\n%s", out)
	}
}

// drill runs the restore drill from its timer's service, as the timer
// would, and checks that status, list and the daemon's properties show it
// and that no scratch database is left.
func drill(t *testing.T, m *Machine) {
	t.Helper()
	out := m.Run("pme2go-backup verify")
	mustContain(t, out, "OK\t/var/lib/pme2go-backup/full/full_backup_")
	m.Run("systemctl start pme2go-backup-drill.service")
	out = m.Run("journalctl --no-pager -o cat -u pme2go-backup-drill.service | grep -v '%' | tail -n 20")
	mustContain(t, out, "OK app: full_backup_", "indexes checked by amcheck", "dropped")
	out = m.Run("pme2go-backup status | grep -A1 'Last drill'; pme2go-backup list | grep 'restore drill'")
	mustContain(t, out, "Last drill:       OK", "restore drill", "passed")
	out = m.Run("busctl --no-pager get-property org.pme2go.Backup1 /org/pme2go/Backup1 org.pme2go.Backup1.Manager LastDrillOK LastDrillDatabases LastDrillDuration")
	mustContain(t, out, "b true", `s "app"`)
	out = m.Run(`stat -c '%a %U %n' /var/lib/pme2go-backup/state/drill.json; runuser -u postgres -- psql -XAtqc "SELECT count(*) FROM pg_database WHERE datname LIKE 'pme2go_drill%'"`)
	mustContain(t, out, "600 pme2go-backup /var/lib/pme2go-backup/state/drill.json", "\n0")
}

// repoHas reports whether a Go file under dir of the work tree contains s.
func repoHas(dir, s string) bool {
	files, _ := filepath.Glob(filepath.Join(root, dir, "*.go"))
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err == nil && strings.Contains(string(data), s) {
			return true
		}
	}
	return false
}

func mustContain(t *testing.T, out string, wants ...string) {
	t.Helper()
	for _, w := range wants {
		if !strings.Contains(out, w) {
			t.Fatalf("output lacks %q:\n%s", w, out)
		}
	}
}

func mustMatch(t *testing.T, out, re string) {
	t.Helper()
	if !regexp.MustCompile(re).MatchString(out) {
		t.Fatalf("output does not match %s:\n%s", re, out)
	}
}

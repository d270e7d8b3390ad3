// Package manpages checks the manual pages in man/: `mandoc -T lint` reports
// nothing for any of them, every configuration key (engine/config.Keys) has
// an entry in pme2go-backup.conf(5), every command and flag of the CLI (read
// from the built program's own --help output, so that new flags are caught)
// has one in pme2go-backup(1), and every flag of the daemon in
// pme2go-backupd(8).
//
// mandoc comes from tests/install-deps.sh; without it the lint test skips
// (pgharness.Require), or fails under PME2GO_TEST_REQUIRE=all.
package manpages

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"

	"github.com/pme2go/pme2go-backup/engine/config"
	"github.com/pme2go/pme2go-backup/tests/pgharness"
)

const root = "../.."

func pages(t *testing.T) []string {
	t.Helper()
	m, err := filepath.Glob(filepath.Join(root, "man/*.[1-8]"))
	if err != nil || len(m) == 0 {
		t.Fatalf("no man pages in man/: %v", err)
	}
	return m
}

// TestLint requires `mandoc -T lint` (every level, style included) to report
// nothing on each page.
func TestLint(t *testing.T) {
	mandoc, err := exec.LookPath("mandoc")
	if err != nil {
		pgharness.Require(t, "mandoc", "mandoc not on PATH (Debian package mandoc)")
	}
	for _, p := range pages(t) {
		out, err := exec.Command(mandoc, "-T", "lint", p).CombinedOutput()
		if err != nil || len(strings.TrimSpace(string(out))) > 0 {
			t.Errorf("mandoc -T lint %s: %v\n%s", filepath.Base(p), err, out)
		}
	}
}

// text returns a page's source with hyphens unescaped and font escapes
// removed, so that flags read as typed ("--target-db").
func text(t *testing.T, name string) string {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(root, "man", name))
	if err != nil {
		t.Fatal(err)
	}
	s := strings.ReplaceAll(string(data), `\-`, "-")
	s = regexp.MustCompile(`\\f[BIRP]|\\f\[[A-Z]*\]|\\&`).ReplaceAllString(s, "")
	return s
}

// TestConfigKeys requires an entry (a tagged paragraph naming the key) in
// pme2go-backup.conf(5) for every configuration key.
func TestConfigKeys(t *testing.T) {
	s := text(t, "pme2go-backup.conf.5")
	for _, k := range config.Keys {
		re := regexp.MustCompile(`(?m)^\.T[PQ]\n\.(B|BR|BI|IR|I) "?` + regexp.QuoteMeta(k.Name) + `\b`)
		if !re.MatchString(s) {
			t.Errorf("configuration key %s has no entry (.TP then .B %s) in pme2go-backup.conf(5)", k.Name, k.Name)
		}
	}
}

var (
	buildOnce sync.Once
	binDir    string
	buildErr  error
	buildOut  []byte
)

// program builds the named command of cmd/ once and returns its path.
func program(t *testing.T, name string) string {
	t.Helper()
	buildOnce.Do(func() {
		binDir, buildErr = os.MkdirTemp("", "pme2go-manpages-")
		if buildErr != nil {
			return
		}
		cmd := exec.Command("go", "build", "-o", binDir+"/", "./cmd/...")
		cmd.Dir = root
		buildOut, buildErr = cmd.CombinedOutput()
	})
	if buildErr != nil {
		t.Fatalf("go build ./cmd/...: %v\n%s", buildErr, buildOut)
	}
	return filepath.Join(binDir, name)
}

func TestMain(m *testing.M) {
	code := m.Run()
	if binDir != "" {
		os.RemoveAll(binDir)
	}
	os.Exit(code)
}

var flagRE = regexp.MustCompile(`^\s+(--[a-z0-9][a-z0-9-]*)`)

// helpSection returns the lines of an urfave/cli help text's section
// (COMMANDS:, OPTIONS:, GLOBAL OPTIONS:).
func helpSection(help, title string) []string {
	var lines []string
	in := false
	for _, line := range strings.Split(help, "\n") {
		if strings.TrimSpace(line) == "" {
			continue
		}
		if !strings.HasPrefix(line, " ") {
			in = strings.TrimSpace(line) == title
			continue
		}
		if in {
			lines = append(lines, line)
		}
	}
	return lines
}

func helpFlags(help, title string) []string {
	var flags []string
	for _, line := range helpSection(help, title) {
		if m := flagRE.FindStringSubmatch(line); m != nil && m[1] != "--help" && m[1] != "--version" {
			flags = append(flags, m[1])
		}
	}
	return flags
}

// mentions reports whether s names flag as a whole word.
func mentions(s, flag string) bool {
	return regexp.MustCompile(regexp.QuoteMeta(flag) + `([^a-z0-9-]|$)`).MatchString(s)
}

// commandSections splits the COMMANDS section of pme2go-backup(1) into the
// entry of each command: from its tagged paragraph (.TP then .B NAME) to the
// next command's.
func commandSections(s string, commands []string) map[string]string {
	start := strings.Index(s, "\n.SH COMMANDS")
	if start < 0 {
		return nil
	}
	body := s[start+1:]
	if end := strings.Index(body[4:], "\n.SH "); end >= 0 {
		body = body[:end+4]
	}
	is := map[string]bool{}
	for _, c := range commands {
		is[c] = true
	}
	lines := strings.Split(body, "\n")
	sections := map[string]string{}
	cur := ""
	for i, line := range lines {
		if i > 0 && (lines[i-1] == ".TP" || lines[i-1] == ".TQ") && strings.HasPrefix(line, ".B") {
			f := strings.Fields(strings.Trim(line, `"`))
			if len(f) > 1 && is[strings.Trim(f[1], `"`)] {
				cur = strings.Trim(f[1], `"`)
			}
		}
		if cur != "" {
			sections[cur] += line + "\n"
		}
	}
	return sections
}

// TestCLIFlags requires an entry in pme2go-backup(1) for every command of
// the CLI and, within that command's entry, every one of its flags; the
// global flags anywhere in the page. Commands and flags come from the
// program's --help output.
func TestCLIFlags(t *testing.T) {
	cli := program(t, "pme2go-backup")
	out, err := exec.Command(cli, "--help").CombinedOutput()
	if err != nil {
		t.Fatalf("pme2go-backup --help: %v\n%s", err, out)
	}
	help := string(out)
	var commands []string
	for _, line := range helpSection(help, "COMMANDS:") {
		name := strings.TrimSuffix(strings.Fields(line)[0], ",")
		if name != "help" {
			commands = append(commands, name)
		}
	}
	if len(commands) < 5 {
		t.Fatalf("too few commands read from --help:\n%s", help)
	}
	page := text(t, "pme2go-backup.1")
	global := helpFlags(help, "GLOBAL OPTIONS:")
	for _, f := range global {
		if !mentions(page, f) {
			t.Errorf("global flag %s has no entry in pme2go-backup(1)", f)
		}
	}
	isGlobal := map[string]bool{}
	for _, f := range global {
		isGlobal[f] = true
	}
	sections := commandSections(page, commands)
	for _, c := range commands {
		sec, ok := sections[c]
		if !ok {
			t.Errorf("command %s has no entry (.TP then .B %s) under COMMANDS in pme2go-backup(1)", c, c)
			continue
		}
		out, err := exec.Command(cli, c, "--help").CombinedOutput()
		if err != nil {
			t.Errorf("pme2go-backup %s --help: %v\n%s", c, err, out)
			continue
		}
		for _, f := range helpFlags(string(out), "OPTIONS:") {
			if isGlobal[f] {
				continue
			}
			if !mentions(sec, f) {
				t.Errorf("flag %s of command %s has no entry in that command's part of pme2go-backup(1)", f, c)
			}
		}
	}
}

// TestDaemonFlags requires an entry in pme2go-backupd(8) for every flag of
// the daemon (Go flag package: "-name" lines of its -help output). The page
// is the daemon's (issue 9); while it does not exist that is logged.
func TestDaemonFlags(t *testing.T) {
	if _, err := os.Stat(filepath.Join(root, "cmd/pme2go-backupd")); err != nil {
		t.Fatal("no cmd/pme2go-backupd")
	}
	d := program(t, "pme2go-backupd")
	out, _ := exec.Command(d, "-help").CombinedOutput()
	var flags []string
	for _, m := range regexp.MustCompile(`(?m)^  -([a-z0-9][a-z0-9-]*)`).FindAllStringSubmatch(string(out), -1) {
		flags = append(flags, "--"+m[1])
	}
	if len(flags) == 0 {
		t.Fatalf("no flags read from pme2go-backupd -help:\n%s", out)
	}
	if _, err := os.Stat(filepath.Join(root, "man/pme2go-backupd.8")); err != nil {
		t.Logf("man/pme2go-backupd.8 not written yet (the daemon's page); its flags: %v", flags)
		return
	}
	page := text(t, "pme2go-backupd.8")
	for _, f := range flags {
		if !mentions(page, f) && !mentions(page, f[1:]) {
			t.Errorf("daemon flag %s has no entry in pme2go-backupd(8)", f)
		}
	}
}

package pgharness

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// EnvRequire names the environment variable listing requirements that must
// be present: "all" or a comma separated list of names given to Require.
const EnvRequire = "PME2GO_TEST_REQUIRE"

// requireMode reports whether a missing requirement named what must fail the
// test (true) rather than skip it (false), according to PME2GO_TEST_REQUIRE.
func requireMode(what string) bool {
	v := strings.TrimSpace(os.Getenv(EnvRequire))
	if v == "" {
		return false
	}
	for _, item := range strings.Split(v, ",") {
		item = strings.TrimSpace(item)
		if strings.EqualFold(item, "all") || (item != "" && item == what) {
			return true
		}
	}
	return false
}

// Require reports that the requirement what is unavailable. The test fails
// with reason when PME2GO_TEST_REQUIRE is "all" or lists what; otherwise it
// is skipped.
func Require(t testing.TB, what, reason string) {
	t.Helper()
	if requireMode(what) {
		t.Fatalf("required %q unavailable: %s", what, reason)
		return
	}
	t.Skipf("skipping: %q unavailable: %s (set %s=%s to fail instead)", what, reason, EnvRequire, what)
}

// LookTool returns the path of the executable name. The PostgreSQL bin
// directory is searched first (so client tools match the server version),
// then PATH. When the tool is not found, Require(t, name, ...) is called.
func LookTool(t testing.TB, name string) string {
	t.Helper()
	if dir, err := BinDir(); err == nil {
		p := filepath.Join(dir, name)
		if isExecutable(p) {
			return p
		}
	}
	if p, err := exec.LookPath(name); err == nil {
		return p
	}
	Require(t, name, name+" not found in the PostgreSQL bin directory or PATH")
	return ""
}

// isExecutable reports whether path is a regular file with an execute bit.
func isExecutable(path string) bool {
	fi, err := os.Stat(path)
	return err == nil && fi.Mode().IsRegular() && fi.Mode().Perm()&0o111 != 0
}

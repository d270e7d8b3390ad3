package pgharness

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"
)

// EnvNoTemplate disables the cached template data directory when set to 1.
const EnvNoTemplate = "PME2GO_TEST_NO_TEMPLATE"

// templateMu serialises template creation inside one test binary; separate
// binaries race safely through an atomic rename.
var templateMu sync.Mutex

// initdb runs initdb for dataDir as o, preferring the C.UTF-8 locale and
// falling back to C when it is unavailable. It returns the locale used.
func initdb(o *owner, binDir, workDir, dataDir string) (string, error) {
	var firstErr error
	for _, loc := range []string{"C.UTF-8", "C"} {
		err := o.run(workDir, filepath.Join(binDir, "initdb"),
			"-D", dataDir, "-U", "postgres", "--auth-local=trust",
			"--auth-host=scram-sha-256", "-E", "UTF8", "--locale="+loc,
			"--no-sync", "--no-instructions")
		if err == nil {
			return loc, nil
		}
		if firstErr == nil {
			firstErr = err
		}
		os.RemoveAll(dataDir)
	}
	return "", fmt.Errorf("initdb: %w", firstErr)
}

// templateDir returns a cached, pristine data directory produced by initdb
// for binDir, creating it on first use. The cache lives in os.TempDir(),
// keyed by bin directory, initdb version and owner, and is shared by test
// binaries; it is never modified after creation.
func templateDir(o *owner, binDir string) (string, error) {
	templateMu.Lock()
	defer templateMu.Unlock()
	ver, err := exec.Command(filepath.Join(binDir, "initdb"), "--version").Output()
	if err != nil {
		return "", fmt.Errorf("initdb --version: %w", err)
	}
	uid := os.Geteuid()
	if o != nil {
		uid = o.uid
	}
	sum := sha256.Sum256([]byte(fmt.Sprintf("%s\x00%s\x00%d\x00v1", binDir, ver, uid)))
	final := filepath.Join(os.TempDir(), "pgharness-tpl-"+hex.EncodeToString(sum[:6]))
	if templateUsable(final, uid) {
		return filepath.Join(final, "data"), nil
	}
	build, err := o.ownerDir("pgharness-tplbuild-*", 0o755)
	if err != nil {
		return "", err
	}
	if _, err := initdb(o, binDir, build, filepath.Join(build, "data")); err != nil {
		os.RemoveAll(build)
		return "", err
	}
	if err := o.writeFile(filepath.Join(build, "ok"), []byte("ok\n")); err != nil {
		os.RemoveAll(build)
		return "", err
	}
	if err := os.Rename(build, final); err != nil {
		os.RemoveAll(build)
		if !templateUsable(final, uid) {
			return "", fmt.Errorf("install template %s: %w", final, err)
		}
	}
	return filepath.Join(final, "data"), nil
}

// templateUsable reports whether dir is a completed template owned by uid.
func templateUsable(dir string, uid int) bool {
	fi, err := os.Stat(filepath.Join(dir, "ok"))
	if err != nil {
		return false
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok || int(st.Uid) != uid {
		return false
	}
	_, err = os.Stat(filepath.Join(dir, "data", "PG_VERSION"))
	return err == nil
}

// newDataDir fills dataDir with a fresh cluster: a copy of the cached
// template, or a direct initdb when templates are disabled or fail.
func newDataDir(o *owner, binDir, workDir, dataDir string) error {
	if os.Getenv(EnvNoTemplate) != "1" {
		tpl, err := templateDir(o, binDir)
		if err == nil {
			err = o.run(workDir, "cp", "-a", tpl, dataDir)
			if err == nil {
				return nil
			}
			os.RemoveAll(dataDir)
		}
	}
	_, err := initdb(o, binDir, workDir, dataDir)
	return err
}

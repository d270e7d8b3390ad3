package integration

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"testing"
)

// cliBin is the pme2go-backup binary built once for the package's tests;
// emptyConf an empty configuration file beside it, so that only the
// environment configures each run.
var cliBin, emptyConf string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "pme2go-cli-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	os.Chmod(dir, 0o755) // tests also run the CLI as an unprivileged user
	cliBin = filepath.Join(dir, "pme2go-backup")
	emptyConf = filepath.Join(dir, "empty.conf")
	os.WriteFile(emptyConf, nil, 0o644)
	out, err := exec.Command("go", "build", "-o", cliBin, "github.com/pme2go/pme2go-backup/cmd/pme2go-backup").CombinedOutput()
	if err != nil {
		fmt.Fprintf(os.Stderr, "build CLI: %v\n%s", err, out)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// cliResult is one CLI run.
type cliResult struct {
	stdout, stderr string
	code           int
}

// runCLI runs the CLI with the configuration environment env and args.
func runCLI(t *testing.T, env map[string]string, args ...string) cliResult {
	t.Helper()
	cmd := cliCmd(env, args...)
	var so, se bytes.Buffer
	cmd.Stdout, cmd.Stderr = &so, &se
	err := cmd.Run()
	r := cliResult{stdout: so.String(), stderr: se.String()}
	if ee, ok := err.(*exec.ExitError); ok {
		r.code = ee.ExitCode()
	} else if err != nil {
		t.Fatalf("run %v: %v", args, err)
	}
	return r
}

func cliCmd(env map[string]string, args ...string) *exec.Cmd {
	cmd := exec.Command(cliBin, append([]string{"--config", emptyConf}, args...)...)
	cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "HOME=" + os.Getenv("HOME"), "PME2GO_DIRECT=1"}
	keys := make([]string, 0, len(env))
	for k := range env {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		cmd.Env = append(cmd.Env, k+"="+env[k])
	}
	return cmd
}

package pgharness

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
)

// EnvBinDir names the environment variable overriding the PostgreSQL server
// bin directory.
const EnvBinDir = "PME2GO_PG_BINDIR"

// ErrNoPostgres is returned by BinDir when no PostgreSQL server installation
// (a directory containing initdb) can be found.
var ErrNoPostgres = errors.New("PostgreSQL server (initdb) not found")

// BinDir returns the PostgreSQL server bin directory: $PME2GO_PG_BINDIR, else
// `pg_config --bindir` when it contains initdb, else the highest-versioned
// /usr/lib/postgresql/*/bin containing initdb, else the directory of initdb
// found on PATH (symlinks resolved).
func BinDir() (string, error) {
	if dir := os.Getenv(EnvBinDir); dir != "" {
		if !isExecutable(filepath.Join(dir, "initdb")) {
			return "", fmt.Errorf("%s=%s: no initdb there: %w", EnvBinDir, dir, ErrNoPostgres)
		}
		return dir, nil
	}
	if out, err := exec.Command("pg_config", "--bindir").Output(); err == nil {
		dir := strings.TrimSpace(string(out))
		if dir != "" && isExecutable(filepath.Join(dir, "initdb")) {
			return dir, nil
		}
	}
	if dir := highestDebianBinDir(); dir != "" {
		return dir, nil
	}
	if p, err := exec.LookPath("initdb"); err == nil {
		if real, err := filepath.EvalSymlinks(p); err == nil {
			p = real
		}
		return filepath.Dir(p), nil
	}
	return "", ErrNoPostgres
}

// highestDebianBinDir returns the /usr/lib/postgresql/<version>/bin directory
// with the highest numeric version that contains initdb, or "".
func highestDebianBinDir() string {
	matches, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	type cand struct {
		dir string
		ver float64
	}
	var cands []cand
	for _, m := range matches {
		if !isExecutable(filepath.Join(m, "initdb")) {
			continue
		}
		v, err := strconv.ParseFloat(filepath.Base(filepath.Dir(m)), 64)
		if err != nil {
			v = -1
		}
		cands = append(cands, cand{m, v})
	}
	if len(cands) == 0 {
		return ""
	}
	sort.Slice(cands, func(i, j int) bool { return cands[i].ver > cands[j].ver })
	return cands[0].dir
}

package pgclient

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
)

// Tool is a located PostgreSQL client program with its version.
type Tool struct {
	Name    string
	Path    string
	Version string // as printed, e.g. "15.18"
	Major   int
}

// FindTool locates a client program (pg_dump, pg_restore, pg_dumpall, psql).
// binDir, when set, is the only place looked at. Otherwise the Debian/RPM
// layout for the server's major version is preferred
// (/usr/lib/postgresql/<major>/bin, /usr/pgsql-<major>/bin), then the newest
// such directory, then PATH. The error says how to install the program.
func FindTool(ctx context.Context, name, binDir string, serverMajor int) (*Tool, error) {
	var candidates []string
	if binDir != "" {
		candidates = []string{filepath.Join(binDir, name)}
	} else {
		if serverMajor > 0 {
			candidates = append(candidates,
				fmt.Sprintf("/usr/lib/postgresql/%d/bin/%s", serverMajor, name),
				fmt.Sprintf("/usr/pgsql-%d/bin/%s", serverMajor, name))
		}
		dirs, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
		sort.Slice(dirs, func(i, j int) bool { return versionOf(dirs[i]) > versionOf(dirs[j]) })
		for _, d := range dirs {
			candidates = append(candidates, filepath.Join(d, name))
		}
		if p, err := exec.LookPath(name); err == nil {
			candidates = append(candidates, p)
		}
	}
	for _, c := range candidates {
		if st, err := os.Stat(c); err == nil && !st.IsDir() && st.Mode()&0o111 != 0 {
			return probe(ctx, name, c)
		}
	}
	if binDir != "" {
		return nil, fmt.Errorf("%s not found in PG_BINDIR %s; fix PG_BINDIR or install the PostgreSQL client", name, binDir)
	}
	return nil, fmt.Errorf("%s not found; install the PostgreSQL client (apt-get install postgresql-client) or set PG_BINDIR", name)
}

func versionOf(dir string) int {
	n, _ := strconv.Atoi(filepath.Base(filepath.Dir(dir)))
	return n
}

var versionRe = regexp.MustCompile(`\(PostgreSQL\) (\d+)(?:\.(\d+))?`)

func probe(ctx context.Context, name, path string) (*Tool, error) {
	out, err := exec.CommandContext(ctx, path, "--version").Output()
	if err != nil {
		return nil, fmt.Errorf("run %s --version: %w", path, err)
	}
	m := versionRe.FindStringSubmatch(string(out))
	if m == nil {
		return nil, fmt.Errorf("%s --version printed %q, not a PostgreSQL version", path, strings.TrimSpace(string(out)))
	}
	major, _ := strconv.Atoi(m[1])
	v := m[1]
	if m[2] != "" {
		v += "." + m[2]
	}
	return &Tool{Name: name, Path: path, Version: v, Major: major}, nil
}

// CheckCompatible reports whether the tool can dump a server of serverMajor:
// pg_dump must be at least as new as the server.
func (t *Tool) CheckCompatible(serverMajor int) error {
	if t.Major < serverMajor {
		return fmt.Errorf("%s %s is older than the server (major %d); install postgresql-client-%d or set PG_BINDIR", t.Path, t.Version, serverMajor, serverMajor)
	}
	return nil
}

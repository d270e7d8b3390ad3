package integration

import (
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/pme2go/pme2go-backup/tests/pgharness"
)

// TestRecoverWithStandardToolsOnly opens a default (xz) archive with tar and
// restores it with pg_restore, as an operator would without this program.
func TestRecoverWithStandardToolsOnly(t *testing.T) {
	tarBin := pgharness.LookTool(t, "tar")
	pgharness.LookTool(t, "xz")
	c := pgharness.Start(t)
	c.CreateDB(t, "src")
	pgharness.LoadAwkward(t, c, "src")
	env := cfgEnv(t, c, []string{"src"})
	path := takeBackup(t, env)
	dir := t.TempDir()
	if out, err := exec.Command(tarBin, "-xJf", path, "-C", dir).CombinedOutput(); err != nil {
		t.Fatalf("tar -xJf: %v\n%s", err, out)
	}
	for _, f := range []string{"manifest.json", "globals.sql", "system_info.json", "application_data.json", "database/src/toc.dat"} {
		if _, err := os.Stat(filepath.Join(dir, f)); err != nil {
			t.Errorf("archive lacks %s: %v", f, err)
		}
	}
	c.CreateDB(t, "by_hand")
	cmd := exec.Command(c.Bin("pg_restore"), "-j", "2", "-d", "by_hand", filepath.Join(dir, "database", "src"))
	cmd.Env = append(os.Environ(), c.Env("by_hand")...)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("pg_restore: %v\n%s", err, out)
	}
	pgharness.CompareDatabases(t, c, "src", "by_hand")
}

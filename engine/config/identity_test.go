package config

import (
	"os"
	"path/filepath"
	"sync"
	"testing"
)

func TestInstallationID(t *testing.T) {
	dir := t.TempDir()
	cfg := &Config{BackupDir: dir}
	var wg sync.WaitGroup
	ids := make([]string, 8)
	for i := range ids {
		wg.Add(1)
		go func() {
			defer wg.Done()
			id, err := InstallationID(cfg)
			if err != nil {
				t.Error(err)
			}
			ids[i] = id
		}()
	}
	wg.Wait()
	for _, id := range ids {
		if id != ids[0] || len(id) != 32 {
			t.Fatalf("ids differ or bad: %q", ids)
		}
	}
	fi, err := os.Stat(filepath.Join(dir, "state", InstallationIDFile))
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("file: %v %v", fi, err)
	}
	if s, _ := InstallationShortID(cfg); s != ids[0][:8] {
		t.Fatal(s)
	}
	other, _ := InstallationID(&Config{BackupDir: t.TempDir()})
	if other == ids[0] {
		t.Fatal("two installations share an identity")
	}
	os.WriteFile(filepath.Join(dir, "state", InstallationIDFile), []byte("garbage\n"), 0o600)
	if _, err := InstallationID(cfg); err == nil {
		t.Fatal("damaged identity accepted")
	}
}

package offsite

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pme2go/pme2go-backup/engine/archive"
	"github.com/pme2go/pme2go-backup/engine/catalog"
	"github.com/pme2go/pme2go-backup/engine/config"
)

func load(t *testing.T, vars map[string]string) *config.Config {
	t.Helper()
	p := filepath.Join(t.TempDir(), "c.conf")
	os.WriteFile(p, nil, 0o600)
	cfg, err := config.Load(p, func(k string) (string, bool) { v, ok := vars[k]; return v, ok })
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

func TestParse(t *testing.T) {
	if _, err := Parse(load(t, nil)); err != ErrNotConfigured {
		t.Fatalf("no OFFSITE_URL: %v", err)
	}
	s, err := Parse(load(t, map[string]string{"OFFSITE_URL": "s3://AK:SECRET@bkt/a/b/", "BACKUP_RETENTION_DAYS": "12",
		"OFFSITE_ENDPOINT": "http://127.0.0.1:9000"}))
	if err != nil {
		t.Fatal(err)
	}
	if s.Bucket != "bkt" || s.Prefix != "a/b" || s.key("full/x") != "a/b/full/x" || s.rel("a/b/full/x") != "full/x" {
		t.Fatalf("bucket/prefix: %+v", s)
	}
	if s.RetentionDays != 12 || s.LocalRetentionDays != -1 || s.SyncInterval != 10*time.Second || s.Checksum != "auto" {
		t.Fatalf("defaults: %+v", s)
	}
	if s.urlUser != "AK" || s.urlSecret != "SECRET" || strings.Contains(s.String(), "SECRET") {
		t.Fatalf("credentials in URL: %q %q, String %q", s.urlUser, s.urlSecret, s.String())
	}
	s, _ = Parse(load(t, map[string]string{"OFFSITE_URL": "s3://bkt", "OFFSITE_RETENTION_DAYS": "0", "LOCAL_RETENTION_DAYS": "3", "OFFSITE_SYNC_INTERVAL": "2"}))
	if s.Prefix != "" || s.key("x") != "x" || s.RetentionDays != 0 || s.LocalRetentionDays != 3 || s.SyncInterval != 2*time.Second {
		t.Fatalf("explicit settings: %+v", s)
	}
	// A credentials file readable by others draws a warning.
	f := filepath.Join(t.TempDir(), "cred")
	os.WriteFile(f, []byte("[default]\naws_access_key_id = a\naws_secret_access_key = b\n"), 0o644)
	s, _ = Parse(load(t, map[string]string{"OFFSITE_URL": "s3://bkt", "OFFSITE_CREDENTIALS_FILE": f}))
	if _, err := s.credentials(); err != nil || len(s.Warnings) != 1 {
		t.Fatalf("credentials file 0644: %v %v", err, s.Warnings)
	}
	os.WriteFile(f, []byte("nothing here\n"), 0o600)
	if _, err := s.credentials(); err == nil {
		t.Fatal("a credentials file without a key was accepted")
	}
}

func TestChunkRange(t *testing.T) {
	o, n, err := chunkRange("stream/c/0000000000000100.changes/17f/0000000000000010-0000000000000020.age")
	if err != nil || o != 16 || n != 32 {
		t.Fatalf("%d %d %v", o, n, err)
	}
	if _, _, err := chunkRange("stream/c/seg/gen/0000000000000010"); err == nil {
		t.Fatal("a name without length was accepted")
	}
}

// TestNewestChain: --latest needs the newest full backup, the newest one
// that started a chain and that chain's incrementals, nothing older.
func TestNewestChain(t *testing.T) {
	now := time.Now()
	b := func(name, typ, chain string, age time.Duration) catalog.Backup {
		return catalog.Backup{Name: name, Type: archive.Kind(typ), Timestamp: now.Add(-age),
			Manifest: &archive.Manifest{Type: archive.Kind(typ), Databases: []string{"app"}, ChainID: chain}}
	}
	local := []catalog.Backup{b("f1", "full", "c1", 9*time.Hour), b("i1", "incremental", "c1", 8*time.Hour)}
	remotes := []Remote{{Backup: b("f2", "full", "c2", 5*time.Hour)}, {Backup: b("i2", "incremental", "c2", 4*time.Hour)},
		{Backup: b("f3", "full", "", time.Hour)}}
	got := newestChain(local, remotes, "app")
	for name, want := range map[string]bool{"f1": false, "i1": false, "f2": true, "i2": true, "f3": true} {
		if got[name] != want {
			t.Errorf("%s: needed=%v, want %v", name, got[name], want)
		}
	}
}

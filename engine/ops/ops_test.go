package ops

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pme2go/pme2go-backup/engine/archive"
	"github.com/pme2go/pme2go-backup/engine/config"
	"github.com/pme2go/pme2go-backup/engine/errs"
)

// testConfig is a configuration with BACKUP_DIR in a temporary directory
// and a server nobody listens on (these tests need no PostgreSQL).
func testConfig(t *testing.T) *config.Config {
	t.Helper()
	dir := t.TempDir()
	conf := filepath.Join(dir, "test.conf")
	os.WriteFile(conf, nil, 0o600)
	env := map[string]string{"BACKUP_DIR": filepath.Join(dir, "backups"), "DB_NAME": "app", "DB_HOST": "127.0.0.1", "DB_PORT": "1"}
	cfg, err := config.Load(conf, func(k string) (string, bool) { v, ok := env[k]; return v, ok })
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

// writeFull writes a small full-backup archive with its sidecar.
func writeFull(t *testing.T, cfg *config.Config, name string, m *archive.Manifest) string {
	t.Helper()
	p := filepath.Join(cfg.FullDir(), name+".tar.xz")
	os.MkdirAll(cfg.FullDir(), 0o700)
	w, err := archive.Create(p, archive.WriterOptions{Level: 1, Workers: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Abort()
	if err := w.AddBytes("globals.sql", []byte("-- none\n")); err != nil {
		t.Fatal(err)
	}
	if err := w.Commit(m); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestListAndVerifyResults(t *testing.T) {
	cfg := testConfig(t)
	ctx := context.Background()
	ts := time.Date(2026, 11, 29, 2, 0, 0, 0, time.UTC)
	good := writeFull(t, cfg, "full_backup_2026-11-29T02-00-00-000Z", &archive.Manifest{Type: "full", Timestamp: ts, Version: "t",
		Files: map[string]string{}, Databases: []string{"app"}, StartLSN: "16/B374D848", Warnings: []string{"wal_level is replica"},
		Metadata: map[string]any{"trigger": "safety"}})
	bad := writeFull(t, cfg, "full_backup_2026-11-29T03-00-00-000Z", &archive.Manifest{Type: "full", Timestamp: ts.Add(time.Hour), Version: "t",
		Files: map[string]string{}, Databases: []string{"app"}, Metadata: map[string]any{}})
	data, _ := os.ReadFile(bad)
	data[len(data)/2] ^= 0x40
	os.WriteFile(bad, data, 0o600)

	list, err := List(ctx, cfg, ListOptions{}, nil)
	if err != nil || len(list) != 2 {
		t.Fatalf("List: %v %+v", err, list)
	}
	if !list[0].Safety || list[0].Trigger != "safety" || list[0].StartLSN.String() != "16/B374D848" || len(list[0].Warnings) != 1 {
		t.Fatalf("List[0]: %+v", list[0])
	}
	b, _ := json.Marshal(list)
	for _, want := range []string{`"startLsn":"16/B374D848"`, `"safety":true`, `"warnings":["wal_level is replica"]`, `"warnings":[]`, `"timestamp":"2026-11-29T02:00:00Z"`} {
		if !bytes.Contains(b, []byte(want)) {
			t.Errorf("list JSON lacks %s:\n%s", want, b)
		}
	}

	res, err := Verify(ctx, cfg, VerifyOptions{}, nil)
	if !errors.Is(err, ErrVerifyFailed) || res == nil || res.Failed != 1 || len(res.Archives) != 2 {
		t.Fatalf("Verify: %v %+v", err, res)
	}
	if !res.Archives[0].OK || res.Archives[1].OK || len(res.Archives[1].Problems) == 0 {
		t.Fatalf("Verify archives: %+v", res.Archives)
	}
	if _, err := Verify(ctx, cfg, VerifyOptions{Backups: []string{filepath.Base(good)}}, nil); err != nil {
		t.Fatalf("Verify of the sound archive by name: %v", err)
	}
	if _, err := Verify(ctx, cfg, VerifyOptions{Backups: []string{"no_such_backup"}}, nil); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Verify of an unknown name: %v", err)
	}
}

func TestUsageErrors(t *testing.T) {
	cfg := testConfig(t)
	ctx := context.Background()
	for name, err := range map[string]error{
		"mark without name":         second(Mark(ctx, cfg, MarkOptions{}, nil)),
		"show-changes without file": second(ShowChanges(ctx, cfg, ShowChangesOptions{}, nil)),
		"restore without backup":    second(Restore(ctx, cfg, RestoreOptions{}, nil)),
		"restore with a bad LSN":    second(Restore(ctx, cfg, RestoreOptions{Target: RestoreTarget{LSN: "nope"}}, nil)),
		"restore with two targets":  second(Restore(ctx, cfg, RestoreOptions{Target: RestoreTarget{LSN: "0/1", Latest: true}}, nil)),
		"resume without target":     second(Restore(ctx, cfg, RestoreOptions{Backup: "x", Resume: true}, nil)),
	} {
		if !errors.Is(err, ErrUsage) {
			t.Errorf("%s: want USAGE, got %v (%s)", name, err, CodeOf(err))
		}
	}
}

func TestUnreachableServer(t *testing.T) {
	cfg := testConfig(t)
	st, err := Status(context.Background(), cfg, StatusOptions{}, nil)
	if err != nil || st.ServerOK || !strings.Contains(st.Server, "unreachable") {
		t.Fatalf("Status with the server down: %v %+v", err, st)
	}
	_, err = Full(context.Background(), cfg, FullOptions{}, nil)
	if CodeOf(err) != "CONN_ERR" {
		t.Fatalf("Full with the server down: code %s: %v", CodeOf(err), err)
	}
}

func second[T any](_ T, err error) error { return err }

func TestWithCodec(t *testing.T) {
	cfg := testConfig(t)
	if c, err := withCodec(cfg, ""); err != nil || c != cfg {
		t.Fatalf("no codec: %v %v", c, err)
	}
	c, err := withCodec(cfg, "none")
	if err != nil || c.Compression != "none" || (cfg.Compression == "none") {
		t.Fatalf("none: %+v %v (configured %q)", c, err, cfg.Compression)
	}
	if _, err := Full(context.Background(), cfg, FullOptions{Compression: "rar"}, nil); errs.CodeOf(err) != errs.Usage {
		t.Fatalf("unknown codec: %v", err)
	}
}

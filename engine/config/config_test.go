package config

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func env(m map[string]string) func(string) (string, bool) {
	return func(k string) (string, bool) { v, ok := m[k]; return v, ok }
}

func writeConf(t *testing.T, text string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "pme2go-backup.conf")
	if err := os.WriteFile(p, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestDefaultsFileAndEnv(t *testing.T) {
	p := writeConf(t, "# comment\nBACKUP_DIR=/srv/backups\nDB_NAME=\"app, billing\"\nBACKUP_COMPRESSION_LEVEL=9\n")
	c, err := Load(p, env(map[string]string{"BACKUP_COMPRESSION_LEVEL": "3", "HOME": "/root"}))
	if err != nil {
		t.Fatal(err)
	}
	if c.BackupDir != "/srv/backups" || c.CompressionLevel != 3 || strings.Join(c.DBNames, "|") != "app|billing" || c.DBPort != 5432 {
		t.Fatalf("unexpected config: %+v", c)
	}
	srcs := map[string]string{}
	for _, e := range c.Effective() {
		srcs[e.Key] = e.Source
	}
	if srcs["BACKUP_DIR"] != p+":2" || srcs["BACKUP_COMPRESSION_LEVEL"] != "environment" || srcs["DB_PORT"] != "default" {
		t.Fatalf("sources: %v", srcs)
	}
}

func TestErrorsNameKeyAndLine(t *testing.T) {
	cases := []struct{ text, want string }{
		{"BACKUP_DIR=/x\nBOGUS_KEY=1\n", ":2: BOGUS_KEY: unknown key"},
		{"BACKUP_COMPRESSION_LEVEL=12\n", ":1: BACKUP_COMPRESSION_LEVEL: 12 is out of range 1-9"},
		{"DB_PORT=abc\n", ":1: DB_PORT: \"abc\" is not a whole number"},
		{"FULL_BACKUP_SCHEDULE=0 25 * * *\n", ":1: FULL_BACKUP_SCHEDULE:"},
		{"just text\n", ":1: expected KEY=VALUE"},
		{"BACKUP_DIR=relative/dir\n", "BACKUP_DIR: \"relative/dir\" is not an absolute path"},
	}
	for _, tc := range cases {
		_, err := Load(writeConf(t, tc.text), env(nil))
		var ce *Error
		if err == nil || !errors.As(err, &ce) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: got %v, want error containing %q", tc.text, err, tc.want)
		}
	}
	if _, err := Load(filepath.Join(t.TempDir(), "missing.conf"), env(nil)); err == nil {
		t.Error("a named missing file must be an error")
	}
}

func TestPasswordSourcesAndRedaction(t *testing.T) {
	dir := t.TempDir()
	pwFile := filepath.Join(dir, "pw")
	os.WriteFile(pwFile, []byte("s3cret-from-file\n"), 0o600)
	c, err := Load(writeConf(t, "DB_PASSWORD_FILE="+pwFile+"\n"), env(nil))
	if err != nil || c.Password != "s3cret-from-file" {
		t.Fatalf("password file: %v %q", err, c.Password)
	}
	cred := t.TempDir()
	os.WriteFile(filepath.Join(cred, "db-password"), []byte("cred-pw"), 0o600)
	c, err = Load(writeConf(t, ""), env(map[string]string{"CREDENTIALS_DIRECTORY": cred}))
	if err != nil || c.Password != "cred-pw" {
		t.Fatalf("credential: %v %q", err, c.Password)
	}
	c, err = Load(writeConf(t, "DB_PASSWORD=inline-secret\n"), env(nil))
	if err != nil || c.Password != "inline-secret" || len(c.Warnings) != 1 {
		t.Fatalf("inline: %v %q %v", err, c.Password, c.Warnings)
	}
	for _, e := range c.Effective() {
		if strings.Contains(e.Value, "inline-secret") {
			t.Fatalf("secret leaked in %s", e.Key)
		}
	}
}

func TestParseSize(t *testing.T) {
	for in, want := range map[string]int64{"4GB": 4 << 30, "512MB": 512 << 20, "1024": 1024, "2 GiB": 2 << 30} {
		if got, err := ParseSize(in); err != nil || got != want {
			t.Errorf("ParseSize(%q) = %d, %v", in, got, err)
		}
	}
}

func TestOffsiteKeysRedactedAndWarned(t *testing.T) {
	c, err := Load(writeConf(t, "OFFSITE_URL=s3://AKIA1234:very-secret@bucket/prefix\n"), env(nil))
	if err != nil {
		t.Fatal(err)
	}
	if len(c.Warnings) != 1 || !strings.Contains(c.Warnings[0], "OFFSITE_URL") || strings.Contains(c.Warnings[0], "very-secret") {
		t.Fatalf("warnings: %q", c.Warnings)
	}
	for _, e := range c.Effective() {
		if strings.Contains(e.Value, "very-secret") {
			t.Fatalf("%s printed with its secret: %s", e.Key, e.Value)
		}
	}
	for _, bad := range []string{"OFFSITE_URL=http://bucket", "OFFSITE_ENDPOINT=localhost:9000", "OFFSITE_SYNC_INTERVAL=0s",
		"OFFSITE_CHECKSUM=xxhash", "LOCAL_RETENTION_DAYS=-1", "OFFSITE_RETENTION_DAYS=soon"} {
		if _, err := Load(writeConf(t, bad+"\n"), env(nil)); err == nil || !strings.Contains(err.Error(), strings.Split(bad, "=")[0]) {
			t.Errorf("%s: error %v, want one naming the key", bad, err)
		}
	}
}

func TestLogDirInFile(t *testing.T) {
	c, err := Load(writeConf(t, "LOG_DIR=/var/log/pme2go-backup\n"), env(nil))
	if err != nil || c.Value("LOG_DIR") != "/var/log/pme2go-backup" {
		t.Fatalf("LOG_DIR from the file: %v %v", c, err)
	}
	c, err = Load(writeConf(t, "LOG_DIR=/var/log/a\n"), env(map[string]string{"LOG_DIR": "/var/log/b"}))
	if err != nil || c.Value("LOG_DIR") != "/var/log/b" {
		t.Fatalf("the environment overrides the file: %v", err)
	}
	if _, err := Load(writeConf(t, "LOG_DIR=logs\n"), env(nil)); err == nil || !strings.Contains(err.Error(), "LOG_DIR") {
		t.Fatalf("relative LOG_DIR: %v", err)
	}
}

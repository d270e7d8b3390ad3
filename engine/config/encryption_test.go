package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/pme2go/pme2go-backup/engine/crypt"
)

// TestEncryptionKeys: the identity comes from BACKUP_ENCRYPTION_IDENTITY_FILE,
// else from a non-empty credential (the units' empty default means none),
// and Load installs the settings in engine/crypt.
func TestEncryptionKeys(t *testing.T) {
	defer crypt.Configure(crypt.Settings{})
	dir := t.TempDir()
	creds := filepath.Join(dir, "creds")
	os.Mkdir(creds, 0o700)
	cred := filepath.Join(creds, crypt.CredentialName)
	load := func(env map[string]string) *Config {
		t.Helper()
		conf := filepath.Join(dir, "c.conf")
		os.WriteFile(conf, nil, 0o600)
		c, err := Load(conf, func(k string) (string, bool) { v, ok := env[k]; return v, ok })
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	env := map[string]string{"BACKUP_ENCRYPTION_RECIPIENTS": "/etc/r.txt", "CREDENTIALS_DIRECTORY": creds}
	os.WriteFile(cred, []byte("\n"), 0o600)
	if c := load(env); c.EncryptionIdentity != "" || crypt.Current().IdentityFile != "" || crypt.Current().RecipientsFile != "/etc/r.txt" {
		t.Fatalf("empty credential taken: %+v", crypt.Current())
	}
	os.WriteFile(cred, []byte("AGE-SECRET-KEY-1X\n"), 0o600)
	if c := load(env); c.EncryptionIdentity != cred || crypt.Current().IdentityFile != cred {
		t.Fatalf("credential not used: %+v", crypt.Current())
	}
	env["BACKUP_ENCRYPTION_IDENTITY_FILE"] = "/etc/id.txt"
	if c := load(env); c.EncryptionIdentity != "/etc/id.txt" {
		t.Fatalf("identity file not preferred: %q", c.EncryptionIdentity)
	}
	for _, e := range load(env).Effective() {
		if e.Key == "BACKUP_ENCRYPTION_IDENTITY_FILE" && e.Value != "/etc/id.txt" {
			t.Fatalf("config shows %q", e.Value)
		}
	}
	if load(map[string]string{}); crypt.Enabled() {
		t.Fatal("a configuration without recipients left encryption on")
	}
}

// TestIdentityReadableByOthersWarned: a private key others can read is
// named in a warning with the fix; a 0600 one is not.
func TestIdentityReadableByOthersWarned(t *testing.T) {
	defer crypt.Configure(crypt.Settings{})
	dir := t.TempDir()
	id := filepath.Join(dir, "id.txt")
	os.WriteFile(id, []byte("AGE-SECRET-KEY-1X\n"), 0o644)
	conf := filepath.Join(dir, "c.conf")
	os.WriteFile(conf, nil, 0o600)
	env := map[string]string{"BACKUP_ENCRYPTION_RECIPIENTS": "/etc/r.txt", "BACKUP_ENCRYPTION_IDENTITY_FILE": id}
	load := func() *Config {
		c, err := Load(conf, func(k string) (string, bool) { v, ok := env[k]; return v, ok })
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	if w := load().Warnings; len(w) != 1 || !strings.Contains(w[0], id) || !strings.Contains(w[0], "0600") {
		t.Fatalf("identity readable by others: warnings %q", w)
	}
	os.Chmod(id, 0o600)
	if w := load().Warnings; len(w) != 0 {
		t.Fatalf("private identity: warnings %q", w)
	}
}

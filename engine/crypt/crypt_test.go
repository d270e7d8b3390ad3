package crypt

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/pem"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/crypto/ssh"

	"github.com/pme2go/pme2go-backup/engine/errs"
)

// TestRecipientsAndIdentities: age and SSH recipients are read (comments
// skipped, SSH comments dropped), a private key or garbage in the
// recipients file is a CONFIG error naming the line, an SSH identity
// decrypts what its public key encrypted, a passphrase-protected SSH key is
// refused with a fix, and a wrong identity is KEY_ERR.
func TestRecipientsAndIdentities(t *testing.T) {
	dir := t.TempDir()
	pub, key, err := TestKeys(dir, "a")
	if err != nil {
		t.Fatal(err)
	}
	edPub, edPriv, _ := ed25519.GenerateKey(rand.Reader)
	sshPub, _ := ssh.NewPublicKey(edPub)
	authorized := strings.TrimSpace(string(ssh.MarshalAuthorizedKey(sshPub))) + " backup@host"
	ageKey, _ := os.ReadFile(pub)
	recFile := filepath.Join(dir, "recipients")
	os.WriteFile(recFile, []byte(string(ageKey)+"\n# ssh\n"+authorized+"\n"), 0o600)
	rec, err := ReadRecipients(recFile)
	if err != nil {
		t.Fatal(err)
	}
	if len(rec.Keys) != 2 || strings.Contains(rec.Keys[1], "backup@host") {
		t.Fatalf("keys %q", rec.Keys)
	}
	if fp := rec.Fingerprints(); !strings.HasPrefix(fp[0], "age1") || !strings.HasPrefix(fp[1], "SHA256:") {
		t.Fatalf("fingerprints %q", fp)
	}
	for name, content := range map[string]string{"private": "AGE-SECRET-KEY-1QQQ\n", "garbage": "hello\n", "empty": "# nothing\n"} {
		p := filepath.Join(dir, name)
		os.WriteFile(p, []byte(content), 0o600)
		if _, err := ReadRecipients(p); errs.CodeOf(err) != errs.Config || strings.Contains(err.Error(), "QQQ") {
			t.Fatalf("%s recipients: %v", name, err)
		}
	}

	var ct bytes.Buffer
	w, _ := rec.Encrypt(&ct)
	w.Write([]byte("secret rows"))
	w.Close()
	open := func(ids *Identities) (string, error) {
		r, err := ids.Decrypt(bytes.NewReader(ct.Bytes()), "x")
		if err != nil {
			return "", err
		}
		b, err := io.ReadAll(r)
		return string(b), err
	}
	ageIDs, err := ReadIdentities(key, "")
	if err != nil {
		t.Fatal(err)
	}
	if s, err := open(ageIDs); err != nil || s != "secret rows" {
		t.Fatalf("age identity: %q %v", s, err)
	}
	block, _ := ssh.MarshalPrivateKey(edPriv, "")
	sshKey := filepath.Join(dir, "id_ed25519")
	os.WriteFile(sshKey, pem.EncodeToMemory(block), 0o600)
	sshIDs, err := ReadIdentities(sshKey, "")
	if err != nil {
		t.Fatal(err)
	}
	if s, err := open(sshIDs); err != nil || s != "secret rows" {
		t.Fatalf("ssh identity: %q %v", s, err)
	}
	block, _ = ssh.MarshalPrivateKeyWithPassphrase(edPriv, "", []byte("pw"))
	os.WriteFile(sshKey, pem.EncodeToMemory(block), 0o600)
	if _, err := ReadIdentities(sshKey, ""); errs.CodeOf(err) != errs.KeyErr || errs.FixOf(err) == nil || !strings.Contains(err.Error(), "passphrase") {
		t.Fatalf("passphrase ssh key: %v", err)
	}
	_, otherKey, _ := TestKeys(dir, "b")
	other, _ := ReadIdentities(otherKey, "")
	if _, err := open(other); errs.CodeOf(err) != errs.KeyErr {
		t.Fatalf("wrong identity: %v", err)
	}
	if _, err := ReadIdentities(filepath.Join(dir, "missing"), ""); errs.CodeOf(err) != errs.KeyErr {
		t.Fatalf("missing identity: %v", err)
	}
}

// TestWriteFileAtomic: whole files are encrypted when configured and read
// back in clear; plaintext when not.
func TestWriteFileAtomic(t *testing.T) {
	dir := t.TempDir()
	pub, key, _ := TestKeys(dir, "a")
	defer Configure(Settings{})
	p := filepath.Join(dir, "lo")
	Configure(Settings{})
	if err := WriteFileAtomic(p, []byte("plain"), 0o600); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(p); string(b) != "plain" {
		t.Fatal("not plaintext without encryption")
	}
	Configure(Settings{RecipientsFile: pub, IdentityFile: key})
	if err := WriteFileAtomic(p, []byte("large object data"), 0o600); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(p); bytes.Contains(b, []byte("large object")) || !IsEncrypted(b) {
		t.Fatal("stored in clear")
	}
	if b, err := ReadFile(p); err != nil || string(b) != "large object data" {
		t.Fatalf("read back %q %v", b, err)
	}
}

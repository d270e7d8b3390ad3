package selftest

import (
	"testing"

	"github.com/pme2go/pme2go-backup/engine/crypt"
)

func TestCheckEncryption(t *testing.T) {
	defer crypt.Configure(crypt.Settings{})
	dir := t.TempDir()
	pub, key, _ := crypt.TestKeys(dir, "a")
	_, other, _ := crypt.TestKeys(dir, "b")
	run := func(s crypt.Settings) map[string]Status {
		crypt.Configure(s)
		got := map[string]Status{}
		checkEncryption(func(check string, st Status, msg, fix string) { got[check] = st })
		return got
	}
	if got := run(crypt.Settings{RecipientsFile: pub, IdentityFile: key}); got["encryption"] != OK || got["decryption key"] != OK {
		t.Fatalf("matching keys: %v", got)
	}
	if got := run(crypt.Settings{RecipientsFile: pub, IdentityFile: other}); got["decryption key"] != Warn {
		t.Fatalf("identity of another recipient: %v", got)
	}
	if got := run(crypt.Settings{RecipientsFile: pub}); got["decryption key"] != Warn {
		t.Fatalf("no identity: %v", got)
	}
	if got := run(crypt.Settings{RecipientsFile: key}); got["encryption"] != Fail {
		t.Fatalf("private key as recipients: %v", got)
	}
	if got := run(crypt.Settings{}); len(got) != 0 {
		t.Fatalf("no encryption: %v", got)
	}
}

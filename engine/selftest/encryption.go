package selftest

import (
	"bytes"
	"io"
	"strings"

	"github.com/pme2go/pme2go-backup/engine/crypt"
)

// checkEncryption checks the age keys: the recipients file is usable, and
// the identity (when configured) opens what is encrypted to the recipients
// (else new archives could not be restored with it).
func checkEncryption(add func(string, Status, string, string)) {
	s := crypt.Current()
	if s.RecipientsFile == "" {
		return
	}
	rec, err := crypt.LoadRecipients()
	if err != nil {
		add("encryption", Fail, err.Error(), "put one age recipient per line in BACKUP_ENCRYPTION_RECIPIENTS (age-keygen -y KEY prints one)")
		return
	}
	add("encryption", OK, "archives and change sets are encrypted to "+strings.Join(rec.Fingerprints(), ", "), "")
	if s.IdentityFile == "" {
		add("decryption key", Warn, "no identity configured: restore, verify, drills, rekey and incremental backups of encrypted change sets will fail",
			"set BACKUP_ENCRYPTION_IDENTITY_FILE or provide the systemd credential "+crypt.CredentialName)
		return
	}
	ids, err := crypt.LoadIdentities()
	if err != nil {
		add("decryption key", Fail, err.Error(), "point BACKUP_ENCRYPTION_IDENTITY_FILE to an age identity file")
		return
	}
	var buf bytes.Buffer
	w, err := rec.Encrypt(&buf)
	if err == nil {
		w.Write([]byte("probe"))
		err = w.Close()
	}
	if err == nil {
		var r io.Reader
		if r, err = ids.Decrypt(&buf, "a probe encrypted to the recipients"); err == nil {
			_, err = io.ReadAll(r)
		}
	}
	if err != nil {
		add("decryption key", Warn, "the identity does not open what is encrypted to the current recipients: "+err.Error(),
			"add the private key of one of the recipients to the identity file, or fix BACKUP_ENCRYPTION_RECIPIENTS")
		return
	}
	add("decryption key", OK, "the identity opens archives encrypted to the current recipients", "")
}

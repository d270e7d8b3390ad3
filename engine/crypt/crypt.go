// Package crypt encrypts what pme2go-backup writes to BACKUP_DIR with age
// (https://age-encryption.org/v1, filippo.io/age) and decrypts it on read.
//
// Recipients (public keys: X25519 "age1…" keys, "ssh-ed25519" and "ssh-rsa"
// keys, one per line as in age's recipients files) come from the file named by
// BACKUP_ENCRYPTION_RECIPIENTS; they are read again for every file written, so
// that a changed recipients file applies to the next archive at once.
// Identities (private keys: "AGE-SECRET-KEY-1…" lines, or an unencrypted
// OpenSSH private key) come from BACKUP_ENCRYPTION_IDENTITY_FILE or from the
// systemd credential $CREDENTIALS_DIRECTORY/backup-encryption-identity.
//
// The settings are process-wide: engine/config installs them with Configure
// when it loads a configuration, so that every reader and writer below the
// front door (archives, change-set segments) sees the same keys without
// threading them through each call. Whether a file is decrypted depends on
// the file alone (its first bytes), never on the settings.
package crypt

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"

	"filippo.io/age"
	"filippo.io/age/agessh"
	"golang.org/x/crypto/ssh"

	"github.com/pme2go/pme2go-backup/engine/errs"
	"github.com/pme2go/pme2go-backup/engine/fsutil"
)

// Suffix ends the name of every encrypted archive (full_backup_<ts>.tar.xz.age).
const Suffix = ".age"

// CredentialName is the systemd credential (LoadCredential=) holding the
// identity when BACKUP_ENCRYPTION_IDENTITY_FILE is not set.
const CredentialName = "backup-encryption-identity"

// Magic is the first line of every binary age file.
const Magic = "age-encryption.org/v1\n"

// KeyErr is the error code of a missing, unreadable or wrong key.
const KeyErr = errs.KeyErr

// Settings name the key files. Empty RecipientsFile: nothing is encrypted.
type Settings struct {
	// RecipientsFile is the age recipients file (BACKUP_ENCRYPTION_RECIPIENTS).
	RecipientsFile string
	// IdentityFile is the identity file (BACKUP_ENCRYPTION_IDENTITY_FILE or
	// the credential), "" when none is configured.
	IdentityFile string
	// IdentitySource says where IdentityFile came from, for messages.
	IdentitySource string
}

var (
	mu      sync.Mutex
	current Settings
)

// Configure installs the process-wide settings (engine/config.Load does).
func Configure(s Settings) {
	mu.Lock()
	current = s
	mu.Unlock()
}

// Current returns the process-wide settings.
func Current() Settings {
	mu.Lock()
	defer mu.Unlock()
	return current
}

// Enabled reports whether new files are encrypted (a recipients file is set).
func Enabled() bool { return Current().RecipientsFile != "" }

// Ext returns Suffix when encryption is enabled, else "": the extension to
// append to the name of a file about to be written.
func Ext() string {
	if Enabled() {
		return Suffix
	}
	return ""
}

// Recipients are the public keys new files are encrypted to.
type Recipients struct {
	list []age.Recipient
	// Keys are the public keys as written in the recipients file, in order.
	Keys []string
}

// Fingerprints returns one fingerprint per key (Fingerprint).
func (r *Recipients) Fingerprints() []string {
	out := make([]string, len(r.Keys))
	for i, k := range r.Keys {
		out[i] = Fingerprint(k)
	}
	return out
}

// Fingerprint names a public key briefly: an age X25519 key is its own
// fingerprint ("age1…", shortened to its first 12 and last 6 characters);
// an SSH key is "SHA256:<base64>" as ssh-keygen -l prints it.
func Fingerprint(key string) string {
	if strings.HasPrefix(key, "ssh-") {
		if pk, _, _, _, err := ssh.ParseAuthorizedKey([]byte(key)); err == nil {
			return ssh.FingerprintSHA256(pk)
		}
	}
	if len(key) > 24 && strings.HasPrefix(key, "age1") {
		return key[:12] + "…" + key[len(key)-6:]
	}
	sum := sha256.Sum256([]byte(key))
	return "sha256:" + hex.EncodeToString(sum[:8])
}

// LoadRecipients reads the current recipients file. Errors have code CONFIG
// and name BACKUP_ENCRYPTION_RECIPIENTS.
func LoadRecipients() (*Recipients, error) {
	p := Current().RecipientsFile
	if p == "" {
		return nil, errs.New(errs.Config, "encryption is not configured").
			WithFix(errs.ActConfig, "set BACKUP_ENCRYPTION_RECIPIENTS to a file of age recipients")
	}
	return ReadRecipients(p)
}

// ReadRecipients parses the recipients file at path: one public key per line
// (age1… X25519 or age1pq1… hybrid keys, ssh-ed25519 and ssh-rsa keys as in
// authorized_keys); empty lines and lines starting with '#' are ignored.
func ReadRecipients(path string) (*Recipients, error) {
	bad := func(msg string, err error) error {
		return errs.Wrap(errs.Config, fmt.Sprintf("BACKUP_ENCRYPTION_RECIPIENTS %s: %s", path, msg), err).
			WithFix(errs.ActConfig, "put one age recipient per line in the file (age1… from age-keygen -y, or an ssh-ed25519/ssh-rsa public key)")
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, bad("cannot be read", err)
	}
	r := &Recipients{}
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		var rec age.Recipient
		switch {
		case strings.HasPrefix(line, "AGE-SECRET-KEY"):
			return nil, bad(fmt.Sprintf("line %d is a private key, not a recipient", n), nil)
		case strings.HasPrefix(line, "ssh-"):
			rec, err = agessh.ParseRecipient(line)
			if err == nil {
				// Keep the key without its comment.
				f := strings.Fields(line)
				line = f[0] + " " + f[1]
			}
		default:
			var rs []age.Recipient
			rs, err = age.ParseRecipients(strings.NewReader(line))
			if err == nil {
				rec = rs[0]
			}
		}
		if err != nil {
			return nil, bad(fmt.Sprintf("line %d is not a recipient", n), err)
		}
		r.list = append(r.list, rec)
		r.Keys = append(r.Keys, line)
	}
	if err := sc.Err(); err != nil {
		return nil, bad("cannot be read", err)
	}
	if len(r.list) == 0 {
		return nil, bad("holds no recipient", nil)
	}
	return r, nil
}

// Encrypt returns a writer encrypting into dst for r. Close it to write the
// last chunk; closing does not close dst.
func (r *Recipients) Encrypt(dst io.Writer) (io.WriteCloser, error) {
	w, err := age.Encrypt(dst, r.list...)
	if err != nil {
		return nil, fmt.Errorf("start age encryption: %w", err)
	}
	return w, nil
}

// Identities are the private keys files are decrypted with.
type Identities struct {
	list   []age.Identity
	source string
}

// LoadIdentities reads the configured identity file. A missing
// configuration is a KEY_ERR error that says how to provide the key.
func LoadIdentities() (*Identities, error) {
	s := Current()
	if s.IdentityFile == "" {
		return nil, errs.New(KeyErr, "the backup is encrypted (age) and no decryption key is configured").
			WithFix(errs.ActConfig, "set BACKUP_ENCRYPTION_IDENTITY_FILE to the age identity file (or provide the systemd credential "+CredentialName+"); nothing was written")
	}
	return ReadIdentities(s.IdentityFile, s.IdentitySource)
}

// ReadIdentities parses an age identity file (AGE-SECRET-KEY-1… lines) or
// an unencrypted OpenSSH private key. source names its origin in messages.
func ReadIdentities(path, source string) (*Identities, error) {
	if source == "" {
		source = "BACKUP_ENCRYPTION_IDENTITY_FILE " + path
	}
	bad := func(msg string, err error) error {
		return errs.Wrap(KeyErr, fmt.Sprintf("decryption key (%s) %s", source, msg), err).
			WithFix(errs.ActConfig, "point BACKUP_ENCRYPTION_IDENTITY_FILE to a readable age identity file (age-keygen) or unencrypted SSH private key; nothing was written")
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, bad("cannot be read", err)
	}
	ids := &Identities{source: source}
	if bytes.Contains(data, []byte("PRIVATE KEY-----")) {
		id, err := agessh.ParseIdentity(data)
		if err != nil {
			var pe *ssh.PassphraseMissingError
			if errors.As(err, &pe) {
				return nil, bad("is a passphrase-protected SSH key, which an unattended service cannot use", nil)
			}
			return nil, bad("is not a usable SSH private key", err)
		}
		ids.list = []age.Identity{id}
		return ids, nil
	}
	list, err := age.ParseIdentities(bytes.NewReader(data))
	if err != nil {
		return nil, bad("holds no usable age identity", err)
	}
	ids.list = list
	return ids, nil
}

// Decrypt returns the plaintext of the age file read from src. The header is
// checked at once: a key that opens none of its recipient stanzas is a
// KEY_ERR error before anything is read further; damage later in the file
// surfaces as a read error of the returned reader. name is used in messages.
func (ids *Identities) Decrypt(src io.Reader, name string) (io.Reader, error) {
	r, err := age.Decrypt(src, ids.list...)
	if err != nil {
		var nm *age.NoIdentityMatchError
		if errors.As(err, &nm) {
			return nil, errs.Wrap(KeyErr, fmt.Sprintf("%s is encrypted to other keys than the decryption key (%s)", name, ids.source), err).
				WithFix(errs.ActConfig, "set BACKUP_ENCRYPTION_IDENTITY_FILE to the identity of one of the recipients the archive was written for (the sidecar manifest lists them); nothing was written")
		}
		return nil, errs.Wrap(errs.VerifyFailed, fmt.Sprintf("%s: damaged age header", name), err).
			WithFix("", "use another copy of the backup; nothing was written")
	}
	return r, nil
}

// IsEncrypted reports whether head (the first bytes of a file) starts an age
// file.
func IsEncrypted(head []byte) bool {
	return bytes.HasPrefix(head, []byte(Magic))
}

// IsEncryptedName reports whether a file name carries Suffix.
func IsEncryptedName(name string) bool { return strings.HasSuffix(name, Suffix) }

// Open opens path for reading its plaintext: an age file is decrypted with
// the configured identities, anything else is read as it is. The returned
// ReadCloser closes the file.
func Open(path string) (io.ReadCloser, bool, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, false, err
	}
	br := bufio.NewReaderSize(f, 64<<10)
	head, _ := br.Peek(len(Magic))
	if !IsEncrypted(head) {
		return readCloser{br, f}, false, nil
	}
	ids, err := LoadIdentities()
	if err != nil {
		f.Close()
		return nil, true, err
	}
	r, err := ids.Decrypt(br, filepath.Base(path))
	if err != nil {
		f.Close()
		return nil, true, err
	}
	return readCloser{r, f}, true, nil
}

type readCloser struct {
	io.Reader
	c io.Closer
}

func (r readCloser) Close() error { return r.c.Close() }

// WriteFileAtomic writes data to path atomically (engine/fsutil), encrypted
// to the current recipients as one age file when encryption is configured.
// The state directory's whole-file data (large objects captured at a seal)
// is written with it; ReadFile reads it back.
func WriteFileAtomic(path string, data []byte, perm os.FileMode) error {
	if !Enabled() {
		return fsutil.WriteFileAtomic(path, data, perm)
	}
	rec, err := LoadRecipients()
	if err != nil {
		return err
	}
	var buf bytes.Buffer
	w, err := rec.Encrypt(&buf)
	if err == nil {
		_, err = w.Write(data)
	}
	if err == nil {
		err = w.Close()
	}
	if err != nil {
		return fmt.Errorf("encrypt %s: %w", filepath.Base(path), err)
	}
	return fsutil.WriteFileAtomic(path, buf.Bytes(), perm)
}

// ReadFile reads the file at path, decrypting it when it is an age file.
func ReadFile(path string) ([]byte, error) {
	rc, _, err := Open(path)
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	b, err := io.ReadAll(rc)
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	return b, nil
}

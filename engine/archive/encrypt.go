package archive

import (
	"bufio"
	"fmt"
	"io"
	"path/filepath"
	"strings"

	"github.com/pme2go/pme2go-backup/engine/crypt"
	"github.com/pme2go/pme2go-backup/engine/fsutil"
)

// FileExt returns the file name extension of a new archive using codec c:
// c.Ext(), followed by ".age" when encryption is configured
// (BACKUP_ENCRYPTION_RECIPIENTS), e.g. ".tar.xz.age". Every writer of
// archives names its files with it.
func FileExt(c Codec) string { return c.Ext() + crypt.Ext() }

// TrimExt removes an archive extension (codec and, when present, ".age")
// from name: "full_backup_X.tar.xz.age" → "full_backup_X". A name without
// a known extension is returned unchanged.
func TrimExt(name string) string {
	base := strings.TrimSuffix(name, crypt.Suffix)
	for _, c := range Codecs {
		if s, ok := strings.CutSuffix(base, c.Ext()); ok {
			return s
		}
	}
	if s, ok := strings.CutSuffix(base, ".tgz"); ok {
		return s
	}
	return name
}

// IsEncryptedName reports whether an archive name ends in ".age".
func IsEncryptedName(name string) bool { return crypt.IsEncryptedName(name) }

// Encryption describes how an archive file is encrypted, in its sidecar
// manifest: the format ("age") and the recipients' public keys (as in the
// recipients file when it was written), which `status` and `rekey` compare
// with the current recipients. Public keys are not secret.
type Encryption struct {
	Format     string   `json:"format"`
	Recipients []string `json:"recipients"`
}

// startEncryption wraps out in an age encryption stream to the current
// recipients when finalPath names an encrypted archive. It refuses a
// plaintext name while encryption is configured, so that no caller writes
// plaintext by mistake.
func startEncryption(finalPath string, out io.Writer) (io.Writer, io.WriteCloser, *Encryption, error) {
	if !crypt.IsEncryptedName(finalPath) {
		if crypt.Enabled() {
			return nil, nil, nil, fmt.Errorf("archive %s: encryption is configured (BACKUP_ENCRYPTION_RECIPIENTS) but the name lacks %s; name archives with archive.FileExt", finalPath, crypt.Suffix)
		}
		return out, nil, nil, nil
	}
	rec, err := crypt.LoadRecipients()
	if err != nil {
		return nil, nil, nil, err
	}
	enc, err := rec.Encrypt(out)
	if err != nil {
		return nil, nil, nil, err
	}
	return enc, enc, &Encryption{Format: "age", Recipients: rec.Keys}, nil
}

// decrypted is the plaintext reader of an encrypted archive and the buffered
// reader of its stored bytes.
type decrypted struct {
	io.Reader
	src *bufio.Reader
}

// decryptRaw peeks at the start of an archive file: an age file is
// decrypted with the configured identities (a missing or wrong key is a
// KEY_ERR error here, before anything is extracted), anything else is
// returned as not encrypted.
func decryptRaw(path string, br *bufio.Reader) (io.Reader, bool, error) {
	head, _ := br.Peek(len(crypt.Magic))
	if !crypt.IsEncrypted(head) {
		return nil, false, nil
	}
	ids, err := crypt.LoadIdentities()
	if err != nil {
		return nil, true, fmt.Errorf("open %s: %w", filepath.Base(path), err)
	}
	r, err := ids.Decrypt(br, filepath.Base(path))
	if err != nil {
		return nil, true, err
	}
	return &decrypted{Reader: r, src: br}, true, nil
}

// WriteSidecar replaces the sidecar manifest of archivePath atomically with
// m (which must carry Archive). rekey uses it after replacing an archive.
func WriteSidecar(archivePath string, m *Manifest) error {
	if m.Archive == nil {
		return fmt.Errorf("sidecar of %s: manifest has no archive section", archivePath)
	}
	body, err := marshalManifest(m)
	if err != nil {
		return err
	}
	return fsutil.WriteFileAtomic(SidecarPath(archivePath), body, 0o600)
}

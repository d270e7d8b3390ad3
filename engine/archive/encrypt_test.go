package archive

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/pme2go/pme2go-backup/engine/crypt"
	"github.com/pme2go/pme2go-backup/engine/errs"
)

// TestEncryptedArchives writes an encrypted archive with every codec and
// checks: stored bytes hold no plaintext, the sidecar records the stored
// bytes' checksum and the recipients, verify and extract decrypt, and a
// wrong key, no key, a truncated and a corrupted file are refused.
func TestEncryptedArchives(t *testing.T) {
	keys := t.TempDir()
	rec, id, err := crypt.TestKeys(keys, "a")
	if err != nil {
		t.Fatal(err)
	}
	_, otherID, err := crypt.TestKeys(keys, "b")
	if err != nil {
		t.Fatal(err)
	}
	crypt.Configure(crypt.Settings{RecipientsFile: rec, IdentityFile: id})
	t.Cleanup(func() { crypt.Configure(crypt.Settings{}) })
	marker := []byte("MARKER-7f3a9c-SECRET-ROW")
	ctx := context.Background()
	for _, c := range Codecs {
		t.Run(string(c), func(t *testing.T) {
			crypt.Configure(crypt.Settings{RecipientsFile: rec, IdentityFile: id})
			dir := t.TempDir()
			if _, err := Create(filepath.Join(dir, "plain"+c.Ext()), WriterOptions{Codec: c}); err == nil {
				t.Fatal("plaintext name accepted while encryption is configured")
			}
			path := filepath.Join(dir, "full_backup_x"+FileExt(c))
			if !strings.HasSuffix(path, c.Ext()+".age") {
				t.Fatalf("FileExt gave %s", path)
			}
			w, err := Create(path, WriterOptions{Codec: c, Level: 1, Workers: 2})
			if err != nil {
				t.Fatal(err)
			}
			data := bytes.Repeat(marker, 50000)
			if err := w.AddBytes("database/app/1.dat", data); err != nil {
				t.Fatal(err)
			}
			m := &Manifest{Type: "full"}
			if err := w.Commit(m); err != nil {
				t.Fatal(err)
			}
			if m.Archive.Encryption == nil || len(m.Archive.Encryption.Recipients) != 1 {
				t.Fatalf("sidecar lacks recipients: %+v", m.Archive)
			}
			stored, _ := os.ReadFile(path)
			if !bytes.HasPrefix(stored, []byte(crypt.Magic)) || bytes.Contains(stored, marker) {
				t.Fatal("stored archive is not an age file or holds plaintext")
			}
			side, _ := os.ReadFile(SidecarPath(path))
			if bytes.Contains(side, marker) || bytes.Contains(side, []byte("AGE-SECRET-KEY")) {
				t.Fatal("sidecar holds table data or a private key")
			}
			rep, err := Verify(ctx, path)
			if err != nil || !rep.OK() {
				t.Fatalf("verify: %v %v", err, rep)
			}
			out := t.TempDir()
			if _, err := Extract(ctx, path, out); err != nil {
				t.Fatal(err)
			}
			if got, _ := os.ReadFile(filepath.Join(out, "database/app/1.dat")); !bytes.Equal(got, data) {
				t.Fatal("extracted data differs")
			}

			// Wrong key, no key: KEY_ERR before anything is extracted.
			for _, s := range []crypt.Settings{{RecipientsFile: rec, IdentityFile: otherID}, {RecipientsFile: rec}} {
				crypt.Configure(s)
				_, err := Verify(ctx, path)
				if errs.CodeOf(err) != crypt.KeyErr || errs.FixOf(err) == nil {
					t.Fatalf("verify with key %q: want KEY_ERR with a fix, got %v", s.IdentityFile, err)
				}
				out := t.TempDir()
				if _, err := Extract(ctx, path, out); errs.CodeOf(err) != crypt.KeyErr {
					t.Fatalf("extract with key %q: want KEY_ERR, got %v", s.IdentityFile, err)
				}
				if ents, _ := os.ReadDir(out); len(ents) != 0 {
					t.Fatal("extract wrote files without the key")
				}
			}
			crypt.Configure(crypt.Settings{RecipientsFile: rec, IdentityFile: id})

			// Truncated and corrupted: verify reports, extract fails.
			for name, mutate := range map[string]func([]byte) []byte{
				"truncated": func(b []byte) []byte { return b[:len(b)-100] },
				"corrupted": func(b []byte) []byte { b = bytes.Clone(b); b[len(b)/2] ^= 0x40; return b },
			} {
				if err := os.WriteFile(path, mutate(stored), 0o600); err != nil {
					t.Fatal(err)
				}
				rep, err := Verify(ctx, path)
				if err != nil || rep.OK() {
					t.Fatalf("%s: verify did not report it: %v", name, err)
				}
				if _, err := Extract(ctx, path, t.TempDir()); err == nil {
					t.Fatalf("%s: extract succeeded", name)
				}
			}
		})
	}
}

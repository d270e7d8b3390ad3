package offsite_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pme2go/pme2go-backup/engine/crypt"
	"github.com/pme2go/pme2go-backup/engine/ops"
)

// TestEncryptedRepository: with BACKUP_ENCRYPTION_RECIPIENTS, archives are
// copied byte for byte (.age, the SHA-256 of the bytes as stored), the
// change sets streamed off-site are encrypted too, no row of the source
// appears in clear anywhere in the repository, and a point-in-time restore
// from the repository alone (with the identity) equals the source.
func TestEncryptedRepository(t *testing.T) {
	c, s := setup(t)
	defer crypt.Configure(crypt.Settings{})
	pub, key, err := crypt.TestKeys(t.TempDir(), "offsite")
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	const marker = "OFFSITE-CLEAR-MARKER-7d3a"
	exec(t, c, "app", "INSERT INTO items (name, qty) SELECT '"+marker+"-full-' || g, g FROM generate_series(1, 500) g")
	e := newEnv(t, c, s, "enc", "OFFSITE_SYNC_INTERVAL=1s", "BACKUP_COMPRESSION=none",
		"BACKUP_ENCRYPTION_RECIPIENTS="+pub, "BACKUP_ENCRYPTION_IDENTITY_FILE="+key)
	full, err := ops.Full(ctx, e.cfg, ops.FullOptions{}, nil)
	if err != nil {
		t.Fatalf("full: %v", err)
	}
	if !strings.HasSuffix(full.Name, ".age") || len(full.Offsite) != 1 || !full.Offsite[0].Copied {
		t.Fatalf("encrypted full backup %s not copied: %+v", full.Name, full.Offsite)
	}
	local, _ := os.ReadFile(full.Path)
	remote, _ := os.ReadFile(filepath.Join(s.Root, s.Bucket, "enc", "full", full.Name))
	if !bytes.Equal(local, remote) {
		t.Fatalf("off-site copy differs from the local archive (%d and %d bytes)", len(local), len(remote))
	}
	sum := sha256.Sum256(local)
	if full.Offsite[0].SHA256 != "sha256:"+hex.EncodeToString(sum[:]) {
		t.Fatalf("recorded %s, stored bytes hash to %x", full.Offsite[0].SHA256, sum)
	}
	sctx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { _, err := ops.Stream(sctx, e.cfg, ops.StreamOptions{}, nil); done <- err }()
	exec(t, c, "app", "INSERT INTO items (name, qty) SELECT '"+marker+"-stream-' || g, g FROM generate_series(1, 300) g")
	time.Sleep(3500 * time.Millisecond)
	want := sums(t, c, "app")
	// Nothing in the repository holds the rows in clear.
	filepath.WalkDir(s.Root, func(p string, d fs.DirEntry, err error) error {
		if err == nil && d.Type().IsRegular() {
			if b, _ := os.ReadFile(p); bytes.Contains(b, []byte(marker)) {
				t.Errorf("%s holds table data in clear", p)
			}
		}
		return nil
	})
	empty := e.with(t, "BACKUP_DIR="+filepath.Join(t.TempDir(), "empty"))
	if _, err := ops.Restore(ctx, empty.cfg, ops.RestoreOptions{Target: ops.RestoreTarget{Latest: true}, TargetDB: "app_enc", NoSafetyBackup: true}, nil); err != nil {
		t.Fatalf("PITR from the encrypted repository alone: %v", err)
	}
	same(t, "PITR from the encrypted repository", want, sums(t, c, "app_enc"))
	stop()
	if err := <-done; err != nil && !errors.Is(err, context.Canceled) {
		t.Errorf("stream: %v", err)
	}
}

package bench

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/pme2go/pme2go-backup/engine/archive"
	"github.com/pme2go/pme2go-backup/engine/fsutil"
	"github.com/pme2go/pme2go-backup/engine/offsite"
	"github.com/pme2go/pme2go-backup/tests/pgharness"
	"github.com/pme2go/pme2go-backup/tests/s3harness"
)

// BenchmarkOffsite measures copies to the off-site repository (Versity S3
// Gateway on 127.0.0.1, posix backend on the same disk) against writing
// the same bytes into BACKUP_DIR (write, fsync, rename, as archives are
// written), in the same run: the upload (multipart, 16 MiB parts), the
// read-back check, the whole copy (upload, read-back, sidecar, record)
// and a fetch back into an empty BACKUP_DIR (download, check, fsync).
// BENCH_OFFSITE_MB sets the archive size (default 256); the archive is
// incompressible random data, as compressed archives are.
func BenchmarkOffsite(b *testing.B) {
	s := s3harness.Start(b)
	mb := envInt("BENCH_OFFSITE_MB", 256)
	dir := b.TempDir()
	vars := map[string]string{"BACKUP_DIR": filepath.Join(dir, "backups"), "DB_NAME": "bench", "OFFSITE_CHECKSUM": "auto"}
	for k, v := range s.Env("bench") {
		vars[k] = v
	}
	cfg := pgharness.LoadConfig(b, vars)
	data := make([]byte, mb<<20)
	rand.NewChaCha8([32]byte{1}).Read(data)
	sum := sha256.Sum256(data)
	for i := 0; i < b.N; i++ {
		full := filepath.Join(cfg.BackupDir, "full")
		os.MkdirAll(full, 0o700)
		path := filepath.Join(full, fmt.Sprintf("full_backup_2026-01-01T00-00-0%d-000Z.tar", i))
		start := time.Now()
		if err := fsutil.WriteFileAtomic(path, data, 0o600); err != nil {
			b.Fatal(err)
		}
		local := result{name: "write into BACKUP_DIR (fsync, rename)", wall: time.Since(start), size: int64(len(data))}
		m := archive.Manifest{FormatVersion: 1, Type: "full", Timestamp: time.Now().UTC(), Databases: []string{"bench"},
			Archive: &archive.ArchiveInfo{Name: filepath.Base(path), Size: int64(len(data)), SHA256: "sha256:" + hex.EncodeToString(sum[:]), Codec: "none"}}
		side, _ := json.Marshal(m)
		os.WriteFile(archive.SidecarPath(path), side, 0o600)
		r, err := offsite.Open(cfg)
		if err != nil {
			b.Fatal(err)
		}
		ctx := context.Background()
		f, _ := os.Open(path)
		start = time.Now()
		if _, err := r.Put(ctx, "bench/put.bin", f, int64(len(data))); err != nil {
			b.Fatal(err)
		}
		f.Close()
		put := result{name: "upload (multipart)", wall: time.Since(start), size: int64(len(data))}
		start = time.Now()
		if _, _, err := r.Hash(ctx, "bench/put.bin"); err != nil {
			b.Fatal(err)
		}
		back := result{name: "read back and SHA-256", wall: time.Since(start), size: int64(len(data))}
		start = time.Now()
		if _, err := r.Upload(ctx, cfg, path, nil); err != nil {
			b.Fatal(err)
		}
		copyAll := result{name: "copy off-site (upload+check+sidecar)", wall: time.Since(start), size: int64(len(data))}
		empty := pgharness.LoadConfig(b, map[string]string{"BACKUP_DIR": filepath.Join(dir, fmt.Sprintf("empty%d", i)), "DB_NAME": "bench",
			"OFFSITE_URL": vars["OFFSITE_URL"], "OFFSITE_ENDPOINT": vars["OFFSITE_ENDPOINT"], "OFFSITE_CREDENTIALS_FILE": vars["OFFSITE_CREDENTIALS_FILE"]})
		start = time.Now()
		if _, err := r.Fetch(ctx, empty, "full/"+filepath.Base(path)); err != nil {
			b.Fatal(err)
		}
		fetch := result{name: "fetch into empty BACKUP_DIR", wall: time.Since(start), size: int64(len(data))}
		rs := []result{local, put, back, copyAll, fetch}
		fmt.Printf("off-site, %d MiB archive:\n", mb)
		fmt.Printf("%-40s %10s %10s %12s\n", "step", "wall", "MB/s", "time ratio")
		for _, x := range rs {
			fmt.Printf("%-40s %10s %10.0f %12.2f\n", x.name, x.wall.Round(10*time.Millisecond), float64(x.size)/(1<<20)/x.wall.Seconds(), x.wall.Seconds()/local.wall.Seconds())
		}
		fmt.Printf("(ratios against %s)\n", local.name)
		os.RemoveAll(cfg.BackupDir)
		os.RemoveAll(empty.BackupDir)
	}
}

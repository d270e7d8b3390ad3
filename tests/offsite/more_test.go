package offsite_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	osexec "os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pme2go/pme2go-backup/engine/archive"
	"github.com/pme2go/pme2go-backup/engine/config"
	"github.com/pme2go/pme2go-backup/engine/offsite"
	"github.com/pme2go/pme2go-backup/engine/ops"
	"github.com/pme2go/pme2go-backup/tests/pgharness"
	"github.com/pme2go/pme2go-backup/tests/s3harness"
)

// TestMain doubles as a helper process: with PME2GO_OFFSITE_HELPER=sync
// it runs one off-site sync with the configuration in the environment
// (a separate process the test can kill).
func TestMain(m *testing.M) {
	if h := os.Getenv("PME2GO_OFFSITE_HELPER"); h == "sync" || h == "rekey" {
		cfg, err := config.Load(os.Getenv("PME2GO_OFFSITE_CONF"), os.LookupEnv)
		if err == nil && h == "sync" {
			_, err = ops.OffsiteSync(context.Background(), cfg, ops.OffsiteSyncOptions{}, nil)
		} else if err == nil {
			_, err = ops.Rekey(context.Background(), cfg, ops.RekeyOptions{}, nil)
		}
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// fakeBackup writes an archive of size random bytes with a sidecar
// manifest (no PostgreSQL needed): enough for copying, listing and
// retention, which read sidecars only.
func fakeBackup(t *testing.T, dir, typ, chainID string, ts time.Time, size int) string {
	t.Helper()
	sub := filepath.Join(dir, typ)
	if err := os.MkdirAll(sub, 0o700); err != nil {
		t.Fatal(err)
	}
	stamp := strings.NewReplacer(":", "-", ".", "-").Replace(ts.UTC().Format("2006-01-02T15:04:05.000Z"))
	path := filepath.Join(sub, typ+"_backup_"+stamp+".tar")
	buf := make([]byte, size)
	r := rand.NewChaCha8([32]byte{byte(size), byte(ts.Unix())})
	r.Read(buf)
	if err := os.WriteFile(path, buf, 0o600); err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(buf)
	m := archive.Manifest{FormatVersion: 1, Type: archive.Kind(typ), Timestamp: ts.UTC(), Version: "test", Databases: []string{"app"},
		ChainID: chainID, Metadata: map[string]any{"trigger": "test"},
		Archive: &archive.ArchiveInfo{Name: filepath.Base(path), Size: int64(size), SHA256: "sha256:" + hex.EncodeToString(sum[:]), Codec: "none"}}
	b, _ := json.Marshal(m)
	if err := os.WriteFile(archive.SidecarPath(path), b, 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func fakeEnv(t *testing.T, s *s3harness.Server, prefix string, extra ...string) (map[string]string, *config.Config) {
	vars := map[string]string{"BACKUP_DIR": filepath.Join(t.TempDir(), "backups"), "DB_NAME": "app"}
	for k, v := range s.Env(prefix) {
		vars[k] = v
	}
	for _, kv := range extra {
		k, v, _ := strings.Cut(kv, "=")
		vars[k] = v
	}
	return vars, pgharness.LoadConfig(t, vars)
}

// TestUploadKilled: a sync killed in the middle of a multipart upload (after
// its third 16 MiB part) leaves no object that is listed or fetched; the
// next run resumes the upload (keeps the three parts the server holds,
// sends the others), completes it, verifies the whole object by SHA-256 and
// records the copy; no multipart upload is left.
func TestUploadKilled(t *testing.T) {
	s := s3harness.Start(t)
	vars, cfg := fakeEnv(t, s, "kill")
	path := fakeBackup(t, cfg.BackupDir, "full", "", time.Now().Add(-time.Hour), 160<<20)
	name := filepath.Base(path)
	conf := filepath.Join(t.TempDir(), "helper.conf")
	os.WriteFile(conf, nil, 0o600)
	cmd := osexec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), "PME2GO_OFFSITE_HELPER=sync", "PME2GO_OFFSITE_CONF="+conf, "PME2GO_TEST_UPLOAD_KILL_AFTER_PART=3")
	for k, v := range vars {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	if out, err := cmd.CombinedOutput(); err == nil || cmd.ProcessState.ExitCode() != -1 {
		t.Fatalf("the sync was not killed: %v\n%s", err, out)
	}
	objs := s.Objects("kill")
	if _, ok := objs["kill/full/"+name]; ok {
		t.Fatalf("an object is visible after the kill: %v", objs)
	}
	if !uploading(s) {
		t.Fatalf("no multipart upload in progress after the kill")
	}
	r, err := offsite.Open(cfg)
	if err != nil {
		t.Fatal(err)
	}
	remotes, err := r.Remotes(context.Background(), cfg)
	if err != nil || len(remotes) != 0 {
		t.Fatalf("the killed upload is listed: %v %v", err, remotes)
	}
	if loc := locations(t, &env{cfg: cfg})[name]; loc != "local" {
		t.Fatalf("location after the kill %q, want local", loc)
	}
	res, err := ops.OffsiteSync(context.Background(), cfg, ops.OffsiteSyncOptions{}, nil)
	if err != nil || len(res.Uploaded) != 1 {
		t.Fatalf("sync after the kill: %v %+v", err, res)
	}
	t.Logf("next run: %d copied, %d bytes kept from the killed run, %d uploads aborted", len(res.Uploaded), res.Uploaded[0].Resumed, res.AbortedUploads)
	if res.Uploaded[0].Resumed != 3*offsite.PartSize || res.AbortedUploads != 0 {
		t.Fatalf("the upload was not resumed from its third part: %+v", res)
	}
	local, _ := os.ReadFile(path)
	remote, _ := os.ReadFile(filepath.Join(s.Root, s.Bucket, "kill", "full", name))
	if !bytes.Equal(local, remote) {
		t.Fatalf("the resumed object differs from the archive (%d and %d bytes)", len(local), len(remote))
	}
	if loc := locations(t, &env{cfg: cfg})[name]; loc != "both" {
		t.Fatalf("location %q, want both", loc)
	}
	if uploading(s) {
		t.Fatal("a multipart upload is left after the resumed one completed")
	}
}

// uploading reports whether the server holds parts of a multipart upload
// (versitygw keeps them below the bucket's .sgwtmp directory).
func uploading(s *s3harness.Server) bool {
	for k := range s.Objects("") {
		if strings.Contains(k, ".sgwtmp/") {
			return true
		}
	}
	return false
}

// TestRetentionBothSides: OFFSITE_RETENTION_DAYS and BACKUP_RETENTION_DAYS
// apply separately, neither removes what a kept backup needs, and
// LOCAL_RETENTION_DAYS prunes only local copies whose off-site copy exists.
func TestRetentionBothSides(t *testing.T) {
	s := s3harness.Start(t)
	now := time.Now()
	day := 24 * time.Hour
	_, cfg := fakeEnv(t, s, "ret", "BACKUP_RETENTION_DAYS=60", "OFFSITE_RETENTION_DAYS=30")
	names := map[string]string{}
	for _, b := range []struct {
		id, typ, chain string
		age            time.Duration
	}{
		{"f1", "full", "c1", 50 * day}, {"i1", "incremental", "c1", 45 * day},
		{"f2", "full", "c2", 40 * day}, {"i2a", "incremental", "c2", 35 * day},
		{"i2b", "incremental", "c2", 2 * day}, {"f3", "full", "", 1 * day},
	} {
		names[b.id] = filepath.Base(fakeBackup(t, cfg.BackupDir, b.typ, b.chain, now.Add(-b.age), 4096))
	}
	if res, err := ops.OffsiteSync(context.Background(), cfg, ops.OffsiteSyncOptions{}, nil); err != nil || len(res.Uploaded) != 6 {
		t.Fatalf("sync: %v %+v", err, res)
	}
	// Local copies are pruned after 10 days, once copied.
	e := &env{cfg: pgharness.LoadConfig(t, mergeVars(cfg, "LOCAL_RETENTION_DAYS=10"))}
	res, err := ops.Cleanup(context.Background(), e.cfg, ops.CleanupOptions{Now: now}, nil)
	if err != nil && !strings.Contains(err.Error(), "orphan") && !strings.Contains(err.Error(), "connect") {
		t.Logf("cleanup: %v", err)
	}
	if res == nil {
		t.Fatalf("cleanup: %v", err)
	}
	remote := map[string]bool{}
	for _, d := range res.Offsite {
		remote[d.Backup.Name] = d.Keep
	}
	want := map[string]bool{"f1": false, "i1": false, "f2": true, "i2a": true, "i2b": true, "f3": true}
	for id, keep := range want {
		if remote[names[id]] != keep {
			t.Errorf("off-site %s: keep=%v, want %v", id, remote[names[id]], keep)
		}
		inRepo := s.Objects("ret")["ret/"+map[bool]string{true: "full", false: "incremental"}[id[0] == 'f']+"/"+names[id]] > 0
		if inRepo != keep {
			t.Errorf("off-site %s: in the repository %v, want %v", id, inRepo, keep)
		}
	}
	for _, d := range res.Decisions {
		if !d.Keep {
			t.Errorf("local retention (60 days) removed %s", d.Backup.Name)
		}
	}
	// f1 and i1 are no longer off-site: their local copies must stay;
	// f2 and i2a (older than 10 days, copied) are pruned locally.
	loc := locations(t, e)
	for id, want := range map[string]string{"f1": "local", "i1": "local", "f2": "offsite", "i2a": "offsite", "i2b": "both", "f3": "both"} {
		if loc[names[id]] != want {
			t.Errorf("%s: location %q, want %q", id, loc[names[id]], want)
		}
	}
	if len(res.LocalPruned) != 2 {
		t.Errorf("local copies pruned: %v, want f2 and i2a", res.LocalPruned)
	}
}

func mergeVars(cfg *config.Config, extra ...string) map[string]string {
	vars := map[string]string{}
	for _, e := range cfg.Effective() {
		if e.Source != "default" {
			vars[e.Key] = cfg.Value(e.Key)
		}
	}
	for _, kv := range extra {
		k, v, _ := strings.Cut(kv, "=")
		vars[k] = v
	}
	return vars
}

// TestChecksumModes: every OFFSITE_CHECKSUM setting uploads (single and
// multipart objects) and verifies against the test server.
func TestChecksumModes(t *testing.T) {
	s := s3harness.Start(t)
	for _, mode := range []string{"auto", "md5", "crc32", "crc32c", "sha256", "none"} {
		t.Run(mode, func(t *testing.T) {
			_, cfg := fakeEnv(t, s, "sum-"+mode, "OFFSITE_CHECKSUM="+mode)
			fakeBackup(t, cfg.BackupDir, "full", "", time.Now().Add(-time.Hour), 1000)
			fakeBackup(t, cfg.BackupDir, "incremental", "", time.Now(), 40<<20) // three parts
			res, err := ops.OffsiteSync(context.Background(), cfg, ops.OffsiteSyncOptions{}, nil)
			if err != nil || len(res.Uploaded) != 2 {
				t.Fatalf("OFFSITE_CHECKSUM=%s: %v %+v", mode, err, res)
			}
		})
	}
}

// TestRefusals: a damaged off-site object is refused when fetched (nothing
// listed locally), a local archive that no longer matches its manifest is
// not copied, wrong credentials and a missing bucket are clear errors.
func TestRefusals(t *testing.T) {
	s := s3harness.Start(t)
	ctx := context.Background()
	_, cfg := fakeEnv(t, s, "bad")
	good := fakeBackup(t, cfg.BackupDir, "full", "", time.Now().Add(-2*time.Hour), 1<<20)
	if _, err := ops.OffsiteSync(ctx, cfg, ops.OffsiteSyncOptions{}, nil); err != nil {
		t.Fatal(err)
	}
	// Damage the stored object behind the server's back.
	obj := filepath.Join(s.Root, s.Bucket, "bad", "full", filepath.Base(good))
	b, _ := os.ReadFile(obj)
	b[len(b)/2] ^= 0xff
	os.WriteFile(obj, b, 0o644)
	_, empty := fakeEnv(t, s, "bad")
	_, err := ops.Verify(ctx, empty, ops.VerifyOptions{Backups: []string{filepath.Base(good)}}, nil)
	if ops.CodeOf(err) != "VERIFY_FAILED" || !strings.Contains(err.Error(), "damaged") {
		t.Fatalf("damaged off-site copy: %v (code %s)", err, ops.CodeOf(err))
	}
	if l, _ := ops.List(ctx, empty, ops.ListOptions{}, nil); len(l) != 0 {
		t.Fatalf("a refused fetch left %v", l)
	}
	t.Logf("damaged copy: %v", err)

	// A local archive damaged after it was written is not copied.
	bad := fakeBackup(t, cfg.BackupDir, "full", "", time.Now().Add(-time.Hour), 1<<20)
	lb, _ := os.ReadFile(bad)
	lb[10] ^= 0xff
	os.WriteFile(bad, lb, 0o600)
	res, err := ops.OffsiteSync(ctx, cfg, ops.OffsiteSyncOptions{}, nil)
	if ops.CodeOf(err) != "VERIFY_FAILED" || len(res.Failed) != 1 {
		t.Fatalf("damaged local archive: %v %+v", err, res)
	}
	if _, ok := s.Objects("bad")["bad/full/"+filepath.Base(bad)]; ok {
		t.Fatal("a damaged local archive was left in the repository")
	}

	// Wrong secret.
	wrong := filepath.Join(t.TempDir(), "credentials")
	os.WriteFile(wrong, []byte("[default]\naws_access_key_id = "+s.Access+"\naws_secret_access_key = not-the-secret\n"), 0o600)
	_, wcfg := fakeEnv(t, s, "bad", "OFFSITE_CREDENTIALS_FILE="+wrong)
	if _, err := ops.OffsiteSync(ctx, wcfg, ops.OffsiteSyncOptions{}, nil); ops.CodeOf(err) != "EACCES" || ops.Classify(err).Fix == nil ||
		!strings.Contains(ops.Classify(err).Fix.Text, "credentials") || strings.Contains(err.Error(), "not-the-secret") {
		t.Fatalf("wrong secret: %v", err)
	} else {
		t.Logf("wrong secret: %v", err)
	}
	// Missing bucket.
	_, mcfg := fakeEnv(t, s, "x", "OFFSITE_URL=s3://no-such-bucket/x")
	if _, err := ops.OffsiteSync(ctx, mcfg, ops.OffsiteSyncOptions{}, nil); ops.CodeOf(err) != "NOT_FOUND" || !strings.Contains(err.Error(), "no-such-bucket") {
		t.Fatalf("missing bucket: %v", err)
	} else {
		t.Logf("missing bucket: %v", err)
	}
}

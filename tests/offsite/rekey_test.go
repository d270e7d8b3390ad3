package offsite_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"os"
	osexec "os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/pme2go/pme2go-backup/engine/crypt"
	"github.com/pme2go/pme2go-backup/engine/ops"
)

// stored returns the SHA-256 of an object's bytes as the S3 server stores
// them (its posix backend), and the SHA-256 its off-site sidecar records.
func stored(t *testing.T, root, rel string) (got, recorded string) {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(root, rel))
	if err != nil {
		t.Fatalf("off-site object %s: %v", rel, err)
	}
	sum := sha256.Sum256(b)
	side, err := os.ReadFile(filepath.Join(root, rel+".manifest.json"))
	if err != nil {
		t.Fatalf("off-site sidecar of %s: %v", rel, err)
	}
	var m struct {
		Archive struct {
			SHA256 string `json:"sha256"`
		} `json:"archive"`
	}
	if err := json.Unmarshal(side, &m); err != nil {
		t.Fatal(err)
	}
	return "sha256:" + hex.EncodeToString(sum[:]), m.Archive.SHA256
}

// TestRekeyOffsite: rekey re-encrypts the off-site copies too. Of three
// encrypted backups two are only off-site (local copies pruned) and one is
// in both places. A rekey killed after re-encrypting the local archive and
// before replacing its off-site copy leaves the local copy readable with
// the new key and the off-site copy intact with the old one; the rerun
// replaces the stale off-site copy, fetches, re-encrypts and sends back the
// two off-site-only ones (removing their local copies again), each off-site
// object verified by the SHA-256 of its stored bytes against its sidecar;
// a point-in-time restore from the repository alone with only the new key
// equals the source.
func TestRekeyOffsite(t *testing.T) {
	c, s := setup(t)
	defer crypt.Configure(crypt.Settings{})
	dir := t.TempDir()
	oldPub, oldKey, err := crypt.TestKeys(dir, "old")
	if err != nil {
		t.Fatal(err)
	}
	newPub, newKey, err := crypt.TestKeys(dir, "new")
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	e := newEnv(t, c, s, "rekey", "BACKUP_COMPRESSION=zstd",
		"BACKUP_ENCRYPTION_RECIPIENTS="+oldPub, "BACKUP_ENCRYPTION_IDENTITY_FILE="+oldKey)
	full, err := ops.Full(ctx, e.cfg, ops.FullOptions{}, nil)
	if err != nil || full.OffsiteError != nil {
		t.Fatalf("full: %v %+v", err, full)
	}
	exec(t, c, "app", "UPDATE items SET qty = qty * 2 WHERE id % 5 = 0")
	inc1, err := ops.Incremental(ctx, e.cfg, ops.IncrementalOptions{}, nil)
	if err != nil || inc1.OffsiteError != nil || len(inc1.Archives) != 1 {
		t.Fatalf("incremental: %v %+v", err, inc1)
	}
	if res, err := ops.OffsiteSync(ctx, e.with(t, "LOCAL_RETENTION_DAYS=0").cfg, ops.OffsiteSyncOptions{}, nil); err != nil || len(res.Pruned) != 2 {
		t.Fatalf("prune local copies: %v %+v", err, res)
	}
	exec(t, c, "app", "DELETE FROM items WHERE id > 1900", "INSERT INTO items (name, qty) VALUES ('after rotation', 7)")
	inc2, err := ops.Incremental(ctx, e.cfg, ops.IncrementalOptions{}, nil)
	if err != nil || inc2.OffsiteError != nil || len(inc2.Archives) != 1 {
		t.Fatalf("incremental: %v %+v", err, inc2)
	}
	want := sums(t, c, "app")
	keys := map[string]string{full.Name: "rekey/full/" + full.Name,
		inc1.Archives[0].Name: "rekey/incremental/" + inc1.Archives[0].Name,
		inc2.Archives[0].Name: "rekey/incremental/" + inc2.Archives[0].Name}
	root := filepath.Join(s.Root, s.Bucket)
	before := map[string]string{}
	for name, rel := range keys {
		got, rec := stored(t, root, rel)
		if got != rec {
			t.Fatalf("%s off-site before rekey: stored %s, sidecar %s", name, got, rec)
		}
		before[name] = got
	}
	if l := locations(t, e); l[full.Name] != "offsite" || l[inc1.Archives[0].Name] != "offsite" || l[inc2.Archives[0].Name] != "both" {
		t.Fatalf("locations before rekey: %v", l)
	}

	// Rotate: the new recipient; both private keys during the rotation.
	both := filepath.Join(dir, "both.key")
	a, _ := os.ReadFile(oldKey)
	b, _ := os.ReadFile(newKey)
	if err := os.WriteFile(both, append(a, b...), 0o600); err != nil {
		t.Fatal(err)
	}
	rot := e.with(t, "BACKUP_ENCRYPTION_RECIPIENTS="+newPub, "BACKUP_ENCRYPTION_IDENTITY_FILE="+both)
	dry, err := ops.Rekey(ctx, rot.cfg, ops.RekeyOptions{DryRun: true}, nil)
	if err != nil || len(dry.Archives) != 3 {
		t.Fatalf("dry run: %v %+v", err, dry)
	}
	for _, a := range dry.Archives {
		if a.Action != "would-rekey" || a.Offsite != "would-rekey" {
			t.Fatalf("dry run of %s: %+v", a.Name, a)
		}
	}

	// Killed after the local archive was replaced, before its upload.
	conf := filepath.Join(t.TempDir(), "helper.conf")
	os.WriteFile(conf, nil, 0o600)
	cmd := osexec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), "PME2GO_OFFSITE_HELPER=rekey", "PME2GO_OFFSITE_CONF="+conf, "PME2GO_TEST_REKEY_KILL=before-offsite-upload")
	for k, v := range rot.vars {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	out, err := cmd.CombinedOutput()
	if err == nil || cmd.ProcessState.ExitCode() != -1 {
		t.Fatalf("rekey was not killed: %v\n%s", err, out)
	}
	// The local copy is the new one, readable with the new key alone...
	onlyNew := e.with(t, "BACKUP_ENCRYPTION_RECIPIENTS="+newPub, "BACKUP_ENCRYPTION_IDENTITY_FILE="+newKey)
	vr, err := ops.Verify(ctx, onlyNew.cfg, ops.VerifyOptions{Backups: []string{inc2.Archives[0].Name}}, nil)
	if err != nil || vr.Failed != 0 {
		t.Fatalf("local copy after the kill: %v %+v", err, vr)
	}
	// ...and the off-site copy is still the old one, whole.
	if got, rec := stored(t, root, keys[inc2.Archives[0].Name]); got != before[inc2.Archives[0].Name] || rec != got {
		t.Fatalf("off-site copy after the kill: stored %s, sidecar %s, before %s", got, rec, before[inc2.Archives[0].Name])
	}
	oldOnly := e.with(t, "BACKUP_DIR="+filepath.Join(t.TempDir(), "old-only"), "BACKUP_ENCRYPTION_IDENTITY_FILE="+oldKey)
	if vr, err := ops.Verify(ctx, oldOnly.cfg, ops.VerifyOptions{Backups: []string{inc2.Archives[0].Name}}, nil); err != nil || vr.Failed != 0 {
		t.Fatalf("off-site copy after the kill is not readable with the old key: %v %+v", err, vr)
	}

	// The rerun finishes everything. (Loading a configuration installs
	// its keys for the whole process: load rot's again.)
	rot = rot.with(t)
	res, err := ops.Rekey(ctx, rot.cfg, ops.RekeyOptions{}, nil)
	if err != nil {
		t.Fatalf("rekey: %v", err)
	}
	t.Logf("rekey: %d rekeyed, %d off-site copies replaced, %d current", res.Rekeyed, res.OffsiteRekeyed, res.Current)
	if res.Rekeyed != 2 || res.OffsiteRekeyed != 3 || res.Current != 1 {
		t.Fatalf("rekey result: %+v", res)
	}
	for name, rel := range keys {
		got, rec := stored(t, root, rel)
		if got != rec || got == before[name] {
			t.Errorf("%s off-site after rekey: stored %s, sidecar %s, before %s", name, got, rec, before[name])
		}
	}
	if l := locations(t, e); l[full.Name] != "offsite" || l[inc1.Archives[0].Name] != "offsite" || l[inc2.Archives[0].Name] != "both" {
		t.Fatalf("locations after rekey (local copies fetched for it are removed again): %v", l)
	}
	if again, err := ops.Rekey(ctx, rot.cfg, ops.RekeyOptions{}, nil); err != nil || again.Rekeyed != 0 || again.OffsiteRekeyed != 0 || again.Current != 3 {
		t.Fatalf("second rekey: %v %+v", err, again)
	}

	// From the repository alone, with the new key alone.
	empty := onlyNew.with(t, "BACKUP_DIR="+filepath.Join(t.TempDir(), "empty"))
	if _, err := ops.Restore(ctx, empty.cfg, ops.RestoreOptions{Target: ops.RestoreTarget{Latest: true}, TargetDB: "app_rekeyed", NoSafetyBackup: true}, nil); err != nil {
		t.Fatalf("PITR from the rekeyed off-site copies with the new key: %v", err)
	}
	same(t, "PITR after rekey", want, sums(t, c, "app_rekeyed"))
}

// TestVerifyOffsite: verify reads local copies only unless asked for the
// off-site ones; with Offsite, a copy in both places is checked by the
// SHA-256 of its stored bytes against both sidecars, a copy only off-site
// is fetched and verified in full (its members), and a damaged object in
// the bucket fails verification while the local-only verify still
// passes; status counts the backups by location.
func TestVerifyOffsite(t *testing.T) {
	c, s := setup(t)
	ctx := context.Background()
	e := newEnv(t, c, s, "verify")
	full, err := ops.Full(ctx, e.cfg, ops.FullOptions{}, nil)
	if err != nil || full.OffsiteError != nil {
		t.Fatalf("full: %v %+v", err, full)
	}
	if res, err := ops.OffsiteSync(ctx, e.with(t, "LOCAL_RETENTION_DAYS=0").cfg, ops.OffsiteSyncOptions{}, nil); err != nil || len(res.Pruned) != 1 {
		t.Fatalf("prune: %v %+v", err, res)
	}
	exec(t, c, "app", "UPDATE items SET qty = 0 WHERE id < 50")
	inc, err := ops.Incremental(ctx, e.cfg, ops.IncrementalOptions{}, nil)
	if err != nil || inc.OffsiteError != nil || len(inc.Archives) != 1 {
		t.Fatalf("incremental: %v %+v", err, inc)
	}
	st, err := ops.Status(ctx, e.cfg, ops.StatusOptions{NoServer: true}, nil)
	if err != nil || st.Offsite == nil || st.Offsite.OffsiteOnly != 1 || st.Offsite.Both != 1 || st.Offsite.LocalOnly != 0 {
		t.Fatalf("status locations: %v %+v", err, st.Offsite)
	}
	local, err := ops.Verify(ctx, e.cfg, ops.VerifyOptions{}, nil)
	if err != nil || len(local.Archives) != 1 || local.Archives[0].Name != inc.Archives[0].Name {
		t.Fatalf("verify of local copies: %v %+v", err, local)
	}
	vr, err := ops.Verify(ctx, e.cfg, ops.VerifyOptions{Offsite: true}, nil)
	if err != nil || vr.Failed != 0 || len(vr.Archives) != 3 {
		t.Fatalf("verify with off-site copies: %v %+v", err, vr)
	}
	for _, a := range vr.Archives[1:] {
		if a.Location != "offsite" || !a.OK {
			t.Fatalf("off-site entry: %+v", a)
		}
		if a.Name == full.Name && a.Members == 0 {
			t.Fatalf("the copy only off-site was not verified in full: %+v", a)
		}
	}
	if left, _ := filepath.Glob(filepath.Join(e.cfg.StateDir(), "verify-offsite-*")); len(left) != 0 {
		t.Fatalf("scratch left behind: %v", left)
	}
	if l := locations(t, e); l[full.Name] != "offsite" {
		t.Fatalf("verify left a local copy of %s: %v", full.Name, l)
	}
	// One flipped byte in the bucket.
	obj := filepath.Join(s.Root, s.Bucket, "verify", "full", full.Name)
	b, err := os.ReadFile(obj)
	if err != nil {
		t.Fatal(err)
	}
	b[len(b)/2] ^= 0x40
	if err := os.WriteFile(obj, b, 0o644); err != nil {
		t.Fatal(err)
	}
	vr, err = ops.Verify(ctx, e.cfg, ops.VerifyOptions{Offsite: true}, nil)
	if err == nil || vr == nil || vr.Failed != 1 {
		t.Fatalf("a damaged off-site copy passed: %v %+v", err, vr)
	}
	for _, a := range vr.Archives {
		if a.Name == full.Name && a.Location == "offsite" && (a.OK || len(a.Problems) == 0) {
			t.Fatalf("damaged copy: %+v", a)
		}
	}
	t.Logf("damaged copy: %s", err)
	if _, err := ops.Verify(ctx, e.cfg, ops.VerifyOptions{}, nil); err != nil {
		t.Fatalf("local verify after damage off-site: %v", err)
	}
	if _, err := ops.Verify(ctx, e.cfg, ops.VerifyOptions{Backups: []string{"no_such_backup.tar.xz"}, Offsite: true}, nil); err == nil {
		t.Fatal("verify of an unknown backup with the off-site option passed")
	}
}

// TestKeysOnBackupHost names which key the backup host needs: a full
// backup needs only the recipients (public keys); an incremental backup
// reads the open encrypted change-set segment (to find its last whole
// transaction and to seal it) and so needs the identity too. Without it the
// incremental is refused with KEY_ERR naming the reason, the slot is not
// advanced, and once the identity is given the incremental holds every
// change (a point-in-time restore equals the source).
func TestKeysOnBackupHost(t *testing.T) {
	c, s := setup(t)
	defer crypt.Configure(crypt.Settings{})
	pub, key, err := crypt.TestKeys(t.TempDir(), "host")
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	pubOnly := newEnv(t, c, s, "keys", "BACKUP_ENCRYPTION_RECIPIENTS="+pub, "BACKUP_ENCRYPTION_IDENTITY_FILE=")
	full, err := ops.Full(ctx, pubOnly.cfg, ops.FullOptions{}, nil)
	if err != nil {
		t.Fatalf("full backup with the recipients alone: %v", err)
	}
	exec(t, c, "app", "UPDATE items SET qty = -qty WHERE id % 3 = 0", "INSERT INTO items (name, qty) VALUES ('before incremental', 1)")
	want := sums(t, c, "app")
	_, err = ops.Incremental(ctx, pubOnly.cfg, ops.IncrementalOptions{}, nil)
	if fix := ops.Classify(err).Fix; ops.CodeOf(err) != "KEY_ERR" || !strings.Contains(err.Error(), "private key on this host") ||
		fix == nil || !strings.Contains(fix.Text, "BACKUP_ENCRYPTION_IDENTITY_FILE") {
		t.Fatalf("incremental without the identity: %v", err)
	}
	t.Logf("incremental with the recipients alone: %v", err)
	withKey := pubOnly.with(t, "BACKUP_ENCRYPTION_IDENTITY_FILE="+key)
	inc, err := ops.Incremental(ctx, withKey.cfg, ops.IncrementalOptions{}, nil)
	if err != nil || len(inc.Archives) != 1 || inc.Archives[0].Transactions < 2 {
		t.Fatalf("incremental with the identity: %v %+v", err, inc)
	}
	if _, err := ops.Restore(ctx, withKey.cfg, ops.RestoreOptions{Target: ops.RestoreTarget{Latest: true}, TargetDB: "app_keys", NoSafetyBackup: true}, nil); err != nil {
		t.Fatalf("restore: %v", err)
	}
	same(t, "PITR after an incremental refused for want of the identity", want, sums(t, c, "app_keys"))
	_ = full
}

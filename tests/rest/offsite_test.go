package rest_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pme2go/pme2go-backup/dbusapi"
	"github.com/pme2go/pme2go-backup/engine/crypt"
	"github.com/pme2go/pme2go-backup/engine/ops"
	"github.com/pme2go/pme2go-backup/tests/busharness"
	"github.com/pme2go/pme2go-backup/tests/pgharness"
	"github.com/pme2go/pme2go-backup/tests/s3harness"
)

// TestOffsiteAndRekeyOverBusAndREST drives the off-site sync and rekey
// jobs of the real daemon, over D-Bus (OffsiteSync, Rekey) and REST (POST
// …/offsite/sync, …/rekey), against real PostgreSQL and a real S3 server:
//   - with the S3 server down, a full backup job succeeds; its result
//     carries offsiteError, the events are backup_completed then
//     backup_failed with backupType "offsite", /metrics counts the failure
//     and status lists the backup as not copied;
//   - a caller outside the group is refused the new routes (403);
//   - with the server back, OffsiteSync copies it; a failing sync job is a
//     backup_failed "offsite" event;
//   - after the recipients file changes, a REST dry run lists the archive,
//     and Rekey re-encrypts it locally and off-site (the stored object's
//     SHA-256 equals the new sidecar's).
func TestOffsiteAndRekeyOverBusAndREST(t *testing.T) {
	requireRoot(t)
	busharness.Start(t, busharness.Policy(t, allowedGroup))
	c := pgharness.Start(t)
	c.CreateDB(t, "app")
	c.Exec(t, "app", `CREATE TABLE t (id int PRIMARY KEY, v text); INSERT INTO t SELECT g, md5(g::text) FROM generate_series(1, 2000) g`)
	s3 := s3harness.Start(t)
	keys := t.TempDir()
	oldPub, oldKey, err := crypt.TestKeys(keys, "old")
	if err != nil {
		t.Fatal(err)
	}
	newPub, newKey, err := crypt.TestKeys(keys, "new")
	if err != nil {
		t.Fatal(err)
	}
	// The daemon reads these two files each time it uses them: a rotation
	// rewrites them in place.
	pubFile, keyFile := filepath.Join(keys, "recipients"), filepath.Join(keys, "identity")
	copyFile(t, oldPub, pubFile)
	copyFile(t, oldKey, keyFile)
	env := pgharness.ConfigEnv(t, c, []string{"app"}, "BACKUP_COMPRESSION_LEVEL=1", "REPLICA_IDENTITY_FIX=full",
		"BACKUP_ENCRYPTION_RECIPIENTS="+pubFile, "BACKUP_ENCRYPTION_IDENTITY_FILE="+keyFile)
	for k, v := range s3.Env("daemon") {
		env[k] = v
	}
	s3.Stop()
	sock := filepath.Join(socketDir(t), "api.sock")
	startActivated(t, sock, env, "--group", allowedGroup)
	if err := os.Chmod(sock, 0o666); err != nil {
		t.Fatal(err)
	}
	hc := unixClient(sock)
	sse := openSSE(t, sock)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cl, err := dbusapi.Dial(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	metrics := func() string {
		r := call(t, hc, "GET", "/metrics", nil)
		if r.Status != 200 {
			t.Fatalf("metrics: %d %s", r.Status, r.Body)
		}
		return string(r.Body)
	}

	var archive string
	t.Run("a backup whose off-site copy fails succeeds and says so", func(t *testing.T) {
		r := call(t, hc, "POST", api+"/create", `{"type": "full"}`)
		if r.Status != http.StatusAccepted {
			t.Fatalf("create: %d %s", r.Status, r.Body)
		}
		j := follow(t, hc, r.Header.Get("Location"), 3*time.Minute)
		archive, _ = j["backupPath"].(string)
		res, _ := j["result"].(map[string]any)
		oe, _ := res["offsiteError"].(map[string]any)
		if j["state"] != dbusapi.JobSucceeded || archive == "" || oe == nil || !strings.Contains(oe["message"].(string), "not copied off-site") {
			t.Fatalf("job: %v", j)
		}
		sse.expect(t, "backup_started", time.Minute)
		if ev := sse.expect(t, "backup_completed", time.Minute); ev["backupPath"] != archive {
			t.Fatalf("completed: %v", ev)
		}
		ev := sse.expect(t, "backup_failed", time.Minute)
		if ev["backupType"] != "offsite" || ev["errorCode"] == "" || !strings.Contains(ev["error"].(string), "not copied off-site") || ev["fix"] == "" {
			t.Fatalf("off-site failure event: %v", ev)
		}
		m := metrics()
		for _, want := range []string{`pme2go_backup_failures_total{kind="offsite"} 1`, "pme2go_backup_offsite_last_sync_success 0",
			"pme2go_backup_offsite_not_copied_backups 1", `pme2go_backup_failures_total{kind="full"} 0`} {
			if !strings.Contains(m, want) {
				t.Errorf("metrics lack %q:\n%s", want, m)
			}
		}
		st := call(t, hc, "GET", api+"/status", nil).json(t)
		off, _ := st["engine"].(map[string]any)["offsite"].(map[string]any)
		if nc, _ := off["notCopied"].([]any); len(nc) != 1 || off["lastError"] == "" {
			t.Fatalf("status offsite: %v", off)
		}
	})

	t.Run("callers outside the group are refused", func(t *testing.T) {
		if _, err := exec.LookPath("curl"); err != nil {
			pgharness.Require(t, "curl", "curl not installed")
		}
		for _, path := range []string{api + "/offsite/sync", api + "/rekey"} {
			out, _ := asUser(t, "", "curl", "-sS", "--max-time", "30", "--unix-socket", sock, "-X", "POST",
				"-w", "\nHTTP %{http_code}", "http://localhost"+path)
			if !strings.HasSuffix(out, "HTTP 403") || !strings.Contains(out, `"NOT_AUTHORIZED"`) {
				t.Errorf("nobody, POST %s: %s", path, out)
			}
		}
		if r := call(t, hc, "GET", api+"/rekey", nil); r.Status != http.StatusMethodNotAllowed {
			t.Errorf("GET rekey: %d %s", r.Status, r.Body)
		}
		if r := call(t, hc, "POST", api+"/rekey", `{"backups": "x"}`); r.Status != http.StatusBadRequest {
			t.Errorf("malformed rekey: %d %s", r.Status, r.Body)
		}
	})

	t.Run("OffsiteSync over D-Bus copies it; a failing sync is an event", func(t *testing.T) {
		s3.Restart()
		p, err := cl.OffsiteSync(ctx)
		if err != nil {
			t.Fatal(err)
		}
		j, err := cl.Follow(ctx, p, nil)
		if err != nil || j.State != dbusapi.JobSucceeded || j.Kind != dbusapi.KindOffsiteSync {
			t.Fatalf("sync job: %v %+v %v", err, j, j.Error)
		}
		var res ops.OffsiteSyncResult
		if err := json.Unmarshal([]byte(j.ResultJSON), &res); err != nil || len(res.Uploaded) != 1 || res.Uploaded[0].Name != filepath.Base(archive) {
			t.Fatalf("sync result: %v %s", err, j.ResultJSON)
		}
		m := metrics()
		for _, want := range []string{"pme2go_backup_offsite_last_sync_success 1", "pme2go_backup_offsite_not_copied_backups 0",
			"pme2go_backup_offsite_copied_backups 1"} {
			if !strings.Contains(m, want) {
				t.Errorf("metrics lack %q:\n%s", want, m)
			}
		}
		// Over REST: nothing left to copy.
		r := call(t, hc, "POST", api+"/offsite/sync", nil)
		if r.Status != http.StatusAccepted {
			t.Fatalf("POST offsite/sync: %d %s", r.Status, r.Body)
		}
		if j := follow(t, hc, r.Header.Get("Location"), 2*time.Minute); j["state"] != dbusapi.JobSucceeded || j["kind"] != "offsite-sync" {
			t.Fatalf("REST sync job: %v", j)
		}
		s3.Stop()
		r = call(t, hc, "POST", api+"/offsite/sync", `{}`)
		if r.Status != http.StatusAccepted {
			t.Fatalf("POST offsite/sync: %d %s", r.Status, r.Body)
		}
		if j := follow(t, hc, r.Header.Get("Location"), 2*time.Minute); j["state"] != dbusapi.JobFailed {
			t.Fatalf("sync with the server down: %v", j)
		}
		if ev := sse.expect(t, "backup_failed", time.Minute); ev["backupType"] != "offsite" || ev["error"] == "" {
			t.Fatalf("failed sync event: %v", ev)
		}
		s3.Restart()
	})

	t.Run("Rekey re-encrypts local and off-site copies", func(t *testing.T) {
		both, _ := os.ReadFile(oldKey)
		nk, _ := os.ReadFile(newKey)
		copyFile(t, newPub, pubFile)
		if err := os.WriteFile(keyFile, append(both, nk...), 0o600); err != nil {
			t.Fatal(err)
		}
		r := call(t, hc, "POST", api+"/rekey", `{"dryRun": true}`)
		if r.Status != http.StatusAccepted {
			t.Fatalf("POST rekey: %d %s", r.Status, r.Body)
		}
		j := follow(t, hc, r.Header.Get("Location"), 2*time.Minute)
		res, _ := j["result"].(map[string]any)
		as, _ := res["archives"].([]any)
		if j["state"] != dbusapi.JobSucceeded || len(as) != 1 || as[0].(map[string]any)["action"] != "would-rekey" || as[0].(map[string]any)["offsite"] != "would-rekey" {
			t.Fatalf("dry run: %v", j)
		}
		p, err := cl.Rekey(ctx, nil, false)
		if err != nil {
			t.Fatal(err)
		}
		dj, err := cl.Follow(ctx, p, nil)
		if err != nil || dj.State != dbusapi.JobSucceeded || dj.Kind != dbusapi.KindRekey {
			t.Fatalf("rekey job: %v %+v %v", err, dj, dj.Error)
		}
		var rr ops.RekeyResult
		if err := json.Unmarshal([]byte(dj.ResultJSON), &rr); err != nil || rr.Rekeyed != 1 || rr.OffsiteRekeyed != 1 {
			t.Fatalf("rekey result: %v %s", err, dj.ResultJSON)
		}
		name := filepath.Base(archive)
		obj, err := os.ReadFile(filepath.Join(s3.Root, s3.Bucket, "daemon", "full", name))
		if err != nil {
			t.Fatal(err)
		}
		local, err := os.ReadFile(archive)
		if err != nil {
			t.Fatal(err)
		}
		var side struct {
			Archive struct {
				SHA256     string `json:"sha256"`
				Encryption struct {
					Recipients []string `json:"recipients"`
				} `json:"encryption"`
			} `json:"archive"`
		}
		sb, _ := os.ReadFile(filepath.Join(s3.Root, s3.Bucket, "daemon", "full", name+".manifest.json"))
		if err := json.Unmarshal(sb, &side); err != nil {
			t.Fatal(err)
		}
		so, sl := sha256.Sum256(obj), sha256.Sum256(local)
		pub, _ := os.ReadFile(newPub)
		if "sha256:"+hex.EncodeToString(so[:]) != side.Archive.SHA256 || so != sl || len(side.Archive.Encryption.Recipients) != 1 ||
			!strings.Contains(string(pub), side.Archive.Encryption.Recipients[0]) {
			t.Fatalf("off-site copy after rekey: stored %x, local %x, sidecar %+v", so, sl, side.Archive)
		}
	})
}

func copyFile(t *testing.T, from, to string) {
	t.Helper()
	b, err := os.ReadFile(from)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(to, b, 0o600); err != nil {
		t.Fatal(err)
	}
}

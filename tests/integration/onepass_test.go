package integration

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/pme2go/pme2go-backup/engine/archive"
	"github.com/pme2go/pme2go-backup/tests/pgharness"
)

// TestOnePassRestoreRefusesDamage: restore verifies the archive while it
// extracts it and while pg_restore already fills a scratch database. Damage
// in the first member, in table data in the middle (after pg_restore has
// started on the table of contents) and in manifest.json at the end is
// refused as a verification failure; the target keeps its content, a new
// target is not created, no scratch database and no extraction directory
// is left behind. The intact archive then restores exactly.
func TestOnePassRestoreRefusesDamage(t *testing.T) {
	c := pgharness.Start(t)
	c.CreateDB(t, "app")
	c.Exec(t, "app", `CREATE TABLE big AS SELECT g AS id, md5(g::text) || repeat(md5((g * 7)::text), 3) AS v FROM generate_series(1, 30000) g;
		ALTER TABLE big ADD PRIMARY KEY (id);
		CREATE TABLE small AS SELECT g AS id, 'row ' || g AS v FROM generate_series(1, 50) g`)
	env := cfgEnv(t, c, []string{"app"})
	good := takeBackup(t, env)
	c.Exec(t, "app", `DELETE FROM big WHERE id > 100; UPDATE small SET v = 'changed after the backup'`)
	want, err := pgharness.Checksums(t.Context(), c.ConnString("app"))
	if err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(good)
	if err != nil {
		t.Fatal(err)
	}
	sidecar, _ := os.ReadFile(archive.SidecarPath(good))
	magic := []byte{0xFD, '7', 'z', 'X', 'Z', 0x00}
	storedHead := []byte{0x02, 0x00, 0x21, 0x01, 0x00, 0x00, 0x00, 0x00} // block header of a stored xz stream
	flip := func(at int) []byte {
		if at <= 0 || at >= len(data) {
			t.Fatalf("damage point %d outside the archive (%d bytes)", at, len(data))
		}
		b := append([]byte(nil), data...)
		b[at] ^= 0x10
		return b
	}
	cases := []struct {
		name    string
		content []byte
	}{
		// The first xz stream holds application_data.json, the first member.
		{"first member", flip(30)},
		// The first stored stream holds the table data of "big", after
		// toc.dat: pg_restore has begun with the pre-data section.
		{"table data in the middle", flip(bytes.Index(data, storedHead) + 2000)},
		// The last xz stream holds manifest.json alone.
		{"manifest at the end", flip(bytes.LastIndex(data, magic) + 40)},
		{"truncated", data[:len(data)*3/4]},
	}
	noLeftovers := func(t *testing.T) {
		t.Helper()
		var n int
		if err := c.Conn(t, "postgres").QueryRow(t.Context(), `SELECT count(*) FROM pg_database WHERE datname LIKE '%pme2go%' OR datname = 'never_created'`).Scan(&n); err != nil {
			t.Fatal(err)
		}
		if n != 0 {
			t.Fatalf("%d scratch or refused target databases left behind", n)
		}
		entries, _ := os.ReadDir(filepath.Join(env["BACKUP_DIR"], "state"))
		for _, e := range entries {
			if strings.HasPrefix(e.Name(), ".") && strings.Contains(e.Name(), "restore") {
				t.Fatalf("extraction directory %s left behind", e.Name())
			}
		}
		got, err := pgharness.Checksums(t.Context(), c.ConnString("app"))
		if err != nil {
			t.Fatal(err)
		}
		pgharness.AssertSameData(t, want, got)
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			p := filepath.Join(filepath.Dir(good), "full_backup_damaged.tar.xz")
			os.WriteFile(p, tc.content, 0o600)
			os.WriteFile(archive.SidecarPath(p), sidecar, 0o600)
			defer os.Remove(p)
			defer os.Remove(archive.SidecarPath(p))
			r := runCLI(t, env, "restore", "--backup", p, "--force", "--no-safety-backup")
			expectFailure(t, r, "failed verification", "nothing was restored")
			r = runCLI(t, env, "restore", "--backup", p, "--target-db", "never_created")
			expectFailure(t, r, "failed verification")
			noLeftovers(t)
		})
	}
	// The intact archive restores exactly, over the changed database.
	if r := runCLI(t, env, "restore", "--backup", good, "--force", "--no-safety-backup"); r.code != 0 {
		t.Fatalf("restore of the intact archive: %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	var n int
	if err := c.Conn(t, "app").QueryRow(t.Context(), `SELECT count(*) FROM big`).Scan(&n); err != nil || n != 30000 {
		t.Fatalf("restored table big has %d rows (%v), want 30000", n, err)
	}
}

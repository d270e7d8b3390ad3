package archive

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// orderedArchive writes an archive whose members come in a known order:
// toc.dat (text, LZMA-compressed in xz), two stored table-data members of
// random bytes, then manifest.json.
func orderedArchive(t *testing.T, c Codec) (string, []string, map[string][]byte) {
	t.Helper()
	rnd := func(n int) []byte {
		b := make([]byte, n)
		if _, err := rand.Read(b); err != nil {
			t.Fatal(err)
		}
		return b
	}
	names := []string{"database/app/toc.dat", "database/app/1.dat.gz", "database/app/2.dat.gz"}
	data := map[string][]byte{
		names[0]: []byte(strings.Repeat("CREATE TABLE t (id integer);\n", 700)),
		names[1]: rnd(300 << 10),
		names[2]: rnd(300 << 10),
	}
	out := filepath.Join(t.TempDir(), "full-1"+c.Ext())
	w, err := Create(out, WriterOptions{Codec: c, Level: 6, Workers: 2})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Abort()
	for _, n := range names {
		if err := w.AddBytes(n, data[n]); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Commit(&Manifest{Type: "full", Timestamp: time.Now().UTC(), Version: "test", Databases: []string{"app"},
		Files: map[string]string{"database:app": "database/app/"}}); err != nil {
		t.Fatal(err)
	}
	return out, names, data
}

// TestVerifiedExtract: a sound archive is extracted and proven member by
// member, then as a whole.
func TestVerifiedExtract(t *testing.T) {
	for _, c := range Codecs {
		t.Run(string(c), func(t *testing.T) {
			path, names, data := orderedArchive(t, c)
			dest := t.TempDir()
			v, err := StartVerifiedExtract(context.Background(), path, dest)
			if err != nil {
				t.Fatal(err)
			}
			defer v.Abort()
			ctx := context.Background()
			for _, n := range names {
				if err := v.Wait(ctx, n); err != nil {
					t.Fatalf("wait %s: %v", n, err)
				}
				if got, _ := os.ReadFile(filepath.Join(dest, n)); !bytes.Equal(got, data[n]) {
					t.Fatalf("%s proven but its content differs", n)
				}
			}
			if err := v.WaitPrefix(ctx, "database/app/"); err != nil {
				t.Fatal(err)
			}
			if !v.Proven("database/app/") || !v.Proven("") {
				t.Fatal("Proven is false after every member was proven")
			}
			m, err := v.Done(ctx)
			if err != nil || m == nil || m.Type != "full" {
				t.Fatalf("done: %v %v", m, err)
			}
			if err := v.Wait(ctx, "database/app/none.dat"); !errors.Is(err, ErrVerification) {
				t.Fatalf("a member not in the archive: %v", err)
			}
		})
	}
}

// TestVerifiedExtractRefusesDamage: damage in the first member, in the
// middle, in manifest.json at the end, a truncated file, a missing or
// modified sidecar: the extraction fails with ErrVerification, members
// after the damage are never reported proven, members before it are.
func TestVerifiedExtractRefusesDamage(t *testing.T) {
	type damage func(t *testing.T, path string, data map[string][]byte, b []byte) []byte
	flipAt := func(marker func(data map[string][]byte, b []byte) int) damage {
		return func(t *testing.T, path string, data map[string][]byte, b []byte) []byte {
			i := marker(data, b)
			if i < 0 {
				t.Fatal("damage point not found")
			}
			b[i] ^= 0x20
			return b
		}
	}
	inMember := func(n string) func(map[string][]byte, []byte) int {
		return func(data map[string][]byte, b []byte) int {
			i := bytes.Index(b, data[n][1000:1064])
			if i >= 0 {
				i += 10
			}
			return i
		}
	}
	cases := []struct {
		name   string
		codecs []Codec
		damage damage
		proven []string // members proven before the damage
		wants  string
	}{
		{"first member", []Codec{CodecNone}, flipAt(func(_ map[string][]byte, b []byte) int { return bytes.Index(b, []byte("CREATE TABLE")) + 3 }), nil, "checksum"},
		{"first member (xz)", []Codec{CodecXZ}, flipAt(func(_ map[string][]byte, b []byte) int { return 30 }) /* in the first xz stream: LZMA data of toc.dat */, nil, ""},
		{"middle member", []Codec{CodecNone, CodecXZ}, flipAt(inMember("database/app/1.dat.gz")), []string{"database/app/toc.dat"}, ""},
		{"manifest at the end", []Codec{CodecNone}, flipAt(func(_ map[string][]byte, b []byte) int { return bytes.LastIndex(b, []byte(`"formatVersion"`)) + 2 }),
			[]string{"database/app/toc.dat", "database/app/1.dat.gz", "database/app/2.dat.gz"}, "manifest"},
		{"truncated", []Codec{CodecNone, CodecXZ, CodecZstd, CodecGzip}, func(t *testing.T, _ string, _ map[string][]byte, b []byte) []byte { return b[:len(b)*2/3] },
			[]string{"database/app/toc.dat", "database/app/1.dat.gz"}, ""},
	}
	for _, tc := range cases {
		for _, c := range tc.codecs {
			t.Run(tc.name+"/"+string(c), func(t *testing.T) {
				path, names, data := orderedArchive(t, c)
				b, _ := os.ReadFile(path)
				if err := os.WriteFile(path, tc.damage(t, path, data, b), 0o600); err != nil {
					t.Fatal(err)
				}
				v, err := StartVerifiedExtract(context.Background(), path, t.TempDir())
				if err != nil {
					t.Fatal(err)
				}
				defer v.Abort()
				ctx := context.Background()
				_, doneErr := v.Done(ctx)
				if !errors.Is(doneErr, ErrVerification) || !strings.Contains(doneErr.Error(), tc.wants) {
					t.Fatalf("damage not refused as a verification failure: %v", doneErr)
				}
				proven := map[string]bool{}
				for _, n := range tc.proven {
					proven[n] = true
				}
				for _, n := range names {
					if !proven[n] && v.Proven(n) {
						t.Errorf("%s: Proven after damage before it", n)
					}
					err := v.Wait(ctx, n)
					if proven[n] && err != nil {
						t.Errorf("%s comes before the damage but is not proven: %v", n, err)
					}
					if !proven[n] && !errors.Is(err, ErrVerification) {
						t.Errorf("%s: want a verification error, got %v", n, err)
					}
				}
			})
		}
	}
	t.Run("missing sidecar", func(t *testing.T) {
		path, _, _ := orderedArchive(t, CodecXZ)
		os.Remove(SidecarPath(path))
		if _, err := StartVerifiedExtract(context.Background(), path, t.TempDir()); !errors.Is(err, ErrVerification) || !strings.Contains(err.Error(), "sidecar") {
			t.Fatalf("want a verification error naming the sidecar, got %v", err)
		}
	})
	t.Run("sidecar with another checksum", func(t *testing.T) {
		path, names, _ := orderedArchive(t, CodecXZ)
		side, err := ReadSidecar(path)
		if err != nil {
			t.Fatal(err)
		}
		side.Checksums[names[1]] = "sha256:" + strings.Repeat("0", 64)
		b, _ := json.Marshal(side)
		os.WriteFile(SidecarPath(path), b, 0o600)
		v, err := StartVerifiedExtract(context.Background(), path, t.TempDir())
		if err != nil {
			t.Fatal(err)
		}
		defer v.Abort()
		if err := v.Wait(context.Background(), names[0]); err != nil {
			t.Fatal(err)
		}
		if err := v.Wait(context.Background(), names[1]); !errors.Is(err, ErrVerification) || !strings.Contains(err.Error(), names[1]) {
			t.Fatalf("want a verification error naming %s, got %v", names[1], err)
		}
	})
}

// TestVerifiedExtractAbort: Abort stops a running extraction and returns.
func TestVerifiedExtractAbort(t *testing.T) {
	path, _, _ := orderedArchive(t, CodecXZ)
	v, err := StartVerifiedExtract(context.Background(), path, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	v.Abort()
	v.Abort()
	if _, err := v.Done(context.Background()); err == nil {
		// It may have finished before Abort; then it must be sound.
		return
	}
}

package archive

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ulikunitz/xz"
)

// hasProblem reports whether rep has a problem containing substr.
func hasProblem(rep *VerifyReport, substr string) bool {
	for _, p := range rep.Problems {
		if strings.Contains(p.Message, substr) {
			return true
		}
	}
	return false
}

func TestVerifyDetectsFlippedByte(t *testing.T) {
	src, files := srcTree(t, 256<<10)
	for _, c := range Codecs {
		t.Run(string(c), func(t *testing.T) {
			path, _ := writeTestArchive(t, c, src, files)
			b, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			b[len(b)/2] ^= 0x55
			if err := os.WriteFile(path, b, 0o600); err != nil {
				t.Fatal(err)
			}
			rep, err := Verify(context.Background(), path)
			if err != nil {
				t.Fatal(err)
			}
			if rep.OK() || !hasProblem(rep, "archive checksum") {
				t.Fatalf("flipped byte not detected: %v", rep.Problems)
			}
			// Even without the sidecar the content checks must notice.
			if err := os.Remove(SidecarPath(path)); err != nil {
				t.Fatal(err)
			}
			rep, err = Verify(context.Background(), path)
			if err != nil {
				t.Fatal(err)
			}
			if len(rep.Problems) < 2 {
				t.Fatalf("corruption not detected without sidecar: %v", rep.Problems)
			}
			if _, err := Extract(context.Background(), path, t.TempDir()); err == nil {
				t.Fatal("Extract accepted a corrupt archive")
			}
		})
	}
}

func TestVerifyTruncated(t *testing.T) {
	src, files := srcTree(t, 256<<10)
	for _, c := range []Codec{CodecXZ, CodecZstd, CodecGzip} {
		path, _ := writeTestArchive(t, c, src, files)
		fi, _ := os.Stat(path)
		if err := os.Truncate(path, fi.Size()/2); err != nil {
			t.Fatal(err)
		}
		rep, err := Verify(context.Background(), path)
		if err != nil {
			t.Fatal(err)
		}
		if !hasProblem(rep, "truncated or corrupt compressed stream at member") || !hasProblem(rep, "archive size") {
			t.Fatalf("%s: truncation not reported: %v", c, rep.Problems)
		}
	}
}

func TestVerifyMissingSidecarAndForeign(t *testing.T) {
	src, files := srcTree(t, 64<<10)
	path, _ := writeTestArchive(t, CodecGzip, src, files)
	if err := os.Remove(SidecarPath(path)); err != nil {
		t.Fatal(err)
	}
	rep, err := Verify(context.Background(), path)
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Problems) != 1 || !hasProblem(rep, "missing sidecar") || rep.Manifest == nil {
		t.Fatalf("problems: %v", rep.Problems)
	}

	junk := filepath.Join(t.TempDir(), "junk.tar.xz")
	b := make([]byte, 100000)
	_, _ = rand.Read(b)
	if err := os.WriteFile(junk, b, 0o600); err != nil {
		t.Fatal(err)
	}
	rep, err = Verify(context.Background(), junk)
	if err != nil {
		t.Fatal(err)
	}
	if !hasProblem(rep, "not a pme2go-backup archive") {
		t.Fatalf("random file: %v", rep.Problems)
	}
	if _, err := Verify(context.Background(), filepath.Join(t.TempDir(), "nope.tar.xz")); err == nil {
		t.Fatal("missing file: no error")
	}
}

func TestVerifyCancel(t *testing.T) {
	src, files := srcTree(t, 1<<20)
	path, _ := writeTestArchive(t, CodecNone, src, files)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := Verify(ctx, path); !errors.Is(err, context.Canceled) {
		t.Fatalf("Verify err = %v", err)
	}
	if _, err := Extract(ctx, path, t.TempDir()); !errors.Is(err, context.Canceled) {
		t.Fatalf("Extract err = %v", err)
	}
}

// handTar builds an xz-compressed tar from headers (regular file bodies
// are "evil") and writes it to a new file.
func handTar(t *testing.T, hdrs ...*tar.Header) string {
	t.Helper()
	var buf bytes.Buffer
	xw, err := xz.NewWriter(&buf)
	if err != nil {
		t.Fatal(err)
	}
	tw := tar.NewWriter(xw)
	for _, h := range hdrs {
		body := []byte("evil")
		if h.Typeflag == tar.TypeReg {
			h.Size = int64(len(body))
		}
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		if h.Typeflag == tar.TypeReg {
			if _, err := tw.Write(body); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	if err := xw.Close(); err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(t.TempDir(), "evil.tar.xz")
	if err := os.WriteFile(p, buf.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestUnsafeMembers(t *testing.T) {
	cases := map[string]*tar.Header{
		"dotdot":   {Typeflag: tar.TypeReg, Name: "../evil", Mode: 0o644},
		"nested":   {Typeflag: tar.TypeReg, Name: "a/../../evil", Mode: 0o644},
		"absolute": {Typeflag: tar.TypeReg, Name: "/tmp/evil", Mode: 0o644},
		"symlink":  {Typeflag: tar.TypeSymlink, Name: "evil", Linkname: "/etc/passwd"},
		"hardlink": {Typeflag: tar.TypeLink, Name: "evil", Linkname: "/etc/passwd"},
		"device":   {Typeflag: tar.TypeChar, Name: "evil", Devmajor: 1, Devminor: 3},
		"fifo":     {Typeflag: tar.TypeFifo, Name: "evil"},
	}
	for name, h := range cases {
		t.Run(name, func(t *testing.T) {
			p := handTar(t, &tar.Header{Typeflag: tar.TypeReg, Name: "ok.txt"}, h)
			rep, err := Verify(context.Background(), p)
			if err != nil {
				t.Fatal(err)
			}
			if !hasProblem(rep, "unsafe") {
				t.Fatalf("Verify: %v", rep.Problems)
			}
			parent := t.TempDir()
			dest := filepath.Join(parent, "dest")
			if err := os.Mkdir(dest, 0o700); err != nil {
				t.Fatal(err)
			}
			_, err = Extract(context.Background(), p, dest)
			if err == nil || !strings.Contains(err.Error(), "unsafe") || !strings.Contains(err.Error(), "nothing outside") {
				t.Fatalf("Extract err = %v", err)
			}
			ents, _ := os.ReadDir(parent)
			if len(ents) != 1 {
				t.Fatalf("written outside dest: %v", ents)
			}
			if _, err := os.Lstat(filepath.Join(dest, "evil")); err == nil {
				t.Fatal("unsafe member was written")
			}
		})
	}
}

func TestCleanMemberName(t *testing.T) {
	for name, want := range map[string]string{"a": "a", "a/b/": "a/b", "a b/c.d": "a b/c.d"} {
		if got, err := CleanMemberName(name); err != nil || got != want {
			t.Errorf("CleanMemberName(%q) = %q, %v", name, got, err)
		}
	}
	for _, bad := range []string{"", "/", "/a", "..", "a/..", "./a", "a//b", "a\x00b", "../../etc/passwd"} {
		if _, err := CleanMemberName(bad); err == nil {
			t.Errorf("CleanMemberName(%q) accepted", bad)
		}
	}
}

func FuzzCleanMemberName(f *testing.F) {
	for _, s := range []string{"a/b", "../x", "/abs", "a/./b", "dir/", "a\\..\\b"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, name string) {
		got, err := CleanMemberName(name)
		if err != nil {
			return
		}
		if !filepath.IsLocal(got) || filepath.Clean(got) != got {
			t.Fatalf("CleanMemberName(%q) = %q is not a clean local path", name, got)
		}
	})
}

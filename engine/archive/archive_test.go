package archive

import (
	"bytes"
	"context"
	"crypto/rand"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// srcTree creates a source directory with nested dirs, an empty file, an
// empty dir, random and text data. It returns the dir and file contents
// keyed by relative slash path.
func srcTree(t *testing.T, big int) (string, map[string][]byte) {
	t.Helper()
	dir := t.TempDir()
	rnd := make([]byte, big/3)
	if _, err := rand.Read(rnd); err != nil {
		t.Fatal(err)
	}
	files := map[string][]byte{
		"toc.dat":          []byte("toc"),
		"empty.dat":        {},
		"a/b/c/deep.txt":   []byte(strings.Repeat("deep text\n", 1000)),
		"a/random.bin":     rnd,
		"a/text.sql":       mixedData(big-len(rnd), 7),
		"a/b/with space.x": []byte("spaces in names"),
	}
	for rel, data := range files {
		p := filepath.Join(dir, filepath.FromSlash(rel))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.MkdirAll(filepath.Join(dir, "emptydir"), 0o755); err != nil {
		t.Fatal(err)
	}
	return dir, files
}

// writeTestArchive writes an archive of src under "database/app" plus a
// globals.sql member and returns the archive path and all member data.
func writeTestArchive(t *testing.T, c Codec, src string, files map[string][]byte) (string, map[string][]byte) {
	t.Helper()
	out := filepath.Join(t.TempDir(), "backups", "full-1"+c.Ext())
	w, err := Create(out, WriterOptions{Codec: c, Level: 1, Workers: 2})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Abort()
	if err := w.AddDir("database/app", src); err != nil {
		t.Fatal(err)
	}
	globals := []byte("CREATE ROLE app;\n")
	if err := w.AddBytes("globals.sql", globals); err != nil {
		t.Fatal(err)
	}
	m := &Manifest{Type: "full", Timestamp: time.Now().UTC(), Version: "test",
		Files:     map[string]string{"database:app": "database/app/", "globals": "globals.sql"},
		Databases: []string{"app"}, HasGlobals: true}
	if err := w.Commit(m); err != nil {
		t.Fatal(err)
	}
	if m.Archive == nil || m.Archive.Codec != c {
		t.Fatalf("Commit did not set Archive: %+v", m.Archive)
	}
	all := map[string][]byte{"globals.sql": globals}
	for rel, data := range files {
		all["database/app/"+rel] = data
	}
	return out, all
}

// checkTree compares the regular files under dir with want.
func checkTree(t *testing.T, dir string, want map[string][]byte) {
	t.Helper()
	for rel, data := range want {
		got, err := os.ReadFile(filepath.Join(dir, filepath.FromSlash(rel)))
		if err != nil {
			t.Errorf("%s: %v", rel, err)
			continue
		}
		if !bytes.Equal(got, data) {
			t.Errorf("%s: content differs (%d vs %d bytes)", rel, len(got), len(data))
		}
	}
}

func TestRoundTrip(t *testing.T) {
	src, files := srcTree(t, 3<<20)
	for _, c := range Codecs {
		t.Run(string(c), func(t *testing.T) {
			path, all := writeTestArchive(t, c, src, files)
			head := make([]byte, DetectHeaderSize)
			f, _ := os.Open(path)
			n, _ := f.Read(head)
			f.Close()
			if got, ok := DetectCodec(head[:n]); !ok || got != c {
				t.Fatalf("DetectCodec = %v %v", got, ok)
			}
			rep, err := Verify(context.Background(), path)
			if err != nil {
				t.Fatal(err)
			}
			if !rep.OK() {
				t.Fatalf("problems: %v", rep.Problems)
			}
			if rep.Manifest.Checksums["globals.sql"] == "" || rep.Manifest.Sizes["database/app/a/random.bin"] != int64(len(files["a/random.bin"])) {
				t.Fatalf("manifest incomplete: %+v", rep.Manifest)
			}
			dest := t.TempDir()
			m, err := Extract(context.Background(), path, dest)
			if err != nil {
				t.Fatal(err)
			}
			if m.Type != "full" || m.FormatVersion != FormatVersion || !m.HasGlobals {
				t.Fatalf("manifest %+v", m)
			}
			checkTree(t, dest, all)
			for rel, want := range map[string]os.FileMode{
				"database/app/a/b":        0o700,
				"database/app/emptydir":   0o700,
				"database/app/empty.dat":  0o600,
				"database/app/a/text.sql": 0o600,
			} {
				fi, err := os.Stat(filepath.Join(dest, rel))
				if err != nil || fi.Mode().Perm() != want {
					t.Errorf("%s: mode %v err %v, want %v", rel, fi.Mode().Perm(), err, want)
				}
			}
			for _, p := range []string{path, SidecarPath(path)} {
				fi, err := os.Stat(p)
				if err != nil || fi.Mode().Perm() != 0o600 {
					t.Errorf("%s: mode %v err %v", p, fi.Mode().Perm(), err)
				}
			}
			fi, _ := os.Stat(filepath.Dir(path))
			if fi.Mode().Perm() != 0o700 {
				t.Errorf("backup dir mode %v", fi.Mode().Perm())
			}
			if c == CodecXZ {
				systemCheck(t, path, all, "xz", "-t", path)
			}
			systemTar(t, c, path, all)
		})
	}
}

// requireTool skips the test when tool is missing, or fails it when
// PME2GO_TEST_REQUIRE is "all" or names the tool (as tests/pgharness.Require
// does; that package cannot be imported here).
func requireTool(t *testing.T, tool string) {
	t.Helper()
	if _, err := exec.LookPath(tool); err == nil {
		return
	}
	for _, item := range strings.Split(os.Getenv("PME2GO_TEST_REQUIRE"), ",") {
		if item = strings.TrimSpace(item); strings.EqualFold(item, "all") || item == tool {
			t.Fatalf("required %q is not installed", tool)
		}
	}
	t.Skipf("skipping: %s is not installed (set PME2GO_TEST_REQUIRE=all to fail instead)", tool)
}

// systemCheck runs a system tool; a missing tool skips (or fails, see requireTool).
func systemCheck(t *testing.T, _ string, _ map[string][]byte, tool string, args ...string) {
	t.Helper()
	requireTool(t, tool)
	if out, err := exec.Command(tool, args...).CombinedOutput(); err != nil {
		t.Fatalf("%s %v: %v\n%s", tool, args, err, out)
	}
}

// systemTar extracts path with the system tar and compares the content.
func systemTar(t *testing.T, c Codec, path string, all map[string][]byte) {
	t.Helper()
	flags := map[Codec][]string{CodecXZ: {"-xJf"}, CodecZstd: {"--zstd", "-xf"}, CodecGzip: {"-xzf"}, CodecNone: {"-xf"}}[c]
	tool := map[Codec]string{CodecXZ: "xz", CodecZstd: "zstd", CodecGzip: "gzip", CodecNone: "tar"}[c]
	for _, need := range []string{"tar", tool} {
		requireTool(t, need)
	}
	dest := t.TempDir()
	args := append(append([]string{}, flags...), path, "-C", dest)
	if out, err := exec.Command("tar", args...).CombinedOutput(); err != nil {
		t.Fatalf("tar %v: %v\n%s", args, err, out)
	}
	checkTree(t, dest, all)
	if _, err := os.Stat(filepath.Join(dest, ManifestName)); err != nil {
		t.Errorf("manifest missing: %v", err)
	}
}

func TestXZMultiStream(t *testing.T) {
	old := xzChunkSize
	xzChunkSize = 64 << 10
	defer func() { xzChunkSize = old }()
	src, files := srcTree(t, 1<<20)
	path, all := writeTestArchive(t, CodecXZ, src, files)
	systemCheck(t, path, all, "xz", "-t", path)
	systemTar(t, CodecXZ, path, all)
	if rep, err := Verify(context.Background(), path); err != nil || !rep.OK() {
		t.Fatalf("verify: %v %v", err, rep.Problems)
	}
	// An empty archive (manifest only) is valid too.
	empty := filepath.Join(t.TempDir(), "e.tar.xz")
	w, err := Create(empty, WriterOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if err := w.Commit(nil); err != nil {
		t.Fatal(err)
	}
	systemCheck(t, empty, nil, "xz", "-t", empty)
}

func TestAbortLeavesNothing(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "x.tar.zst")
	w, err := Create(path, WriterOptions{Codec: CodecZstd})
	if err != nil {
		t.Fatal(err)
	}
	if err := w.AddBytes("a", []byte("data")); err != nil {
		t.Fatal(err)
	}
	for _, bad := range []string{"", "/abs", "../x", "a/../b", "a/./b", "a//b", ManifestName, "a"} {
		if err := w.AddBytes(bad, nil); err == nil {
			t.Errorf("AddBytes(%q) accepted", bad)
		}
	}
	if err := w.AddBytes("a/b", nil); err == nil {
		t.Error("file below a file accepted")
	}
	if err := w.AddReader("short", 10, strings.NewReader("abc")); err == nil {
		t.Error("short reader accepted")
	}
	if err := w.AddBytes("later", nil); err == nil {
		t.Error("writer usable after fatal error")
	}
	if err := w.Abort(); err != nil {
		t.Fatal(err)
	}
	if err := w.Abort(); err != nil {
		t.Fatal(err)
	}
	if err := w.Commit(&Manifest{}); err == nil {
		t.Fatal("Commit after Abort succeeded")
	}
	ents, _ := os.ReadDir(dir)
	if len(ents) != 0 {
		t.Fatalf("leftovers: %v", ents)
	}
	if _, err := Create(filepath.Join(dir, "x.tar.gz"), WriterOptions{Codec: CodecXZ}); err == nil {
		t.Fatal("mismatched extension accepted")
	}
}

func TestAddDirRejectsSymlink(t *testing.T) {
	src := t.TempDir()
	if err := os.Symlink("/etc/passwd", filepath.Join(src, "link")); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	w, err := Create(filepath.Join(dir, "s.tar"), WriterOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if err := w.AddDir("d", src); err == nil || !strings.Contains(err.Error(), "symbolic link") {
		t.Fatalf("err = %v", err)
	}
	if err := w.Abort(); err != nil {
		t.Fatal(err)
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 0 {
		t.Fatalf("leftovers: %v", ents)
	}
}

func TestCodecNames(t *testing.T) {
	for _, c := range Codecs {
		got, ok := CodecFromName("x" + c.Ext())
		if !ok || got != c {
			t.Errorf("CodecFromName(%s) = %v %v", c.Ext(), got, ok)
		}
		if p, err := ParseCodec(strings.ToUpper(string(c))); err != nil || p != c {
			t.Errorf("ParseCodec(%s) = %v %v", c, p, err)
		}
	}
	if _, err := ParseCodec("bzip2"); err == nil {
		t.Error("bzip2 accepted")
	}
	if _, ok := DetectCodec([]byte("hello")); ok {
		t.Error("garbage detected as archive")
	}
}

// TestXZStoredMembers round-trips an archive mixing compressed members
// with precompressed ones (*.dat.gz and similar), which are stored in the
// xz output without recompression, with large and small xz chunks.
func TestXZStoredMembers(t *testing.T) {
	for _, chunk := range []int{xzChunkSize, 64 << 10} {
		t.Run(fmt.Sprint(chunk), func(t *testing.T) {
			old := xzChunkSize
			xzChunkSize = chunk
			defer func() { xzChunkSize = old }()
			src := t.TempDir()
			files := map[string][]byte{
				"toc.dat":       mixedData(100000, 1),
				"3001.dat.gz":   randomBytes(1<<20+123, 1),
				"3002.dat.gz":   randomBytes(20, 2),
				"3003.dat.gz":   {},
				"3004.dat.gz":   randomBytes(300000, 3),
				"blob.ZST":      randomBytes(5000, 4),
				"notes.txt":     []byte(strings.Repeat("not precompressed\n", 500)),
				"sub/x.gz.json": []byte(`{"a": 1}`),
			}
			for rel, data := range files {
				p := filepath.Join(src, filepath.FromSlash(rel))
				if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(p, data, 0o644); err != nil {
					t.Fatal(err)
				}
			}
			out := filepath.Join(t.TempDir(), "full-1.tar.xz")
			w, err := Create(out, WriterOptions{Level: 1, Workers: 3})
			if err != nil {
				t.Fatal(err)
			}
			defer w.Abort()
			if err := w.AddBytes("globals.sql", []byte("CREATE ROLE app;\n")); err != nil {
				t.Fatal(err)
			}
			if err := w.AddDir("database/app", src); err != nil {
				t.Fatal(err)
			}
			gz := randomBytes(70000, 5)
			if err := w.AddReader("extra.lz4", int64(len(gz)), bytes.NewReader(gz)); err != nil {
				t.Fatal(err)
			}
			if err := w.AddBytes("log.txt", []byte("done\n")); err != nil {
				t.Fatal(err)
			}
			if err := w.Commit(&Manifest{Type: "full"}); err != nil {
				t.Fatal(err)
			}
			all := map[string][]byte{"globals.sql": []byte("CREATE ROLE app;\n"), "extra.lz4": gz, "log.txt": []byte("done\n")}
			for rel, data := range files {
				all["database/app/"+rel] = data
			}

			raw, err := os.ReadFile(out)
			if err != nil {
				t.Fatal(err)
			}
			if bytes.Count(raw, xzStoredHead) == 0 || !bytes.Contains(raw, files["3001.dat.gz"][:4096]) {
				t.Fatal("precompressed members were not stored")
			}
			rep, err := Verify(context.Background(), out)
			if err != nil {
				t.Fatal(err)
			}
			if !rep.OK() {
				t.Fatalf("problems: %v", rep.Problems)
			}
			dest := t.TempDir()
			if _, err := Extract(context.Background(), out, dest); err != nil {
				t.Fatal(err)
			}
			checkTree(t, dest, all)
			systemCheck(t, out, all, "xz", "-t", out)
			systemTar(t, CodecXZ, out, all)
		})
	}
}

func TestIsPrecompressed(t *testing.T) {
	for name, want := range map[string]bool{
		"database/app/3001.dat.gz": true, "a.zst": true, "a.lz4": true, "a.xz": true,
		"a.bz2": true, "A.GZ": true, "toc.dat": false, "a.gz.json": false, "gz": false,
		"globals.sql": false,
	} {
		if got := isPrecompressed(name); got != want {
			t.Errorf("isPrecompressed(%q) = %v", name, got)
		}
	}
}

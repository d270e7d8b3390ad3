package fsutil

import (
	"os"
	"path/filepath"
	"slices"
	"testing"
)

func TestWriteFileAtomic(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "a.json")
	if err := WriteFileAtomic(p, []byte("one"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := WriteFileAtomic(p, []byte("two"), 0o640); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(p)
	if err != nil || string(b) != "two" {
		t.Fatalf("content %q, err %v", b, err)
	}
	fi, _ := os.Stat(p)
	if fi.Mode().Perm() != 0o640 {
		t.Fatalf("perm %v", fi.Mode().Perm())
	}
	ents, _ := os.ReadDir(dir)
	if len(ents) != 1 {
		t.Fatalf("leftover files: %v", ents)
	}
	if err := WriteFileAtomic(filepath.Join(dir, "missing", "x"), nil, 0o600); err == nil {
		t.Fatal("expected error for missing directory")
	}
}

func TestTempNames(t *testing.T) {
	if got := TempPrefix("x.tar.xz"); got != ".x.tar.xz.tmp-" {
		t.Fatalf("TempPrefix = %q", got)
	}
	for name, want := range map[string]bool{
		".x.tar.xz.tmp-abc": true,
		".a.tmp-":           true,
		"x.tar.xz":          false,
		".hidden":           false,
		"a.tmp-1":           false,
		".tmp-1":            false,
	} {
		if got := IsTemp(name); got != want {
			t.Errorf("IsTemp(%q) = %v, want %v", name, got, want)
		}
	}
}

func TestRemoveLeftovers(t *testing.T) {
	dir := t.TempDir()
	keep := filepath.Join(dir, "b.tar.xz")
	tmpf := filepath.Join(dir, TempPrefix("b.tar.xz")+"123")
	tmpd := filepath.Join(dir, TempPrefix("restore")+"9")
	for _, p := range []string{keep, tmpf} {
		if err := os.WriteFile(p, []byte("x"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.MkdirAll(filepath.Join(tmpd, "sub"), 0o700); err != nil {
		t.Fatal(err)
	}
	removed, err := RemoveLeftovers(dir)
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(removed)
	want := []string{tmpf, tmpd}
	slices.Sort(want)
	if !slices.Equal(removed, want) {
		t.Fatalf("removed %v, want %v", removed, want)
	}
	if _, err := os.Stat(keep); err != nil {
		t.Fatal(err)
	}
	if r, err := RemoveLeftovers(filepath.Join(dir, "nope")); err != nil || r != nil {
		t.Fatalf("missing dir: %v %v", r, err)
	}
}

func TestEnsurePrivateDir(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "a", "b")
	if err := EnsurePrivateDir(dir); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := EnsurePrivateDir(dir); err != nil {
		t.Fatal(err)
	}
	fi, _ := os.Stat(dir)
	if fi.Mode().Perm() != 0o700 {
		t.Fatalf("perm %v", fi.Mode().Perm())
	}
	f := filepath.Join(dir, "file")
	if err := os.WriteFile(f, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := EnsurePrivateDir(f); err == nil {
		t.Fatal("expected error for a regular file")
	}
}

// TestRemoveLeftoversSkipsLiveTemps: a temporary file still open and a
// temporary directory not yet released belong to a live process (a drill
// or fetch running while a backup starts) and survive the sweep; once
// closed or released they are leftovers and go.
func TestRemoveLeftoversSkipsLiveTemps(t *testing.T) {
	dir := t.TempDir()
	f, file, err := CreateTemp(dir, "archive")
	if err != nil {
		t.Fatal(err)
	}
	work, release, err := MkdirTemp(dir, "drill")
	if err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(work); err != nil || fi.Mode().Perm() != 0o700 {
		t.Fatalf("work directory %v %v, want mode 0700", fi, err)
	}
	if removed, err := RemoveLeftovers(dir); err != nil || len(removed) != 0 {
		t.Fatalf("sweep while in use removed %v (%v)", removed, err)
	}
	f.Close()
	release()
	removed, err := RemoveLeftovers(dir)
	if err != nil || len(removed) != 2 {
		t.Fatalf("sweep after use removed %v (%v), want %s and %s", removed, err, file, work)
	}
	// WriteFileAtomic leaves no temporary file and is never swept midway.
	if err := WriteFileAtomic(filepath.Join(dir, "state.json"), []byte("{}"), 0o600); err != nil {
		t.Fatal(err)
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 1 {
		t.Fatalf("entries after WriteFileAtomic: %v", entries)
	}
}

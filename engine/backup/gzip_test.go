package backup

import (
	"bytes"
	"compress/gzip"
	"context"
	"io"
	"math/rand"
	"os"
	"path/filepath"
	"reflect"
	"testing"
)

// TestCompressTableData: small table-data files stay as they are (the
// archive LZMA-compresses them), larger ones become concatenated gzip
// members that a standard gzip reader (zlib, as pg_restore uses) reads back
// whole; toc.dat is never touched.
func TestCompressTableData(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "database", "db")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewSource(1))
	content := func(n int) []byte {
		b := make([]byte, n)
		for i := range b {
			b[i] = "abcdefgh\t\n0123"[rng.Intn(14)]
		}
		return b
	}
	files := map[string][]byte{
		"toc.dat":       content(smallDataMax * 2),
		"1.dat":         content(100),
		"2.dat":         content(smallDataMax - 1),
		"3.dat":         content(smallDataMax),
		"4.dat":         content(gzipChunk*2 + 12345), // several gzip members
		"blob_7.dat":    content(10),
		"blobs.toc":     []byte("7 blob_7.dat\n"),
		"empty.dat":     nil,
		"not-data.json": content(smallDataMax * 2),
	}
	for n, b := range files {
		if err := os.WriteFile(filepath.Join(dir, n), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if err := compressTableData(context.Background(), filepath.Dir(dir), 6, 2); err != nil {
		t.Fatal(err)
	}
	var got []string
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		got = append(got, e.Name())
	}
	want := []string{"1.dat", "2.dat", "3.dat.gz", "4.dat.gz", "blob_7.dat", "blobs.toc", "empty.dat", "not-data.json", "toc.dat"}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("files after compression:\n got %v\nwant %v", got, want)
	}
	for _, n := range []string{"3.dat", "4.dat"} {
		f, err := os.Open(filepath.Join(dir, n+".gz"))
		if err != nil {
			t.Fatal(err)
		}
		zr, err := gzip.NewReader(f) // multistream by default, as zlib's gzread
		if err != nil {
			t.Fatal(err)
		}
		back, err := io.ReadAll(zr)
		f.Close()
		if err != nil {
			t.Fatalf("%s.gz: %v", n, err)
		}
		if !bytes.Equal(back, files[n]) {
			t.Fatalf("%s.gz does not decompress to the original (%d bytes, want %d)", n, len(back), len(files[n]))
		}
	}
	for _, n := range []string{"1.dat", "2.dat", "toc.dat"} {
		if b, _ := os.ReadFile(filepath.Join(dir, n)); !bytes.Equal(b, files[n]) {
			t.Fatalf("%s changed", n)
		}
	}
}

// TestCompressTableDataBudget: once the small files reach smallDataBudget
// in all, the remaining ones (the largest) are gzip-compressed too.
func TestCompressTableDataBudget(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "database", "db")
	os.MkdirAll(dir, 0o700)
	size := smallDataMax - 1
	n := smallDataBudget/size + 3
	for i := 0; i < n; i++ {
		if err := os.WriteFile(filepath.Join(dir, filepath.Base(string(rune('a'+i%26))+string(rune('a'+i/26))+".dat")), bytes.Repeat([]byte{'x'}, size-i), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if err := compressTableData(context.Background(), filepath.Dir(dir), 6, 2); err != nil {
		t.Fatal(err)
	}
	plain, gz := 0, 0
	var plainBytes int64
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		info, _ := e.Info()
		if filepath.Ext(e.Name()) == ".gz" {
			gz++
		} else {
			plain++
			plainBytes += info.Size()
		}
	}
	if plainBytes > smallDataBudget || gz == 0 || plain == 0 {
		t.Fatalf("%d files left plain (%d bytes, budget %d), %d gzip-compressed", plain, plainBytes, smallDataBudget, gz)
	}
}

// TestArchiveOrder: metadata first, then each database in dump order with
// its table of contents first, LZMA-compressed data, then stored table data
// largest first; logs and extra files after.
func TestArchiveOrder(t *testing.T) {
	files := []member{
		{name: "application_data.json"},
		{name: "database/b/1.dat.gz", size: 10},
		{name: "database/b/toc.dat"},
		{name: "database/a/2.dat.gz", size: 5},
		{name: "database/a/3.dat.gz", size: 50},
		{name: "database/a/4.dat", size: 1},
		{name: "database/a/blob_9.dat", size: 1},
		{name: "database/a/blobs.toc"},
		{name: "database/a/toc.dat"},
		{name: "globals.sql"},
		{name: "logs/var/log/x.log"},
		{name: "system_info.json"},
	}
	archiveOrder(files, []string{"b", "a"})
	var got []string
	for _, f := range files {
		got = append(got, f.name)
	}
	want := []string{
		"application_data.json", "globals.sql", "system_info.json",
		"database/b/toc.dat", "database/b/1.dat.gz",
		"database/a/toc.dat", "database/a/blobs.toc", "database/a/4.dat", "database/a/blob_9.dat", "database/a/3.dat.gz", "database/a/2.dat.gz",
		"logs/var/log/x.log",
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("order:\n got %v\nwant %v", got, want)
	}
}

// TestGzipRetry: random hexadecimal text (pg_dump's output of md5 strings
// and bytea) compresses poorly at the fast level and is compressed again at
// the retry level, which comes close to its 4 bits of entropy per byte.
func TestGzipRetry(t *testing.T) {
	rng := rand.New(rand.NewSource(2))
	hex := make([]byte, gzipChunk+100000)
	for i := range hex {
		hex[i] = "0123456789abcdef"[rng.Intn(16)]
	}
	sizes := map[int]int64{}
	for _, retry := range []int{0, 6} {
		p := filepath.Join(t.TempDir(), "1.dat")
		if err := os.WriteFile(p, hex, 0o600); err != nil {
			t.Fatal(err)
		}
		if err := gzipFile(p, 3, retry, 2); err != nil {
			t.Fatal(err)
		}
		f, err := os.Open(p + ".gz")
		if err != nil {
			t.Fatal(err)
		}
		zr, err := gzip.NewReader(f)
		if err != nil {
			t.Fatal(err)
		}
		back, err := io.ReadAll(zr)
		f.Close()
		if err != nil || !bytes.Equal(back, hex) {
			t.Fatalf("retry %d: does not decompress to the original: %v", retry, err)
		}
		st, _ := os.Stat(p + ".gz")
		sizes[retry] = st.Size()
	}
	if ratio := float64(sizes[6]) / float64(len(hex)); ratio > 0.6 || sizes[6] >= sizes[0] {
		t.Fatalf("retry did not help: %d bytes without, %d with (%.2f of the input)", sizes[0], sizes[6], ratio)
	}
	t.Logf("random hex: %d bytes at level 3, %d with the retry at 6 (input %d)", sizes[0], sizes[6], len(hex))
}

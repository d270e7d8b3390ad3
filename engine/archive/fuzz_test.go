package archive

import (
	"archive/tar"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"testing"
	"time"
)

// The fuzz targets below read hostile archives the way restore and verify
// do. Their seed corpus (testdata/fuzz/) holds real archives of every codec
// and corruptions of them (flipped bytes, truncation, a path escaping the
// extraction directory, a forged sidecar); regenerate it with
// PME2GO_WRITE_FUZZ_CORPUS=1 go test -run TestWriteFuzzCorpus ./engine/archive/.
// `make test` runs each target briefly.

// fuzzCodecs maps the fuzzer's codec byte to a codec.
var fuzzCodecs = []Codec{CodecXZ, CodecZstd, CodecGzip, CodecNone}

// FuzzArchive feeds arbitrary archive bytes and sidecar bytes to Verify and
// Extract. Neither may panic; Extract never writes outside its directory;
// an archive that Verify finds sound extracts without error.
func FuzzArchive(f *testing.F) {
	f.Add(uint8(0), []byte{}, []byte{})
	f.Fuzz(func(t *testing.T, codec uint8, data, sidecar []byte) {
		c := fuzzCodecs[int(codec)%len(fuzzCodecs)]
		dir := t.TempDir()
		path := filepath.Join(dir, "full_backup_fuzz"+c.Ext())
		if err := os.WriteFile(path, data, 0o600); err != nil {
			t.Fatal(err)
		}
		if len(sidecar) > 0 {
			if err := os.WriteFile(path+SidecarSuffix, sidecar, 0o600); err != nil {
				t.Fatal(err)
			}
		}
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		rep, verr := Verify(ctx, path)
		parent := filepath.Join(dir, "parent")
		dest := filepath.Join(parent, "dest")
		if err := os.MkdirAll(dest, 0o700); err != nil {
			t.Fatal(err)
		}
		_, xerr := Extract(ctx, path, dest)
		if ents, _ := os.ReadDir(parent); len(ents) != 1 {
			t.Fatalf("Extract wrote outside its directory: %v", ents)
		}
		if verr == nil && rep.OK() && xerr != nil {
			t.Fatalf("Verify found the archive sound but Extract failed: %v", xerr)
		}
	})
}

// FuzzManifest parses arbitrary manifest text. A manifest that parses
// survives a marshal and parse round trip unchanged.
func FuzzManifest(f *testing.F) {
	f.Add([]byte(`{"type":"full","formatVersion":1,"checksums":{}}`))
	f.Add([]byte(`{"type":"incremental","formatVersion":1,"startLsn":"0/16B3748","endLsn":"0/16B37F0","checksums":{"changes/a":"sha256:00"}}`))
	f.Add([]byte(`{"formatVersion":99}`))
	f.Add([]byte(`null`))
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := parseManifest(b)
		if err != nil {
			return
		}
		out, err := marshalManifest(m)
		if err != nil {
			t.Fatalf("a parsed manifest does not marshal: %v", err)
		}
		m2, err := parseManifest(out)
		if err != nil {
			t.Fatalf("a marshalled manifest does not parse: %v\n%s", err, out)
		}
		if !reflect.DeepEqual(normalize(m), normalize(m2)) {
			t.Fatalf("round trip changed the manifest:\n%+v\n%+v", m, m2)
		}
	})
}

// normalize renders a manifest as generic JSON so that nil and empty maps,
// and time zones, compare equal.
func normalize(m *Manifest) any {
	b, _ := json.Marshal(m)
	var v any
	json.Unmarshal(b, &v)
	return v
}

// TestWriteFuzzCorpus regenerates the committed seed corpus.
func TestWriteFuzzCorpus(t *testing.T) {
	if os.Getenv("PME2GO_WRITE_FUZZ_CORPUS") == "" {
		t.Skip("set PME2GO_WRITE_FUZZ_CORPUS=1 to regenerate testdata/fuzz")
	}
	dir := filepath.Join("testdata", "fuzz", "FuzzArchive")
	os.RemoveAll(dir)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	write := func(name string, codec int, data, side []byte) {
		body := fmt.Sprintf("go test fuzz v1\nuint8(%d)\n[]byte(%q)\n[]byte(%q)\n", codec, data, side)
		if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	src := t.TempDir()
	os.WriteFile(filepath.Join(src, "toc.dat"), bytes.Repeat([]byte("table of contents\n"), 20), 0o600)
	os.WriteFile(filepath.Join(src, "3001.dat"), []byte("1\tone\n2\ttwo\n"), 0o600)
	for i, c := range fuzzCodecs {
		out := filepath.Join(t.TempDir(), "full_backup_seed"+c.Ext())
		w, err := Create(out, WriterOptions{Codec: c, Level: 1, Workers: 1})
		if err != nil {
			t.Fatal(err)
		}
		w.AddDir("database/app", src)
		w.AddBytes("globals.sql", []byte("CREATE ROLE app;\n"))
		if err := w.Commit(&Manifest{Type: "full", Timestamp: time.Unix(1_800_000_000, 0).UTC(), Version: "seed",
			Files: map[string]string{"database:app": "database/app/", "globals": "globals.sql"}, Databases: []string{"app"}}); err != nil {
			t.Fatal(err)
		}
		data, _ := os.ReadFile(out)
		side, _ := os.ReadFile(out + SidecarSuffix)
		write(fmt.Sprintf("sound-%s", c), i, data, side)
		flipped := append([]byte(nil), data...)
		flipped[len(flipped)/2] ^= 0x40
		write(fmt.Sprintf("flipped-%s", c), i, flipped, side)
		write(fmt.Sprintf("truncated-%s", c), i, data[:len(data)*2/3], side)
		write(fmt.Sprintf("no-sidecar-%s", c), i, data, nil)
		forged := bytes.Replace(side, []byte(`"sha256:`), []byte(`"sha256:0`), 1)
		write(fmt.Sprintf("forged-sidecar-%s", c), i, data, forged)
	}
	evil := func(name string) []byte {
		p := handTar(t, &tar.Header{Typeflag: tar.TypeReg, Name: "ok.txt", Mode: 0o600},
			&tar.Header{Typeflag: tar.TypeReg, Name: name, Mode: 0o600})
		b, _ := os.ReadFile(p)
		return b
	}
	write("traversal-dotdot", 0, evil("../evil"), nil)
	write("traversal-nested", 0, evil("a/../../evil"), nil)
	write("traversal-absolute", 0, evil("/tmp/evil"), nil)
	write("not-an-archive", 3, []byte("just some text, not an archive\n"), nil)
}

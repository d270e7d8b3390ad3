package archive

import (
	"bytes"
	"io"
	"math/rand/v2"
	"os/exec"
	"testing"

	"github.com/ulikunitz/xz"
)

// randomBytes returns n deterministic pseudo-random bytes.
func randomBytes(n int, seed uint64) []byte {
	r := rand.New(rand.NewPCG(seed, ^seed))
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

func TestStoredXZ(t *testing.T) {
	sizes := []int{0, 1, 3, 4, 65535, 65536, 65537, 3<<20 + 17}
	xzTool, _ := exec.LookPath("xz")
	if xzTool == "" {
		t.Log("xz not installed, checking with ulikunitz/xz only")
	}
	var all, concat bytes.Buffer
	for i, n := range sizes {
		data := randomBytes(n, uint64(i+1))
		var enc bytes.Buffer
		if err := writeStoredXZ(&enc, data); err != nil {
			t.Fatal(err)
		}
		if enc.Len()%4 != 0 {
			t.Errorf("size %d: stream length %d not a multiple of 4", n, enc.Len())
		}
		concat.Write(enc.Bytes())
		all.Write(data)

		xr, err := xz.NewReader(bytes.NewReader(enc.Bytes()))
		if err != nil {
			t.Fatalf("size %d: ulikunitz reader: %v", n, err)
		}
		got, err := io.ReadAll(xr)
		if err != nil || !bytes.Equal(got, data) {
			t.Fatalf("size %d: ulikunitz read %d bytes, err %v, equal %v", n, len(got), err, bytes.Equal(got, data))
		}
		if xzTool != "" {
			cmd := exec.Command(xzTool, "-dc")
			cmd.Stdin = bytes.NewReader(enc.Bytes())
			var stderr bytes.Buffer
			cmd.Stderr = &stderr
			got, err := cmd.Output()
			if err != nil || !bytes.Equal(got, data) {
				t.Fatalf("size %d: xz -dc: %v %s (got %d bytes)", n, err, stderr.Bytes(), len(got))
			}
		}
	}
	// Concatenated stored streams, mixed with an LZMA stream, form one
	// valid multi-stream file.
	var lz bytes.Buffer
	cw, err := xzConfig(1).NewWriter(&lz)
	if err != nil {
		t.Fatal(err)
	}
	text := mixedData(100000, 3)
	if _, err := cw.Write(text); err != nil {
		t.Fatal(err)
	}
	if err := cw.Close(); err != nil {
		t.Fatal(err)
	}
	concat.Write(lz.Bytes())
	all.Write(text)
	xr, err := xz.NewReader(bytes.NewReader(concat.Bytes()))
	if err != nil {
		t.Fatal(err)
	}
	if got, err := io.ReadAll(xr); err != nil || !bytes.Equal(got, all.Bytes()) {
		t.Fatalf("multi-stream ulikunitz read: %d bytes, err %v", len(got), err)
	}
	if xzTool != "" {
		cmd := exec.Command(xzTool, "-dc")
		cmd.Stdin = bytes.NewReader(concat.Bytes())
		if got, err := cmd.Output(); err != nil || !bytes.Equal(got, all.Bytes()) {
			t.Fatalf("multi-stream xz -dc: %v (got %d bytes)", err, len(got))
		}
	}
}

// TestStoredXZCorrupt checks that decoders detect a damaged stored stream.
func TestStoredXZCorrupt(t *testing.T) {
	data := randomBytes(100000, 9)
	var enc bytes.Buffer
	if err := writeStoredXZ(&enc, data); err != nil {
		t.Fatal(err)
	}
	b := enc.Bytes()
	b[len(xzStoredHead)+3+500] ^= 0x40
	xr, err := xz.NewReader(bytes.NewReader(b))
	if err == nil {
		_, err = io.ReadAll(xr)
	}
	if err == nil {
		t.Fatal("flipped data bit not detected")
	}
}

// TestParallelXZStoreMode writes segments alternating randomly between
// store and LZMA mode through small chunks and checks the decoded output,
// the chunk modes and the multi-stream file with the system xz.
func TestParallelXZStoreMode(t *testing.T) {
	old := xzChunkSize
	xzChunkSize = 64 << 10
	defer func() { xzChunkSize = old }()
	r := rand.New(rand.NewPCG(5, 6))
	var out, want bytes.Buffer
	z, err := newParallelXZ(&out, 1, 3)
	if err != nil {
		t.Fatal(err)
	}
	storedBytes := 0
	for i := range 60 {
		store := r.IntN(2) == 0
		if err := z.setStore(store); err != nil {
			t.Fatal(err)
		}
		n := []int{0, 1, 100, 65535, 65536, 200000}[r.IntN(6)]
		data := mixedData(n, uint64(i))
		if store {
			data = randomBytes(n, uint64(i))
			storedBytes += n
		}
		// Uneven writes, as the tar writer does.
		for rest := data; len(rest) > 0; {
			k := min(len(rest), 1+r.IntN(70000))
			if _, err := z.Write(rest[:k]); err != nil {
				t.Fatal(err)
			}
			rest = rest[k:]
		}
		want.Write(data)
	}
	if err := z.setStore(false); err != nil {
		t.Fatal(err)
	}
	if err := z.Close(); err != nil {
		t.Fatal(err)
	}
	if err := z.setStore(true); err == nil {
		t.Error("setStore after Close accepted")
	}
	stored := bytes.Count(out.Bytes(), xzStoredHead)
	if lo := storedBytes / (64 << 10); stored < lo || stored == 0 {
		t.Errorf("%d stored streams for %d stored bytes", stored, storedBytes)
	}
	xr, err := xz.NewReader(bytes.NewReader(out.Bytes()))
	if err != nil {
		t.Fatal(err)
	}
	if got, err := io.ReadAll(xr); err != nil || !bytes.Equal(got, want.Bytes()) {
		t.Fatalf("decoded %d of %d bytes, err %v", len(got), want.Len(), err)
	}
	if _, err := exec.LookPath("xz"); err == nil {
		cmd := exec.Command("xz", "-dc")
		cmd.Stdin = bytes.NewReader(out.Bytes())
		if got, err := cmd.Output(); err != nil || !bytes.Equal(got, want.Bytes()) {
			t.Fatalf("xz -dc: %v (got %d bytes)", err, len(got))
		}
	}
}

package changeset

import (
	"bytes"
	"encoding/binary"
	"os"
	"path/filepath"
	"testing"

	"github.com/pme2go/pme2go-backup/engine/crypt"
	"github.com/pme2go/pme2go-backup/engine/errs"
)

func encryptForTest(t *testing.T) crypt.Settings {
	t.Helper()
	pub, key, err := crypt.TestKeys(t.TempDir(), "seg")
	must(t, err)
	s := crypt.Settings{RecipientsFile: pub, IdentityFile: key}
	crypt.Configure(s)
	t.Cleanup(func() { crypt.Configure(crypt.Settings{}) })
	return s
}

// TestEncryptedSegment writes a segment kept as encrypted chunks: no
// plaintext reaches the file; readers decrypt; a transaction left open at a
// sync (its chunk holds part of it) and every torn tail are cut back to the
// last whole transaction, and appending goes on; without the key, reading is
// a KEY_ERR.
func TestEncryptedSegment(t *testing.T) {
	s := encryptForTest(t)
	marker := "SEGMENT-MARKER-91c2"
	path := filepath.Join(t.TempDir(), "seg.pcs")
	w, err := Create(path, testHeader())
	must(t, err)
	must(t, w.WriteRelation(relT()))
	must(t, w.BeginTx(Begin{Xid: 10, FinalLSN: 0x1003, CommitTime: t0}))
	must(t, w.WriteChange(Change{LSN: 0x1000, Raw: insertMsg(16384, txt("1"), txt(marker))}))
	must(t, w.CommitTx(Commit{CommitLSN: 0x1003, EndLSN: 0x1010, CommitTime: t0}))
	must(t, w.Sync())
	end1 := w.Offset()
	st, err := os.Stat(path)
	must(t, err)
	synced := int(st.Size()) // a crash cannot tear what was fsynced
	// A second transaction, synced half-way (as a full buffer would be).
	must(t, w.BeginTx(Begin{Xid: 11, FinalLSN: 0x3000, CommitTime: t0}))
	must(t, w.WriteChange(Change{LSN: 0x2000, Raw: insertMsg(16384, txt("2"), txt(marker))}))
	must(t, w.Sync())
	must(t, w.Close())
	data, err := os.ReadFile(path)
	must(t, err)
	if !crypt.IsChunked(data) || bytes.Contains(data, []byte(marker)) || bytes.Contains(data, []byte(Magic)) {
		t.Fatal("encrypted segment holds plaintext")
	}
	for cut := len(data); cut >= synced; cut -= 7 {
		must(t, os.WriteFile(path, data[:cut], 0o600))
		w, rec, err := OpenAppend(path)
		if err != nil {
			t.Fatalf("cut at %d: OpenAppend: %v", cut, err)
		}
		if rec.Size != end1 || rec.TxCount != 1 || w.LastCommitLSN() != 0x1003 {
			t.Fatalf("cut at %d: recovery %+v", cut, rec)
		}
		writeTx(t, w, 12, 0x4000, 1)
		must(t, w.Seal(0x5000))
		must(t, w.Close())
		_, txs, err := ReadAll(path)
		if err != nil || len(txs) != 2 || txs[0].Xid != 10 || txs[1].Xid != 12 {
			t.Fatalf("cut at %d: read back %d txs, %v", cut, len(txs), err)
		}
		rc, size, err := OpenPlain(path)
		must(t, err)
		var buf bytes.Buffer
		n, err := buf.ReadFrom(rc)
		rc.Close()
		if err != nil || n != size || !bytes.HasPrefix(buf.Bytes(), []byte(Magic)) || !bytes.Contains(buf.Bytes(), []byte(marker)) {
			t.Fatalf("cut at %d: OpenPlain gave %d of %d bytes: %v", cut, n, size, err)
		}
	}
	crypt.Configure(crypt.Settings{RecipientsFile: s.RecipientsFile})
	if _, err := Open(path); errs.CodeOf(err) != crypt.KeyErr {
		t.Fatalf("open without the key: %v", err)
	}
}

// TestEncryptedDamageIsNotATornTail: a byte changed anywhere in a chunk
// that intact chunks follow (its length field included) is corruption:
// reading and OpenAppend refuse the segment and leave it as it is, instead
// of cutting it back as if the crash had torn it there, which would drop
// fsynced transactions the slot was already advanced past. A real torn
// tail (the file ends inside the last chunk, or zeros follow it) is still
// cut back.
func TestEncryptedDamageIsNotATornTail(t *testing.T) {
	encryptForTest(t)
	path := filepath.Join(t.TempDir(), "seg.pcs")
	w, err := Create(path, testHeader())
	must(t, err)
	must(t, w.WriteRelation(relT()))
	writeTx(t, w, 10, 0x1000, 2)
	must(t, w.Sync())
	writeTx(t, w, 11, 0x2000, 2)
	must(t, w.Sync())
	writeTx(t, w, 12, 0x3000, 2)
	must(t, w.Sync())
	must(t, w.Close())
	data, err := os.ReadFile(path)
	must(t, err)
	// The second chunk's frame: 8 bytes of lengths, the age file, the CRC.
	first := len(crypt.ChunkMagic)
	second := first + 8 + int(binary.BigEndian.Uint32(data[first+4:])) + 4
	third := second + 8 + int(binary.BigEndian.Uint32(data[second+4:])) + 4
	for off := second; off < third; off++ {
		bad := bytes.Clone(data)
		bad[off] ^= 0x41
		must(t, os.WriteFile(path, bad, 0o600))
		w, rec, err := OpenAppend(path)
		if err == nil {
			w.Close()
			t.Fatalf("byte %d of the second chunk (frame %d-%d) changed: OpenAppend accepted it, kept %d transactions", off, second, third, rec.TxCount)
		}
		if after, _ := os.ReadFile(path); !bytes.Equal(after, bad) {
			t.Fatalf("byte %d changed: the refused segment was rewritten", off)
		}
	}
	// Torn tails: cut inside the chunk after the third, or zeros after
	// it: cut back to what the file holds up to there.
	must(t, os.WriteFile(path, data[:third], 0o600))
	w, clean, err := OpenAppend(path)
	must(t, err)
	w.Close()
	for _, torn := range [][]byte{data[:third+20], append(bytes.Clone(data[:third]), make([]byte, 300)...)} {
		must(t, os.WriteFile(path, torn, 0o600))
		w, rec, err := OpenAppend(path)
		if err != nil || rec.TxCount != clean.TxCount || rec.Size != clean.Size {
			t.Fatalf("torn tail of %d bytes: %v %+v, want %d transactions", len(torn)-third, err, rec, clean.TxCount)
		}
		w.Close()
	}
}

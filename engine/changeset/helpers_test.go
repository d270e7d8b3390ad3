package changeset

import (
	"bytes"
	"encoding/binary"
	"path/filepath"
	"testing"
	"time"
)

// col is one TupleData column for the test encoders.
type col struct {
	kind byte // 'n', 'u', 't', 'b'
	data string
}

func txt(s string) col { return col{kind: 't', data: s} }

var (
	null  = col{kind: 'n'}
	toast = col{kind: 'u'}
)

func u16(b []byte, v uint16) []byte { return binary.BigEndian.AppendUint16(b, v) }
func u32(b []byte, v uint32) []byte { return binary.BigEndian.AppendUint32(b, v) }

// tuple encodes TupleData the way pgoutput's logicalrep_write_tuple does.
func tuple(b []byte, cols ...col) []byte {
	b = u16(b, uint16(len(cols)))
	for _, c := range cols {
		b = append(b, c.kind)
		if c.kind == 't' || c.kind == 'b' {
			b = u32(b, uint32(len(c.data)))
			b = append(b, c.data...)
		}
	}
	return b
}

// msgStart writes the type byte and, for streamed messages, the xid.
func msgStart(t byte, streamXid uint32) []byte {
	b := []byte{t}
	if streamXid != 0 {
		b = u32(b, streamXid)
	}
	return b
}

func insertMsg(relid uint32, cols ...col) []byte {
	return tuple(append(u32(msgStart('I', 0), relid), 'N'), cols...)
}

// updateMsg encodes an Update; oldKind is 0, 'K' or 'O'.
func updateMsg(relid uint32, oldKind byte, old []col, cols ...col) []byte {
	b := u32(msgStart('U', 0), relid)
	if oldKind != 0 {
		b = tuple(append(b, oldKind), old...)
	}
	return tuple(append(b, 'N'), cols...)
}

func deleteMsg(relid uint32, oldKind byte, old ...col) []byte {
	return tuple(append(u32(msgStart('D', 0), relid), oldKind), old...)
}

func truncateMsg(opts byte, relids ...uint32) []byte {
	b := append(u32(msgStart('T', 0), uint32(len(relids))), opts)
	for _, id := range relids {
		b = u32(b, id)
	}
	return b
}

var t0 = time.Date(2025, 3, 14, 15, 9, 26, 535897000, time.UTC)

func testHeader() Header {
	return Header{SystemIdentifier: "7312345678901234567", Timeline: 1, Database: "shop",
		ChainID: "chain-1", Slot: "pme2go_slot", Publication: "pme2go_pub", StartLSN: 0x800,
		Created: t0, ServerVersion: 170002, ProtoVersion: 1}
}

func relT() *Relation {
	return &Relation{OID: 16384, Schema: "public", Name: "t", ReplicaIdentity: 'd', Columns: []Column{
		{Name: "id", TypeOID: 23, TypeName: "integer", TypeMod: -1, Key: true},
		{Name: "v", TypeOID: 25, TypeName: "text", TypeMod: -1},
		{Name: "n", TypeOID: 1700, TypeName: "numeric", TypeMod: -1},
		{Name: "tags", TypeOID: 1009, TypeName: "text[]", TypeMod: -1},
	}}
}

func relSales() *Relation {
	return &Relation{OID: 16400, Schema: "Sales Ω", Name: `Or"ders`, ReplicaIdentity: 'f', Columns: []Column{
		{Name: "id", TypeOID: 20, TypeName: "bigint", TypeMod: -1},
		{Name: "mood", TypeOID: 16390, TypeName: `"Sales Ω".mood`, TypeMod: -1},
		{Name: "note", TypeOID: 1043, TypeName: "character varying(20)", TypeMod: 24},
	}}
}

func segPath(t testing.TB) string { return filepath.Join(t.TempDir(), "seg.pcs") }

func must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// writeTx writes a whole transaction of inserts into relation 16384.
func writeTx(t testing.TB, w *Writer, xid uint32, lsn uint64, n int) {
	t.Helper()
	must(t, w.BeginTx(Begin{Xid: xid, FinalLSN: lsn + uint64(n) + 1, CommitTime: t0}))
	for i := 0; i < n; i++ {
		must(t, w.WriteChange(Change{LSN: lsn + uint64(i), Raw: insertMsg(16384, txt("1"), txt("x"), null, null)}))
	}
	must(t, w.CommitTx(Commit{CommitLSN: lsn + uint64(n) + 1, EndLSN: lsn + uint64(n) + 2, CommitTime: t0}))
}

func bytesReader(b []byte) *bytes.Reader { return bytes.NewReader(b) }

package chain

import (
	"testing"
	"time"
)

func TestNewID(t *testing.T) {
	id := NewID("shop", time.Date(2025, 3, 14, 15, 9, 26, 0, time.FixedZone("x", 3600)))
	if len(id) != len("c20250314t140926_")+6 || id[:17] != "c20250314t140926_" {
		t.Fatalf("id %q", id)
	}
	if NewID("shop", time.Now())[17:] != id[17:] || NewID("other", time.Now())[17:] == id[17:] {
		t.Fatal("hash part must depend on the database only")
	}
	if n := len(Prefix + id + "_99"); n > 63 {
		t.Fatalf("slot name %d bytes", n)
	}
}

func TestTableDefSame(t *testing.T) {
	a := TableDef{Columns: []Column{{Name: "id", TypeOID: 23, TypMod: -1}}}
	b := TableDef{Columns: []Column{{Name: "id", TypeOID: 20, TypMod: -1}}, Since: 5}
	if !a.Same(a) || a.Same(b) || a.Same(TableDef{}) {
		t.Fatal("Same")
	}
	if TableKey(`we"ird`, "t") != `"we""ird"."t"` {
		t.Fatal(TableKey(`we"ird`, "t"))
	}
}

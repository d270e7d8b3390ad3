package apply

import (
	"encoding/binary"
	"reflect"
	"testing"

	"github.com/pme2go/pme2go-backup/engine/changeset"
)

// TestDecodeFast checks that decodeFast decodes like Change.Decode, and
// leaves to it what it does not read plainly.
func TestDecodeFast(t *testing.T) {
	rel := &changeset.Relation{OID: 16384, Schema: "public", Name: "t", Columns: []changeset.Column{
		{Name: "id", TypeName: "integer", Key: true}, {Name: "doc", TypeName: "text"}, {Name: "n", TypeName: "bigint"}}}
	type col struct {
		kind byte
		data string
	}
	tuple := func(cols ...col) []byte {
		b := binary.BigEndian.AppendUint16(nil, uint16(len(cols)))
		for _, c := range cols {
			b = append(b, c.kind)
			if c.kind == 't' || c.kind == 'b' {
				b = binary.BigEndian.AppendUint32(b, uint32(len(c.data)))
				b = append(b, c.data...)
			}
		}
		return b
	}
	msg := func(op byte, xid bool, oid uint32, parts ...[]byte) []byte {
		b := []byte{op}
		if xid {
			b = binary.BigEndian.AppendUint32(b, 777)
		}
		b = binary.BigEndian.AppendUint32(b, oid)
		for _, p := range parts {
			b = append(b, p...)
		}
		return b
	}
	full := tuple(col{'t', "1"}, col{'t', "a\tb"}, col{'n', ""})
	key := tuple(col{'t', "1"}, col{'n', ""}, col{'n', ""})
	toast := tuple(col{'t', "2"}, col{'u', ""}, col{'t', ""})
	good := map[string]*changeset.Change{
		"insert":           {Raw: msg('I', false, rel.OID, []byte{'N'}, full)},
		"insert streamed":  {Raw: msg('I', true, rel.OID, []byte{'N'}, full), Streamed: true},
		"update":           {Raw: msg('U', false, rel.OID, []byte{'N'}, toast)},
		"update key":       {Raw: msg('U', false, rel.OID, []byte{'K'}, key, []byte{'N'}, full)},
		"update old row":   {Raw: msg('U', true, rel.OID, []byte{'O'}, full, []byte{'N'}, toast), Streamed: true},
		"delete key":       {Raw: msg('D', false, rel.OID, []byte{'K'}, key)},
		"delete old row":   {Raw: msg('D', false, rel.OID, []byte{'O'}, full)},
		"binary and empty": {Raw: msg('I', false, rel.OID, []byte{'N'}, tuple(col{'b', "\x00\x01"}, col{'t', ""}, col{'u', ""}))},
	}
	for name, c := range good {
		c.Relations = []*changeset.Relation{rel}
		got, ok := decodeFast(c)
		if !ok {
			t.Errorf("%s: not decoded", name)
			continue
		}
		want, err := c.Decode()
		if err != nil {
			t.Fatalf("%s: Decode: %v", name, err)
		}
		if !reflect.DeepEqual(got, want) {
			t.Errorf("%s:\n got %+v\nwant %+v", name, got, want)
		}
	}
	bad := map[string][]byte{
		"truncate":        {'T', 0, 0, 0, 1, 0, 0, 0, 0, 0x40, 0},
		"other relation":  msg('I', false, rel.OID+1, []byte{'N'}, full),
		"insert with key": msg('I', false, rel.OID, []byte{'K'}, key),
		"too few columns": msg('I', false, rel.OID, []byte{'N'}, tuple(col{'t', "1"})),
		"cut short":       msg('I', false, rel.OID, []byte{'N'}, full[:len(full)-1]),
		"trailing bytes":  msg('D', false, rel.OID, []byte{'K'}, key, []byte{0}),
		"no new tuple":    msg('U', false, rel.OID, []byte{'K'}, key),
		"unknown kind":    msg('I', false, rel.OID, []byte{'N'}, tuple(col{'x', ""}, col{'n', ""}, col{'n', ""})),
		"huge length":     append(msg('I', false, rel.OID, []byte{'N'}, []byte{0, 3, 't'}), 0xff, 0xff, 0xff, 0xff),
		"empty":           {},
	}
	for name, raw := range bad {
		if d, ok := decodeFast(&changeset.Change{Raw: raw, Relations: []*changeset.Relation{rel}}); ok {
			t.Errorf("%s: decoded as %+v", name, d)
		}
	}
	if _, ok := decodeFast(&changeset.Change{Raw: good["insert"].Raw}); ok {
		t.Error("decoded without its relation")
	}
}

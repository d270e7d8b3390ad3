package apply

import (
	"encoding/binary"

	"github.com/pme2go/pme2go-backup/engine/changeset"
)

// decodeFast decodes an Insert, Update or Delete change like
// changeset.Change.Decode, without its per-column allocations and copies:
// the values' data are slices of c.Raw (which the change-set reader
// allocates per record and never reuses). It returns false for anything it
// does not read plainly (a truncate, a relation that does not match, a
// short or malformed message, trailing bytes), and the caller then decodes
// with Change.Decode, which names the problem. For a message it accepts
// the result equals Change.Decode's.
func decodeFast(c *changeset.Change) (*changeset.DecodedChange, bool) {
	raw := c.Raw
	if len(c.Relations) != 1 || c.Relations[0] == nil || len(raw) == 0 {
		return nil, false
	}
	rel := c.Relations[0]
	op := raw[0]
	if op != 'I' && op != 'U' && op != 'D' {
		return nil, false
	}
	b := raw[1:]
	if c.Streamed {
		if len(b) < 4 {
			return nil, false
		}
		b = b[4:]
	}
	if len(b) < 5 || binary.BigEndian.Uint32(b) != rel.OID {
		return nil, false
	}
	b = b[4:]
	d := &changeset.DecodedChange{Op: changeset.Op(op), Relation: rel}
	var ok bool
	switch {
	case op == 'I' && b[0] == 'N', op == 'U' && b[0] == 'N':
		d.New, b, ok = tupleFast(rel, b[1:])
	case op != 'I' && (b[0] == 'K' || b[0] == 'O'):
		d.OldKind = b[0]
		if d.Old, b, ok = tupleFast(rel, b[1:]); ok && op == 'U' {
			if len(b) == 0 || b[0] != 'N' {
				return nil, false
			}
			d.New, b, ok = tupleFast(rel, b[1:])
		}
	}
	if !ok || len(b) != 0 {
		return nil, false
	}
	return d, true
}

// tupleFast reads a pgoutput TupleData of rel's columns from b and returns
// the rest of b.
func tupleFast(rel *changeset.Relation, b []byte) ([]changeset.Value, []byte, bool) {
	if len(b) < 2 {
		return nil, nil, false
	}
	n := int(binary.BigEndian.Uint16(b))
	b = b[2:]
	if n != len(rel.Columns) {
		return nil, nil, false
	}
	vals := make([]changeset.Value, n)
	for i := range vals {
		if len(b) < 1 {
			return nil, nil, false
		}
		col := &rel.Columns[i]
		kind := b[0]
		b = b[1:]
		vals[i] = changeset.Value{Column: col.Name, TypeName: col.TypeName, Key: col.Key, Kind: changeset.ValueKind(kind)}
		switch kind {
		case 'n', 'u':
		case 't', 'b':
			if len(b) < 4 {
				return nil, nil, false
			}
			l := binary.BigEndian.Uint32(b)
			b = b[4:]
			if uint64(l) > uint64(len(b)) {
				return nil, nil, false
			}
			vals[i].Data = b[:l:l]
			b = b[l:]
		default:
			return nil, nil, false
		}
	}
	return vals, b, true
}

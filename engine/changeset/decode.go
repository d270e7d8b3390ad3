package changeset

import (
	"errors"
	"fmt"
	"strings"

	"github.com/jackc/pglogrepl"
)

// Op is the operation of a decoded change.
type Op byte

// Operations, named by their pgoutput message type.
const (
	OpInsert   Op = 'I'
	OpUpdate   Op = 'U'
	OpDelete   Op = 'D'
	OpTruncate Op = 'T'
)

// String returns the SQL verb of the operation.
func (o Op) String() string {
	switch o {
	case OpInsert:
		return "INSERT"
	case OpUpdate:
		return "UPDATE"
	case OpDelete:
		return "DELETE"
	case OpTruncate:
		return "TRUNCATE"
	}
	return fmt.Sprintf("Op(0x%02x)", byte(o))
}

// ValueKind says how a column value was sent (pgoutput TupleData kind).
type ValueKind byte

// Value kinds.
const (
	ValueNull           ValueKind = 'n' // SQL NULL
	ValueUnchangedToast ValueKind = 'u' // unchanged TOASTed value; not sent
	ValueText           ValueKind = 't' // text format
	ValueBinary         ValueKind = 'b' // binary format
)

// Value is one column of a decoded tuple.
type Value struct {
	Column   string
	TypeName string
	Key      bool // the column is part of the replica identity
	Kind     ValueKind
	Data     []byte // text or binary data; nil for NULL and unchanged TOAST
}

// DecodedChange is a pgoutput change resolved against its relation.
type DecodedChange struct {
	Op       Op
	Relation *Relation // nil for truncate
	New      []Value   // insert and update
	Old      []Value   // update and delete: old tuple or key tuple
	OldKind  byte      // 'K' key tuple, 'O' full old tuple, 0 when absent

	TruncateRelationIDs []uint32
	Truncated           []*Relation // filled by Change.Decode; nil entries for unknown OIDs
	Cascade             bool
	RestartIdentity     bool
}

// QuoteIdent quotes a PostgreSQL identifier, doubling embedded quotes.
func QuoteIdent(s string) string { return `"` + strings.ReplaceAll(s, `"`, `""`) + `"` }

// RelationFromMessage builds a Relation from a pgoutput Relation message.
// typeName returns format_type(oid, typmod) text rendered with
// search_path = pg_catalog (so that types outside pg_catalog are
// schema-qualified; the Relation is marked QualifiedTypes); the capture
// looks it up in pg_catalog. A nil typeName leaves type names empty.
func RelationFromMessage(m *pglogrepl.RelationMessage, typeName func(oid uint32, typmod int32) string) *Relation {
	rel := &Relation{OID: m.RelationID, Schema: m.Namespace, Name: m.RelationName, ReplicaIdentity: m.ReplicaIdentity,
		QualifiedTypes: typeName != nil}
	for _, c := range m.Columns {
		col := Column{Name: c.Name, TypeOID: c.DataType, TypeMod: c.TypeModifier, Key: c.Flags&1 != 0}
		if typeName != nil {
			col.TypeName = typeName(c.DataType, c.TypeModifier)
		}
		rel.Columns = append(rel.Columns, col)
	}
	return rel
}

// Decode decodes the change against the relations the Reader attached.
func (c *Change) Decode() (*DecodedChange, error) {
	var rel *Relation
	if len(c.Raw) > 0 && c.Raw[0] != 'T' && len(c.Relations) == 1 {
		rel = c.Relations[0]
		if rel == nil {
			return nil, fmt.Errorf("changeset: change at LSN %s refers to a relation with no preceding Relation record in this segment; the segment is incomplete", FormatLSN(c.LSN))
		}
	}
	d, err := DecodeChange(rel, c.Raw, c.Streamed)
	if err != nil {
		return nil, err
	}
	if d.Op == OpTruncate {
		d.Truncated = c.Relations
	}
	return d, nil
}

// DecodeChange decodes a raw pgoutput Insert, Update, Delete or Truncate
// message with pglogrepl. rel is the message's relation (ignored for
// Truncate). streamed says raw was sent inside a protocol version 2 stream
// block and carries an xid after the type byte (pglogrepl.ParseV2 with
// inStream); pass false for protocol 1 and for non-streamed version 2
// messages, which have the same layout.
func DecodeChange(rel *Relation, raw []byte, streamed bool) (dc *DecodedChange, err error) {
	if err := checkWire(raw, streamed); err != nil {
		return nil, fmt.Errorf("changeset: malformed pgoutput change: %w", err)
	}
	defer func() { // pglogrepl does not bounds-check every field
		if p := recover(); p != nil {
			dc, err = nil, fmt.Errorf("changeset: malformed pgoutput change: decoder panicked: %v", p)
		}
	}()
	var msg pglogrepl.Message
	if streamed {
		msg, err = pglogrepl.ParseV2(raw, true)
	} else {
		msg, err = pglogrepl.Parse(raw)
	}
	if err != nil {
		return nil, fmt.Errorf("changeset: decode pgoutput change: %w", err)
	}
	d := &DecodedChange{Op: Op(raw[0]), Relation: rel}
	var relID uint32
	switch m := msg.(type) {
	case *pglogrepl.InsertMessage, *pglogrepl.InsertMessageV2:
		im := asInsert(m)
		relID = im.RelationID
		d.New, err = tupleValues(rel, im.Tuple)
	case *pglogrepl.UpdateMessage, *pglogrepl.UpdateMessageV2:
		um := asUpdate(m)
		relID, d.OldKind = um.RelationID, um.OldTupleType
		if d.Old, err = tupleValues(rel, um.OldTuple); err == nil {
			d.New, err = tupleValues(rel, um.NewTuple)
		}
	case *pglogrepl.DeleteMessage, *pglogrepl.DeleteMessageV2:
		dm := asDelete(m)
		relID, d.OldKind = dm.RelationID, dm.OldTupleType
		d.Old, err = tupleValues(rel, dm.OldTuple)
	case *pglogrepl.TruncateMessage, *pglogrepl.TruncateMessageV2:
		tm := asTruncate(m)
		d.Relation = nil
		d.TruncateRelationIDs = tm.RelationIDs
		d.Cascade = tm.Option&pglogrepl.TruncateOptionCascade != 0
		d.RestartIdentity = tm.Option&pglogrepl.TruncateOptionRestartIdentity != 0
		return d, nil
	default:
		return nil, fmt.Errorf("changeset: decode pgoutput change: %T is not a change message", msg)
	}
	if err != nil {
		return nil, err
	}
	if rel == nil {
		return nil, errors.New("changeset: decode change: no relation definition given; decode through Change.Decode or pass Reader.Relation(oid)")
	}
	if rel.OID != relID {
		return nil, fmt.Errorf("changeset: change refers to relation OID %d but was decoded with relation %s (OID %d); pass the relation from Reader.Relation", relID, rel.QualifiedName(), rel.OID)
	}
	return d, nil
}

func asInsert(m pglogrepl.Message) *pglogrepl.InsertMessage {
	if v, ok := m.(*pglogrepl.InsertMessageV2); ok {
		return &v.InsertMessage
	}
	return m.(*pglogrepl.InsertMessage)
}

func asUpdate(m pglogrepl.Message) *pglogrepl.UpdateMessage {
	if v, ok := m.(*pglogrepl.UpdateMessageV2); ok {
		return &v.UpdateMessage
	}
	return m.(*pglogrepl.UpdateMessage)
}

func asDelete(m pglogrepl.Message) *pglogrepl.DeleteMessage {
	if v, ok := m.(*pglogrepl.DeleteMessageV2); ok {
		return &v.DeleteMessage
	}
	return m.(*pglogrepl.DeleteMessage)
}

func asTruncate(m pglogrepl.Message) *pglogrepl.TruncateMessage {
	if v, ok := m.(*pglogrepl.TruncateMessageV2); ok {
		return &v.TruncateMessage
	}
	return m.(*pglogrepl.TruncateMessage)
}

// tupleValues pairs tuple columns with the relation's columns.
func tupleValues(rel *Relation, t *pglogrepl.TupleData) ([]Value, error) {
	if t == nil {
		return nil, nil
	}
	if rel == nil {
		return nil, errors.New("changeset: decode change: no relation definition given; decode through Change.Decode or pass Reader.Relation(oid)")
	}
	if len(t.Columns) != len(rel.Columns) {
		return nil, fmt.Errorf("changeset: decode change: tuple has %d columns but relation %s has %d; the Relation record does not match this change",
			len(t.Columns), rel.QualifiedName(), len(rel.Columns))
	}
	vals := make([]Value, len(t.Columns))
	for i, c := range t.Columns {
		col := rel.Columns[i]
		vals[i] = Value{Column: col.Name, TypeName: col.TypeName, Key: col.Key, Kind: ValueKind(c.DataType)}
		if c.DataType == pglogrepl.TupleDataTypeText || c.DataType == pglogrepl.TupleDataTypeBinary {
			vals[i].Data = c.Data
		}
	}
	return vals, nil
}

package changeset

import (
	"encoding/binary"
	"encoding/json"
	"fmt"
	"github.com/pme2go/pme2go-backup/engine/lsn"
	"time"
)

// Record is one typed record read from a segment: *Relation, *Begin,
// *Change, *Message, *Commit, *Sequences or *Seal.
type Record interface {
	// RecordType returns the type byte the record is framed with.
	RecordType() RecordType
}

// FormatLSN renders an LSN the way PostgreSQL does ("16/B374D848").
func FormatLSN(l uint64) string { return lsn.LSN(l).String() }

// Header describes a segment; it is the first record of every segment.
type Header struct {
	FormatVersion    int       `json:"formatVersion"`    // always FormatVersion
	SystemIdentifier string    `json:"systemIdentifier"` // pg_control system identifier
	Timeline         int       `json:"timeline"`         // timeline of the source server
	Database         string    `json:"database"`         // database the slot decodes
	ChainID          string    `json:"chainId"`          // backup chain this segment belongs to
	Slot             string    `json:"slot"`             // replication slot name
	Publication      string    `json:"publication"`      // publication name(s)
	StartLSN         uint64    `json:"startLsn"`         // LSN where this segment begins
	Created          time.Time `json:"created"`          // when the segment was created
	ServerVersion    int       `json:"serverVersion"`    // server_version_num, e.g. 160002
	ProtoVersion     int       `json:"protoVersion"`     // pgoutput proto_version
}

// Column is one column of a Relation, in pgoutput column order.
type Column struct {
	Name     string `json:"name"`
	TypeOID  uint32 `json:"typeOid"`
	TypeName string `json:"typeName"` // format_type() text, e.g. integer, text[], "Sales Ω".mood (see Relation.QualifiedTypes)
	TypeMod  int32  `json:"typmod"`
	Key      bool   `json:"key"` // part of the replica identity
}

// Relation is a table definition. OID is only a lookup key within one
// segment; replay identifies tables by Schema and Name.
type Relation struct {
	OID             uint32
	Schema          string
	Name            string
	ReplicaIdentity byte // 'd' default, 'n' nothing, 'f' full, 'i' index
	Columns         []Column
	// QualifiedTypes says the columns' TypeName were rendered with
	// search_path = pg_catalog: a type outside pg_catalog always carries its
	// schema ("public.mood"), one in pg_catalog never does ("integer").
	// Relation records written before it existed (false) rendered type
	// names under the capture session's search_path, so a type of another
	// schema may appear unqualified; replay resolves those in the target.
	QualifiedTypes bool

	// Changed is set by Reader when an earlier Relation record of this
	// segment defined the same table (same schema.name, or same OID under
	// another name) with different columns. Previous is that definition.
	Changed  bool
	Previous *Relation
}

type relationJSON struct {
	OID             uint32   `json:"oid"`
	Schema          string   `json:"schema"`
	Name            string   `json:"name"`
	ReplicaIdentity string   `json:"replicaIdentity"`
	Columns         []Column `json:"columns"`
	QualifiedTypes  bool     `json:"qualifiedTypes,omitempty"`
}

// QualifiedName returns the quoted "schema"."name" of the relation.
func (r *Relation) QualifiedName() string { return QuoteIdent(r.Schema) + "." + QuoteIdent(r.Name) }

// sameColumns reports whether two definitions have the same columns.
func (r *Relation) sameColumns(o *Relation) bool {
	if len(r.Columns) != len(o.Columns) {
		return false
	}
	for i, c := range r.Columns {
		d := o.Columns[i]
		// Type names rendered under different rules (QualifiedTypes) may
		// differ for the same type; the OID decides then.
		sameName := c.TypeName == d.TypeName || r.QualifiedTypes != o.QualifiedTypes
		if c.Name != d.Name || c.TypeOID != d.TypeOID || !sameName || c.TypeMod != d.TypeMod {
			return false
		}
	}
	return true
}

// Begin starts a transaction.
type Begin struct {
	Xid        uint32
	FinalLSN   uint64 // LSN of the transaction's commit record
	CommitTime time.Time
}

// Change is one raw pgoutput Insert, Update, Delete or Truncate message,
// stored exactly as the server sent it.
type Change struct {
	LSN      uint64 // WAL position of the change
	Streamed bool   // Raw was sent inside a protocol v2 stream block and carries an xid
	Raw      []byte

	// Relations are the relations the change refers to, as defined when the
	// Reader read the change. They are not stored; the Writer ignores them.
	Relations []*Relation
}

// Message is a logical decoding message (pg_logical_emit_message).
type Message struct {
	LSN           uint64
	Transactional bool
	Prefix        string
	Content       []byte
}

// Commit ends a transaction.
type Commit struct {
	CommitLSN  uint64
	EndLSN     uint64
	CommitTime time.Time
	Xid        uint32
}

// SequenceValue is the state of one sequence.
type SequenceValue struct {
	LastValue int64 `json:"lastValue"`
	IsCalled  bool  `json:"isCalled"`
}

// Sequences holds sequence states taken when the segment was sealed, keyed
// by schema-qualified sequence name as format('%I.%I') renders it.
//
// FromLSN and ToLSN bound the read: the server's WAL insert position just
// before the first sequence was read and just after the last one. A
// transaction whose commit LSN is below FromLSN had made all its nextval
// calls before the read; one whose commit LSN is above ToLSN committed
// after it. Zero in records written before they were recorded.
type Sequences struct {
	Taken   time.Time                `json:"taken"`
	Values  map[string]SequenceValue `json:"values"`
	FromLSN uint64                   `json:"fromLsn,omitempty"`
	ToLSN   uint64                   `json:"toLsn,omitempty"`
}

// Seal ends a segment.
type Seal struct {
	NextLSN         uint64    `json:"nextLsn"` // exact LSN where the next segment begins
	TxCount         int64     `json:"txCount"`
	FirstCommitLSN  uint64    `json:"firstCommitLsn"`
	FirstCommitTime time.Time `json:"firstCommitTime"`
	LastCommitLSN   uint64    `json:"lastCommitLsn"`
	LastCommitTime  time.Time `json:"lastCommitTime"`
	// CompleteTime is the server time up to which the stream is known
	// complete at NextLSN: every transaction that committed at or before
	// it is in this or an earlier segment. Zero when not known.
	CompleteTime time.Time `json:"completeTime,omitzero"`
}

// RecordType implements Record.
func (*Relation) RecordType() RecordType { return TypeRelation }

// RecordType implements Record.
func (*Begin) RecordType() RecordType { return TypeBegin }

// RecordType implements Record.
func (*Change) RecordType() RecordType { return TypeChange }

// RecordType implements Record.
func (*Message) RecordType() RecordType { return TypeMessage }

// RecordType implements Record.
func (*Commit) RecordType() RecordType { return TypeCommit }

// RecordType implements Record.
func (*Sequences) RecordType() RecordType { return TypeSequences }

// RecordType implements Record.
func (*Seal) RecordType() RecordType { return TypeSeal }

var be = binary.BigEndian

func putTime(b []byte, t time.Time) { be.PutUint64(b, uint64(t.UnixMicro())) }
func getTime(b []byte) time.Time    { return time.UnixMicro(int64(be.Uint64(b))).UTC() }

// decodePayload turns a verified record payload into a typed record.
func decodePayload(t RecordType, p []byte) (Record, error) {
	switch t {
	case TypeRelation:
		var j relationJSON
		if err := json.Unmarshal(p, &j); err != nil {
			return nil, fmt.Errorf("relation JSON: %w", err)
		}
		if len(j.ReplicaIdentity) != 1 {
			return nil, fmt.Errorf("relation %q.%q: replica identity %q is not one character", j.Schema, j.Name, j.ReplicaIdentity)
		}
		return &Relation{OID: j.OID, Schema: j.Schema, Name: j.Name,
			ReplicaIdentity: j.ReplicaIdentity[0], Columns: j.Columns, QualifiedTypes: j.QualifiedTypes}, nil
	case TypeBegin:
		if len(p) != 20 {
			return nil, fmt.Errorf("begin payload is %d bytes, want 20", len(p))
		}
		return &Begin{Xid: be.Uint32(p), FinalLSN: be.Uint64(p[4:]), CommitTime: getTime(p[12:])}, nil
	case TypeCommit:
		if len(p) != 28 {
			return nil, fmt.Errorf("commit payload is %d bytes, want 28", len(p))
		}
		return &Commit{CommitLSN: be.Uint64(p), EndLSN: be.Uint64(p[8:]),
			CommitTime: getTime(p[16:]), Xid: be.Uint32(p[24:])}, nil
	case TypeChange:
		if len(p) < 10 {
			return nil, fmt.Errorf("change payload is %d bytes, want at least 10", len(p))
		}
		return &Change{LSN: be.Uint64(p), Streamed: p[8]&1 != 0, Raw: p[9:]}, nil
	case TypeMessage:
		if len(p) < 13 {
			return nil, fmt.Errorf("message payload is %d bytes, want at least 13", len(p))
		}
		n := be.Uint32(p[9:])
		if uint64(n) > uint64(len(p)-13) {
			return nil, fmt.Errorf("message prefix length %d runs past the payload", n)
		}
		return &Message{LSN: be.Uint64(p), Transactional: p[8]&1 != 0,
			Prefix: string(p[13 : 13+n]), Content: p[13+n:]}, nil
	case TypeSequences:
		s := new(Sequences)
		if err := json.Unmarshal(p, s); err != nil {
			return nil, fmt.Errorf("sequences JSON: %w", err)
		}
		return s, nil
	case TypeSeal:
		s := new(Seal)
		if err := json.Unmarshal(p, s); err != nil {
			return nil, fmt.Errorf("seal JSON: %w", err)
		}
		return s, nil
	}
	return nil, fmt.Errorf("record type %s is not allowed after the header", t)
}

// Package changeset reads and writes change-set segments: the versioned,
// durable on-disk format for changes captured from a PostgreSQL pgoutput
// logical replication stream.
//
// A segment file starts with the magic "PME2CS\n", a big-endian uint16
// format version and a framed JSON header record. A sequence of framed
// records follows:
//
//	[type byte][payload length uint32 BE][payload][CRC-32C uint32 BE]
//
// The CRC-32C (Castagnoli) covers the type byte, the length and the payload.
// A transaction is a Begin record, any number of Change, Message and
// Relation records, and a Commit record; it is "whole" only once its Commit
// record is on disk. A segment ends with an optional Sequences record and a
// Seal record that names the LSN where the next segment begins.
//
// Writers stream every record to the file as it arrives, so memory stays
// bounded whatever the size of a transaction. After a crash, OpenAppend cuts
// the file back to the end of the last whole transaction. Readers report a
// damaged tail as ErrTornTail and damage followed by more data as
// ErrCorrupt. docs/changeset-format.md describes the format byte by byte.
package changeset

import (
	"errors"
	"fmt"
	"hash/crc32"
)

// Magic is the first seven bytes of every segment file.
const Magic = "PME2CS\n"

// FormatVersion is the segment format version this package writes and reads.
const FormatVersion = 1

// MaxRecordSize is the largest record payload accepted, in bytes. pgoutput
// messages are limited to 1 GiB by the server; the extra room covers framing
// fields added by this format.
const MaxRecordSize = 1<<30 + 1<<20

// Message prefixes with a meaning for RenderSQL and the engine.
const (
	// MarkPrefix is the logical decoding message prefix of a named mark; the
	// content is the mark name.
	MarkPrefix = "pme2go.mark"
	// SequencesPrefix is the logical decoding message prefix of a read of
	// the sequences taken in the transaction that carries it (a mark's):
	// the content is a Sequences record as JSON, FromLSN and ToLSN set.
	SequencesPrefix = "pme2go.seq"
	// DDLPrefix is the logical decoding message prefix of captured DDL; the
	// content is the SQL statement.
	DDLPrefix = "pme2go.ddl"
)

// RecordType is the type byte that starts every framed record.
type RecordType byte

// Record types.
const (
	TypeHeader    RecordType = 'H'
	TypeRelation  RecordType = 'R'
	TypeBegin     RecordType = 'B'
	TypeChange    RecordType = 'X'
	TypeMessage   RecordType = 'M'
	TypeCommit    RecordType = 'C'
	TypeSequences RecordType = 'S'
	TypeSeal      RecordType = 'E'
)

// String returns the record type name.
func (t RecordType) String() string {
	switch t {
	case TypeHeader:
		return "Header"
	case TypeRelation:
		return "Relation"
	case TypeBegin:
		return "Begin"
	case TypeChange:
		return "Change"
	case TypeMessage:
		return "Message"
	case TypeCommit:
		return "Commit"
	case TypeSequences:
		return "Sequences"
	case TypeSeal:
		return "Seal"
	}
	return fmt.Sprintf("RecordType(0x%02x)", byte(t))
}

func (t RecordType) valid() bool {
	switch t {
	case TypeHeader, TypeRelation, TypeBegin, TypeChange, TypeMessage,
		TypeCommit, TypeSequences, TypeSeal:
		return true
	}
	return false
}

// Errors reported by readers and writers. Test for them with errors.Is; use
// errors.As with *FormatError to learn the offset.
var (
	// ErrTornTail reports a segment whose end was cut short, typically by a
	// crash while writing. Everything before the offset is intact.
	ErrTornTail = errors.New("changeset: torn tail")
	// ErrCorrupt reports damage followed by more data: a CRC mismatch or an
	// invalid record in the middle of a segment.
	ErrCorrupt = errors.New("changeset: corrupt segment")
	// ErrSealed reports an attempt to append to a sealed segment.
	ErrSealed = errors.New("changeset: segment is sealed")
	// ErrVersion reports a segment written by an unsupported format version.
	ErrVersion = errors.New("changeset: unsupported format version")
)

// FormatError describes damage found in a segment.
type FormatError struct {
	Kind   error  // ErrTornTail or ErrCorrupt
	Offset int64  // byte offset of the damaged record's first byte
	Index  int    // index of the damaged record; the header record is 0
	Reason string // what is wrong
}

// Error implements error.
func (e *FormatError) Error() string {
	what := "torn tail"
	hint := "everything before it is intact; OpenAppend cuts it back to the last whole transaction"
	if e.Kind == ErrCorrupt {
		what = "corrupt record"
		hint = "the segment is damaged in the middle; restore it from another copy or recover the records before the offset by hand (see docs/changeset-format.md)"
	}
	return fmt.Sprintf("changeset: %s at offset %d (record %d): %s; %s", what, e.Offset, e.Index, e.Reason, hint)
}

// Unwrap returns ErrTornTail or ErrCorrupt.
func (e *FormatError) Unwrap() error { return e.Kind }

var crcTable = crc32.MakeTable(crc32.Castagnoli)

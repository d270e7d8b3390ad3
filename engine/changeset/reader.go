package changeset

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"os"
)

// Reader reads the records of one segment in order. It keeps the segment's
// relation map so changes can be decoded, and checks transaction structure.
type Reader struct {
	file    *os.File // nil for NewReader
	fr      frameReader
	hdr     Header
	err     error // sticky error, io.EOF included
	begin   *Begin
	txStart int64
	safeEnd int64 // offset just after the last record outside a transaction
	rels    map[uint32]*Relation
	byName  map[string]*Relation
	seal    *Seal
}

// Open opens the segment at path and reads its header.
func Open(path string) (*Reader, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("changeset: open segment: %w", err)
	}
	src, err := plainReader(f, path)
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("changeset: %s: %w", path, err)
	}
	r, err := NewReader(src)
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("changeset: %s: %w", path, err)
	}
	r.file = f
	return r, nil
}

// NewReader reads a segment from rd, starting with its header.
func NewReader(rd io.Reader) (*Reader, error) {
	r := &Reader{
		fr:     frameReader{r: bufio.NewReaderSize(rd, 64<<10)},
		rels:   make(map[uint32]*Relation),
		byName: make(map[string]*Relation),
	}
	var pre [len(Magic) + 2]byte
	n, err := io.ReadFull(r.fr.r, pre[:])
	r.fr.off = int64(n)
	if err != nil {
		return nil, &FormatError{Kind: ErrTornTail, Reason: fmt.Sprintf("file is %d bytes, shorter than the %d-byte preamble; it was never fully created", n, len(pre))}
	}
	if string(pre[:len(Magic)]) != Magic {
		return nil, &FormatError{Kind: ErrCorrupt, Reason: fmt.Sprintf("magic is %q, want %q; this is not a pme2go change-set segment", pre[:len(Magic)], Magic)}
	}
	if v := be.Uint16(pre[len(Magic):]); v != FormatVersion {
		return nil, fmt.Errorf("segment format version %d, this build reads version %d; use a matching pme2go-backup release: %w", v, FormatVersion, ErrVersion)
	}
	t, p, _, err := r.fr.next()
	if err == io.EOF {
		err = &FormatError{Kind: ErrTornTail, Offset: r.fr.off, Reason: "header record missing; the segment was never fully created"}
	}
	if err != nil {
		return nil, err
	}
	if t != TypeHeader {
		return nil, &FormatError{Kind: ErrCorrupt, Offset: int64(len(pre)), Reason: fmt.Sprintf("first record is %s, want Header", t)}
	}
	if err := json.Unmarshal(p, &r.hdr); err != nil {
		return nil, &FormatError{Kind: ErrCorrupt, Offset: int64(len(pre)), Reason: "header JSON: " + err.Error()}
	}
	if r.hdr.FormatVersion != FormatVersion {
		return nil, fmt.Errorf("header formatVersion %d, this build reads version %d; use a matching pme2go-backup release: %w", r.hdr.FormatVersion, FormatVersion, ErrVersion)
	}
	r.safeEnd = r.fr.off
	return r, nil
}

// Header returns the segment header.
func (r *Reader) Header() Header { return r.hdr }

// Close closes the file opened by Open; it does nothing for NewReader.
func (r *Reader) Close() error {
	if r.file == nil {
		return nil
	}
	return r.file.Close()
}

// Offset returns the number of bytes consumed so far.
func (r *Reader) Offset() int64 { return r.fr.off }

// Relation returns the current definition of the relation with the given
// OID in this segment.
func (r *Reader) Relation(oid uint32) (*Relation, bool) {
	rel, ok := r.rels[oid]
	return rel, ok
}

// RelationByName returns the current definition of schema.name.
func (r *Reader) RelationByName(schema, name string) (*Relation, bool) {
	rel, ok := r.byName[relKey(schema, name)]
	return rel, ok
}

// Sealed returns the Seal record once Next has read it.
func (r *Reader) Sealed() (*Seal, bool) { return r.seal, r.seal != nil }

func relKey(schema, name string) string { return QuoteIdent(schema) + "." + QuoteIdent(name) }

// Next returns the next record. It returns io.EOF at the clean end of the
// segment, an error wrapping ErrTornTail when the segment ends inside a
// record or inside a transaction (the transaction must be discarded), and
// an error wrapping ErrCorrupt for damage in the middle. Errors are sticky.
func (r *Reader) Next() (Record, error) {
	if r.err != nil {
		return nil, r.err
	}
	rec, err := r.next()
	if err != nil {
		r.err = err
	}
	return rec, err
}

func (r *Reader) next() (Record, error) {
	idx := r.fr.index
	t, p, start, err := r.fr.next()
	if err == io.EOF && r.begin != nil {
		return nil, &FormatError{Kind: ErrTornTail, Offset: r.txStart, Index: idx,
			Reason: fmt.Sprintf("segment ends inside transaction xid %d, which has no Commit record", r.begin.Xid)}
	}
	if err != nil {
		return nil, err
	}
	corrupt := func(format string, a ...any) error {
		return &FormatError{Kind: ErrCorrupt, Offset: start, Index: idx, Reason: fmt.Sprintf(format, a...)}
	}
	if r.seal != nil {
		return nil, corrupt("%s record after the Seal record", t)
	}
	rec, err := decodePayload(t, p)
	if err != nil {
		return nil, corrupt("%v", err)
	}
	inTx := r.begin != nil
	switch v := rec.(type) {
	case *Relation:
		r.addRelation(v)
	case *Begin:
		if inTx {
			return nil, corrupt("Begin of xid %d inside open transaction xid %d", v.Xid, r.begin.Xid)
		}
		r.begin, r.txStart = v, start
	case *Change:
		if !inTx {
			return nil, corrupt("Change record outside a transaction")
		}
		for _, oid := range changeRelIDs(v.Raw, v.Streamed) {
			v.Relations = append(v.Relations, r.rels[oid])
		}
	case *Message:
		if v.Transactional && !inTx {
			return nil, corrupt("transactional Message %q outside a transaction", v.Prefix)
		}
	case *Commit:
		if !inTx {
			return nil, corrupt("Commit record outside a transaction")
		}
		if v.Xid != r.begin.Xid {
			return nil, corrupt("Commit of xid %d closes transaction xid %d", v.Xid, r.begin.Xid)
		}
		r.begin = nil
	case *Sequences, *Seal:
		if inTx {
			return nil, corrupt("%s record inside transaction xid %d", t, r.begin.Xid)
		}
		if s, ok := v.(*Seal); ok {
			r.seal = s
		}
	}
	if r.begin == nil {
		r.safeEnd = r.fr.off
	}
	return rec, nil
}

// addRelation records a relation definition and flags schema changes.
func (r *Reader) addRelation(rel *Relation) {
	key := relKey(rel.Schema, rel.Name)
	prev := r.byName[key]
	if prev == nil {
		if old := r.rels[rel.OID]; old != nil && relKey(old.Schema, old.Name) != key {
			prev = old // renamed
		}
	}
	if prev != nil && (!prev.sameColumns(rel) || prev.Schema != rel.Schema || prev.Name != rel.Name) {
		rel.Changed, rel.Previous = true, prev
	}
	if old := r.rels[rel.OID]; old != nil && relKey(old.Schema, old.Name) != key && r.byName[relKey(old.Schema, old.Name)] == old {
		delete(r.byName, relKey(old.Schema, old.Name))
	}
	r.rels[rel.OID] = rel
	r.byName[key] = rel
}

// changeRelIDs returns the relation OIDs a raw change refers to, or nil
// when the message is too short to say.
func changeRelIDs(raw []byte, streamed bool) []uint32 {
	if len(raw) == 0 {
		return nil
	}
	b := raw[1:]
	if streamed {
		if len(b) < 4 {
			return nil
		}
		b = b[4:]
	}
	switch raw[0] {
	case 'I', 'U', 'D':
		if len(b) >= 4 {
			return []uint32{be.Uint32(b)}
		}
	case 'T':
		if len(b) < 5 {
			return nil
		}
		n := be.Uint32(b)
		if uint64(n)*4 > uint64(len(b)-5) {
			return nil
		}
		ids := make([]uint32, n)
		for i := range ids {
			ids[i] = be.Uint32(b[5+4*i:])
		}
		return ids
	}
	return nil
}

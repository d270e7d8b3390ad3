package changeset

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
)

// frameOverhead is the size of the type byte, length and CRC of a record.
const frameOverhead = 9

// resyncWindow bounds how far past damage a reader looks for an intact
// record to tell a torn tail from damage in the middle of a segment.
const resyncWindow = 16 << 20

// writeFrame writes one record framed with its CRC. hdr is scratch space.
func writeFrame(w *bufio.Writer, hdr *[8]byte, t RecordType, parts ...[]byte) (int64, error) {
	n := 0
	for _, p := range parts {
		n += len(p)
	}
	if n > MaxRecordSize {
		return 0, fmt.Errorf("%s record of %d bytes exceeds the %d-byte limit; this is not a pgoutput message the server can send", t, n, MaxRecordSize)
	}
	hdr[0] = byte(t)
	be.PutUint32(hdr[1:5], uint32(n))
	crc := crc32.Update(0, crcTable, hdr[:5])
	if _, err := w.Write(hdr[:5]); err != nil {
		return 0, err
	}
	for _, p := range parts {
		crc = crc32.Update(crc, crcTable, p)
		if _, err := w.Write(p); err != nil {
			return 0, err
		}
	}
	be.PutUint32(hdr[4:8], crc)
	if _, err := w.Write(hdr[4:8]); err != nil {
		return 0, err
	}
	return int64(n + frameOverhead), nil
}

// frameReader reads framed records and tells torn tails from corruption.
type frameReader struct {
	r     *bufio.Reader
	off   int64 // bytes consumed so far
	index int   // index of the next record; the header record is 0
}

// next returns the next record's type, verified payload and start offset.
// It returns io.EOF only when the input ends exactly between records.
func (f *frameReader) next() (RecordType, []byte, int64, error) {
	start := f.off
	var hdr [5]byte
	n, err := io.ReadFull(f.r, hdr[:])
	f.off += int64(n)
	if err == io.EOF {
		return 0, nil, start, io.EOF
	}
	if err != nil && err != io.ErrUnexpectedEOF {
		return 0, nil, start, readErr(start, err)
	}
	if err != nil {
		return 0, nil, start, f.damage(hdr[:n], false, start, fmt.Sprintf("record header cut short after %d of 5 bytes (%v)", n, err))
	}
	t, length := RecordType(hdr[0]), be.Uint32(hdr[1:5])
	if !t.valid() || length > MaxRecordSize {
		return 0, nil, start, f.damage(hdr[:], true, start, fmt.Sprintf("invalid record header: type 0x%02x, length %d", hdr[0], length))
	}
	body, err := readN(f.r, int64(length)+4)
	f.off += int64(len(body))
	if err != nil && err != io.EOF && err != io.ErrUnexpectedEOF {
		return 0, nil, start, readErr(start, err)
	}
	if err != nil {
		return 0, nil, start, f.damage(append(hdr[:], body...), false, start,
			fmt.Sprintf("%s record of %d bytes cut short after %d bytes", t, length, len(body)))
	}
	payload := body[:length]
	crc := crc32.Update(crc32.Update(0, crcTable, hdr[:]), crcTable, payload)
	if got := be.Uint32(body[length:]); got != crc {
		return 0, nil, start, f.damage(append(hdr[:], body...), true, start,
			fmt.Sprintf("%s record CRC mismatch: stored %08x, computed %08x", t, got, crc))
	}
	f.index++
	return t, payload, start, nil
}

// readErr reports a failure of the underlying reader (an I/O error, or a
// damaged encrypted chunk): never a torn tail, which only the end of the
// input makes.
func readErr(start int64, err error) error {
	return fmt.Errorf("changeset: read record at offset %d: %w", start, err)
}

// readN reads exactly n bytes, growing the buffer only as data arrives so
// a bogus length cannot force a huge allocation.
func readN(r io.Reader, n int64) ([]byte, error) {
	if n <= 1<<20 {
		b := make([]byte, n)
		k, err := io.ReadFull(r, b)
		return b[:k], err
	}
	var buf bytes.Buffer
	k, err := io.CopyN(&buf, r, n)
	if err == nil && k < n {
		err = io.ErrUnexpectedEOF
	}
	return buf.Bytes(), err
}

// damage classifies damage at start. seen holds the bytes already read from
// start; more says whether the rest of the input must still be examined.
// Damage is a torn tail when no intact record starts anywhere after it.
func (f *frameReader) damage(seen []byte, more bool, start int64, reason string) error {
	tail := seen
	kind := ErrTornTail
	if more {
		rest, err := io.ReadAll(io.LimitReader(f.r, resyncWindow+1))
		f.off += int64(len(rest))
		if err != nil {
			return fmt.Errorf("changeset: reading past damaged record at offset %d: %w", start, err)
		}
		if len(rest) > resyncWindow {
			kind = ErrCorrupt
			reason += fmt.Sprintf("; more than %d bytes follow the damage", resyncWindow)
		}
		tail = append(append([]byte(nil), seen...), rest...)
	}
	if kind == ErrTornTail {
		if at, ok := findFrame(tail); ok {
			kind = ErrCorrupt
			reason += fmt.Sprintf("; an intact record follows at offset %d", start+int64(at))
		}
	}
	return &FormatError{Kind: kind, Offset: start, Index: f.index, Reason: reason}
}

// findFrame reports the first position after b[0] where a complete record
// with a valid CRC starts.
func findFrame(b []byte) (int, bool) {
	for i := 1; i+frameOverhead <= len(b); i++ {
		t := RecordType(b[i])
		if !t.valid() || t == TypeHeader {
			continue
		}
		n := int64(be.Uint32(b[i+1:]))
		if n > int64(len(b)-i-frameOverhead) {
			continue
		}
		end := i + 5 + int(n)
		if crc32.Checksum(b[i:end], crcTable) == be.Uint32(b[end:]) {
			return i, true
		}
	}
	return 0, false
}

// isFormatError reports whether err is damage of the given kind.
func isFormatError(err error, kind error) (*FormatError, bool) {
	var fe *FormatError
	if errors.As(err, &fe) && fe.Kind == kind {
		return fe, true
	}
	return nil, false
}

package changeset

import (
	"errors"
	"fmt"
)

// checkWire verifies the layout of a raw pgoutput change message so that
// malformed input is reported as an error instead of reaching pglogrepl,
// which trusts the server and indexes without bounds checks.
func checkWire(raw []byte, streamed bool) error {
	if len(raw) == 0 {
		return errors.New("empty message")
	}
	b := raw[1:]
	need := func(n int) error {
		if len(b) < n {
			return fmt.Errorf("%c message cut short: need %d more bytes, have %d", raw[0], n, len(b))
		}
		return nil
	}
	if streamed {
		if err := need(4); err != nil {
			return err
		}
		b = b[4:]
	}
	switch raw[0] {
	case 'I', 'U', 'D':
		if err := need(5); err != nil {
			return err
		}
		kind := b[4]
		b = b[5:]
		switch {
		case raw[0] == 'I' && kind == 'N', raw[0] == 'U' && kind == 'N':
		case raw[0] != 'I' && (kind == 'K' || kind == 'O'):
			n, err := checkTuple(b)
			if err != nil {
				return fmt.Errorf("%c message old tuple: %w", raw[0], err)
			}
			b = b[n:]
			if raw[0] == 'U' {
				if err := need(1); err != nil {
					return err
				}
				if b[0] != 'N' {
					return fmt.Errorf("U message: new tuple marker is 0x%02x, want 'N'", b[0])
				}
				b = b[1:]
			} else {
				return nil
			}
		default:
			return fmt.Errorf("%c message: invalid tuple marker 0x%02x", raw[0], kind)
		}
		if _, err := checkTuple(b); err != nil {
			return fmt.Errorf("%c message new tuple: %w", raw[0], err)
		}
		return nil
	case 'T':
		if err := need(5); err != nil {
			return err
		}
		if n := be.Uint32(b); uint64(n)*4 > uint64(len(b)-5) {
			return fmt.Errorf("T message lists %d relations but has room for %d", n, (len(b)-5)/4)
		}
		return nil
	}
	return fmt.Errorf("message type 0x%02x is not Insert, Update, Delete or Truncate", raw[0])
}

// checkTuple verifies a TupleData block and returns its length.
func checkTuple(b []byte) (int, error) {
	if len(b) < 2 {
		return 0, errors.New("column count cut short")
	}
	n, off := int(be.Uint16(b)), 2
	for i := 0; i < n; i++ {
		if off >= len(b) {
			return 0, fmt.Errorf("column %d cut short", i)
		}
		kind := b[off]
		off++
		switch kind {
		case 'n', 'u':
		case 't', 'b':
			if len(b)-off < 4 {
				return 0, fmt.Errorf("column %d length cut short", i)
			}
			l := uint64(be.Uint32(b[off:]))
			off += 4
			if l > uint64(len(b)-off) {
				return 0, fmt.Errorf("column %d claims %d bytes, %d remain", i, l, len(b)-off)
			}
			off += int(l)
		default:
			return 0, fmt.Errorf("column %d has unknown kind 0x%02x", i, kind)
		}
	}
	return off, nil
}

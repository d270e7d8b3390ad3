// Package lsn defines LSN, a PostgreSQL write-ahead log position, with the
// one text form used everywhere in pme2go-backup: "X/Y", two hexadecimal
// numbers holding the upper and lower 32 bits, as pg_lsn prints it (see
// https://www.postgresql.org/docs/15/datatype-pg-lsn.html).
package lsn

import (
	"database/sql/driver"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
)

// LSN is a write-ahead log position, a byte offset into the WAL. The zero
// LSN (0/0) is the invalid position PostgreSQL uses for "none".
type LSN uint64

// Invalid is PostgreSQL's InvalidXLogRecPtr, 0/0.
const Invalid LSN = 0

// Parse reads "X/Y" (hexadecimal, case-insensitive, as pg_lsn prints it).
// Surrounding spaces are ignored; anything else is an error naming the text.
func Parse(s string) (LSN, error) {
	t := strings.TrimSpace(s)
	hi, lo, ok := strings.Cut(t, "/")
	if !ok || hi == "" || lo == "" || len(hi) > 8 || len(lo) > 8 {
		return 0, fmt.Errorf("invalid LSN %q: want X/Y in hexadecimal, as pg_current_wal_lsn() prints it", s)
	}
	h, err1 := strconv.ParseUint(hi, 16, 32)
	l, err2 := strconv.ParseUint(lo, 16, 32)
	if err1 != nil || err2 != nil {
		return 0, fmt.Errorf("invalid LSN %q: want X/Y in hexadecimal, as pg_current_wal_lsn() prints it", s)
	}
	return LSN(h<<32 | l), nil
}

// MustParse is Parse for constants in tests; it panics on bad input.
func MustParse(s string) LSN {
	l, err := Parse(s)
	if err != nil {
		panic(err)
	}
	return l
}

// String renders the LSN as "X/Y" in upper-case hexadecimal, as PostgreSQL does.
func (l LSN) String() string { return fmt.Sprintf("%X/%X", uint64(l)>>32, uint32(l)) }

// IsValid reports whether l is not 0/0.
func (l LSN) IsValid() bool { return l != Invalid }

// MarshalText renders "X/Y"; JSON uses it, so LSNs appear as strings.
func (l LSN) MarshalText() ([]byte, error) { return []byte(l.String()), nil }

// UnmarshalText parses "X/Y". The empty text is 0/0.
func (l *LSN) UnmarshalText(b []byte) error {
	if len(b) == 0 {
		*l = 0
		return nil
	}
	v, err := Parse(string(b))
	if err != nil {
		return err
	}
	*l = v
	return nil
}

// UnmarshalJSON accepts the string form and, for data written before LSNs
// were text, a JSON number.
func (l *LSN) UnmarshalJSON(b []byte) error {
	if len(b) > 0 && b[0] != '"' {
		var n uint64
		if err := json.Unmarshal(b, &n); err != nil {
			return fmt.Errorf("invalid LSN %s: %w", b, err)
		}
		*l = LSN(n)
		return nil
	}
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return err
	}
	return l.UnmarshalText([]byte(s))
}

// Value lets an LSN be passed as a query parameter (as text; cast with ::pg_lsn).
func (l LSN) Value() (driver.Value, error) { return l.String(), nil }

// Scan reads a pg_lsn (or text) column.
func (l *LSN) Scan(src any) error {
	switch v := src.(type) {
	case nil:
		*l = 0
		return nil
	case string:
		return l.UnmarshalText([]byte(v))
	case []byte:
		return l.UnmarshalText(v)
	case int64:
		*l = LSN(v)
		return nil
	case uint64:
		*l = LSN(v)
		return nil
	}
	return fmt.Errorf("cannot scan %T into an LSN", src)
}

package changeset

import (
	"bufio"
	"encoding/hex"
	"fmt"
	"io"
	"sort"
	"strings"
	"time"
)

// RenderSQL writes the segment read by r as human-readable SQL, in the
// manner of mysqlbinlog: one BEGIN ... COMMIT block per transaction with
// INSERT, UPDATE, DELETE and TRUNCATE statements, marks and other messages
// as comments, captured DDL (prefix DDLPrefix) as statements, and sequence
// states as setval calls. It streams: memory does not grow with
// transaction size. An incomplete final transaction is closed with
// ROLLBACK and the reader's ErrTornTail error is returned.
func RenderSQL(w io.Writer, r *Reader) error {
	bw := bufio.NewWriter(w)
	renderHeader(bw, r.Header())
	s := NewTxScanner(r)
	for s.Scan() {
		if err := renderEvent(bw, s.Event()); err != nil {
			bw.Flush()
			return err
		}
	}
	err := s.Err()
	if err != nil {
		if s.InTx() {
			fmt.Fprintf(bw, "ROLLBACK; -- incomplete transaction: %s\n", comment(err.Error()))
		} else {
			fmt.Fprintf(bw, "-- segment ends early: %s\n", comment(err.Error()))
		}
	}
	if ferr := bw.Flush(); ferr != nil && err == nil {
		err = fmt.Errorf("changeset: write SQL: %w", ferr)
	}
	return err
}

func renderHeader(w io.Writer, h Header) {
	fmt.Fprintf(w, "-- pme2go change-set segment (format %d)\n", h.FormatVersion)
	fmt.Fprintf(w, "-- system_identifier=%s timeline=%d database=%s\n", h.SystemIdentifier, h.Timeline, comment(h.Database))
	fmt.Fprintf(w, "-- chain=%s slot=%s publication=%s\n", comment(h.ChainID), comment(h.Slot), comment(h.Publication))
	fmt.Fprintf(w, "-- start_lsn=%s created=%s server_version=%d proto_version=%d\n",
		FormatLSN(h.StartLSN), fmtTime(h.Created), h.ServerVersion, h.ProtoVersion)
	fmt.Fprintf(w, "SET standard_conforming_strings = on;\n\n")
}

func renderEvent(w io.Writer, ev Event) error {
	switch v := ev.Record.(type) {
	case *Relation:
		if v.Changed {
			fmt.Fprintf(w, "-- schema change: %s was (%s), now %s (%s)\n", comment(v.Previous.QualifiedName()),
				comment(columnList(v.Previous)), comment(v.QualifiedName()), comment(columnList(v)))
		}
	case *Begin:
		fmt.Fprintf(w, "-- tx xid=%d commit_lsn=%s commit_time=%s\nBEGIN;\n", v.Xid, FormatLSN(v.FinalLSN), fmtTime(v.CommitTime))
	case *Change:
		d, err := v.Decode()
		if err != nil {
			return fmt.Errorf("changeset: render change at LSN %s: %w", FormatLSN(v.LSN), err)
		}
		return renderChange(w, d)
	case *Message:
		renderMessage(w, v)
	case *Commit:
		fmt.Fprintf(w, "COMMIT;\n\n")
	case *Sequences:
		fmt.Fprintf(w, "-- sequences taken at %s\n", fmtTime(v.Taken))
		names := make([]string, 0, len(v.Values))
		for n := range v.Values {
			names = append(names, n)
		}
		sort.Strings(names)
		for _, n := range names {
			fmt.Fprintf(w, "SELECT pg_catalog.setval(%s, %d, %t);\n", quoteLiteral(n), v.Values[n].LastValue, v.Values[n].IsCalled)
		}
	case *Seal:
		fmt.Fprintf(w, "-- seal: next_lsn=%s transactions=%d first_commit_lsn=%s last_commit_lsn=%s last_commit_time=%s\n",
			FormatLSN(v.NextLSN), v.TxCount, FormatLSN(v.FirstCommitLSN), FormatLSN(v.LastCommitLSN), fmtTime(v.LastCommitTime))
	}
	return nil
}

func renderMessage(w io.Writer, m *Message) {
	switch {
	case m.Prefix == MarkPrefix:
		fmt.Fprintf(w, "-- mark: %s at %s\n", comment(string(m.Content)), FormatLSN(m.LSN))
	case IsDDLPrefix(m.Prefix):
		d, err := ParseDDL(m.Content)
		if err != nil {
			fmt.Fprintf(w, "-- ddl at %s: %s\n", FormatLSN(m.LSN), comment(err.Error()))
			return
		}
		extra := ""
		if d.Tag != "" {
			extra = " (" + comment(d.Tag) + ")"
		}
		if d.Concurrently {
			extra += ", run CONCURRENTLY on the source"
		}
		fmt.Fprintf(w, "-- ddl at %s%s\n%s\n", FormatLSN(m.LSN), extra, d.SQL())
	case strings.HasPrefix(m.Prefix, EndPrefix+"."):
		fmt.Fprintf(w, "-- chain ended at %s: %s\n", FormatLSN(m.LSN), comment(string(m.Content)))
	default:
		fmt.Fprintf(w, "-- message prefix=%q transactional=%t lsn=%s content=%q\n", m.Prefix, m.Transactional, FormatLSN(m.LSN), m.Content)
	}
}

func renderChange(w io.Writer, d *DecodedChange) error {
	switch d.Op {
	case OpInsert:
		var cols, vals []string
		for _, v := range d.New {
			if v.Kind != ValueUnchangedToast {
				cols, vals = append(cols, QuoteIdent(v.Column)), append(vals, literal(v))
			}
		}
		fmt.Fprintf(w, "INSERT INTO %s (%s) VALUES (%s);\n", d.Relation.QualifiedName(), strings.Join(cols, ", "), strings.Join(vals, ", "))
	case OpUpdate:
		var set []string
		for _, v := range d.New {
			if v.Kind != ValueUnchangedToast {
				set = append(set, QuoteIdent(v.Column)+" = "+literal(v))
			}
		}
		where := whereClause(d)
		if len(set) == 0 || where == "" {
			fmt.Fprintf(w, "-- UPDATE on %s skipped: %s\n", comment(d.Relation.QualifiedName()), skipReason(len(set) == 0))
			return nil
		}
		fmt.Fprintf(w, "UPDATE %s SET %s WHERE %s;\n", d.Relation.QualifiedName(), strings.Join(set, ", "), where)
	case OpDelete:
		where := whereClause(d)
		if where == "" {
			fmt.Fprintf(w, "-- DELETE on %s skipped: %s\n", comment(d.Relation.QualifiedName()), skipReason(false))
			return nil
		}
		fmt.Fprintf(w, "DELETE FROM %s WHERE %s;\n", d.Relation.QualifiedName(), where)
	case OpTruncate:
		names := make([]string, len(d.TruncateRelationIDs))
		for i, oid := range d.TruncateRelationIDs {
			if i >= len(d.Truncated) || d.Truncated[i] == nil {
				return fmt.Errorf("changeset: TRUNCATE refers to relation OID %d with no preceding Relation record; the segment is incomplete", oid)
			}
			names[i] = d.Truncated[i].QualifiedName()
		}
		opts := ""
		if d.RestartIdentity {
			opts += " RESTART IDENTITY"
		}
		if d.Cascade {
			opts += " CASCADE"
		}
		fmt.Fprintf(w, "TRUNCATE %s%s;\n", strings.Join(names, ", "), opts)
	}
	return nil
}

func skipReason(noSet bool) string {
	if noSet {
		return "no column values were sent"
	}
	return "no old tuple or replica identity key to locate the row"
}

// whereClause locates the row of an update or delete: the full old tuple
// (REPLICA IDENTITY FULL), else the old key tuple, else the key columns of
// the new tuple.
func whereClause(d *DecodedChange) string {
	src, full := d.New, false
	switch d.OldKind {
	case 'O':
		src, full = d.Old, true
	case 'K':
		src = d.Old
	}
	var conds []string
	for _, v := range src {
		if v.Kind == ValueUnchangedToast || (!full && !v.Key) {
			continue
		}
		switch {
		case v.Kind == ValueNull:
			conds = append(conds, QuoteIdent(v.Column)+" IS NULL")
		case full:
			conds = append(conds, QuoteIdent(v.Column)+" IS NOT DISTINCT FROM "+literal(v))
		default:
			conds = append(conds, QuoteIdent(v.Column)+" = "+literal(v))
		}
	}
	return strings.Join(conds, " AND ")
}

// literal renders a value as a string literal cast to its column type.
func literal(v Value) string {
	switch v.Kind {
	case ValueNull:
		return "NULL"
	case ValueBinary:
		s := quoteLiteral(`\x`+hex.EncodeToString(v.Data)) + "::bytea"
		if v.TypeName != "bytea" {
			s += " /* binary send format of " + strings.ReplaceAll(v.TypeName, "*/", "* /") + " */"
		}
		return s
	}
	s := quoteLiteral(string(v.Data))
	if v.TypeName != "" {
		s += "::" + v.TypeName
	}
	return s
}

func quoteLiteral(s string) string { return "'" + strings.ReplaceAll(s, "'", "''") + "'" }

func columnList(r *Relation) string {
	parts := make([]string, len(r.Columns))
	for i, c := range r.Columns {
		parts[i] = QuoteIdent(c.Name) + " " + c.TypeName
	}
	return strings.Join(parts, ", ")
}

// comment makes s safe to place in a "--" comment.
func comment(s string) string {
	return strings.NewReplacer("\r", `\r`, "\n", `\n`).Replace(s)
}

func fmtTime(t time.Time) string { return t.UTC().Format(time.RFC3339Nano) }

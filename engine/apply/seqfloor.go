package apply

import (
	"context"
	"fmt"
	"sort"

	"github.com/jackc/pgx/v5"
)

// RaiseOwnedSequences makes sure that no sequence owned by a column
// (serial, identity) of the database conn is connected to is behind the
// values that column holds. Sequences are recorded at each seal, not per
// transaction, so one reset after the target (TRUNCATE … RESTART IDENTITY,
// ALTER SEQUENCE … RESTART, setval) is recorded lower than it was at the
// target; without this, the next insert would collide with a restored row.
// The maximum is taken over the table and its inheritance children, which
// share the column's default. It returns the sequences raised
// ("schema.name"). conn needs the right
// to read those tables and set the sequences (replay runs as superuser).
func RaiseOwnedSequences(ctx context.Context, conn *pgx.Conn) ([]string, error) {
	raised, err := RaiseOwnedSequencesExcept(ctx, conn, nil)
	names := make([]string, 0, len(raised))
	for n := range raised {
		names = append(names, n)
	}
	sort.Strings(names)
	return names, err
}

// RaiseOwnedSequencesExcept is RaiseOwnedSequences leaving out the
// sequences in skip (set to their exact value at the target, which may be
// behind rows inserted with explicit values). It returns, for each
// sequence raised, the column and value it was raised to
// ("max(id) of public.t = 42").
func RaiseOwnedSequencesExcept(ctx context.Context, conn *pgx.Conn, skip map[string]bool) (map[string]string, error) {
	rows, err := conn.Query(ctx, `SELECT format('%I.%I', sn.nspname, s.relname), format('%I.%I', tn.nspname, t.relname), quote_ident(a.attname)
	   FROM pg_catalog.pg_depend d
	   JOIN pg_catalog.pg_class s ON s.oid = d.objid AND s.relkind = 'S'
	   JOIN pg_catalog.pg_namespace sn ON sn.oid = s.relnamespace
	   JOIN pg_catalog.pg_class t ON t.oid = d.refobjid AND t.relkind IN ('r', 'p')
	   JOIN pg_catalog.pg_namespace tn ON tn.oid = t.relnamespace
	   JOIN pg_catalog.pg_attribute a ON a.attrelid = t.oid AND a.attnum = d.refobjsubid
	   JOIN pg_catalog.pg_sequence q ON q.seqrelid = s.oid
	  WHERE d.classid = 'pg_catalog.pg_class'::regclass AND d.refclassid = 'pg_catalog.pg_class'::regclass
	    AND d.deptype IN ('a', 'i') AND q.seqincrement > 0
	    AND a.atttypid IN ('pg_catalog.int2'::regtype, 'pg_catalog.int4'::regtype, 'pg_catalog.int8'::regtype)`)
	if err != nil {
		return nil, fmt.Errorf("list owned sequences: %w", err)
	}
	type owned struct{ seq, table, col string }
	var list []owned
	for rows.Next() {
		var o owned
		if err := rows.Scan(&o.seq, &o.table, &o.col); err != nil {
			return nil, fmt.Errorf("list owned sequences: %w", err)
		}
		list = append(list, o)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list owned sequences: %w", err)
	}
	raised := map[string]string{}
	for _, o := range list {
		if skip[o.seq] {
			continue
		}
		var did bool
		var m *int64
		err := conn.QueryRow(ctx, `SELECT CASE WHEN m IS NOT NULL AND (NOT s.is_called AND m >= s.last_value OR s.is_called AND m > s.last_value)
		       THEN pg_catalog.setval($1::regclass, m, true) IS NOT NULL ELSE false END, m
		  FROM (SELECT max(`+o.col+`)::bigint AS m FROM `+o.table+`) x, `+o.seq+` s`, o.seq).Scan(&did, &m)
		if err != nil {
			return raised, fmt.Errorf("raise sequence %s to the values of %s.%s: %w", o.seq, o.table, o.col, err)
		}
		if did && m != nil {
			raised[o.seq] = fmt.Sprintf("max(%s) of %s = %d", o.col, o.table, *m)
		}
	}
	return raised, nil
}

package chain

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pme2go/pme2go-backup/engine/changeset"
	"github.com/pme2go/pme2go-backup/engine/lsn"
)

// ReadSequences reads the state of every permanent sequence of the
// connected database that the role may read, from the sequence itself
// (last_value, is_called: exactly what setval needs; pg_sequences would
// hide is_called after a setval(…, false)), between two reads of
// pg_current_wal_insert_lsn() recorded as FromLSN and ToLSN, so that a
// restore can place the values among the commits of the change stream.
// Sequences are not transactional and pgoutput in PostgreSQL 15 does not
// decode their changes (https://www.postgresql.org/docs/15/protocol-logicalrep-message-formats.html).
func ReadSequences(ctx context.Context, conn *pgx.Conn) (changeset.Sequences, error) {
	seq := changeset.Sequences{Taken: time.Now().UTC(), Values: map[string]changeset.SequenceValue{}}
	var from string
	if err := conn.QueryRow(ctx, `SELECT pg_catalog.pg_current_wal_insert_lsn()::text`).Scan(&from); err != nil {
		return seq, fmt.Errorf("read WAL position before the sequences: %w", err)
	}
	rows, err := conn.Query(ctx, `SELECT format('%I.%I', n.nspname, c.relname)
	   FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
	  WHERE c.relkind = 'S' AND c.relpersistence = 'p' AND has_table_privilege(c.oid, 'SELECT')
	  ORDER BY 1`)
	if err != nil {
		return seq, fmt.Errorf("list sequences: %w", err)
	}
	names, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return seq, fmt.Errorf("list sequences: %w", err)
	}
	batch := &pgx.Batch{}
	for _, name := range names {
		batch.Queue("SELECT last_value, is_called FROM " + name)
	}
	batch.Queue(`SELECT pg_catalog.pg_current_wal_insert_lsn()::text`)
	res := conn.SendBatch(ctx, batch)
	defer res.Close()
	for _, name := range names {
		var v changeset.SequenceValue
		if err := res.QueryRow().Scan(&v.LastValue, &v.IsCalled); err != nil {
			return seq, fmt.Errorf("read sequence %s: %w", name, err)
		}
		seq.Values[name] = v
	}
	var to string
	if err := res.QueryRow().Scan(&to); err != nil {
		return seq, fmt.Errorf("read WAL position after the sequences: %w", err)
	}
	f, err1 := lsn.Parse(from)
	t, err2 := lsn.Parse(to)
	if err1 != nil || err2 != nil {
		return seq, fmt.Errorf("read WAL position around the sequences: %q, %q", from, to)
	}
	seq.FromLSN, seq.ToLSN = uint64(f), uint64(t)
	return seq, nil
}

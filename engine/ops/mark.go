package ops

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/pme2go/pme2go-backup/engine/chain"
	"github.com/pme2go/pme2go-backup/engine/changeset"
	"github.com/pme2go/pme2go-backup/engine/config"
	"github.com/pme2go/pme2go-backup/engine/errs"
	"github.com/pme2go/pme2go-backup/engine/pgclient"
)

// MarkOptions name the restore point.
type MarkOptions struct {
	Name string `json:"name"`
	// Databases to mark; default DB_NAME.
	Databases []string `json:"databases,omitempty"`
}

// MarkResult gives the WAL position of the mark in each database.
type MarkResult struct {
	Name  string      `json:"name"`
	Marks []MarkPoint `json:"marks"`
}

// MarkPoint is a mark in one database.
type MarkPoint struct {
	Database string `json:"database"`
	LSN      LSN    `json:"lsn"`
}

// Mark records a named restore point in the change stream of each database:
// a transactional logical decoding message (pg_logical_emit_message, see
// https://www.postgresql.org/docs/15/functions-admin.html#FUNCTIONS-REPLICATION)
// that capture stores and `restore --target-name` finds. Errors: USAGE for
// an empty name, NOT_FOUND when the database has no open chain, UNSUPPORTED when wal_level is not logical (no restore could
// use the mark), CONN_ERR. A failure in one database does not stop the others.
func Mark(ctx context.Context, cfg *config.Config, opts MarkOptions, _ Progress) (*MarkResult, error) {
	if opts.Name == "" {
		return nil, errs.New(errs.Usage, "a mark needs a name")
	}
	dbs := opts.Databases
	if len(dbs) == 0 {
		dbs = cfg.DBNames
	}
	res := &MarkResult{Name: opts.Name, Marks: []MarkPoint{}}
	var errList []error
	for _, db := range dbs {
		at, err := markOne(ctx, cfg, db, opts.Name)
		if err != nil {
			errList = append(errList, err)
			continue
		}
		res.Marks = append(res.Marks, MarkPoint{Database: db, LSN: at})
	}
	return res, errors.Join(errList...)
}

func markOne(ctx context.Context, cfg *config.Config, db, name string) (LSN, error) {
	st, err := chain.OpenFor(cfg, db)
	if err != nil {
		return 0, err
	}
	if st == nil {
		return 0, errs.New(errs.NotFound, fmt.Sprintf("cannot mark %s in %s: no open chain captures its changes, so no restore could use the mark", name, db)).
			WithFix(errs.ActFullBackup, "take a full backup first (it starts a chain; needs wal_level = logical and a role with REPLICATION)")
	}
	conn, err := pgclient.FromConfig(cfg).Connect(ctx, db)
	if err != nil {
		return 0, err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	var walLevel string
	if err := conn.QueryRow(ctx, `SELECT current_setting('wal_level')`).Scan(&walLevel); err != nil {
		return 0, fmt.Errorf("mark %s in %s: %w", name, db, err)
	}
	if walLevel != "logical" {
		return 0, errs.New(errs.Unsupported, fmt.Sprintf("cannot mark %s in %s: wal_level is %s, so no change stream records the mark and no restore could use it", name, db, walLevel)).
			WithFix(errs.ActServer, "set wal_level = logical, restart PostgreSQL and take a full backup")
	}
	// The sequences are read just before the mark and carried in its
	// transaction, so that a restore to the mark knows their values there
	// (pgoutput carries no sequence changes). A mark without them is
	// still a mark.
	// The read is placed by its WAL positions; a restore uses it at the
	// mark only when no other transaction committed between the read and
	// the mark.
	var seqs []byte
	if seq, err := chain.ReadSequences(ctx, conn); err == nil {
		seqs, _ = json.Marshal(seq)
	}
	tx, err := conn.Begin(ctx)
	if err != nil {
		return 0, fmt.Errorf("mark %s in %s: %w", name, db, err)
	}
	defer tx.Rollback(context.WithoutCancel(ctx))
	if seqs != nil {
		if _, err := tx.Exec(ctx, `SELECT pg_logical_emit_message(true, $1, $2)`, changeset.SequencesPrefix, string(seqs)); err != nil {
			return 0, fmt.Errorf("mark %s in %s: %w", name, db, err)
		}
	}
	var text string
	if err := tx.QueryRow(ctx, `SELECT pg_logical_emit_message(true, $1, $2)::text`, changeset.MarkPrefix, name).Scan(&text); err != nil {
		return 0, fmt.Errorf("mark %s in %s: %w", name, db, err)
	}
	if err := tx.Commit(ctx); err != nil {
		return 0, fmt.Errorf("mark %s in %s: %w", name, db, err)
	}
	return parseLSN(text), nil
}

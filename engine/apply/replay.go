package apply

import (
	"context"
	"errors"
	"fmt"
	"github.com/pme2go/pme2go-backup/engine/errs"
	"log/slog"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pme2go/pme2go-backup/engine/changeset"
)

// OriginPrefix starts the name of the replication origin that records
// replay progress in the target: OriginPrefix + the target database's OID.
// Origins are shared by the whole PostgreSQL cluster; the OID keeps
// concurrent restores into different databases apart.
const OriginPrefix = "pme2go_restore_"

// ReplayOptions tune Replay.
type ReplayOptions struct {
	// Resume continues from the progress recorded in the target's
	// replication origin; without it an existing origin is reset.
	Resume bool
	// OnCommit is called after each source transaction was written to
	// the target, with the number written so far in this run; it is
	// committed with its batch (see Replay). Cancel the context from it
	// to stop right after that transaction: the batch is committed up to
	// it, and a resumed replay continues with the next one.
	OnCommit func(applied int64, commitLSN uint64)
	Log      *slog.Logger
	// RefreshMatviews refreshes every populated materialized view at the
	// end of the replay (before the swap): for chains without DDL capture,
	// whose change sets carry no REFRESH.
	RefreshMatviews bool
}

// Stats reports a replay.
type Stats struct {
	Applied       int64         // transactions applied in this run
	Rows          int64         // rows inserted, updated or deleted
	ResumedAt     uint64        // commit LSN already applied before this run (resume)
	LastCommitLSN uint64        // last transaction now applied
	Sequences     int           // sequences set
	Duration      time.Duration // time spent
	// Batches counts the target transactions committed (each holds one or
	// more source transactions); BatchesRetried the batches that failed
	// and whose transactions were applied again one by one.
	Batches        int64 `json:"batches"`
	BatchesRetried int   `json:"batchesRetried"`

	// UnloggedEmptied names the unlogged tables left empty: their changes
	// are never captured, so past the full backup their content is
	// unknown (PostgreSQL's own recovery empties them likewise).
	// UnloggedKept names them when no transaction was replayed and they
	// keep the full backup's content.
	UnloggedEmptied []string `json:"unloggedEmptied,omitempty"`
	UnloggedKept    []string `json:"unloggedKept,omitempty"`
	// MatviewsRefreshed names the materialized views refreshed at the end
	// (ReplayOptions.RefreshMatviews).
	MatviewsRefreshed []string `json:"matviewsRefreshed,omitempty"`
	// SequencesExact names the sequences set to their value at the target
	// (seqat.go); SequencesUnknown names those whose value there is not
	// known, with what they were set to.
	SequencesExact   map[string]bool `json:"-"`
	SequencesUnknown []SequenceNote  `json:"sequencesUnknown,omitempty"`
	// UserCodeRestored counts the triggers, rules and event triggers
	// switched off for the replay whose enable state was put back.
	UserCodeRestored int `json:"userCodeRestored"`
}

// Replay applies the prepared plan's transactions, in commit order, to the
// database conn is connected to (which must hold the plan's full backup and
// be private to the restore: a scratch database), then sets the sequences.
//
// Consecutive source transactions are applied in one target transaction (a
// batch, bounded by batchMaxTx transactions, batchMaxRows rows and
// batchMaxBytes bytes of change data, and ended after a transaction that
// ran captured DDL), their row changes grouped per table (group.go); the
// replication origin records the last source transaction of each batch,
// and the recovery target ends the walk, so a target never falls inside a
// batch. Commits are asynchronous (synchronous_commit = off): an
// interrupted replay resumes from the last batch that reached the disk,
// and the caller settles durability before the swap (Settle). When a batch
// fails, it is rolled back and its transactions are applied again one
// target transaction each, row by row, so that an error names its
// transaction and change and leaves everything before it committed.
// Canceling ctx stops the replay between two source transactions with the
// open batch committed. Foreign-key
// triggers are off (session_replication_role = replica); every trigger,
// rule and event trigger is switched off for the replay and its enable
// state put back at the end (usercode.go); code a table owner wrote runs
// with the owner's privileges, never the restorer's (safety.go). Each
// target transaction records the commit LSN and time of its last source
// transaction in the replication origin OriginName(database OID), so that
// a replay interrupted at any point resumes with Resume without applying
// anything twice. conn needs superuser rights.
func Replay(ctx context.Context, conn *pgx.Conn, p *Plan, opts ReplayOptions) (*Stats, error) {
	if !p.prepared {
		return nil, errors.New("apply: plan not prepared; call Prepare or Build first")
	}
	if opts.Log == nil {
		opts.Log = slog.New(slog.DiscardHandler)
	}
	start := time.Now()
	if _, err := conn.Exec(ctx, "SET session_replication_role = replica"); err != nil {
		return nil, fmt.Errorf("prepare replay session (replay needs a superuser DB_USER): %w", err)
	}
	settings, dbPath, err := setupSession(ctx, conn.PgConn())
	if err != nil {
		return nil, err
	}
	unlogged, err := prepareScratch(ctx, conn, p.TxCount > 0)
	if err != nil {
		return nil, err
	}
	origin, done, err := setupOrigin(ctx, conn, opts.Resume)
	if err != nil {
		return nil, err
	}
	if done > p.LastCommitLSN {
		return nil, errs.New(errs.NeedsResume, fmt.Sprintf("the target database already holds transactions up to commit LSN %s, past this plan's last one (%s): it was replayed towards a later target",
			changeset.FormatLSN(done), changeset.FormatLSN(p.LastCommitLSN))).WithFix(errs.ActNoResume, "drop it and restore again without resuming")
	}
	st := &Stats{ResumedAt: done, LastCommitLSN: done}
	if p.TxCount > 0 {
		st.UnloggedEmptied = unlogged
	} else {
		st.UnloggedKept = unlogged
	}
	a := &applier{ctx: ctx, conn: conn, st: st, opts: opts, plan: p}
	a.w = newWriter(conn.PgConn(), a.committed)
	a.w.setup, a.w.dbPath = settings, dbPath
	a.g = newGrouper(a.w)
	prepared := time.Now()
	for {
		err = p.walk(ctx, p.decider(st.LastCommitLSN), a)
		var stopped *canceledAt
		if err == nil || errors.As(err, &stopped) {
			// The walk ended between two transactions: commit the open
			// batch (also when canceled: it ends at a transaction's end).
			ectx := ctx
			if stopped != nil {
				ectx = context.WithoutCancel(ctx)
			}
			a.ctx = ectx
			if eerr := a.end(ectx); eerr != nil {
				err = eerr
			}
			a.ctx = ctx
		}
		if err == nil {
			break
		}
		a.w.abort()
		if !conn.PgConn().IsClosed() {
			conn.PgConn().Exec(context.WithoutCancel(ctx), "ROLLBACK").Close()
		}
		if stopped != nil || !a.retry(ctx, err) {
			break
		}
	}
	st.Rows = a.w.rows
	st.Duration = time.Since(start)
	if err != nil {
		code := errs.CodeOf(err)
		if code == errs.Failed {
			code = errs.NeedsResume
		}
		return st, &errs.Error{Code: code, Err: err, Fix: &errs.Fix{Action: errs.ActResume, Text: "the target database holds a consistent prefix: resume the same restore to continue"},
			Message: fmt.Sprintf("replay stopped after %d transactions (last applied commit %s)", st.Applied, changeset.FormatLSN(st.LastCommitLSN))}
	}
	if _, err := conn.Exec(ctx, "SELECT pg_replication_origin_session_reset()"); err != nil {
		return st, fmt.Errorf("reset replication origin session: %w", err)
	}
	applied := time.Now()
	if st.Sequences, st.SequencesExact, st.SequencesUnknown, err = SetSequencesAt(ctx, conn, p); err != nil {
		return st, err
	}
	// With no transaction replayed the result is the full backup: its
	// views are as the source's were then.
	refresh := opts.RefreshMatviews && p.TxCount > 0
	if st.MatviewsRefreshed, st.UserCodeRestored, err = finishScratch(ctx, conn, refresh); err != nil {
		return st, err
	}
	// Durable once, before anything else is done with the database; the
	// session commits synchronously from here on.
	finished := time.Now()
	if err := Settle(ctx, conn); err != nil {
		return st, err
	}
	st.Duration = time.Since(start)
	opts.Log.Info("change sets replayed", "origin", origin, "transactions", st.Applied, "rows", st.Rows, "batches", st.Batches,
		"batchesRetried", st.BatchesRetried, "duration", st.Duration.Round(time.Millisecond),
		"prepare", prepared.Sub(start).Round(time.Millisecond), "apply", applied.Sub(prepared).Round(time.Millisecond),
		"finish", finished.Sub(applied).Round(time.Millisecond), "settle", time.Since(finished).Round(time.Millisecond))
	return st, nil
}

// setupOrigin creates (or, without resume, resets) the target's
// replication origin, binds it to the session and returns its progress.
func setupOrigin(ctx context.Context, conn *pgx.Conn, resume bool) (string, uint64, error) {
	var oid uint32
	if err := conn.QueryRow(ctx, "SELECT oid FROM pg_database WHERE datname = current_database()").Scan(&oid); err != nil {
		return "", 0, fmt.Errorf("look up target database: %w", err)
	}
	name := OriginName(oid)
	var exists bool
	if err := conn.QueryRow(ctx, "SELECT pg_replication_origin_oid($1) IS NOT NULL", name).Scan(&exists); err != nil {
		return "", 0, fmt.Errorf("look up replication origin %s: %w", name, err)
	}
	if exists && !resume {
		if _, err := conn.Exec(ctx, "SELECT pg_replication_origin_drop($1)", name); err != nil {
			return "", 0, fmt.Errorf("reset replication origin %s: %w", name, err)
		}
		exists = false
	}
	if !exists {
		if _, err := conn.Exec(ctx, "SELECT pg_replication_origin_create($1)", name); err != nil {
			return "", 0, fmt.Errorf("create replication origin %s (needs superuser and max_replication_slots > 0): %w", name, err)
		}
	}
	var done string
	if err := conn.QueryRow(ctx, "SELECT coalesce(pg_replication_origin_progress($1, true), '0/0')::text", name).Scan(&done); err != nil {
		return "", 0, fmt.Errorf("read progress of replication origin %s: %w", name, err)
	}
	lsn, err := ParseLSN(done)
	if err != nil {
		return "", 0, err
	}
	if _, err := conn.Exec(ctx, "SELECT pg_replication_origin_session_setup($1)", name); err != nil {
		return "", 0, fmt.Errorf("use replication origin %s (is another restore replaying into this database?): %w", name, err)
	}
	return name, lsn, nil
}

// OriginName returns the replication origin recording replay progress in
// the database with the given OID.
func OriginName(dbOID uint32) string { return OriginPrefix + strconv.FormatUint(uint64(dbOID), 10) }

// DropOrigin drops the progress origin of database db after a finished
// restore; a missing origin is not an error.
func DropOrigin(ctx context.Context, conn *pgx.Conn, db string) error {
	_, err := conn.Exec(ctx, `SELECT pg_replication_origin_drop(o.roname) FROM pg_replication_origin o, pg_database d
		WHERE d.datname = $1 AND o.roname = $2 || d.oid::text`, db, OriginPrefix)
	if err != nil {
		return fmt.Errorf("drop replication origin of %s: %w", db, err)
	}
	return nil
}

// SetSequences sets every recorded sequence that exists in the target with
// setval(name, lastValue, isCalled) and returns how many were set. A
// record with isCalled false means "not called" (pg_sequences shows no
// last value, so the capture records the start value): a target sequence
// that is not called either keeps its own value, which a setval(…, false)
// in the source may have moved away from the start value.
func SetSequences(ctx context.Context, conn *pgx.Conn, s *changeset.Sequences) (int, error) {
	if s == nil {
		return 0, nil
	}
	n := 0
	for name, v := range s.Values {
		var set bool
		err := conn.QueryRow(ctx, `SELECT CASE WHEN NOT $3 AND pg_catalog.pg_sequence_last_value(r) IS NULL THEN false
			ELSE pg_catalog.setval(r, $2, $3) IS NOT NULL END
			FROM (SELECT pg_catalog.to_regclass($1) AS r) x WHERE r IS NOT NULL`, name, v.LastValue, v.IsCalled).Scan(&set)
		if errors.Is(err, pgx.ErrNoRows) {
			continue
		}
		if err != nil {
			return n, fmt.Errorf("set sequence %s to %d: %w", name, v.LastValue, err)
		}
		if set {
			n++
		}
	}
	return n, nil
}

// applier is the visitor that writes transactions into the target.
type applier struct {
	ctx  context.Context
	conn *pgx.Conn
	w    *writer
	g    *grouper
	st   *Stats
	opts ReplayOptions
	plan *Plan

	// exactUntil: source transactions with a commit LSN up to it are
	// applied in exact mode (one target transaction each, row by row),
	// after a batch holding them failed; exact is true for the one being
	// applied.
	exactUntil uint64
	exact      bool
	lastBegun  uint64 // commit LSN of the last transaction begun

	// The open batch: source transactions, rows and change bytes in it,
	// its last transaction, and whether it must end after the current one.
	inBatch    int64
	batchRows  int64
	batchBytes int64
	last       changeset.Commit
	cut        bool
	written    int64 // transactions committed or in the open batch (this run)
}

func (a *applier) begin(b *changeset.Begin) error {
	a.lastBegun = b.FinalLSN
	a.exact = b.FinalLSN <= a.exactUntil
	if a.inBatch == 0 {
		return a.w.begin(a.ctx, b)
	}
	a.w.tx, a.w.lsn = txRef{xid: b.Xid, commitLSN: b.FinalLSN}, 0
	return nil
}

func (a *applier) change(c *changeset.Change) error {
	d, ok := decodeFast(c)
	if !ok {
		var err error
		if d, err = c.Decode(); err != nil {
			return fail(a.w.tx, 0, err)
		}
	}
	a.batchRows++
	a.batchBytes += int64(len(c.Raw))
	if a.exact {
		return a.w.apply(a.ctx, d, c.LSN)
	}
	return a.g.add(a.ctx, d, c.LSN)
}

// end commits the open batch, if any, and reads every result.
func (a *applier) end(ctx context.Context) error {
	if a.inBatch > 0 {
		if err := a.endBatch(ctx); err != nil {
			return err
		}
	}
	return a.w.finish(ctx)
}

// endBatch writes the queues and sends the open batch's COMMIT, recording
// its last transaction in the replication origin.
func (a *applier) endBatch(ctx context.Context) error {
	if err := a.g.flushAll(ctx); err != nil {
		return err
	}
	if err := a.w.flush(ctx); err != nil {
		return err
	}
	last, n := a.last, a.inBatch
	exact := a.exact
	a.inBatch, a.batchRows, a.batchBytes, a.cut = 0, 0, 0, false
	if err := a.w.commit(ctx, &last, n); err != nil || exact {
		return err
	}
	// The COMMIT of a merged batch goes now, not with the next batch's
	// first statements (which wait until the queues are flushed): a
	// batch is committed as soon as it is complete. One round trip per
	// batch; the COMMIT's result is read with the next batch.
	if err := a.w.wait(); err != nil {
		return err
	}
	return a.w.send(ctx, nil)
}

// retry decides, after the batch failed with err and was rolled back,
// whether to apply its transactions again in exact mode: when the failure
// involved a transaction not yet tried that way and the connection is
// usable. The transactions up to the last one begun are then applied one
// target transaction each; an error there is final.
func (a *applier) retry(ctx context.Context, err error) bool {
	if ctx.Err() != nil || a.conn.PgConn().IsClosed() || a.lastBegun <= a.exactUntil {
		return false
	}
	a.opts.Log.Info("a batch of merged transactions failed; applying its transactions one by one", "error", err,
		"from", changeset.FormatLSN(a.st.LastCommitLSN), "to", changeset.FormatLSN(a.lastBegun))
	a.w.tables, a.w.uniques = nil, nil
	clear(a.w.types)
	clear(a.w.rels)
	if ferr := a.w.forget(ctx); ferr != nil {
		return false
	}
	a.g.reset()
	a.exactUntil = a.lastBegun
	a.inBatch, a.batchRows, a.batchBytes, a.cut = 0, 0, 0, false
	a.written = a.st.Applied
	a.st.BatchesRetried++
	return true
}

func (a *applier) message(_ *changeset.Begin, m *changeset.Message) error {
	if !changeset.IsDDLPrefix(m.Prefix) {
		return nil // marks and other messages change no data
	}
	a.cut = true // a later transaction may depend on this one's DDL being committed (a new enum value)
	if err := a.g.flushAll(a.ctx); err != nil {
		return err
	}
	if err := a.w.flush(a.ctx); err != nil {
		return err
	}
	if err := a.w.drain(a.ctx); err != nil {
		return err
	}
	d, err := changeset.ParseDDL(m.Content)
	if err == nil {
		if err := beforeDDL(a.ctx, a.conn.PgConn(), d.Statement); err != nil {
			return fail(a.w.tx, 0, err)
		}
	}
	if err == nil && d.V < 2 {
		// Legacy records carry no search_path: the statement runs under
		// the database's own, and the replay's is put back afterwards.
		err = a.conn.PgConn().Exec(a.ctx, "SELECT pg_catalog.set_config('search_path', "+quoteLit(a.w.dbPath)+", false)").Close()
		if err == nil {
			err = runDDL(a.ctx, a.conn, d, a.w.setup)
		}
		if err == nil {
			err = a.conn.PgConn().Exec(a.ctx, "SELECT pg_catalog.set_config('search_path', 'pg_catalog, pg_temp', false)").Close()
		}
	} else if err == nil {
		err = runDDL(a.ctx, a.conn, d, a.w.setup)
	}
	if err != nil {
		return fail(a.w.tx, 0, fmt.Errorf("captured DDL at LSN %s: %w", changeset.FormatLSN(m.LSN), err))
	}
	return a.w.afterDDL(a.ctx)
}

// runDDL runs one captured statement at its position, inside the replay
// transaction: as the role that ran it on the source (SET ROLE, so that the
// objects it creates get the same owner and it has no more rights than it
// had there) and under the search_path its session had, both put back
// afterwards. Legacy (version 1) records are the plain text, run as they are.
//
// A role that is not a superuser runs the statement inside its
// SECURITY DEFINER owner function (safety.go) instead of under SET ROLE:
// code the statement runs (a CHECK function validating existing rows, an
// index expression) could otherwise RESET ROLE and be superuser again.
func runDDL(ctx context.Context, conn *pgx.Conn, d changeset.DDL, st *sessionSettings) error {
	if d.V < 2 {
		return conn.PgConn().Exec(ctx, d.Statement).Close()
	}
	var old string
	if err := conn.QueryRow(ctx, `SELECT pg_catalog.current_setting('search_path')`).Scan(&old); err != nil {
		return fmt.Errorf("read search_path: %w", err)
	}
	fn := ""
	if d.Role != "" {
		var oid, ident string
		var super bool
		err := conn.QueryRow(ctx, `SELECT r.oid::pg_catalog.int8::pg_catalog.text, r.rolsuper, pg_catalog.quote_ident(r.rolname)
			FROM pg_catalog.pg_roles r WHERE r.rolname = $1`, d.Role).Scan(&oid, &super, &ident)
		if err == nil && !super {
			if fn, err = ownerFunction(ctx, conn.PgConn(), oid, ident, st); err != nil {
				return err
			}
		}
	}
	if fn != "" {
		if _, err := conn.Exec(ctx, `SELECT pg_catalog.set_config('search_path', $1, false)`, d.SearchPath); err != nil {
			return fmt.Errorf("set search_path to %q: %w", d.SearchPath, err)
		}
		if _, err := conn.Exec(ctx, "SELECT "+fn+"($1::pg_catalog.text, '{}'::pg_catalog.text[])", d.Statement); err != nil {
			return fmt.Errorf("%s (as role %s): %w", abbreviateSQL(d.Statement), d.Role, err)
		}
		if _, err := conn.Exec(ctx, `SELECT pg_catalog.set_config('search_path', $1, false)`, old); err != nil {
			return fmt.Errorf("put search_path back: %w", err)
		}
		return nil
	}
	if d.Role != "" {
		if _, err := conn.Exec(ctx, "SET ROLE "+changeset.QuoteIdent(d.Role)); err != nil {
			return fmt.Errorf("run as role %s, which ran it on the source (create the role, e.g. from globals.sql): %w", d.Role, err)
		}
	}
	if _, err := conn.Exec(ctx, `SELECT pg_catalog.set_config('search_path', $1, false)`, d.SearchPath); err != nil {
		return fmt.Errorf("set search_path to %q: %w", d.SearchPath, err)
	}
	if err := conn.PgConn().Exec(ctx, d.Statement).Close(); err != nil {
		return fmt.Errorf("%s: %w", abbreviateSQL(d.Statement), err)
	}
	if _, err := conn.Exec(ctx, `SELECT pg_catalog.set_config('search_path', $1, false)`, old); err != nil {
		return fmt.Errorf("put search_path back: %w", err)
	}
	if d.Role != "" {
		if _, err := conn.Exec(ctx, "RESET ROLE"); err != nil {
			return fmt.Errorf("reset role: %w", err)
		}
	}
	return nil
}

func abbreviateSQL(s string) string {
	s = strings.Join(strings.Fields(s), " ")
	if len(s) > 120 {
		return s[:120] + "…"
	}
	return s
}

// commit ends a source transaction: the batch ends after it when it was
// applied in exact mode, ran DDL, or a bound was reached.
func (a *applier) commit(c *changeset.Commit) error {
	a.inBatch++
	a.last = *c
	if a.exact || a.cut || a.inBatch >= batchMaxTx || a.batchRows >= batchMaxRows || a.batchBytes >= batchMaxBytes {
		if err := a.endBatch(a.ctx); err != nil {
			return err
		}
	}
	a.written++
	if a.opts.OnCommit != nil {
		a.opts.OnCommit(a.written, c.CommitLSN)
	}
	return nil
}

// committed counts the source transactions of a target transaction the
// target confirmed committed.
func (a *applier) committed(c commitRef) {
	a.st.Applied += c.n
	a.st.Batches++
	a.st.LastCommitLSN = c.CommitLSN
}

// Settle makes everything written in the database conn is connected to
// durable: replay commits asynchronously (synchronous_commit = off, so a
// crash of the server may lose the last batches, which a resumed replay
// applies again: the replication origin's progress is lost with them). It
// switches the session back to synchronous commit and commits a transaction
// synchronously: its commit flushes the WAL up to its commit record, and
// with it every earlier commit of the replay (PostgreSQL flushes WAL in
// order), so that from here on every replayed row and the origin's progress
// survive a crash. Replay calls it at its end (its Duration includes it),
// before the swap.
//
// It runs no CHECKPOINT: durability needs only the WAL flush (a crash
// after it is recovered by WAL replay, as for any other committed write,
// the origin's progress included, which commit records carry). An
// immediate CHECKPOINT would only shorten that recovery, at the price of
// writing every dirty buffer at once (most of shared_buffers after a large
// replay, seconds of I/O that the checkpointer otherwise spreads over
// checkpoint_completion_target); PostgreSQL's own checkpoints bound the
// recovery time as they do for the source's writes.
func Settle(ctx context.Context, conn *pgx.Conn) error {
	if _, err := conn.Exec(ctx, "SET synchronous_commit = on"); err != nil {
		return fmt.Errorf("settle the replayed database: %w", err)
	}
	// txid_current() assigns a transaction id, so the commit is written
	// and flushed with everything before it.
	if _, err := conn.Exec(ctx, "SELECT pg_catalog.txid_current()"); err != nil {
		return fmt.Errorf("settle the replayed database: %w", err)
	}
	return nil
}

package chain

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	pgc "github.com/jackc/pgx/v5/pgconn"

	"github.com/pme2go/pme2go-backup/engine/config"
	"github.com/pme2go/pme2go-backup/engine/pgclient"
)

// DropServerObjects drops the chain's slot and publication, and the
// installation's event triggers and schema when no other publication of the
// installation remains in the database. A capture still
// streaming from the slot is disconnected first (pg_terminate_backend). A
// database that no longer exists has nothing to drop.
func DropServerObjects(ctx context.Context, cfg *config.Config, st *State) error {
	conn, err := pgclient.FromConfig(cfg).Connect(ctx, st.Database)
	if err != nil {
		var pgErr *pgc.PgError
		if errors.As(err, &pgErr) && pgErr.Code == "3D000" {
			return nil
		}
		return err
	}
	defer conn.Close(context.Background())
	if err := dropSlot(ctx, conn, st.Slot); err != nil {
		return err
	}
	if _, err := conn.Exec(ctx, `DROP PUBLICATION IF EXISTS `+pgx.Identifier{st.Publication}.Sanitize()); err != nil {
		return fmt.Errorf("drop publication %s in %s: %w", st.Publication, st.Database, err)
	}
	// The event triggers go with the installation's last publication in
	// the database.
	return dropTriggersIfUnused(ctx, conn, st.Installation)
}

// dropSlot drops a slot, terminating the session that holds it if any, and
// retrying briefly while that session goes away.
func dropSlot(ctx context.Context, conn *pgx.Conn, slot string) error {
	deadline := time.Now().Add(15 * time.Second)
	for {
		var active *int32
		err := conn.QueryRow(ctx, `SELECT active_pid FROM pg_replication_slots WHERE slot_name = $1`, slot).Scan(&active)
		if errors.Is(err, pgx.ErrNoRows) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("look up replication slot %s: %w", slot, err)
		}
		if active != nil {
			conn.Exec(ctx, `SELECT pg_terminate_backend($1)`, *active)
		} else {
			_, err = conn.Exec(ctx, `SELECT pg_drop_replication_slot($1)`, slot)
			if err == nil {
				return nil
			}
			var pgErr *pgc.PgError
			if errors.As(err, &pgErr) && pgErr.Code == "42704" { // undefined_object: gone meanwhile
				return nil
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("drop replication slot %s: it stays in use (pid %v); stop the process using it and run `pme2go-backup cleanup`: %v", slot, active, err)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("drop replication slot %s: %w", slot, ctx.Err())
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// End marks the chain broken with reason and drops its slot and
// publication, so that the server keeps no WAL for it. The reason should say
// that a new full backup is needed.
func End(ctx context.Context, cfg *config.Config, st *State, reason string) error {
	return EndAt(ctx, cfg, st, reason, 0)
}

// EndAt is End recording the LSN where the chain ends (State.EndLSN; 0
// leaves it unset).
func EndAt(ctx context.Context, cfg *config.Config, st *State, reason string, end uint64) error {
	if err := st.MarkEndedAt(StatusBroken, reason, end); err != nil {
		return err
	}
	return DropServerObjects(ctx, cfg, st)
}

// Orphan is a slot, publication or schema of the program (named pme2go_*)
// with no open chain, or (from Others) one of another installation.
type Orphan struct {
	Kind     string `json:"kind"` // "slot", "publication" or "schema"
	Name     string `json:"name"`
	Database string `json:"database"`
	Active   bool   `json:"active"` // a session is streaming from the slot
	Chain    string `json:"chain,omitempty"`
	Reason   string `json:"reason"`
	// Installation is the short id of the installation that made it, when
	// its name tells ("" for names made before identities existed).
	Installation string `json:"installation,omitempty"`
}

// Orphans lists this installation's replication slots on the server (and
// its publications and schema in the configured databases) that belong to no
// open chain of this BACKUP_DIR: leftovers of crashed or failed full backups
// and of chains that ended without dropping them. Objects of other
// installations (another short id in their name, or an older name no chain
// of this BACKUP_DIR has) are never orphans here: Others lists them. Call it
// holding the backup lock, so that no full backup is creating a chain
// meanwhile.
func Orphans(ctx context.Context, cfg *config.Config) ([]Orphan, error) {
	ours, _, err := scanObjects(ctx, cfg)
	return ours, err
}

// Others lists the slots, publications and schemas named pme2go_* on the
// server that belong to another installation (or that no chain of this
// BACKUP_DIR explains and whose name predates installation identities):
// they are shown, never dropped.
func Others(ctx context.Context, cfg *config.Config) ([]Orphan, error) {
	_, others, err := scanObjects(ctx, cfg)
	return others, err
}

func scanObjects(ctx context.Context, cfg *config.Config) (ours, others []Orphan, err error) {
	id8, err := config.InstallationShortID(cfg)
	if err != nil {
		return nil, nil, err
	}
	all, err := List(cfg)
	if err != nil {
		return nil, nil, err
	}
	byName := map[string]*State{}
	live := map[string]bool{} // databases with an open or pending chain of ours
	for _, s := range all {
		byName[s.Slot] = s
		if s.Status == StatusOpen || s.Status == StatusPending {
			live[s.Database] = true
		}
	}
	// classify appends o to ours (when it is an orphan of ours) or others.
	classify := func(o Orphan) {
		owner, _ := OwnerOf(o.Name)
		if o.Kind == "schema" {
			owner = strings.TrimPrefix(o.Name, Prefix)
		}
		o.Installation = owner
		s := byName[o.Name]
		if o.Kind == "schema" {
			if owner == id8 && !live[o.Database] {
				o.Reason = "no open chain of this installation in database " + o.Database
				ours = append(ours, o)
			} else if owner != id8 {
				o.Reason = "belongs to installation " + owner
				others = append(others, o)
			}
			return
		}
		switch {
		case owner != id8 && (owner != "" || s == nil):
			o.Reason = "belongs to another installation"
			if owner != "" {
				o.Reason = "belongs to installation " + owner
			} else {
				o.Reason = "made by an installation without identity (older version), not by a chain of " + ChainsDir(cfg)
			}
			others = append(others, o)
		case s == nil:
			o.Reason = "no chain of this name in " + ChainsDir(cfg)
			ours = append(ours, o)
		case s.Status == StatusOpen:
		case s.Status == StatusPending:
			o.Chain, o.Reason = s.ID, "its full backup never finished"
			ours = append(ours, o)
		default:
			o.Chain, o.Reason = s.ID, "chain is "+string(s.Status)
			ours = append(ours, o)
		}
	}
	conn, err := pgclient.FromConfig(cfg).Connect(ctx, cfg.DBNames[0])
	if err != nil {
		return nil, nil, err
	}
	defer conn.Close(context.Background())
	rows, err := conn.Query(ctx, `SELECT slot_name::text, coalesce(database::text, ''), active
	   FROM pg_replication_slots WHERE slot_name LIKE 'pme2go\_%' ORDER BY slot_name`)
	if err != nil {
		return nil, nil, fmt.Errorf("list replication slots: %w", err)
	}
	var slots []Orphan
	for rows.Next() {
		o := Orphan{Kind: "slot"}
		if err := rows.Scan(&o.Name, &o.Database, &o.Active); err != nil {
			return nil, nil, fmt.Errorf("list replication slots: %w", err)
		}
		slots = append(slots, o)
	}
	if err := rows.Err(); err != nil {
		return nil, nil, fmt.Errorf("list replication slots: %w", err)
	}
	for _, o := range slots {
		classify(o)
	}
	for _, db := range cfg.DBNames {
		objs, err := listDatabaseObjects(ctx, cfg, db)
		if err != nil {
			return nil, nil, err
		}
		for _, o := range objs {
			classify(o)
		}
	}
	return ours, others, nil
}

// listDatabaseObjects lists the publications and schemas named pme2go_* in
// db.
func listDatabaseObjects(ctx context.Context, cfg *config.Config, db string) ([]Orphan, error) {
	conn, err := pgclient.FromConfig(cfg).Connect(ctx, db)
	if err != nil {
		return nil, err
	}
	defer conn.Close(context.Background())
	rows, err := conn.Query(ctx, `SELECT 'publication', pubname::text FROM pg_publication WHERE pubname LIKE 'pme2go\_%'
	 UNION ALL SELECT 'schema', nspname::text FROM pg_namespace WHERE nspname ~ '^pme2go_[0-9a-f]{8}$' ORDER BY 1, 2`)
	if err != nil {
		return nil, fmt.Errorf("list publications of %s: %w", db, err)
	}
	var out []Orphan
	for rows.Next() {
		o := Orphan{Database: db}
		if err := rows.Scan(&o.Kind, &o.Name); err != nil {
			return nil, fmt.Errorf("list publications of %s: %w", db, err)
		}
		out = append(out, o)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list publications of %s: %w", db, err)
	}
	return out, nil
}

// DropOrphans drops the orphans Orphans finds and returns what it dropped.
// Pending chains among them (full backups that never finished) are marked
// broken. Objects of other installations are never dropped. Call it
// holding the backup lock.
func DropOrphans(ctx context.Context, cfg *config.Config) ([]Orphan, error) {
	orphans, err := Orphans(ctx, cfg)
	if err != nil {
		return nil, err
	}
	var done []Orphan
	var errs []error
	for _, o := range orphans {
		if o.Chain != "" {
			if st, err := Load(cfg, o.Chain); err == nil && st.Status == StatusPending {
				st.MarkEnded(StatusBroken, "its full backup never finished; take a new full backup")
			}
		}
		err := dropOne(ctx, cfg, o)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		done = append(done, o)
	}
	return done, errors.Join(errs...)
}

func dropOne(ctx context.Context, cfg *config.Config, o Orphan) error {
	if o.Database == "" {
		return nil
	}
	conn, err := pgclient.FromConfig(cfg).Connect(ctx, o.Database)
	if err != nil {
		return fmt.Errorf("drop orphaned %s %s: %w", o.Kind, o.Name, err)
	}
	defer conn.Close(context.Background())
	switch o.Kind {
	case "slot":
		return dropSlot(ctx, conn, o.Name)
	case "schema":
		if _, err := conn.Exec(ctx, `DROP SCHEMA IF EXISTS `+pgx.Identifier{o.Name}.Sanitize()+` CASCADE`); err != nil {
			return fmt.Errorf("drop orphaned schema %s (event trigger functions) in %s: %w", o.Name, o.Database, err)
		}
		return nil
	}
	_, err = conn.Exec(ctx, `DROP PUBLICATION IF EXISTS `+pgx.Identifier{o.Name}.Sanitize())
	if err != nil {
		return fmt.Errorf("drop orphaned publication %s in %s: %w", o.Name, o.Database, err)
	}
	return nil
}

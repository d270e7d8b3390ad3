package chain

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	pgc "github.com/jackc/pgx/v5/pgconn"

	"github.com/pme2go/pme2go-backup/engine/config"
	"github.com/pme2go/pme2go-backup/engine/pgclient"
)

// ReplicationConn opens a logical replication connection
// (replication=database) to db with no statement or idle-in-transaction
// timeouts and the output settings change capture relies on (ISO dates,
// postgres interval style, exact floats).
func ReplicationConn(ctx context.Context, cfg *config.Config, db string) (*pgc.PgConn, error) {
	t := pgclient.FromConfig(cfg)
	pc, err := t.Config(db)
	if err != nil {
		return nil, err
	}
	c := pc.Config.Copy()
	if c.RuntimeParams == nil {
		c.RuntimeParams = map[string]string{}
	}
	for k, v := range map[string]string{
		"replication": "database", "idle_in_transaction_session_timeout": "0", "statement_timeout": "0",
		"datestyle": "ISO", "intervalstyle": "postgres", "extra_float_digits": "3",
	} {
		c.RuntimeParams[k] = v
	}
	conn, err := pgc.ConnectConfig(ctx, c)
	if err != nil {
		return nil, fmt.Errorf("open replication connection to %s@%s:%d/%s (the role needs REPLICATION or superuser, and pg_hba.conf must allow it): %w",
			t.User, t.Host, t.Port, db, err)
	}
	return conn, nil
}

// blockers describes the oldest open transactions other than our own, the
// ones a new logical slot waits for.
func blockers(ctx context.Context, conn *pgx.Conn, exclude uint32) string {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	rows, err := conn.Query(ctx, `
SELECT pid, coalesce(application_name, ''), coalesce(usename, ''), coalesce(datname, ''), coalesce(state, ''),
       extract(epoch FROM now() - xact_start)::bigint, left(regexp_replace(coalesce(query, ''), '\s+', ' ', 'g'), 200)
  FROM pg_stat_activity
 WHERE backend_xid IS NOT NULL AND pid <> pg_backend_pid() AND pid <> $1
 ORDER BY xact_start LIMIT 3`, int32(exclude))
	if err != nil {
		return "(could not read pg_stat_activity: " + err.Error() + ")"
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var pid int32
		var app, user, db, state, query string
		var age int64
		if err := rows.Scan(&pid, &app, &user, &db, &state, &age, &query); err != nil {
			break
		}
		out = append(out, fmt.Sprintf("pid %d (application %q, user %s, database %s, %s, transaction open %ds): %s", pid, app, user, db, state, age, query))
	}
	rows.Close()
	out = append(out, preparedBlockers(ctx, conn)...)
	if len(out) == 0 {
		return "no open transaction found now; retry"
	}
	return strings.Join(out, "; ")
}

// preparedBlockers names the prepared transactions (PREPARE TRANSACTION),
// which hold their transaction open, and so block slot creation, until
// someone commits or rolls them back; they never show in pg_stat_activity.
func preparedBlockers(ctx context.Context, conn *pgx.Conn) []string {
	rows, err := conn.Query(ctx, `SELECT gid, owner::text, database::text, extract(epoch FROM now() - prepared)::bigint
	   FROM pg_prepared_xacts ORDER BY prepared`)
	if err != nil {
		return []string{"(could not read pg_prepared_xacts: " + err.Error() + ")"}
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var gid, owner, db string
		var age int64
		if err := rows.Scan(&gid, &owner, &db, &age); err != nil {
			break
		}
		lit := "'" + strings.ReplaceAll(gid, "'", "''") + "'"
		out = append(out, fmt.Sprintf("prepared transaction %s (owner %s, database %s, prepared %ds ago): finish it in database %s with COMMIT PREPARED %s or ROLLBACK PREPARED %s",
			lit, owner, db, age, db, lit, lit))
	}
	return out
}

package pgharness

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// bulkBatchRows is the number of bulk.events rows inserted per statement.
const bulkBatchRows = 20000

var bulkSchema = []string{
	`CREATE SCHEMA IF NOT EXISTS bulk`,
	`CREATE TABLE IF NOT EXISTS bulk.users (
		id integer PRIMARY KEY, name text NOT NULL, email text NOT NULL,
		created_at timestamptz NOT NULL, score numeric(10,3))`,
	`INSERT INTO bulk.users
		SELECT i, 'user ' || i, 'u' || i || '@example.' || (ARRAY['com','org','net'])[1 + i % 3],
			timestamptz '2019-01-01 00:00:00+00' + i * interval '1 hour', (i * 7.125) % 1000
		FROM generate_series(1, 10000) i ON CONFLICT DO NOTHING`,
	`CREATE TABLE IF NOT EXISTS bulk.events (
		id bigint PRIMARY KEY, occurred_at timestamptz NOT NULL,
		user_id integer NOT NULL REFERENCES bulk.users (id), kind text NOT NULL,
		amount numeric(14,4), payload jsonb, note text)`,
}

// bulkInsertSQL inserts events $1..$2 (inclusive) with deterministic,
// mixed, only partly compressible content.
const bulkInsertSQL = `INSERT INTO bulk.events
SELECT g,
	timestamptz '2024-01-01 00:00:00+00' + g * interval '1.7 seconds',
	1 + (g * 7919) % 10000,
	(ARRAY['login','logout','purchase','refund','view','click','search'])[1 + g % 7],
	CASE WHEN g % 11 = 0 THEN NULL ELSE ((g * 104729) % 10000000) / 100.0 END,
	jsonb_build_object('seq', g, 'session', md5(g::text),
		'tags', jsonb_build_array(substr(md5((g + 1)::text), 1, 5), g % 13),
		'ok', g % 5 <> 0),
	CASE WHEN g % 3 = 0 THEN NULL
		ELSE 'note ' || md5((g * 31)::text) || ' ' || repeat(substr(md5(g::text), 1, 4), (1 + g % 20)::int) END
FROM generate_series($1::bigint, $2::bigint) g`

// LoadBulkConn creates (if needed) and appends to bulk.events, with its
// referenced table bulk.users, until the schema bulk occupies about
// approxMB megabytes (table, TOAST and indexes). Content is generated and
// deterministic: timestamps, text, numeric and jsonb.
func LoadBulkConn(ctx context.Context, conn *pgx.Conn, approxMB int) error {
	for _, sql := range bulkSchema {
		if _, err := conn.Exec(ctx, sql); err != nil {
			return fmt.Errorf("bulk schema: %w", err)
		}
	}
	target := int64(approxMB) << 20
	for {
		var size, next int64
		err := conn.QueryRow(ctx, `SELECT
			(SELECT coalesce(sum(pg_total_relation_size(c.oid)), 0)::bigint FROM pg_class c
				JOIN pg_namespace n ON n.oid = c.relnamespace
				WHERE n.nspname = 'bulk' AND c.relkind = 'r'),
			(SELECT coalesce(max(id), 0) + 1 FROM bulk.events)`).Scan(&size, &next)
		if err != nil {
			return fmt.Errorf("bulk size: %w", err)
		}
		if size >= target {
			return nil
		}
		rows := int64(bulkBatchRows)
		if next > 1 && size > 0 {
			// Estimate the remaining rows from the observed bytes per row.
			perRow := size / next
			if perRow > 0 {
				rows = min(max((target-size)/perRow+1, 1000), rows)
			}
		}
		if _, err := conn.Exec(ctx, bulkInsertSQL, next, next+rows-1); err != nil {
			return fmt.Errorf("bulk insert: %w", err)
		}
	}
}

// LoadBulk fills database db of c with about approxMB megabytes of
// generated data (see LoadBulkConn) and fails t on error.
func LoadBulk(t testing.TB, c *Cluster, db string, approxMB int) {
	t.Helper()
	conn := connect(t, c.ConnString(db))
	defer conn.Close(context.Background())
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Minute)
	defer cancel()
	if err := LoadBulkConn(ctx, conn, approxMB); err != nil {
		t.Fatalf("pgharness: LoadBulk: %v", err)
	}
}

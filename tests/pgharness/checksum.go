package pgharness

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"
)

// LargeObjectsKey is the Checksums key of the pseudo table summarising all
// large objects (oid and content).
const LargeObjectsKey = "pg_largeobject"

// TableSum is the content summary of one relation: its row count and an
// order-independent hash of its rows as text (duplicates counted).
type TableSum struct {
	// Rows is the number of rows (1 for sequences, -1 for an unpopulated
	// materialized view).
	Rows int64
	// Hash is md5 of the sorted md5s of the rows' text forms.
	Hash string
}

// sessionSetup pins output settings that influence the text form of values.
var sessionSetup = []string{
	"SET TimeZone = 'UTC'", "SET DateStyle = 'ISO, YMD'", "SET IntervalStyle = 'postgres'",
	"SET extra_float_digits = 1", "SET bytea_output = 'hex'", "SET lc_monetary = 'C'",
	"SET xmloption = 'content'", "SET search_path = ''",
}

const relationsSQL = `
SELECT format('%I.%I', n.nspname, c.relname), c.relkind::text, c.relispopulated
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind IN ('r', 'm', 'S')
  AND n.nspname NOT IN ('pg_catalog', 'information_schema', 'pg_toast')
  AND n.nspname NOT LIKE 'pg\_temp\_%' AND n.nspname NOT LIKE 'pg\_toast\_temp\_%'
  AND n.nspname !~ '^pme2go_[0-9a-f]{8}$' -- pme2go-backup's own machinery, never restored
ORDER BY 1`

const rowsSQL = `SELECT count(*), coalesce(md5(string_agg(h, '' ORDER BY h)), '')
FROM (SELECT md5(t::text) AS h FROM ONLY %s t) s`

const seqSQL = `SELECT 1::bigint, md5(last_value::text || '/' || is_called::text) FROM %s`

const largeObjectsSQL = `SELECT count(*), coalesce(md5(string_agg(h, '' ORDER BY h)), '')
FROM (SELECT md5(oid::text || ':' || md5(lo_get(oid))) AS h FROM pg_largeobject_metadata) s`

// Checksums summarises every user table (ordinary tables and partitions;
// partitioned parents are covered by their leaves), materialized view and
// sequence of the database at connString, plus all large objects under
// LargeObjectsKey. Keys are quoted "schema.table" names.
func Checksums(ctx context.Context, connString string) (map[string]TableSum, error) {
	conn, err := pgx.Connect(ctx, connString)
	if err != nil {
		return nil, fmt.Errorf("checksums: connect: %w", err)
	}
	defer conn.Close(context.Background())
	return checksumsConn(ctx, conn)
}

// checksumsConn computes Checksums over an open connection.
func checksumsConn(ctx context.Context, conn *pgx.Conn) (map[string]TableSum, error) {
	for _, s := range sessionSetup {
		if _, err := conn.Exec(ctx, s); err != nil {
			return nil, fmt.Errorf("checksums: %s: %w", s, err)
		}
	}
	type rel struct {
		name, kind string
		populated  bool
	}
	rows, err := conn.Query(ctx, relationsSQL)
	if err != nil {
		return nil, fmt.Errorf("checksums: list relations: %w", err)
	}
	rels, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (rel, error) {
		var x rel
		err := r.Scan(&x.name, &x.kind, &x.populated)
		return x, err
	})
	if err != nil {
		return nil, fmt.Errorf("checksums: list relations: %w", err)
	}
	out := make(map[string]TableSum, len(rels)+1)
	for _, r := range rels {
		var sum TableSum
		switch {
		case r.kind == "m" && !r.populated:
			sum = TableSum{Rows: -1, Hash: "unpopulated"}
		case r.kind == "S":
			err = conn.QueryRow(ctx, fmt.Sprintf(seqSQL, r.name)).Scan(&sum.Rows, &sum.Hash)
		default:
			err = conn.QueryRow(ctx, fmt.Sprintf(rowsSQL, r.name)).Scan(&sum.Rows, &sum.Hash)
		}
		if err != nil {
			return nil, fmt.Errorf("checksums: %s: %w", r.name, err)
		}
		out[r.name] = sum
	}
	var lo TableSum
	if err := conn.QueryRow(ctx, largeObjectsSQL).Scan(&lo.Rows, &lo.Hash); err != nil {
		return nil, fmt.Errorf("checksums: large objects: %w", err)
	}
	out[LargeObjectsKey] = lo
	return out, nil
}

// Diff lists the differences between two Checksums results, one line per
// differing key, sorted, each starting with the key followed by ": ".
func Diff(a, b map[string]TableSum) []string {
	keys := make(map[string]bool, len(a)+len(b))
	for k := range a {
		keys[k] = true
	}
	for k := range b {
		keys[k] = true
	}
	sorted := make([]string, 0, len(keys))
	for k := range keys {
		sorted = append(sorted, k)
	}
	sort.Strings(sorted)
	var diffs []string
	for _, k := range sorted {
		sa, inA := a[k]
		sb, inB := b[k]
		switch {
		case !inB:
			diffs = append(diffs, fmt.Sprintf("%s: missing in B (A has %d rows)", k, sa.Rows))
		case !inA:
			diffs = append(diffs, fmt.Sprintf("%s: missing in A (B has %d rows)", k, sb.Rows))
		case sa.Rows != sb.Rows:
			diffs = append(diffs, fmt.Sprintf("%s: row count differs: A=%d B=%d", k, sa.Rows, sb.Rows))
		case sa.Hash != sb.Hash:
			diffs = append(diffs, fmt.Sprintf("%s: content hash differs (%d rows): A=%s B=%s", k, sa.Rows, sa.Hash, sb.Hash))
		}
	}
	return diffs
}

// AssertSameData reports every difference between a and b as a test error
// and returns the number of relations compared (keys present in either).
func AssertSameData(t testing.TB, a, b map[string]TableSum) int {
	t.Helper()
	if diffs := Diff(a, b); len(diffs) > 0 {
		t.Errorf("pgharness: databases differ in %d relation(s):\n  %s", len(diffs), strings.Join(diffs, "\n  "))
	}
	n := len(a)
	for k := range b {
		if _, ok := a[k]; !ok {
			n++
		}
	}
	return n
}

// CompareConns checksums the databases at connA and connB and reports their
// differences as test errors; it returns the number of relations compared.
func CompareConns(t testing.TB, connA, connB string) int {
	t.Helper()
	ctx := context.Background()
	a, err := Checksums(ctx, connA)
	if err != nil {
		t.Fatalf("pgharness: checksum A: %v", err)
		return 0
	}
	b, err := Checksums(ctx, connB)
	if err != nil {
		t.Fatalf("pgharness: checksum B: %v", err)
		return 0
	}
	return AssertSameData(t, a, b)
}

// CompareDatabases compares databases dbA and dbB of cluster c like
// CompareConns and returns the number of relations compared.
func CompareDatabases(t testing.TB, c *Cluster, dbA, dbB string) int {
	t.Helper()
	return CompareConns(t, c.ConnString(dbA), c.ConnString(dbB))
}

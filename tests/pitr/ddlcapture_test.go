package pitr_test

import (
	"context"
	"errors"
	"os/exec"
	"strconv"
	"strings"
	"testing"

	"github.com/pme2go/pme2go-backup/engine/apply"
	"github.com/pme2go/pme2go-backup/engine/capture"
	"github.com/pme2go/pme2go-backup/engine/chain"
	"github.com/pme2go/pme2go-backup/engine/incremental"
	"github.com/pme2go/pme2go-backup/tests/pgharness"
)

// ddlSchemaOf returns db's pg_dump --schema-only, normalized: comments, SET
// lines and blank lines dropped, and every statement naming pme2go (the
// program's own schema, event triggers and publications) left out. Owners
// and privileges are kept: they must match the source.
func ddlSchemaOf(t *testing.T, c *pgharness.Cluster, db string) string {
	t.Helper()
	out, err := exec.Command(c.Bin("pg_dump"), "--schema-only", "--exclude-schema=pme2go_*", "-h", c.SocketDir, "-p", strconv.Itoa(c.Port), "-U", "postgres", db).Output()
	if err != nil {
		t.Fatalf("pg_dump --schema-only %s: %v", db, err)
	}
	var keep []string
	for _, stmt := range strings.Split(string(out), ";\n") {
		var lines []string
		for _, l := range strings.Split(stmt, "\n") {
			if l == "" || strings.HasPrefix(l, "--") || strings.HasPrefix(l, `\`) || strings.HasPrefix(l, "SET ") || strings.HasPrefix(l, "SELECT pg_catalog.set_config") {
				continue
			}
			lines = append(lines, l)
		}
		s := strings.Join(lines, "\n")
		if s == "" || strings.Contains(s, "pme2go") {
			continue
		}
		keep = append(keep, s)
	}
	return strings.Join(keep, ";\n")
}

// sameDDLSchema fails the test when the normalized schemas differ.
func sameDDLSchema(t *testing.T, what, want, got string) {
	t.Helper()
	if want == got {
		return
	}
	w, g := strings.Split(want, ";\n"), strings.Split(got, ";\n")
	var diff []string
	in := func(x string, l []string) bool {
		for _, y := range l {
			if x == y {
				return true
			}
		}
		return false
	}
	for _, x := range w {
		if !in(x, g) {
			diff = append(diff, "missing: "+x)
		}
	}
	for _, x := range g {
		if !in(x, w) {
			diff = append(diff, "extra:   "+x)
		}
	}
	if len(diff) == 0 {
		return // same statements, other order
	}
	t.Fatalf("%s: schema differs from the source:\n%s", what, strings.Join(diff, "\n"))
}

// TestDDLCaptureExact (issue 7 item 1): captured DDL replays exactly — the
// one statement of a multi-statement string, under its search_path, as the
// role that ran it — and CREATE INDEX CONCURRENTLY, a materialized view
// refresh and an enum value added then used replay at their position; a
// rewrite with a volatile default ends the chain with the reason. Data and
// schema (pg_dump --schema-only) of the restore equal the source's.
func TestDDLCaptureExact(t *testing.T) {
	c := pgharness.Start(t)
	c.CreateDB(t, "app")
	c.Exec(t, "app", `CREATE TABLE t (id serial PRIMARY KEY, v text);
		INSERT INTO t (v) SELECT 'a' || g FROM generate_series(1, 50) g;
		CREATE ROLE app_owner LOGIN; GRANT CREATE ON SCHEMA public TO app_owner;
		CREATE SCHEMA s1 AUTHORIZATION app_owner;`)
	e := newEnv(t, c) // CAPTURE_DDL=auto: on, the role is a superuser
	res := e.full(t)
	if m, _ := res.Manifest.Metadata["ddlCapture:app"].(string); !strings.HasPrefix(m, "on:") {
		t.Fatalf("DDL capture mode %q", m)
	}
	ctx := context.Background()
	conn := c.Conn(t, "app")
	exec := func(sql string) {
		t.Helper()
		if err := conn.PgConn().Exec(ctx, sql).Close(); err != nil {
			t.Fatalf("%s: %v", sql, err)
		}
	}
	// One query string mixing DDL and DML: the DML must not run twice.
	exec(`CREATE TABLE m (id int PRIMARY KEY, v text); INSERT INTO m VALUES (1, 'a'), (2, 'b');
		ALTER TABLE m ADD COLUMN w int; UPDATE m SET w = id * 10; CREATE INDEX m_w ON m (w); DELETE FROM m WHERE id = 2`)
	// A non-default search_path: unqualified names resolve as on the source.
	exec(`SET search_path = s1, public`)
	exec(`CREATE TABLE sp (id int PRIMARY KEY, ref int); INSERT INTO sp VALUES (1, 1)`)
	exec(`CREATE VIEW spv AS SELECT id FROM sp`)
	exec(`RESET search_path`)
	// A non-superuser role: what it creates is its own in the restore too.
	exec(`SET ROLE app_owner`)
	exec(`CREATE TABLE owned (id int PRIMARY KEY, note text); INSERT INTO owned VALUES (1, 'mine')`)
	exec(`CREATE TABLE s1.owned2 (id int PRIMARY KEY)`)
	exec(`RESET ROLE`)
	// CREATE INDEX CONCURRENTLY, a refreshed materialized view, an enum
	// value added then used, a deterministic rewrite.
	exec(`CREATE INDEX CONCURRENTLY t_v ON t (v)`)
	exec(`CREATE MATERIALIZED VIEW mv AS SELECT count(*) AS n FROM t`)
	exec(`INSERT INTO t (v) VALUES ('after mv')`)
	exec(`REFRESH MATERIALIZED VIEW mv`)
	exec(`CREATE TYPE mood AS ENUM ('sad'); CREATE TABLE feel (id int PRIMARY KEY, m mood)`)
	exec(`ALTER TYPE mood ADD VALUE 'happy'`)
	exec(`INSERT INTO feel VALUES (1, 'happy'), (2, 'sad')`)
	exec(`ALTER TABLE feel ALTER COLUMN id TYPE bigint`)
	exec(`UPDATE feel SET m = 'happy' WHERE id = 2`)
	// An extension: its script's commands fire the triggers one by one;
	// only CREATE EXTENSION itself is replayed.
	var hasCitext bool
	conn.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_available_extensions WHERE name = 'citext')`).Scan(&hasCitext)
	if hasCitext {
		exec(`CREATE EXTENSION citext`)
		exec(`CREATE TABLE ci (id int PRIMARY KEY, name citext); INSERT INTO ci VALUES (1, 'MiXed')`)
	}
	wantData, wantSchema := sums(t, c, "app"), ddlSchemaOf(t, c, "app")
	if !strings.Contains(wantSchema, "ALTER TABLE public.owned OWNER TO app_owner") {
		t.Fatalf("the schema comparison does not see owners:\n%s", wantSchema)
	}
	e.incremental(t)
	if _, err := e.restoreTo(ctx, apply.Target{Kind: apply.Latest}, "r_exact"); err != nil {
		t.Fatal(err)
	}
	same(t, "captured DDL", wantData, sums(t, c, "r_exact"))
	sameDDLSchema(t, "captured DDL", wantSchema, ddlSchemaOf(t, c, "r_exact"))

	// A rewrite with a volatile default cannot be replayed from its text.
	exec(`ALTER TABLE m ADD COLUMN u uuid DEFAULT gen_random_uuid()`)
	exec(`INSERT INTO t (v) VALUES ('after the rewrite')`)
	_, err := incremental.Take(ctx, e.cfg, incremental.Options{})
	if !errors.Is(err, capture.ErrChainEnded) || !strings.Contains(err.Error(), "volatile default") {
		t.Fatalf("want the chain ended by the volatile default, got %v", err)
	}
	st, _ := chain.List(e.cfg)
	if last := st[len(st)-1]; last.Status != chain.StatusBroken || last.EndLSN == "" || !strings.Contains(last.Reason, "public.m") {
		t.Fatalf("chain %+v", last)
	}
	if _, err := e.restoreTo(ctx, apply.Target{Kind: apply.Latest}, "r_before_rewrite"); err != nil {
		t.Fatal(err)
	}
	same(t, "up to the rewrite", wantData, sums(t, c, "r_before_rewrite"))
}

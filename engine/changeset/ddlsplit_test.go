package changeset

import (
	"encoding/json"
	"strings"
	"testing"
)

func TestSplitStatements(t *testing.T) {
	q := `CREATE TABLE a (x text DEFAULT 'x;y'); -- c;omment
INSERT INTO a VALUES ($$;$$), (E'\';'), ("q;"); /* a ; /* nested ; */ */
CREATE FUNCTION f() RETURNS int LANGUAGE sql BEGIN ATOMIC SELECT CASE WHEN true THEN 1 END; SELECT 2; END;
ALTER TABLE a ADD COLUMN y int;;`
	st := SplitStatements(q)
	if len(st) != 4 {
		for _, s := range st {
			t.Logf("%q", s.Text)
		}
		t.Fatalf("%d statements", len(st))
	}
	if !strings.Contains(st[2].Text, "CREATE FUNCTION") || !strings.HasSuffix(st[2].Text, "END") || st[3].Text != "ALTER TABLE a ADD COLUMN y int" {
		t.Fatalf("%q / %q", st[2].Text, st[3].Text)
	}
	fires := 0
	for _, s := range st {
		if firesEventTrigger(s.Words) {
			fires++
		}
	}
	if fires != 3 {
		t.Fatalf("fires %d", fires)
	}
	for _, c := range []struct {
		q    string
		want bool
	}{{"CREATE ROLE x", false}, {"GRANT r TO u", false}, {"GRANT SELECT ON t TO u", true}, {"CREATE OR REPLACE VIEW v AS SELECT 1", true},
		{"SELECT 1 INTO t", true}, {"SELECT 1", false}, {"COMMENT ON DATABASE d IS 'x'", false}, {"DROP EVENT TRIGGER e", false},
		{"REFRESH MATERIALIZED VIEW CONCURRENTLY m", true}, {"ALTER SYSTEM SET x = 1", false}} {
		if got := firesEventTrigger(SplitStatements(c.q)[0].Words); got != c.want {
			t.Errorf("%s: %v", c.q, got)
		}
	}
}

func TestResolveDDL(t *testing.T) {
	raw := func(q string, n int, tag, rewrite string) []byte {
		m := map[string]any{"v": 2, "query": q, "n": n, "tag": tag, "searchPath": "s1, public", "role": "app"}
		if rewrite != "" {
			m["rewrite"] = rewrite
		}
		b, _ := json.Marshal(m)
		return b
	}
	r, err := ResolveDDL(raw("CREATE TABLE t (id int primary key); INSERT INTO t VALUES (1); ALTER TABLE t ADD c int; UPDATE t SET c = 1", 2, "ALTER TABLE", ""))
	if err != nil || r.End != "" || r.DDL.Statement != "ALTER TABLE t ADD c int" || r.DDL.Role != "app" || r.DDL.SearchPath != "s1, public" {
		t.Fatalf("%+v %v", r, err)
	}
	r, _ = ResolveDDL(raw("create unique index concurrently \"CONCURRENTLY\" on t (x)", 1, "CREATE INDEX", ""))
	if r.DDL.Statement != `create unique index "CONCURRENTLY" on t (x)` || !r.DDL.Concurrently {
		t.Fatalf("%+v", r)
	}
	r, _ = ResolveDDL(raw("alter table t alter c type bigint", 1, "ALTER TABLE", "public.t:4"))
	if r.End != "" {
		t.Fatal(r.End)
	}
	r, _ = ResolveDDL(raw("alter table t alter c type text using md5(c::text)", 1, "ALTER TABLE", "public.t:4"))
	if r.End == "" {
		t.Fatal("function in USING accepted")
	}
	r, _ = ResolveDDL(raw("alter table t alter c type numeric(10,2) using c * 2", 1, "ALTER TABLE", "public.t:4"))
	if r.End != "" {
		t.Fatal(r.End)
	}
	r, _ = ResolveDDL(raw("SELECT f(); CREATE TABLE x(); CREATE TABLE y()", 3, "CREATE TABLE", ""))
	if r.End == "" {
		t.Fatal("firing beyond the statements accepted")
	}
	r, _ = ResolveDDL(raw("CREATE VIEW v AS SELECT 1", 1, "CREATE TABLE", ""))
	if r.End == "" {
		t.Fatal("tag mismatch accepted")
	}
	r, _ = ResolveDDL(raw("BEGIN; CREATE TABLE a(); SAVEPOINT s; CREATE TABLE b(); ROLLBACK TO s; CREATE TABLE c(); COMMIT", 2, "CREATE TABLE", ""))
	if r.End == "" {
		t.Fatal("a string with ROLLBACK between DDL statements accepted")
	}
	d, _ := ParseDDL([]byte("ALTER TABLE x ADD y int"))
	if d.V != 1 || d.SQL() != "ALTER TABLE x ADD y int;" {
		t.Fatalf("%+v", d)
	}
}

func TestRenderDDLMessage(t *testing.T) {
	var b strings.Builder
	content, _ := json.Marshal(DDL{V: 2, SearchPath: `s1, "My Schema"`, Role: "app owner", Tag: "CREATE INDEX", Statement: "CREATE INDEX i ON t (x)", Concurrently: true})
	renderMessage(&b, &Message{LSN: 0x10, Transactional: true, Prefix: DDLPrefixFor("0123abcd"), Content: content})
	want := "-- ddl at 0/10 (CREATE INDEX), run CONCURRENTLY on the source\nSET ROLE \"app owner\";\nSET search_path = s1, \"My Schema\";\nCREATE INDEX i ON t (x);\nRESET search_path;\nRESET ROLE;\n"
	if b.String() != want {
		t.Fatalf("got\n%s\nwant\n%s", b.String(), want)
	}
	b.Reset()
	renderMessage(&b, &Message{LSN: 0x10, Transactional: true, Prefix: DDLPrefix, Content: []byte("ALTER TABLE t ADD c int")})
	if b.String() != "-- ddl at 0/10\nALTER TABLE t ADD c int;\n" {
		t.Fatalf("legacy: %q", b.String())
	}
	if !IsDDLPrefix(DDLPrefixFor("0123abcd")) || !IsDDLPrefix(DDLPrefix) || IsDDLPrefix("pme2go.ddl.") || IsDDLPrefix(MarkPrefix) {
		t.Fatal("IsDDLPrefix")
	}
}

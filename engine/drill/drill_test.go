package drill

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/pme2go/pme2go-backup/engine/config"
	"github.com/pme2go/pme2go-backup/engine/errs"
)

func TestScratchName(t *testing.T) {
	if got := ScratchName("0123abcd", "app"); got != "pme2go_drill_0123abcd_app" {
		t.Errorf("ScratchName: %q", got)
	}
	long := ScratchName("0123abcd", strings.Repeat("é", 40))
	if len(long) > 63 || !utf8.ValidString(long) || !strings.HasPrefix(long, "pme2go_drill_0123abcd_") {
		t.Errorf("long name %q (%d bytes)", long, len(long))
	}
}

// TestParseScript: COPY blocks of a pg_restore script are digested per
// table, quoted names are read back, rows are counted and their digest
// equals the digest of the same rows arriving as COPY TO output in any
// order and in any chunking.
func TestParseScript(t *testing.T) {
	script := `--
-- PostgreSQL database dump
--
SET client_encoding = 'UTF8';
SET standard_conforming_strings = on;

COPY public.t (id, v) FROM stdin;
1	a
2	b\nc
3	\N
\.

COPY "Sales Ω"."Kunden ""Übersicht""" (id) FROM stdin;
\.

COPY "order".x FROM stdin;
9
\.
`
	sm := newSummer()
	dd, err := parseScript(strings.NewReader(script), sm)
	if err != nil {
		t.Fatal(err)
	}
	if dd.Encoding != "UTF8" {
		t.Errorf("encoding %q", dd.Encoding)
	}
	want := map[relName]int64{{"public", "t"}: 3, {"Sales Ω", `Kunden "Übersicht"`}: 0, {"order", "x"}: 1}
	if len(dd.Tables) != len(want) {
		t.Fatalf("tables: %v", dd.Tables)
	}
	for n, rows := range want {
		if dd.Tables[n].Rows != rows {
			t.Errorf("%s: %d rows, want %d", n, dd.Tables[n].Rows, rows)
		}
	}
	// The same rows, reordered and split at odd places, as COPY TO sends them.
	w := &lineSummer{sm: sm}
	for _, chunk := range []string{"3\t\\N\n2\tb", "\\nc\n", "1\ta"} {
		w.Write([]byte(chunk))
	}
	if len(w.partial) > 0 {
		w.add(w.partial)
	}
	if w.sum != dd.Tables[relName{"public", "t"}] {
		t.Errorf("digest of the restored rows %+v, of the dump %+v", w.sum, dd.Tables[relName{"public", "t"}])
	}
	// One row different: same count, different digest.
	w2 := &lineSummer{sm: sm}
	w2.Write([]byte("1\ta\n2\tb\\nc\n3\t\n"))
	if w2.sum.Rows != 3 || w2.sum.Sum == dd.Tables[relName{"public", "t"}].Sum {
		t.Errorf("a changed row was not noticed: %+v", w2.sum)
	}
	if _, err := parseScript(strings.NewReader("COPY public.t (id) FROM stdin;\n1\n"), sm); err == nil {
		t.Error("a COPY block without its end marker was accepted")
	}
}

func TestQuoteIdent(t *testing.T) {
	for in, want := range map[string]string{"orders": "orders", "Orders": `"Orders"`, "order": `"order"`, "a b": `"a b"`, "_x1$": "_x1$", "1x": `"1x"`} {
		if got := quoteIdent(in); got != want {
			t.Errorf("quoteIdent(%q) = %s, want %s", in, got, want)
		}
	}
}

// TestNothingToDrill: without any full backup the drill refuses with
// NOT_FOUND before connecting anywhere, and records nothing.
func TestNothingToDrill(t *testing.T) {
	dir := t.TempDir()
	conf := filepath.Join(dir, "c.conf")
	os.WriteFile(conf, nil, 0o600)
	env := map[string]string{"BACKUP_DIR": filepath.Join(dir, "b"), "DB_NAME": "app", "DB_HOST": "/nonexistent"}
	cfg, err := config.Load(conf, func(k string) (string, bool) { v, ok := env[k]; return v, ok })
	if err != nil {
		t.Fatal(err)
	}
	_, err = Run(context.Background(), cfg, Options{})
	if errs.CodeOf(err) != errs.NotFound {
		t.Fatalf("drill without backups: %v", err)
	}
	_, err = Run(context.Background(), cfg, Options{Databases: []string{"other"}})
	if errs.CodeOf(err) != errs.NotFound || !strings.Contains(err.Error(), "other") {
		t.Fatalf("drill of a database without backups: %v", err)
	}
	if last, err := Last(cfg); last != nil || err != nil {
		t.Errorf("a refused drill left a result: %+v %v", last, err)
	}
}

package pgclient

import (
	"os"
	"strings"
	"testing"
)

// TestChildEnvKeepsPasswordOutOfEnvironment: the password reaches children
// only through a private 0600 PGPASSFILE, never as PGPASSWORD, and the file
// is removed by cleanup.
func TestChildEnvKeepsPasswordOutOfEnvironment(t *testing.T) {
	t.Setenv("PGPASSWORD", "inherited-secret")
	tg := Target{Host: "/run/postgresql", Port: 5433, User: "backup", Password: `p:a\ss`}
	env, cleanup, err := tg.ChildEnv("app")
	if err != nil {
		t.Fatal(err)
	}
	var passfile string
	for _, kv := range env {
		if strings.Contains(kv, "secret") || strings.Contains(kv, `p:a\ss`) || strings.HasPrefix(kv, "PGPASSWORD=") {
			t.Fatalf("secret in the child environment: %s", kv)
		}
		if v, ok := strings.CutPrefix(kv, "PGPASSFILE="); ok {
			passfile = v
		}
	}
	st, err := os.Stat(passfile)
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("passfile %q: %v %v", passfile, st, err)
	}
	data, _ := os.ReadFile(passfile)
	if string(data) != `*:*:*:*:p\:a\\ss`+"\n" {
		t.Fatalf("passfile content %q", data)
	}
	for _, want := range []string{"PGHOST=/run/postgresql", "PGPORT=5433", "PGUSER=backup", "PGDATABASE=app"} {
		if !contains(env, want) {
			t.Errorf("child environment lacks %s", want)
		}
	}
	cleanup()
	if _, err := os.Stat(passfile); !os.IsNotExist(err) {
		t.Fatal("cleanup left the password file")
	}
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

func TestConnStringQuotesAndOmitsPassword(t *testing.T) {
	s := Target{Host: "db host", Port: 5432, User: "o'brien", Password: "pw"}.ConnString(`we\ird`)
	if strings.Contains(s, "pw") || !strings.Contains(s, `user='o\'brien'`) || !strings.Contains(s, `dbname='we\\ird'`) {
		t.Fatalf("conn string %s", s)
	}
}

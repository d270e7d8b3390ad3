package pitr_test

import (
	"context"
	"slices"
	"testing"

	"github.com/pme2go/pme2go-backup/engine/apply"
	"github.com/pme2go/pme2go-backup/tests/pgharness"
)

// TestCapturedDDLChangesEnableStates: with DDL capture, statements after
// the full backup that change the enable state of triggers, rules and FORCE
// ROW LEVEL SECURITY (which replay switches off for its
// duration and puts back before the swap) replay on the source's states:
// the restored states, schema and data equal the source's.
func TestCapturedDDLChangesEnableStates(t *testing.T) {
	c := pgharness.Start(t)
	c.CreateDB(t, "app")
	c.Exec(t, "app", `CREATE TABLE a (id int PRIMARY KEY, n int DEFAULT 0);
		CREATE TABLE log (id serial PRIMARY KEY, what text);
		CREATE FUNCTION note() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN INSERT INTO log (what) VALUES (TG_NAME); RETURN NEW; END $$;
		CREATE TRIGGER tr_always BEFORE INSERT ON a FOR EACH ROW EXECUTE FUNCTION note();
		CREATE TRIGGER tr_origin BEFORE INSERT ON a FOR EACH ROW EXECUTE FUNCTION note();
		CREATE TRIGGER tr_off BEFORE INSERT ON a FOR EACH ROW EXECUTE FUNCTION note();
		ALTER TABLE a ENABLE ALWAYS TRIGGER tr_always; ALTER TABLE a DISABLE TRIGGER tr_off;
		CREATE TABLE r (id int PRIMARY KEY); CREATE RULE rr AS ON UPDATE TO r DO ALSO NOTIFY r;
		ALTER TABLE r ENABLE ALWAYS RULE rr;
		CREATE TABLE f (id int PRIMARY KEY); ALTER TABLE f ENABLE ROW LEVEL SECURITY; ALTER TABLE f FORCE ROW LEVEL SECURITY;
		CREATE TABLE g (id int PRIMARY KEY); ALTER TABLE g ENABLE ROW LEVEL SECURITY;
		INSERT INTO a (id) VALUES (1)`)
	e := newEnv(t, c, "CAPTURE_DDL=true")
	e.full(t)
	for _, q := range []string{
		`INSERT INTO a (id) VALUES (2)`,
		`ALTER TABLE a DISABLE TRIGGER tr_always`,
		`ALTER TABLE a ENABLE REPLICA TRIGGER tr_origin`,
		`ALTER TABLE a ENABLE TRIGGER tr_off`,
		`INSERT INTO a (id) VALUES (3)`,
		`ALTER TABLE r DISABLE RULE rr`,
		`ALTER TABLE f NO FORCE ROW LEVEL SECURITY`,
		`ALTER TABLE g FORCE ROW LEVEL SECURITY`,
		`ALTER TABLE a ADD COLUMN m int`,
		`INSERT INTO a (id, m) VALUES (4, 4)`,
	} {
		c.Exec(t, "app", q)
	}
	want, wantSchema, wantStates := sums(t, c, "app"), schemaOf(t, c, "app"), enableStates(t, c, "app")
	e.incremental(t)
	res, err := e.restoreTo(context.Background(), apply.Target{Kind: apply.Latest}, "r_enable")
	if err != nil {
		t.Fatal(err)
	}
	sameReplayed(t, "enable states changed by DDL", want, sums(t, c, "r_enable"), res)
	if got := enableStates(t, c, "r_enable"); !slices.Equal(got, wantStates) {
		t.Fatalf("enable states differ:\n source   %v\n restored %v", wantStates, got)
	}
	sameSchema(t, "enable states changed by DDL", wantSchema, schemaOf(t, c, "r_enable"))
}

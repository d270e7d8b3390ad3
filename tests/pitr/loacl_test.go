package pitr_test

import (
	"context"
	"testing"

	"github.com/pme2go/pme2go-backup/engine/apply"
	"github.com/pme2go/pme2go-backup/tests/pgharness"
)

// loMeta returns each large object's owner and ACL (text) in db.
func loMeta(t *testing.T, c *pgharness.Cluster, db string) map[uint32]string {
	t.Helper()
	rows, err := c.Conn(t, db).Query(context.Background(), `SELECT oid, pg_get_userbyid(lomowner) || ' ' || coalesce(lomacl::text, 'NULL') || ' ' || coalesce(obj_description(oid, 'pg_largeobject'), '') FROM pg_largeobject_metadata`)
	if err != nil {
		t.Fatal(err)
	}
	out := map[uint32]string{}
	for rows.Next() {
		var oid uint32
		var s string
		if err := rows.Scan(&oid, &s); err != nil {
			t.Fatal(err)
		}
		out[oid] = s
	}
	return out
}

// TestLargeObjectPrivileges: owners and privileges of large objects
// changed after the full backup (ALTER LARGE OBJECT … OWNER, GRANT and
// REVOKE, to roles with names that need quoting, with GRANT OPTION, to
// PUBLIC) and their comments come back with a point-in-time restore exactly as the source
// has them in pg_largeobject_metadata.
func TestLargeObjectPrivileges(t *testing.T) {
	c := pgharness.Start(t)
	c.CreateDB(t, "app")
	c.Exec(t, "postgres", `CREATE ROLE lo_owner; CREATE ROLE "lo Reader"`)
	c.Exec(t, "app", `CREATE TABLE docs (id int PRIMARY KEY, lo oid);
		INSERT INTO docs VALUES (1, lo_from_bytea(1001, 'one')), (2, lo_from_bytea(1002, 'two'));
		GRANT SELECT ON LARGE OBJECT 1002 TO "lo Reader"`)
	e := newEnv(t, c)
	ctx := context.Background()
	e.full(t)
	c.Exec(t, "app", `ALTER LARGE OBJECT 1001 OWNER TO lo_owner;
		GRANT SELECT ON LARGE OBJECT 1001 TO "lo Reader";
		REVOKE ALL ON LARGE OBJECT 1002 FROM "lo Reader";
		INSERT INTO docs VALUES (3, lo_from_bytea(1003, 'three')), (4, lo_from_bytea(1004, 'four'));
		GRANT SELECT, UPDATE ON LARGE OBJECT 1003 TO "lo Reader" WITH GRANT OPTION;
		GRANT SELECT ON LARGE OBJECT 1004 TO PUBLIC;
		ALTER LARGE OBJECT 1004 OWNER TO lo_owner;
		COMMENT ON LARGE OBJECT 1002 IS 'it''s commented'`)
	want, wantMeta := sums(t, c, "app"), loMeta(t, c, "app")
	e.incremental(t)
	res, err := e.restoreTo(ctx, apply.Target{Kind: apply.Latest}, "r_loacl")
	if err != nil {
		t.Fatal(err)
	}
	same(t, "large objects", want, sums(t, c, "r_loacl"))
	got := loMeta(t, c, "r_loacl")
	for oid, w := range wantMeta {
		if got[oid] != w {
			t.Errorf("large object %d: owner and ACL %q, the source has %q", oid, got[oid], w)
		}
	}
	if len(got) != len(wantMeta) {
		t.Errorf("%d large objects restored, the source has %d", len(got), len(wantMeta))
	}
	// The roles' dependencies are recorded: the grantee cannot be dropped.
	conn := c.Conn(t, "r_loacl")
	if _, err := conn.Exec(ctx, `DROP ROLE "lo Reader"`); err == nil {
		t.Error(`DROP ROLE "lo Reader" succeeded: the restored privileges recorded no dependency`)
	} else if pe, ok := err.(interface{ SQLState() string }); !ok || pe.SQLState() != "2BP01" {
		t.Logf("drop role: %v", err)
	}
	t.Logf("%+v", res.PITR.LargeObjects)
}

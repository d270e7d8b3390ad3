package integration

import (
	"context"
	"slices"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/pme2go/pme2go-backup/engine/pgclient"
	"github.com/pme2go/pme2go-backup/engine/restore"
	"github.com/pme2go/pme2go-backup/tests/pgharness"
)

// TestRestoredDatabaseCarriesNoMachinery: with a chain running (publication,
// DDL capture event trigger and its function in the source), a restore into
// --target-db, a point-in-time restore and a restore --force over the
// original each give a database whose publications and event triggers are
// only the user's, with no function or schema of ours, where UPDATE and
// DELETE on a new table without a key succeed, and whose data equals the
// source's.
func TestRestoredDatabaseCarriesNoMachinery(t *testing.T) {
	c := pgharness.Start(t)
	c.CreateDB(t, "app")
	c.Exec(t, "app", `CREATE TABLE items (id int PRIMARY KEY, name text);
		INSERT INTO items SELECT g, 'item ' || g FROM generate_series(1, 200) g;
		CREATE TABLE nokey (a int, b text); INSERT INTO nokey VALUES (1, 'one'), (2, 'two');
		CREATE PUBLICATION user_pub FOR TABLE items;
		CREATE PUBLICATION "user pub 2" FOR TABLES IN SCHEMA public WITH (publish = 'insert');
		CREATE FUNCTION public.user_ddl_log() RETURNS event_trigger LANGUAGE plpgsql AS $$ BEGIN END $$;
		CREATE EVENT TRIGGER user_ddl_log ON ddl_command_end EXECUTE FUNCTION public.user_ddl_log();
		COMMENT ON EVENT TRIGGER user_ddl_log IS 'the user''s own'`)
	env := cfgEnv(t, c, []string{"app"}, "CAPTURE_DDL=true", "REPLICA_IDENTITY_FIX=full")
	path := takeBackup(t, env)
	// The source does carry our machinery now (else this test proves nothing).
	if pubs, evts := machinery(t, c, "app"); len(pubs) < 3 || len(evts) < 2 {
		t.Fatalf("source lacks the chain's objects: publications %v, event triggers %v", pubs, evts)
	}

	check := func(t *testing.T, db string) {
		t.Helper()
		pubs, evts := machinery(t, c, db)
		if !slices.Equal(pubs, []string{"user pub 2", "user_pub"}) {
			t.Errorf("%s: publications %v, want only the user's", db, pubs)
		}
		if !slices.Equal(evts, []string{"user_ddl_log"}) {
			t.Errorf("%s: event triggers %v, want only the user's", db, evts)
		}
		var ours []string
		rows, _ := c.Conn(t, db).Query(context.Background(), `SELECT format('%s.%s', n.nspname, p.proname) FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
			WHERE p.proname LIKE 'pme2go%' OR n.nspname LIKE 'pme2go%'
			UNION ALL SELECT nspname FROM pg_namespace WHERE nspname LIKE 'pme2go%'`)
		ours, err := pgx.CollectRows(rows, pgx.RowTo[string])
		if err != nil || len(ours) > 0 {
			t.Errorf("%s: our functions or schemas remain: %v %v", db, ours, err)
		}
		var comment *string
		c.Conn(t, db).QueryRow(context.Background(), `SELECT obj_description(oid, 'pg_event_trigger') FROM pg_event_trigger WHERE evtname = 'user_ddl_log'`).Scan(&comment)
		if comment == nil || *comment != "the user's own" {
			t.Errorf("%s: the user's event trigger lost its comment: %v", db, comment)
		}
		c.Exec(t, db, `CREATE TABLE after_restore (a int); INSERT INTO after_restore VALUES (1), (2);
			UPDATE after_restore SET a = a + 1; DELETE FROM after_restore WHERE a = 2; UPDATE nokey SET b = b || '!'`)
		c.Exec(t, db, `UPDATE nokey SET b = rtrim(b, '!'); DROP TABLE after_restore`)
	}

	t.Run("target-db", func(t *testing.T) {
		if r := runCLI(t, env, "restore", "--backup", path, "--target-db", "copy"); r.code != 0 {
			t.Fatalf("restore: %d\n%s%s", r.code, r.stdout, r.stderr)
		}
		check(t, "copy")
		pgharness.CompareDatabases(t, c, "app", "copy")
	})
	t.Run("pitr", func(t *testing.T) {
		c.Exec(t, "app", `INSERT INTO items VALUES (1000, 'after the full backup'); UPDATE nokey SET b = 'uno' WHERE a = 1`)
		if r := runCLI(t, env, "incremental"); r.code != 0 {
			t.Fatalf("incremental: %d\n%s%s", r.code, r.stdout, r.stderr)
		}
		if r := runCLI(t, env, "restore", "--latest", "--target-db", "pitr_copy"); r.code != 0 {
			t.Fatalf("restore --latest: %d\n%s%s", r.code, r.stdout, r.stderr)
		}
		check(t, "pitr_copy")
		pgharness.CompareDatabases(t, c, "app", "pitr_copy")
	})
	t.Run("pitr-force", func(t *testing.T) {
		if r := runCLI(t, env, "restore", "--latest", "--force"); r.code != 0 {
			t.Fatalf("restore --latest --force: %d\n%s%s", r.code, r.stdout, r.stderr)
		}
		check(t, "app")
		pgharness.CompareDatabases(t, c, "pitr_copy", "app")
	})
	t.Run("force", func(t *testing.T) {
		if r := runCLI(t, env, "restore", "--backup", path, "--force"); r.code != 0 {
			t.Fatalf("restore --force: %d\n%s%s", r.code, r.stdout, r.stderr)
		}
		check(t, "app")
		pgharness.CompareDatabases(t, c, "copy", "app")
	})
}

// TestRemoveMachinery: the second layer, which drops what the table of
// contents filter let through (a scratch database of an older version, DDL
// replay), removes our objects of both naming generations and keeps the
// user's, including a user table whose name starts like ours.
func TestRemoveMachinery(t *testing.T) {
	c := pgharness.Start(t)
	c.CreateDB(t, "scratch")
	c.Exec(t, "scratch", `CREATE TABLE items (id int PRIMARY KEY); CREATE TABLE pme2go_like (a int);
		CREATE SCHEMA pme2go_0badc0de;
		CREATE FUNCTION pme2go_0badc0de.capture_ddl() RETURNS event_trigger LANGUAGE plpgsql AS $$ BEGIN END $$;
		CREATE FUNCTION public.pme2go_capture_ddl() RETURNS event_trigger LANGUAGE plpgsql AS $$ BEGIN END $$;
		CREATE TABLE evt_log (tag text);
		CREATE FUNCTION public.user_evt() RETURNS event_trigger LANGUAGE plpgsql AS $$ BEGIN INSERT INTO public.evt_log VALUES (tg_tag); END $$;
		CREATE EVENT TRIGGER pme2go_capture_ddl ON ddl_command_end EXECUTE FUNCTION public.pme2go_capture_ddl();
		CREATE EVENT TRIGGER pme2go_0badc0de_capture_ddl ON ddl_command_end EXECUTE FUNCTION pme2go_0badc0de.capture_ddl();
		CREATE EVENT TRIGGER user_evt ON sql_drop EXECUTE FUNCTION public.user_evt();
		ALTER EVENT TRIGGER user_evt ENABLE ALWAYS;
		CREATE PUBLICATION pme2go_c20261129_app FOR ALL TABLES;
		CREATE PUBLICATION pme2go_0badc0de_app_1 FOR TABLE items;
		CREATE PUBLICATION user_pub FOR TABLE items, pme2go_like;
		COMMENT ON PUBLICATION pme2go_c20261129_app IS 'ours'`)
	cfg := loadCfg(t, cfgEnv(t, c, []string{"scratch"}))
	done, err := restore.RemoveMachinery(context.Background(), pgclient.FromConfig(cfg), "scratch", nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(done) != 6 {
		t.Errorf("dropped %d objects, want 6: %v", len(done), done)
	}
	pubs, evts := machinery(t, c, "scratch")
	if !slices.Equal(pubs, []string{"user_pub"}) || !slices.Equal(evts, []string{"user_evt"}) {
		t.Fatalf("after removal: publications %v, event triggers %v", pubs, evts)
	}
	c.Exec(t, "scratch", `SELECT 'public.user_evt()'::regprocedure, 'pme2go_like'::regclass`)
	// The user's event trigger did not run during our drops, and is as it was.
	var fired int
	var enabled string
	c.Conn(t, "scratch").QueryRow(context.Background(), `SELECT (SELECT count(*) FROM evt_log), (SELECT evtenabled::text FROM pg_event_trigger WHERE evtname = 'user_evt')`).Scan(&fired, &enabled)
	if fired != 0 || enabled != "A" {
		t.Fatalf("user event trigger fired %d times during our drops, enable state %q (want A)", fired, enabled)
	}
	if again, err := restore.RemoveMachinery(context.Background(), pgclient.FromConfig(cfg), "scratch", nil); err != nil || len(again) != 0 {
		t.Fatalf("second run: %v %v", again, err)
	}
}

// machinery lists db's publications and event triggers, sorted.
func machinery(t *testing.T, c *pgharness.Cluster, db string) (pubs, evts []string) {
	t.Helper()
	conn := c.Conn(t, db)
	ctx := context.Background()
	rows, _ := conn.Query(ctx, `SELECT pubname::text FROM pg_publication ORDER BY 1`)
	pubs, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		t.Fatal(err)
	}
	rows, _ = conn.Query(ctx, `SELECT evtname::text FROM pg_event_trigger ORDER BY 1`)
	evts, err = pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		t.Fatal(err)
	}
	return pubs, evts
}

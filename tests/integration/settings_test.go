package integration

import (
	"context"
	"path/filepath"
	"strings"
	"testing"

	"github.com/pme2go/pme2go-backup/tests/pgharness"
)

// dbSettings renders db's database-level settings: grants (datacl),
// connection limit, template flag, comment, and ALTER DATABASE / ALTER ROLE
// … IN DATABASE … SET entries of pg_db_role_setting.
func dbSettings(t *testing.T, c *pgharness.Cluster, db string) string {
	t.Helper()
	var s string
	err := c.Conn(t, "postgres").QueryRow(context.Background(), `SELECT format(E'acl=%s\nconnlimit=%s template=%s\ncomment=%s\nsettings=%s',
		(SELECT array_agg(a::text ORDER BY a::text) FROM unnest(d.datacl) a), d.datconnlimit, d.datistemplate, shobj_description(d.oid, 'pg_database'),
		(SELECT string_agg(coalesce(r.rolname, '*') || ':' || array_to_string(s.setconfig, ';'), ' ' ORDER BY 1)
		   FROM pg_db_role_setting s LEFT JOIN pg_roles r ON r.oid = s.setrole WHERE s.setdatabase = d.oid))
		FROM pg_database d WHERE d.datname = $1`, db).Scan(&s)
	if err != nil {
		t.Fatalf("settings of %s: %v", db, err)
	}
	return s
}

// TestDatabaseSettingsRestored: ALTER DATABASE … SET, ALTER ROLE … IN
// DATABASE … SET, grants, comment and connection limit of a database whose
// name needs quoting come back with a full and a point-in-time restore,
// into another --target-db name and over the original with --force (where
// the settings had been changed since the backup).
func TestDatabaseSettingsRestored(t *testing.T) {
	c := pgharness.Start(t)
	const db = "App-Db"
	c.CreateDB(t, db)
	c.Exec(t, "postgres", `CREATE ROLE app_user LOGIN; CREATE ROLE reader`)
	c.Exec(t, db, `CREATE TABLE items (id int PRIMARY KEY, v text); INSERT INTO items SELECT g, md5(g::text) FROM generate_series(1, 100) g;
		ALTER DATABASE "App-Db" SET work_mem = '7MB';
		ALTER DATABASE "App-Db" SET search_path = public, "$user";
		ALTER ROLE app_user IN DATABASE "App-Db" SET statement_timeout = '5s';
		GRANT CONNECT, TEMPORARY ON DATABASE "App-Db" TO app_user;
		GRANT CREATE ON DATABASE "App-Db" TO reader WITH GRANT OPTION;
		REVOKE CONNECT ON DATABASE "App-Db" FROM PUBLIC;
		COMMENT ON DATABASE "App-Db" IS E'the app''s database;\n-- with "quotes"';
		ALTER DATABASE "App-Db" CONNECTION LIMIT 42`)
	env := cfgEnv(t, c, []string{db}, "REPLICA_IDENTITY_FIX=full")
	path := takeBackup(t, env)
	want := dbSettings(t, c, db)
	if !strings.Contains(want, "work_mem=7MB") || !strings.Contains(want, "app_user:statement_timeout=5s") || !strings.Contains(want, "connlimit=42") {
		t.Fatalf("source settings not as set: %s", want)
	}
	damage := func() {
		c.Exec(t, db, `ALTER DATABASE "App-Db" RESET ALL; ALTER ROLE app_user IN DATABASE "App-Db" RESET ALL;
			GRANT ALL ON DATABASE "App-Db" TO PUBLIC; REVOKE ALL ON DATABASE "App-Db" FROM reader CASCADE;
			COMMENT ON DATABASE "App-Db" IS 'changed'; ALTER DATABASE "App-Db" CONNECTION LIMIT 7`)
		if dbSettings(t, c, db) == want {
			t.Fatal("damage changed nothing")
		}
	}
	restore := func(t *testing.T, args ...string) cliResult {
		t.Helper()
		r := runCLI(t, env, append([]string{"restore"}, args...)...)
		if r.code != 0 {
			t.Fatalf("restore %v: %d\n%s%s", args, r.code, r.stdout, r.stderr)
		}
		return r
	}
	t.Run("target-db", func(t *testing.T) {
		r := restore(t, "--backup", path, "--target-db", "copy of app")
		if got := dbSettings(t, c, "copy of app"); got != want {
			t.Fatalf("settings of the copy:\n%s\nwant:\n%s", got, want)
		}
		if !strings.Contains(r.stdout, "applied to copy of app") {
			t.Errorf("output does not say the settings were applied under the new name:\n%s", r.stdout)
		}
	})
	t.Run("pitr target-db", func(t *testing.T) {
		c.Exec(t, db, `INSERT INTO items VALUES (1000, 'later')`)
		if r := runCLI(t, env, "incremental"); r.code != 0 {
			t.Fatalf("incremental: %s%s", r.stdout, r.stderr)
		}
		restore(t, "--latest", "--target-db", "pitr copy")
		if got := dbSettings(t, c, "pitr copy"); got != want {
			t.Fatalf("settings of the point-in-time copy:\n%s\nwant:\n%s", got, want)
		}
		pgharness.CompareDatabases(t, c, db, "pitr copy")
	})
	t.Run("pitr force", func(t *testing.T) {
		damage()
		restore(t, "--latest", "--force")
		if got := dbSettings(t, c, db); got != want {
			t.Fatalf("settings after restore --latest --force:\n%s\nwant:\n%s", got, want)
		}
		pgharness.CompareDatabases(t, c, "pitr copy", db)
	})
	t.Run("force", func(t *testing.T) {
		damage()
		damaged := dbSettings(t, c, db)
		restore(t, "--backup", path, "--force")
		if got := dbSettings(t, c, db); got != want {
			t.Fatalf("settings after restore --force:\n%s\nwant:\n%s", got, want)
		}
		pgharness.CompareDatabases(t, c, "copy of app", db)
		// The safety backup was dumped under the database's private name;
		// restored, it brings back the settings the replaced database had.
		var safety string
		for _, n := range listed(t, env) {
			if n != filepath.Base(path) && !strings.Contains(n, "problem") {
				safety = n // either safety backup: both were taken of the damaged settings
			}
		}
		restore(t, "--backup", safety, "--target-db", "safety of app")
		if got := dbSettings(t, c, "safety of app"); got != damaged {
			t.Fatalf("settings restored from the safety backup:\n%s\nwant:\n%s", got, damaged)
		}
	})
}

package chain

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/jackc/pgx/v5"

	"github.com/pme2go/pme2go-backup/engine/config"
)

// Trigger options for InstallTriggers.
type TriggerOptions struct {
	// ID8 is the installation's short id: the schema is pme2go_<id8>, the
	// event triggers pme2go_<id8>_*, the messages pme2go.ddl.<id8> and
	// pme2go.end.<id8>.
	ID8 string
	// CaptureDDL makes the trigger emit each DDL statement as a logical
	// message; without it the triggers only keep the publication safe.
	CaptureDDL bool
	// FixFull gives new tables without a key REPLICA IDENTITY FULL
	// (REPLICA_IDENTITY_FIX=full) instead of leaving them out.
	FixFull bool
	// Owner is the role pme2go-backup connects as (DB_USER): only its
	// sessions named pme2go-backup are left uncaptured, so that another
	// role cannot hide DDL by taking that application_name. Filled in by
	// InstallTriggers.
	Owner string
}

// TriggerSQL returns the statements that create the installation's schema,
// functions and event triggers in a database. Every function but on_start is
// SECURITY DEFINER (owned by the installing superuser) with
// search_path = pg_catalog, pg_temp, names every object with its schema and
// catches every error: an error becomes the end of the chain (a message),
// never the failure of the user's statement. on_start runs with the
// caller's rights and only records the caller's search_path and role (the
// definer functions cannot see them) in session settings
// pme2go_<id8>.sp and pme2go_<id8>.role.
//
// What on_ddl does at ddl_command_end, for every table the command created
// or altered (pg_event_trigger_ddl_commands):
//   - temporary tables: nothing;
//   - unlogged tables: not published (PostgreSQL cannot publish them), named
//     in the DDL message as not covered; the chain goes on;
//   - permanent tables (regular, partitioned roots, inheritance children):
//     when they have a replica identity (primary key, USING INDEX, FULL) —
//     or get FULL with FixFull — they are added to each of the
//     installation's publications in this database (ONLY: children are
//     tables of their own); partitions of a published partitioned table are
//     published through it (publish_via_partition_root off, changes carry
//     the partition's own name). A table that cannot be published safely is
//     left out (a published one that lost its key is removed, for a
//     partition its partitioned root) and the chain ends here with the
//     reason (message pme2go.end.<id8>).
//
// DROP INDEX re-checks every published table (an index used as replica
// identity may be gone). Then, with CaptureDDL, the statement travels as a
// message pme2go.ddl.<id8> whose JSON payload carries the whole query
// string, the number of this firing within that string (the capture picks
// the statement), the tag, the caller's search_path and role, the table
// rewrites seen, the unlogged tables created, the OIDs of the objects the
// statement created, altered or dropped ("objects": from
// pg_event_trigger_ddl_commands and, recorded by on_drop in the firing
// table, pg_event_trigger_dropped_objects) and the object types of
// commands PostgreSQL reports without objects ("grants": GRANT, REVOKE,
// ALTER DEFAULT PRIVILEGES), so that the capture can tell which catalog
// differences captured DDL explains. DDL run inside a function
// or DO block (a PG_CONTEXT of more than one level) cannot be reproduced
// from its text: the chain ends. DDL run by pme2go-backup itself
// (application_name pme2go-backup) and by the functions of any pme2go
// installation is ignored.
func TriggerSQL(o TriggerOptions) []string {
	sch := SchemaName(o.ID8)
	qs := pgx.Identifier{sch}.Sanitize()
	lit := func(s string) string { return "'" + strings.ReplaceAll(s, "'", "''") + "'" }
	pubLike := lit(strings.ReplaceAll(ObjectPrefix(o.ID8), "_", `\_`) + "%")
	endPrefix, ddlPrefix := lit("pme2go.end."+o.ID8), lit("pme2go.ddl."+o.ID8)
	guc := func(n string) string { return lit(sch + "." + n) }
	capture, fix := "false", "false"
	if o.CaptureDDL {
		capture = "true"
	}
	if o.FixFull {
		fix = "true"
	}
	// machinery: the statement that fired is one of a pme2go function
	// (ours or another installation's, in a schema a superuser owns: a
	// role that names its own schema pme2go_<8 hex> does not hide its DDL
	// this way), not the application's. For the definer functions
	// (search_path pg_catalog); on_start has its own, operators qualified.
	machinery := `pg_catalog.strpos(ctx, E'\n') > 0
     AND EXISTS (SELECT 1 FROM pg_catalog.pg_namespace n JOIN pg_catalog.pg_roles o ON o.oid = n.nspowner
                  WHERE o.rolsuper AND n.nspname = pg_catalog.substring(pg_catalog.substr(ctx, pg_catalog.strpos(ctx, E'\n')),
                        'function (pme2go_[0-9a-f]{8})\.')::pg_catalog.name)`
	// lockWait bounds every lock wait of a definer function (it runs with
	// SET lock_timeout, so this stays inside it) to half of
	// deadlock_timeout: changing the publication takes a lock on it that
	// is held until commit, and a transaction waiting for it while holding
	// locks another one waits for could otherwise deadlock — and the
	// deadlock detector might cancel the application's statement instead of
	// ours.
	lockWait := `PERFORM pg_catalog.set_config('lock_timeout',
      GREATEST(1, (pg_catalog.date_part('epoch', pg_catalog.current_setting('deadlock_timeout')::pg_catalog.interval) * 500)::pg_catalog.int4)::pg_catalog.text || 'ms', true)`
	// Regular expressions (ARE) matching our publications' names and our
	// schema's name in a query string.
	pubRE := lit(`\m` + ObjectPrefix(o.ID8))
	schemaRE := lit(`\m` + sch + `\M`)
	// "$SCHEMARE" comes before "$S": the first match in argument order wins.
	r := strings.NewReplacer("$SCHEMARE", schemaRE, "$S", qs, "$PUBLIKE", pubLike, "$PUBRE", pubRE,
		"$END", endPrefix, "$DDL", ddlPrefix, "$GSP", guc("sp"), "$OWNER", lit(o.Owner),
		"$CAPTURE", capture, "$FIX", fix, "$MACHINERY", machinery, "$LOCKWAIT", lockWait)
	stmts := []string{
		`CREATE SCHEMA IF NOT EXISTS $S`,
		`REVOKE ALL ON SCHEMA $S FROM PUBLIC`,
		`COMMENT ON SCHEMA $S IS 'pme2go-backup: change capture machinery of one installation; dropped with its last chain'`,
		// The triggers' per-statement state: written only by the definer
		// functions (no role but a superuser can reach the schema), so that
		// no session can forge it, as it could forge its own settings.
		`CREATE UNLOGGED TABLE IF NOT EXISTS $S.firing (
  pid pg_catalog.int4 NOT NULL,
  qkey pg_catalog.text NOT NULL,
  n pg_catalog.int4 NOT NULL DEFAULT 0,
  rewrite pg_catalog.text,
  droptemp pg_catalog.bool,
  dropped pg_catalog.text,
  PRIMARY KEY (pid, qkey))`,
		// dropped: the OIDs of what the statement dropped (on_drop), for
		// on_ddl's message; added to tables made by older versions.
		`ALTER TABLE $S.firing ADD COLUMN IF NOT EXISTS dropped pg_catalog.text`,
		`REVOKE ALL ON TABLE $S.firing FROM PUBLIC`,
		`COMMENT ON TABLE $S.firing IS 'pme2go-backup: event trigger state per session and query string (firing count, table rewrites, temporary drops)'`,
		// safe(rel): the table's UPDATE and DELETE work once it is published.
		`CREATE OR REPLACE FUNCTION $S.safe(rel pg_catalog.oid) RETURNS boolean
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $f$
SELECT CASE c.relreplident
         WHEN 'f' THEN true
         WHEN 'i' THEN EXISTS (SELECT 1 FROM pg_catalog.pg_index i WHERE i.indrelid = c.oid AND i.indisreplident)
         WHEN 'd' THEN EXISTS (SELECT 1 FROM pg_catalog.pg_index i WHERE i.indrelid = c.oid AND i.indisprimary)
         ELSE false END
  FROM pg_catalog.pg_class c WHERE c.oid = rel
$f$`,
		`CREATE OR REPLACE FUNCTION $S.on_start() RETURNS event_trigger
LANGUAGE plpgsql AS $f$
DECLARE
  ctx pg_catalog.text;
BEGIN
  GET DIAGNOSTICS ctx = PG_CONTEXT;
  -- Runs with the caller's rights and search_path: operators qualified.
  IF pg_catalog.strpos(ctx, E'\n') OPERATOR(pg_catalog.>) 0
     AND EXISTS (SELECT 1 FROM pg_catalog.pg_namespace n JOIN pg_catalog.pg_roles o ON o.oid OPERATOR(pg_catalog.=) n.nspowner
                  WHERE o.rolsuper AND n.nspname OPERATOR(pg_catalog.=) pg_catalog.substring(pg_catalog.substr(ctx, pg_catalog.strpos(ctx, E'\n')),
                        'function (pme2go_[0-9a-f]{8})\.')::pg_catalog.name) THEN
    RETURN; -- a statement of pme2go machinery, not the caller's
  END IF;
  PERFORM pg_catalog.set_config($GSP, pg_catalog.current_setting('search_path'), false);
EXCEPTION WHEN OTHERS THEN
  NULL;
END
$f$`,
		// on_guard runs at ddl_command_start, before the command: it takes
		// out of the publication what PostgreSQL would otherwise refuse to
		// change (ALTER TABLE … SET UNLOGGED of a published table), and ends
		// the chain when a session changes our publication or our schema.
		`CREATE OR REPLACE FUNCTION $S.on_guard() RETURNS event_trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp SET lock_timeout = '500ms' AS $f$
DECLARE
  ctx pg_catalog.text;
  q pg_catalog.text;
  piece pg_catalog.text;
  parts pg_catalog.text[];
  x record;
  ends pg_catalog.text[] := '{}';
  e pg_catalog.text;
BEGIN
  IF pg_catalog.current_setting('application_name', true) = 'pme2go-backup' AND session_user = $OWNER THEN
    RETURN;
  END IF;
  GET DIAGNOSTICS ctx = PG_CONTEXT;
  IF $MACHINERY THEN
    RETURN;
  END IF;
  <<body>>
  BEGIN
    $LOCKWAIT;
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_publication WHERE pubname LIKE $PUBLIKE) THEN
      EXIT body; -- no chain of this installation here
    END IF;
    -- The query string without comments (a comment could split a name
    -- from its keyword).
    q := pg_catalog.regexp_replace(pg_catalog.current_query(), '/\*.*?\*/|--[^\n]*', ' ', 'g');
    IF TG_TAG IN ('ALTER PUBLICATION', 'DROP PUBLICATION') AND q ~ $PUBRE THEN
      ends := ends || pg_catalog.format('the chain''s publication was changed or dropped by %s (not by pme2go-backup): changes are no longer captured as they happened',
                        pg_catalog.quote_literal(pg_catalog.left(q, 200)));
      EXIT body;
    END IF;
    -- Our schema, or an object in it, named by a command that can change
    -- or drop it (a name followed by a dot only as one of our objects: the
    -- session settings pme2go_<id8>.sp are named that way too).
    IF (TG_TAG IN ('DROP SCHEMA', 'ALTER SCHEMA', 'GRANT', 'REVOKE') AND q ~ ($SCHEMARE || '(?!\s*\.)'))
       OR (TG_TAG IN ('CREATE FUNCTION', 'ALTER FUNCTION', 'DROP FUNCTION', 'ALTER ROUTINE', 'DROP ROUTINE', 'ALTER TABLE', 'DROP TABLE',
                      'GRANT', 'REVOKE', 'COMMENT', 'CREATE INDEX', 'CREATE TRIGGER', 'CREATE RULE')
           AND q ~ ($SCHEMARE || '\s*\.\s*"?(firing|safe|on_start|on_guard|on_drop|on_rewrite|on_ddl)\M')) THEN
      ends := ends || pg_catalog.format('%s changed pme2go-backup''s own schema (its event triggers and their state): %s; DDL may no longer be seen',
                        TG_TAG, pg_catalog.quote_literal(pg_catalog.left(q, 200)));
      EXIT body;
    END IF;
    -- ALTER TABLE … SET UNLOGGED: PostgreSQL refuses it for a table in a
    -- publication ("part of a publication"). Each published table the
    -- statement may name leaves the publication first (a name without
    -- schema matches that table in every schema), so that the statement
    -- runs. A table holding rows ends the chain (on_rewrite: its later
    -- changes are in no change set); an empty one is named as not covered
    -- at ddl_command_end (DDL capture on; replay reproduces the statement,
    -- and a restore has it empty, as PostgreSQL's own recovery leaves an
    -- unlogged table) or ends the chain (capture off); a partitioned table
    -- (for which SET UNLOGGED changes nothing) is published again.
    IF TG_TAG = 'ALTER TABLE' AND q ~* '\mset\s+unlogged\M' THEN
      FOREACH piece IN ARRAY pg_catalog.regexp_split_to_array(q, ';') LOOP
        CONTINUE WHEN piece !~* '\mset\s+unlogged\M';
        parts := pg_catalog.regexp_match(piece, '^\s*alter\s+table\s+(?:if\s+exists\s+)?(?:only\s+)?(.*)$', 'i');
        CONTINUE WHEN parts IS NULL;
        BEGIN
          parts := pg_catalog.parse_ident(parts[1], false);
        EXCEPTION WHEN OTHERS THEN
          CONTINUE;
        END;
        FOR x IN
          SELECT DISTINCT pb.pubname, c.relkind, pg_catalog.format('%I.%I', ns.nspname, c.relname) AS name
            FROM pg_catalog.pg_publication_rel pr
            JOIN pg_catalog.pg_publication pb ON pb.oid = pr.prpubid AND pb.pubname LIKE $PUBLIKE
            JOIN pg_catalog.pg_class c ON c.oid = pr.prrelid
            JOIN pg_catalog.pg_namespace ns ON ns.oid = c.relnamespace
           WHERE c.relname = parts[pg_catalog.cardinality(parts)]
             AND (pg_catalog.cardinality(parts) = 1 OR ns.nspname = parts[pg_catalog.cardinality(parts) - 1])
        LOOP
          EXECUTE pg_catalog.format('ALTER PUBLICATION %I DROP TABLE %s', x.pubname, x.name);
          IF NOT $CAPTURE AND x.relkind = 'r' THEN
            ends := ends || pg_catalog.format('table %s set UNLOGGED by %s while DDL capture is off: it left the publication (PostgreSQL cannot publish an unlogged table), so its changes are no longer captured',
                              x.name, pg_catalog.quote_literal(pg_catalog.left(q, 200)));
          END IF;
        END LOOP;
      END LOOP;
    END IF;
  EXCEPTION
    WHEN lock_not_available THEN
      ends := ends || pg_catalog.format('%s had to wait for another transaction that is changing the chain''s publication (it created or altered a table and has not committed): pme2go-backup does not wait, to keep the application from deadlocks', TG_TAG);
    WHEN OTHERS THEN
      ends := ends || pg_catalog.format('the pme2go-backup event trigger failed at the start of %s: %s (%s)', TG_TAG, SQLERRM, SQLSTATE);
  END;
  -- Messages are emitted outside the exception block (see on_ddl).
  FOREACH e IN ARRAY ends LOOP
    PERFORM pg_catalog.pg_logical_emit_message(true, $END, e);
  END LOOP;
END
$f$`,
		`CREATE OR REPLACE FUNCTION $S.on_drop() RETURNS event_trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $f$
DECLARE
  ctx pg_catalog.text;
  tmp boolean;
  pubs pg_catalog.text[];
  ends pg_catalog.text[] := '{}';
  e pg_catalog.text;
BEGIN
  IF pg_catalog.current_setting('application_name', true) = 'pme2go-backup' AND session_user = $OWNER THEN
    RETURN;
  END IF;
  GET DIAGNOSTICS ctx = PG_CONTEXT;
  IF $MACHINERY THEN
    RETURN;
  END IF;
  BEGIN
    SELECT pg_catalog.bool_and(d.is_temporary) INTO tmp FROM pg_catalog.pg_event_trigger_dropped_objects() d;
    INSERT INTO $S.firing AS f (pid, qkey, droptemp, dropped)
      VALUES (pg_catalog.pg_backend_pid(), pg_catalog.md5(pg_catalog.statement_timestamp()::pg_catalog.text || ' ' || pg_catalog.current_query()), tmp,
              (SELECT pg_catalog.string_agg(d.objid::pg_catalog.text, ',') FROM pg_catalog.pg_event_trigger_dropped_objects() d))
      ON CONFLICT (pid, qkey) DO UPDATE SET droptemp = EXCLUDED.droptemp, dropped = EXCLUDED.dropped;
    -- The chain's publication dropped by a session (also from a function
    -- or DO block, which on_guard cannot read).
    SELECT pg_catalog.array_agg(d.object_identity ORDER BY d.object_identity) INTO pubs
      FROM pg_catalog.pg_event_trigger_dropped_objects() d
     WHERE d.object_type = 'publication' AND d.object_identity LIKE $PUBLIKE;
    IF pubs IS NOT NULL THEN
      ends := ends || pg_catalog.format('the chain''s publication %s was dropped by %s (not by pme2go-backup): changes are no longer captured',
                        pg_catalog.array_to_string(pubs, ', '), pg_catalog.quote_literal(pg_catalog.left(pg_catalog.current_query(), 200)));
    END IF;
  EXCEPTION WHEN OTHERS THEN
    NULL; -- on_ddl then takes the drop for one of a permanent object: captured
  END;
  FOREACH e IN ARRAY ends LOOP
    PERFORM pg_catalog.pg_logical_emit_message(true, $END, e);
  END LOOP;
END
$f$`,
		`CREATE OR REPLACE FUNCTION $S.on_rewrite() RETURNS event_trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $f$
DECLARE
  ctx pg_catalog.text;
  rel pg_catalog.oid;
  why pg_catalog.int4;
  c record;
  ends pg_catalog.text[] := '{}';
  e pg_catalog.text;
  found boolean;
BEGIN
  IF pg_catalog.current_setting('application_name', true) = 'pme2go-backup' AND session_user = $OWNER THEN
    RETURN;
  END IF;
  GET DIAGNOSTICS ctx = PG_CONTEXT;
  IF $MACHINERY THEN
    RETURN;
  END IF;
  <<body>>
  BEGIN
    rel := pg_catalog.pg_event_trigger_table_rewrite_oid();
    why := pg_catalog.pg_event_trigger_table_rewrite_reason();
    SELECT cl.relpersistence, pg_catalog.format('%I.%I', n.nspname, cl.relname) AS name INTO c
      FROM pg_catalog.pg_class cl JOIN pg_catalog.pg_namespace n ON n.oid = cl.relnamespace WHERE cl.oid = rel;
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_publication WHERE pubname LIKE $PUBLIKE) THEN
      EXIT body;
    END IF;
    IF c.relpersistence = 'u' AND (why & 1) <> 0 THEN
      -- ALTER TABLE … SET LOGGED: the rows the table holds were written
      -- while it was unlogged, so no change set carries them.
      EXECUTE pg_catalog.format('SELECT EXISTS (SELECT 1 FROM ONLY %s)', rel::pg_catalog.regclass) INTO found;
      IF found THEN
        ends := ends || pg_catalog.format('table %s set LOGGED by %s while holding rows written when it was unlogged: those rows are in no change set, so a restore past this point could not reproduce them',
                            c.name, pg_catalog.quote_literal(pg_catalog.left(pg_catalog.current_query(), 200)));
      END IF;
      EXIT body;
    END IF;
    IF c.relpersistence IS DISTINCT FROM 'p' THEN
      EXIT body;
    END IF;
    IF (why & 1) <> 0 THEN
      -- ALTER TABLE … SET UNLOGGED (on_guard took it out of the
      -- publication): its changes are no longer in the WAL. Empty, it is
      -- like an unlogged table created now (not covered; a restore has it
      -- empty, as PostgreSQL's own recovery leaves it); holding rows, a
      -- restore past this point would keep rows the source changes
      -- unseen from now on.
      EXECUTE pg_catalog.format('SELECT EXISTS (SELECT 1 FROM ONLY %s)', rel::pg_catalog.regclass) INTO found;
      IF found THEN
        ends := ends || pg_catalog.format('table %s set UNLOGGED by %s while holding rows: its changes are no longer written to the WAL, so no change set carries them from here on',
                            c.name, pg_catalog.quote_literal(pg_catalog.left(pg_catalog.current_query(), 200)));
      END IF;
      EXIT body;
    END IF;
    IF (why & 2) <> 0 THEN
      -- A column added with a volatile default: each row gets a value the
      -- statement's text cannot reproduce.
      ends := ends || pg_catalog.format('table %s rewritten by %s with a volatile default (for example DEFAULT gen_random_uuid() or random()): replaying the statement would give other values than the source has',
                          c.name, pg_catalog.quote_literal(pg_catalog.left(pg_catalog.current_query(), 200)));
    ELSE
      INSERT INTO $S.firing AS f (pid, qkey, rewrite)
        VALUES (pg_catalog.pg_backend_pid(), pg_catalog.md5(pg_catalog.statement_timestamp()::pg_catalog.text || ' ' || pg_catalog.current_query()), c.name || ':' || why)
        ON CONFLICT (pid, qkey) DO UPDATE SET rewrite = pg_catalog.concat_ws(',', f.rewrite, EXCLUDED.rewrite);
    END IF;
  EXCEPTION WHEN OTHERS THEN
    ends := ends || ('pme2go-backup table_rewrite trigger failed: ' || SQLERRM);
  END;
  -- Messages are emitted outside the exception block: inside it they would
  -- belong to a subtransaction and could be decoded after later changes of
  -- the statement's own transaction.
  FOREACH e IN ARRAY ends LOOP
    PERFORM pg_catalog.pg_logical_emit_message(true, $END, e);
  END LOOP;
END
$f$`,
		`CREATE OR REPLACE FUNCTION $S.on_ddl() RETURNS event_trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp SET lock_timeout = '500ms' AS $f$
DECLARE
  ctx pg_catalog.text;
  q pg_catalog.text;
  k pg_catalog.text;
  n pg_catalog.int4;
  pubs pg_catalog.text[];
  r record;
  x record;
  p pg_catalog.text;
  root pg_catalog.oid;
  reasons pg_catalog.text[] := '{}';
  unlogged pg_catalog.text[] := '{}';
  fixed pg_catalog.text[] := '{}';
  temp_only boolean;
  rewrite pg_catalog.text;
  sp pg_catalog.text;
  who pg_catalog.text;
  mp pg_catalog.text[] := '{}';
  mc pg_catalog.text[] := '{}';
  i pg_catalog.int4;
  in_ext boolean;
  dt boolean;
  dropped pg_catalog.text;
BEGIN
  IF pg_catalog.current_setting('application_name', true) = 'pme2go-backup' AND session_user = $OWNER THEN
    RETURN;
  END IF;
  GET DIAGNOSTICS ctx = PG_CONTEXT;
  -- Fired by a statement of a pme2go function (ours or another
  -- installation's, in a schema a superuser owns: a role that names its
  -- own schema pme2go_<8 hex> does not hide its DDL this way): machinery,
  -- not the application's DDL.
  IF $MACHINERY THEN
    RETURN;
  END IF;
  <<body>>
  BEGIN
    $LOCKWAIT;
    SELECT pg_catalog.array_agg(pubname::pg_catalog.text ORDER BY pubname) INTO pubs
      FROM pg_catalog.pg_publication WHERE pubname LIKE $PUBLIKE;
    IF pubs IS NULL THEN
      EXIT body; -- no chain of this installation here
    END IF;
    -- The caller's search_path, as on_start recorded it at
    -- ddl_command_start (read before any statement of ours fires on_start
    -- again). The role comes from the session itself, not from a setting
    -- the caller could change while its statement runs: SET ROLE's role,
    -- else the session user (a definer function does not change either).
    sp := coalesce(pg_catalog.current_setting($GSP, true), '');
    who := CASE WHEN pg_catalog.current_setting('role') = 'none' THEN session_user::pg_catalog.text
                ELSE pg_catalog.current_setting('role') END;
    -- A command of an extension's script: its CREATE or ALTER EXTENSION is
    -- captured on its own (replay runs the script again); its tables are
    -- still published below.
    in_ext := ctx ~ 'extension script'
              OR EXISTS (SELECT 1 FROM pg_catalog.pg_event_trigger_ddl_commands() d WHERE d.in_extension);
    q := pg_catalog.current_query();
    k := pg_catalog.md5(pg_catalog.statement_timestamp()::pg_catalog.text || ' ' || q);
    -- This firing's number within the query string, the table rewrites
    -- and whether a drop was of temporary objects only: kept in a table
    -- only these functions write (a session setting could be forged).
    SELECT f.rewrite, f.droptemp, f.dropped INTO rewrite, dt, dropped FROM $S.firing f
     WHERE f.pid = pg_catalog.pg_backend_pid() AND f.qkey = k;
    INSERT INTO $S.firing AS f (pid, qkey, n) VALUES (pg_catalog.pg_backend_pid(), k, CASE WHEN in_ext THEN 0 ELSE 1 END)
      ON CONFLICT (pid, qkey) DO UPDATE SET n = f.n + CASE WHEN in_ext THEN 0 ELSE 1 END, rewrite = NULL, droptemp = NULL, dropped = NULL
      RETURNING f.n INTO n;
    IF in_ext THEN
      n := 0;
    END IF;
    -- Earlier query strings of this session, and rows of sessions that
    -- ended (rows a prepared transaction still locks are left for later).
    DELETE FROM $S.firing WHERE ctid IN (SELECT f.ctid FROM $S.firing f
      WHERE (f.pid = pg_catalog.pg_backend_pid() AND f.qkey <> k)
         OR f.pid NOT IN (SELECT a.pid FROM pg_catalog.pg_stat_get_activity(NULL) a WHERE a.pid IS NOT NULL)
      FOR UPDATE SKIP LOCKED);
    rewrite := NULLIF(rewrite, '');

    IF pg_catalog.strpos(ctx, E'\n') > 0 AND pg_catalog.substr(ctx, pg_catalog.strpos(ctx, E'\n')) !~ 'extension script' THEN
      reasons := reasons || pg_catalog.format('%s run inside a function, procedure or DO block (%s) cannot be reproduced from its text',
        TG_TAG, pg_catalog.left(pg_catalog.regexp_replace(q, '\s+', ' ', 'g'), 200));
    END IF;

    -- Tables the command created or altered, and the partitions below them.
    FOR r IN
      SELECT DISTINCT c.oid, c.relkind, c.relpersistence, c.relispartition,
             pg_catalog.format('%I.%I', ns.nspname, c.relname) AS name
        FROM pg_catalog.pg_event_trigger_ddl_commands() d
        JOIN pg_catalog.pg_class c ON c.oid = d.objid
        JOIN pg_catalog.pg_namespace ns ON ns.oid = c.relnamespace
       WHERE d.classid = 'pg_catalog.pg_class'::pg_catalog.regclass AND c.relkind IN ('r', 'p')
         AND ns.nspname NOT IN ('pg_catalog', 'information_schema') AND ns.nspname !~ '^pg_'
         AND ns.nspname !~ '^pme2go_[0-9a-f]{8}$'
      UNION
      SELECT DISTINCT c.oid, c.relkind, c.relpersistence, c.relispartition,
             pg_catalog.format('%I.%I', ns.nspname, c.relname)
        FROM pg_catalog.pg_publication_rel pr
        JOIN pg_catalog.pg_publication pb ON pb.oid = pr.prpubid AND pb.pubname LIKE $PUBLIKE
        CROSS JOIN LATERAL (SELECT pr.prrelid AS relid
                             UNION SELECT pt.relid FROM pg_catalog.pg_partition_tree(pr.prrelid) pt) t
        JOIN pg_catalog.pg_class c ON c.oid = t.relid
        JOIN pg_catalog.pg_namespace ns ON ns.oid = c.relnamespace
       WHERE TG_TAG IN ('DROP INDEX', 'ALTER INDEX')
      UNION
      -- ALTER TABLE … DETACH PARTITION: the detached partition (reported by
      -- no DDL command) is a table of its own now, no longer published
      -- through its old root; every permanent table must stay published.
      SELECT c.oid, c.relkind, c.relpersistence, c.relispartition,
             pg_catalog.format('%I.%I', ns.nspname, c.relname)
        FROM pg_catalog.pg_class c
        JOIN pg_catalog.pg_namespace ns ON ns.oid = c.relnamespace
       WHERE TG_TAG = 'ALTER TABLE' AND c.relkind IN ('r', 'p') AND c.relpersistence = 'p' AND NOT c.relispartition
         AND ns.nspname NOT IN ('pg_catalog', 'information_schema') AND ns.nspname !~ '^pg_'
         AND ns.nspname !~ '^pme2go_[0-9a-f]{8}$'
         AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_publication_rel pr
                           JOIN pg_catalog.pg_publication pb ON pb.oid = pr.prpubid AND pb.pubname LIKE $PUBLIKE
                          WHERE pr.prrelid = c.oid)
    LOOP
      IF r.relpersistence = 't' THEN
        CONTINUE;
      END IF;
      IF r.relpersistence = 'u' THEN
        unlogged := unlogged || r.name;
        CONTINUE;
      END IF;
      IF NOT $CAPTURE AND TG_TAG IN ('CREATE TABLE', 'CREATE TABLE AS', 'SELECT INTO', 'CREATE SCHEMA')
         AND r.oid IN (SELECT d.objid FROM pg_catalog.pg_event_trigger_ddl_commands() d) THEN
        -- Without DDL capture a new table cannot be created on replay.
        reasons := reasons || pg_catalog.format('table %s created after the full backup while DDL capture is off (CAPTURE_DDL)', r.name);
        CONTINUE;
      END IF;
      -- The table that goes into the publication: itself, or the
      -- partitioned root it is published through.
      root := r.oid;
      IF r.relispartition THEN
        SELECT a.relid INTO root FROM pg_catalog.pg_partition_ancestors(r.oid) a
          JOIN pg_catalog.pg_class c ON c.oid = a.relid WHERE NOT c.relispartition;
      END IF;
      -- Unsafe: this table (a leaf) or, for a partitioned table, any leaf
      -- below it or the table itself (its future partitions).
      FOR x IN
        SELECT c.oid, pg_catalog.format('%I.%I', ns.nspname, c.relname) AS name
          FROM (SELECT r.oid AS relid UNION SELECT pt.relid FROM pg_catalog.pg_partition_tree(r.oid) pt WHERE pt.isleaf) t
          JOIN pg_catalog.pg_class c ON c.oid = t.relid
          JOIN pg_catalog.pg_namespace ns ON ns.oid = c.relnamespace
         WHERE c.relpersistence = 'p' AND NOT $S.safe(c.oid)
      LOOP
        IF $FIX THEN
          EXECUTE pg_catalog.format('ALTER TABLE %s REPLICA IDENTITY FULL', x.name);
          fixed := fixed || x.name;
        ELSE
          reasons := reasons || (pg_catalog.format('table %s has neither a primary key nor a replica identity: publishing it would make its UPDATE and DELETE fail, so it was left out (give it a primary key, or REPLICA IDENTITY FULL, or set REPLICA_IDENTITY_FIX=full, and take a new full backup)', x.name)
            || CASE WHEN TG_TAG IN ('CREATE TABLE AS', 'SELECT INTO') THEN
                 '; CREATE TABLE AS and SELECT INTO always make a table without a key, whose rows a key added by a later statement cannot bring into the change stream: create the table with its key first and fill it with INSERT … SELECT, or set REPLICA_IDENTITY_FIX=full'
               ELSE '' END);
          root := NULL;
        END IF;
      END LOOP;
      IF root IS NULL THEN
        -- Leave it out; remove what is published of it.
        root := r.oid;
        IF r.relispartition THEN
          SELECT a.relid INTO root FROM pg_catalog.pg_partition_ancestors(r.oid) a
            JOIN pg_catalog.pg_class c ON c.oid = a.relid WHERE NOT c.relispartition;
        END IF;
        FOREACH p IN ARRAY pubs LOOP
          IF EXISTS (SELECT 1 FROM pg_catalog.pg_publication_rel pr JOIN pg_catalog.pg_publication pb ON pb.oid = pr.prpubid
                      WHERE pb.pubname = p AND pr.prrelid = root) THEN
            EXECUTE pg_catalog.format('ALTER PUBLICATION %I DROP TABLE %s', p, root::pg_catalog.regclass);
          END IF;
        END LOOP;
        CONTINUE;
      END IF;
      IF r.relispartition THEN
        CONTINUE; -- published through its root (when the root is)
      END IF;
      FOREACH p IN ARRAY pubs LOOP
        IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_publication_rel pr JOIN pg_catalog.pg_publication pb ON pb.oid = pr.prpubid
                        WHERE pb.pubname = p AND pr.prrelid = r.oid) THEN
          EXECUTE pg_catalog.format('ALTER PUBLICATION %I ADD TABLE ONLY %s', p, r.name);
        END IF;
      END LOOP;
    END LOOP;

    IF pg_catalog.cardinality(reasons) > 0 THEN
      mp := mp || $END::pg_catalog.text;
      mc := mc || pg_catalog.array_to_string(reasons, '; ');
      EXIT body;
    END IF;
    IF NOT $CAPTURE OR in_ext THEN
      EXIT body;
    END IF;
    IF TG_TAG LIKE 'DROP %' THEN
      temp_only := coalesce(dt, false);
    ELSE
      SELECT pg_catalog.bool_and(coalesce(d.schema_name ~ '^pg_temp', false)) INTO temp_only
        FROM pg_catalog.pg_event_trigger_ddl_commands() d;
    END IF;
    IF temp_only THEN
      EXIT body; -- temporary objects are not captured
    END IF;
    mp := mp || $DDL::pg_catalog.text;
    mc := mc || pg_catalog.jsonb_build_object(
      'v', 2, 'query', q, 'n', n, 'tag', TG_TAG,
      'searchPath', sp, 'role', who,
      'rewrite', rewrite, 'unlogged', unlogged,
      -- What the statement touched, so that the capture matches catalog
      -- differences to it (GRANT and the like are reported by type only).
      'objects', (SELECT coalesce(pg_catalog.jsonb_agg(DISTINCT o.id), '[]'::pg_catalog.jsonb) FROM (
          SELECT d.objid::pg_catalog.int8 AS id FROM pg_catalog.pg_event_trigger_ddl_commands() d WHERE d.objid IS NOT NULL
          UNION SELECT dx::pg_catalog.int8 FROM pg_catalog.unnest(pg_catalog.string_to_array(dropped, ',')) dx WHERE dx <> '') o),
      'grants', (SELECT pg_catalog.jsonb_agg(DISTINCT d.object_type) FROM pg_catalog.pg_event_trigger_ddl_commands() d
                  WHERE d.objid IS NULL))::pg_catalog.text;
    FOREACH p IN ARRAY fixed LOOP
      mp := mp || $DDL::pg_catalog.text;
      mc := mc || pg_catalog.jsonb_build_object(
        'v', 2, 'tag', 'ALTER TABLE', 'searchPath', 'pg_catalog, pg_temp', 'role', '',
        'statement', 'ALTER TABLE ' || p || ' REPLICA IDENTITY FULL')::pg_catalog.text;
    END LOOP;
  EXCEPTION
    WHEN lock_not_available THEN
      mp := ARRAY[$END::pg_catalog.text];
      mc := ARRAY[pg_catalog.format('%s had to wait for another transaction that is changing the chain''s publication (it created or altered a table and has not committed): pme2go-backup does not wait, to keep the application from deadlocks, so the tables of this statement were not published and the chain ends here', TG_TAG)];
    WHEN OTHERS THEN
      mp := ARRAY[$END::pg_catalog.text];
      mc := ARRAY[pg_catalog.format('the pme2go-backup event trigger failed on %s: %s (%s)', TG_TAG, SQLERRM, SQLSTATE)];
  END;
  -- Messages are emitted outside the exception block: inside it they would
  -- belong to a subtransaction and could be decoded after later changes of
  -- the statement's own transaction.
  FOR i IN 1 .. pg_catalog.cardinality(mp) LOOP
    PERFORM pg_catalog.pg_logical_emit_message(true, mp[i], mc[i]);
  END LOOP;
END
$f$`,
	}
	for _, f := range []string{"safe(pg_catalog.oid)", "on_start()", "on_guard()", "on_drop()", "on_rewrite()", "on_ddl()"} {
		stmts = append(stmts, `REVOKE ALL ON FUNCTION $S.`+f+` FROM PUBLIC`)
	}
	// Default privileges (ALTER DEFAULT PRIVILEGES FOR ROLE <us> GRANT …
	// TO someone) give new schemas, tables and functions to other roles:
	// whoever could write the state table could forge which role a
	// captured statement is replayed as. Only the owner keeps privileges.
	stmts = append(stmts, `DO $d$
DECLARE s pg_catalog.oid := '$S'::pg_catalog.regnamespace; r record;
BEGIN
  FOR r IN SELECT DISTINCT a.grantee::pg_catalog.regrole::pg_catalog.text AS g
             FROM pg_catalog.pg_namespace n, pg_catalog.aclexplode(n.nspacl) a
            WHERE n.oid = s AND a.grantee NOT IN (0, n.nspowner) LOOP
    EXECUTE 'REVOKE ALL ON SCHEMA $S FROM ' || r.g;
  END LOOP;
  FOR r IN SELECT DISTINCT c.oid::pg_catalog.regclass::pg_catalog.text AS o, a.grantee::pg_catalog.regrole::pg_catalog.text AS g
             FROM pg_catalog.pg_class c, pg_catalog.aclexplode(c.relacl) a
            WHERE c.relnamespace = s AND a.grantee NOT IN (0, c.relowner) LOOP
    EXECUTE 'REVOKE ALL ON TABLE ' || r.o || ' FROM ' || r.g;
  END LOOP;
  FOR r IN SELECT DISTINCT p.oid::pg_catalog.regprocedure::pg_catalog.text AS o, a.grantee::pg_catalog.regrole::pg_catalog.text AS g
             FROM pg_catalog.pg_proc p, pg_catalog.aclexplode(p.proacl) a
            WHERE p.pronamespace = s AND a.grantee NOT IN (0, p.proowner) LOOP
    EXECUTE 'REVOKE ALL ON FUNCTION ' || r.o || ' FROM ' || r.g;
  END LOOP;
END
$d$`)
	for i := range stmts {
		stmts[i] = r.Replace(stmts[i])
	}
	return stmts
}

// eventTriggers lists the installation's event triggers: name, event,
// function.
func eventTriggers(id8 string) [][3]string {
	p := Prefix + id8
	return [][3]string{
		{p + "_start", "ddl_command_start", "on_start"},
		{p + "_guard", "ddl_command_start", "on_guard"},
		{p + "_drop", "sql_drop", "on_drop"},
		{p + "_rewrite", "table_rewrite", "on_rewrite"},
		{p + "_ddl", "ddl_command_end", "on_ddl"},
	}
}

// InstallTriggers creates (or replaces) the installation's schema,
// functions and event triggers in the connected database (see TriggerSQL for
// what they do). It needs superuser: the caller reports the error as
// the reason why DDL capture is off.
func InstallTriggers(ctx context.Context, conn *pgx.Conn, o TriggerOptions) error {
	tx, err := conn.Begin(ctx)
	if err != nil {
		return fmt.Errorf("install event triggers: %w", err)
	}
	defer tx.Rollback(context.Background())
	if err := tx.QueryRow(ctx, `SELECT session_user::text`).Scan(&o.Owner); err != nil {
		return fmt.Errorf("install event triggers: %w", err)
	}
	for _, s := range TriggerSQL(o) {
		if _, err := tx.Exec(ctx, s); err != nil {
			return fmt.Errorf("install event triggers: %w", err)
		}
	}
	for _, et := range eventTriggers(o.ID8) {
		var exists bool
		if err := tx.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_event_trigger WHERE evtname = $1)`, et[0]).Scan(&exists); err != nil {
			return fmt.Errorf("install event triggers: %w", err)
		}
		if exists {
			continue
		}
		if _, err := tx.Exec(ctx, fmt.Sprintf(`CREATE EVENT TRIGGER %s ON %s EXECUTE FUNCTION %s.%s()`,
			pgx.Identifier{et[0]}.Sanitize(), et[1], pgx.Identifier{SchemaName(o.ID8)}.Sanitize(), et[2])); err != nil {
			return fmt.Errorf("install event triggers: %w", err)
		}
	}
	if err := tx.Commit(ctx); err != nil {
		return fmt.Errorf("install event triggers: %w", err)
	}
	return nil
}

// CanInstallTriggers reports whether the connected role can create event
// triggers (superuser), and if not, why.
func CanInstallTriggers(ctx context.Context, conn *pgx.Conn) (bool, string, error) {
	var super bool
	var role string
	if err := conn.QueryRow(ctx, `SELECT rolsuper, rolname::text FROM pg_roles WHERE rolname = current_user`).Scan(&super, &role); err != nil {
		return false, "", fmt.Errorf("read the role's attributes: %w", err)
	}
	if !super {
		return false, "role " + role + " is not a superuser, which event triggers need", nil
	}
	return true, "", nil
}

// CaptureModeFor tells what a chain started now on the connected database
// would do: whether the event triggers can be installed (can), whether
// DDL is captured (capture), and a sentence saying which mode runs and
// why (for full, status and test). With CAPTURE_DDL=true and a role that
// cannot install the triggers, it returns an error with the fix.
func CaptureModeFor(ctx context.Context, conn *pgx.Conn, cfg *config.Config) (can, capture bool, mode string, err error) {
	can, why, err := CanInstallTriggers(ctx, conn)
	if err != nil {
		return false, false, "", err
	}
	switch {
	case cfg.CaptureDDLMode == "true" && !can:
		return false, false, "", fmt.Errorf("CAPTURE_DDL=true but %s; set CAPTURE_DDL=auto or false, or use a superuser DB_USER", why)
	case !can:
		return false, false, "off: " + why + " (CAPTURE_DDL=auto); schema changes end the chain and new tables are not published", nil
	case !cfg.CaptureDDL:
		return true, false, "off: CAPTURE_DDL=false; schema changes end the chain (event triggers still keep the publication safe)", nil
	}
	return true, true, "on: DDL captured by event triggers (CAPTURE_DDL=" + cfg.CaptureDDLMode + ")", nil
}

// dropTriggersIfUnused drops the installation's schema (and with it its
// functions and event triggers) from the connected database when no
// publication of the installation remains there.
func dropTriggersIfUnused(ctx context.Context, conn *pgx.Conn, id8 string) error {
	if id8 == "" {
		return nil
	}
	var pubs int
	like := strings.ReplaceAll(ObjectPrefix(id8), "_", `\_`) + "%"
	if err := conn.QueryRow(ctx, `SELECT count(*) FROM pg_publication WHERE pubname LIKE $1`, like).Scan(&pubs); err != nil {
		return fmt.Errorf("look for publications of installation %s: %w", id8, err)
	}
	if pubs > 0 {
		return nil
	}
	if _, err := conn.Exec(ctx, `DROP SCHEMA IF EXISTS `+pgx.Identifier{SchemaName(id8)}.Sanitize()+` CASCADE`); err != nil {
		return fmt.Errorf("drop schema %s (event triggers): %w", SchemaName(id8), err)
	}
	return nil
}

// MachineryProblem checks, on a connection to the chain's database, that
// what keeps the chain exact and the application safe is still there: the
// chain's publication, and (when its start installed them) the
// installation's event triggers, present and enabled for ordinary sessions
// (evtenabled O or A). It returns "" when all is well, else the reason the
// chain must end (a superuser dropped or disabled them: without the
// publication nothing is captured; without the triggers new tables and
// DDL go unseen, and a published table that loses its key would make its
// UPDATE and DELETE fail).
func MachineryProblem(ctx context.Context, conn *pgx.Conn, st *State) (string, error) {
	var pub bool
	if err := conn.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_publication WHERE pubname = $1)`, st.Publication).Scan(&pub); err != nil {
		return "", fmt.Errorf("look up publication %s: %w", st.Publication, err)
	}
	if !pub {
		return fmt.Sprintf("publication %s of the chain no longer exists (dropped by someone other than pme2go-backup, or renamed): changes are no longer captured", st.Publication), nil
	}
	if !st.Triggers || st.Installation == "" {
		return "", nil
	}
	var missing []string
	for _, et := range eventTriggers(st.Installation) {
		var enabled string
		err := conn.QueryRow(ctx, `SELECT evtenabled::text FROM pg_catalog.pg_event_trigger WHERE evtname = $1`, et[0]).Scan(&enabled)
		switch {
		case errors.Is(err, pgx.ErrNoRows):
			missing = append(missing, et[0]+" dropped")
		case err != nil:
			return "", fmt.Errorf("look up event trigger %s: %w", et[0], err)
		case enabled != "O" && enabled != "A":
			missing = append(missing, et[0]+" disabled")
		}
	}
	if len(missing) > 0 {
		return fmt.Sprintf("event triggers of pme2go-backup changed by someone else (%s): new tables and DDL are no longer seen, and a published table that lost its key would make its UPDATE and DELETE fail", strings.Join(missing, ", ")), nil
	}
	return "", nil
}

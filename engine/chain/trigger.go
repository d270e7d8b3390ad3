package chain

import (
	"context"
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
// rewrites seen and the unlogged tables created. DDL run inside a function
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
	r := strings.NewReplacer("$S", qs, "$PUBLIKE", pubLike, "$END", endPrefix, "$DDL", ddlPrefix,
		"$GSP", guc("sp"), "$GROLE", guc("role"), "$GQKEY", guc("qkey"), "$GQN", guc("qn"),
		"$GDROPTEMP", guc("droptemp"), "$OWNER", lit(o.Owner), "$GREWRITE", guc("rewrite"), "$CAPTURE", capture, "$FIX", fix)
	stmts := []string{
		`CREATE SCHEMA IF NOT EXISTS $S`,
		`REVOKE ALL ON SCHEMA $S FROM PUBLIC`,
		`COMMENT ON SCHEMA $S IS 'pme2go-backup: change capture machinery of one installation; dropped with its last chain'`,
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
  PERFORM pg_catalog.set_config($GROLE, current_user::pg_catalog.text, false);
EXCEPTION WHEN OTHERS THEN
  NULL;
END
$f$`,
		`CREATE OR REPLACE FUNCTION $S.on_drop() RETURNS event_trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $f$
DECLARE
  tmp boolean;
BEGIN
  SELECT pg_catalog.bool_and(d.is_temporary) INTO tmp FROM pg_catalog.pg_event_trigger_dropped_objects() d;
  PERFORM pg_catalog.set_config($GDROPTEMP, CASE WHEN tmp THEN 'on' ELSE 'off' END, false);
EXCEPTION WHEN OTHERS THEN
  NULL;
END
$f$`,
		`CREATE OR REPLACE FUNCTION $S.on_rewrite() RETURNS event_trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $f$
DECLARE
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
    IF (why & 2) <> 0 THEN
      -- A column added with a volatile default: each row gets a value the
      -- statement's text cannot reproduce.
      ends := ends || pg_catalog.format('table %s rewritten by %s with a volatile default (for example DEFAULT gen_random_uuid() or random()): replaying the statement would give other values than the source has',
                          c.name, pg_catalog.quote_literal(pg_catalog.left(pg_catalog.current_query(), 200)));
    ELSE
      PERFORM pg_catalog.set_config($GREWRITE,
        pg_catalog.concat_ws(',', NULLIF(pg_catalog.current_setting($GREWRITE, true), ''), c.name || ':' || why), false);
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
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $f$
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
BEGIN
  IF pg_catalog.current_setting('application_name', true) = 'pme2go-backup' AND session_user = $OWNER THEN
    RETURN;
  END IF;
  GET DIAGNOSTICS ctx = PG_CONTEXT;
  -- Fired by a statement of a pme2go function (ours or another
  -- installation's, in a schema a superuser owns: a role that names its
  -- own schema pme2go_<8 hex> does not hide its DDL this way): machinery,
  -- not the application's DDL.
  IF pg_catalog.strpos(ctx, E'\n') > 0
     AND EXISTS (SELECT 1 FROM pg_catalog.pg_namespace n JOIN pg_catalog.pg_roles o ON o.oid = n.nspowner
                  WHERE o.rolsuper AND n.nspname = pg_catalog.substring(pg_catalog.substr(ctx, pg_catalog.strpos(ctx, E'\n')),
                        'function (pme2go_[0-9a-f]{8})\.')::pg_catalog.name) THEN
    RETURN;
  END IF;
  <<body>>
  BEGIN
    SELECT pg_catalog.array_agg(pubname::pg_catalog.text ORDER BY pubname) INTO pubs
      FROM pg_catalog.pg_publication WHERE pubname LIKE $PUBLIKE;
    IF pubs IS NULL THEN
      EXIT body; -- no chain of this installation here
    END IF;
    -- The caller's search_path and role, as on_start recorded them at
    -- ddl_command_start (read before any statement of ours fires on_start
    -- again).
    sp := coalesce(pg_catalog.current_setting($GSP, true), '');
    who := coalesce(pg_catalog.current_setting($GROLE, true), '');
    -- A command of an extension's script: its CREATE or ALTER EXTENSION is
    -- captured on its own (replay runs the script again); its tables are
    -- still published below.
    in_ext := ctx ~ 'extension script'
              OR EXISTS (SELECT 1 FROM pg_catalog.pg_event_trigger_ddl_commands() d WHERE d.in_extension);
    q := pg_catalog.current_query();
    k := pg_catalog.md5(pg_catalog.statement_timestamp()::pg_catalog.text || ' ' || q);
    IF in_ext THEN
      n := 0;
    ELSIF pg_catalog.current_setting($GQKEY, true) IS DISTINCT FROM k THEN
      n := 1;
    ELSE
      n := pg_catalog.current_setting($GQN)::pg_catalog.int4 + 1;
    END IF;
    IF NOT in_ext THEN
      PERFORM pg_catalog.set_config($GQKEY, k, false);
      PERFORM pg_catalog.set_config($GQN, n::pg_catalog.text, false);
    END IF;
    rewrite := NULLIF(pg_catalog.current_setting($GREWRITE, true), '');
    PERFORM pg_catalog.set_config($GREWRITE, '', false);

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
          reasons := reasons || pg_catalog.format('table %s has neither a primary key nor a replica identity: publishing it would make its UPDATE and DELETE fail, so it was left out (give it a primary key, or REPLICA IDENTITY FULL, or set REPLICA_IDENTITY_FIX=full, and take a new full backup)', x.name);
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
      temp_only := pg_catalog.current_setting($GDROPTEMP, true) = 'on';
      PERFORM pg_catalog.set_config($GDROPTEMP, '', false);
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
      'rewrite', rewrite, 'unlogged', unlogged)::pg_catalog.text;
    FOREACH p IN ARRAY fixed LOOP
      mp := mp || $DDL::pg_catalog.text;
      mc := mc || pg_catalog.jsonb_build_object(
        'v', 2, 'tag', 'ALTER TABLE', 'searchPath', 'pg_catalog, pg_temp', 'role', '',
        'statement', 'ALTER TABLE ' || p || ' REPLICA IDENTITY FULL')::pg_catalog.text;
    END LOOP;
  EXCEPTION WHEN OTHERS THEN
    mp := '{}';
    mc := '{}';
    mp := mp || $END::pg_catalog.text;
    mc := mc || pg_catalog.format('the pme2go-backup event trigger failed on %s: %s (%s)', TG_TAG, SQLERRM, SQLSTATE);
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
	for _, f := range []string{"safe(pg_catalog.oid)", "on_start()", "on_drop()", "on_rewrite()", "on_ddl()"} {
		stmts = append(stmts, `REVOKE ALL ON FUNCTION $S.`+f+` FROM PUBLIC`)
	}
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

package apply

import (
	"bytes"
	"context"
	"fmt"
	"strconv"
	"strings"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/pme2go/pme2go-backup/engine/changeset"
)

// How replay keeps code that a table owner planted from running with the
// restorer's (superuser) privileges:
//
//   - The session runs with search_path = pg_catalog, pg_temp; every type
//     outside pg_catalog is schema-qualified (capture records qualified type
//     names, see changeset.Relation.QualifiedTypes) and every operator is
//     written OPERATOR(schema.op), so no name resolves to an object a user
//     created.
//   - A table whose changes can run code written by a role that is not a
//     superuser (a CHECK constraint, an index expression or predicate, a
//     generated column, a partition key, a domain constraint or a range type
//     function reached through a column's type, that calls a function not
//     built into PostgreSQL and not a C function owned by a superuser) has
//     its changes applied with the privileges of its owner, as PostgreSQL
//     16's logical replication apply does. SET ROLE would not do: code run
//     under SET ROLE may RESET ROLE and be superuser again. So the statement
//     runs inside a SECURITY DEFINER function owned by the table's owner
//     (replaySchema.as_<owner oid>), where PostgreSQL refuses SET ROLE and
//     SET SESSION AUTHORIZATION. An event trigger keeps any role but a
//     superuser from changing our functions, and the function checks after
//     each statement that the session's prepared statements are as they
//     were and puts back the session settings replay relies on.
//   - Tables whose changes can run no such code are written directly, as
//     before (no role switch, no extra cost).
//   - Triggers, rules and event triggers are switched off in the scratch
//     database for the replay and their exact enable state is put back
//     before the swap (usercode.go).

// replaySchema holds, in the scratch database only and only during the
// replay, the owner functions, the guard event trigger and the recorded
// enable states. It is dropped before the swap.
const replaySchema = "pme2go_replay"

// sessionSettings are the settings replay relies on, put back after each
// statement that ran an owner's code (which may change them).
type sessionSettings struct {
	names, values []string
}

// replaySettings are set at the start of replay; clientSettings are kept
// at the connection's values and put back likewise.
var (
	replaySettings = [][2]string{
		{"search_path", "pg_catalog, pg_temp"},
		{"DateStyle", "ISO, YMD"}, {"IntervalStyle", "postgres"}, {"extra_float_digits", "3"},
		{"statement_timeout", "0"}, {"lock_timeout", "0"}, {"idle_in_transaction_session_timeout", "0"},
		{"row_security", "off"}, {"synchronous_commit", "off"},
		{"standard_conforming_strings", "on"}, {"array_nulls", "on"}, {"xmloption", "content"},
		{"bytea_output", "hex"}, {"transform_null_equals", "off"}, {"default_transaction_read_only", "off"},
		{"check_function_bodies", "on"},
		// Catalog queries of replay (owner tables) and grouped statements
		// have large cost estimates: JIT compiling them costs seconds and
		// gains nothing.
		{"jit", "off"},
		// Grouped statements join an unnest of their keys with the
		// table: a generic plan (unnest estimated at 100 rows) looks each
		// key up in the key's index, where a custom plan for a large
		// group may choose to scan the whole table.
		{"plan_cache_mode", "force_generic_plan"},
	}
	clientSettings = []string{"client_encoding", "TimeZone", "lc_monetary"}
)

// setupSession applies replaySettings to the replay session (after
// session_replication_role) and returns the full list to put back,
// together with the database's own search_path (to resolve type names of
// change sets written before types were recorded qualified).
func setupSession(ctx context.Context, conn *pgconn.PgConn) (*sessionSettings, string, error) {
	res, err := conn.Exec(ctx, "SELECT pg_catalog.current_setting('search_path')").ReadAll()
	if err != nil {
		return nil, "", fmt.Errorf("read search_path: %w", err)
	}
	dbPath := string(res[0].Rows[0][0])
	st := &sessionSettings{}
	for _, kv := range replaySettings {
		if err := conn.Exec(ctx, "SELECT pg_catalog.set_config("+quoteLit(kv[0])+", "+quoteLit(kv[1])+", false)").Close(); err != nil {
			return nil, "", fmt.Errorf("prepare replay session (set %s = %s): %w", kv[0], kv[1], err)
		}
		st.names, st.values = append(st.names, kv[0]), append(st.values, kv[1])
	}
	for _, n := range clientSettings {
		res, err := conn.Exec(ctx, "SELECT pg_catalog.current_setting("+quoteLit(n)+")").ReadAll()
		if err != nil {
			return nil, "", fmt.Errorf("read setting %s: %w", n, err)
		}
		st.names, st.values = append(st.names, n), append(st.values, string(res[0].Rows[0][0]))
	}
	return st, dbPath, nil
}

// quoteLit quotes a string literal (standard_conforming_strings on).
func quoteLit(s string) string { return "'" + strings.ReplaceAll(s, "'", "''") + "'" }

// stmtBuilder numbers a statement's parameters: $1, $2, … for a statement
// sent directly; $1[1], $1[2], … (elements of one text[]) for a statement
// run by an owner function with EXECUTE … USING.
type stmtBuilder struct {
	wrapped bool
	params  [][]byte // nil for NULL
}

// param adds a parameter (nil data is NULL) and returns its reference.
func (b *stmtBuilder) param(data []byte) string {
	b.params = append(b.params, data)
	n := strconv.Itoa(len(b.params))
	if b.wrapped {
		return "$1[" + n + "]"
	}
	return "$" + n
}

// textArray renders params as a text[] literal.
func textArray(params [][]byte) []byte {
	var buf bytes.Buffer
	buf.WriteByte('{')
	for i, p := range params {
		if i > 0 {
			buf.WriteByte(',')
		}
		if p == nil {
			buf.WriteString("NULL")
			continue
		}
		buf.WriteByte('"')
		for _, c := range p {
			if c == '"' || c == '\\' {
				buf.WriteByte('\\')
			}
			buf.WriteByte(c)
		}
		buf.WriteByte('"')
	}
	buf.WriteByte('}')
	return buf.Bytes()
}

// queueDML queues an insert, update or delete that must change exactly
// one row: directly, or, for a table in t, through its owner's function.
func (w *writer) queueDML(ctx context.Context, t *tableInfo, q string, b *stmtBuilder) error {
	return w.queueRows(ctx, t, q, b.params, 1)
}

// queueRows queues a statement with parameters params that must change
// exactly want rows: directly, or, for a table in t, through its owner's
// function (the statement then refers to its parameters as $1[1], $1[2],
// …, see stmtBuilder).
func (w *writer) queueRows(ctx context.Context, t *tableInfo, q string, params [][]byte, want int64) error {
	if t == nil {
		return w.queueNamed(ctx, request{q: q, params: params, prepared: true}, expOneRow, q, want)
	}
	r := request{q: "SELECT " + t.fn + "($1::pg_catalog.text, $2::pg_catalog.text[])",
		params: [][]byte{[]byte(q), textArray(params)}, prepared: true}
	// Name the statement itself, not the call, in errors.
	return w.queueNamed(ctx, r, expOneRowFn, q+" (as the owner of the table)", want)
}

// typeKey identifies a column type as a change set names it.
type typeKey struct {
	name string
	mod  int32
	old  bool // named under the capture session's search_path
}

// typeInfo says how replay writes values and key comparisons of a type.
type typeInfo struct {
	cast   string // type name for casts; "" for none
	eqType string // when set, keys are compared as this type …
	eqOp   string // … with this operator, OPERATOR(schema.=)
}

const pgEq = "OPERATOR(pg_catalog.=)"

// castSuffix returns "::type", or "" when the type is unknown.
func (t typeInfo) castSuffix() string {
	if t.cast == "" {
		return ""
	}
	return "::" + t.cast
}

// qualified reports whether a format_type name carries a schema: a dot
// outside double quotes and parentheses.
func qualified(name string) bool {
	quoted, depth := false, 0
	for i := 0; i < len(name); i++ {
		switch c := name[i]; {
		case c == '"':
			quoted = !quoted
		case quoted:
		case c == '(':
			depth++
		case c == ')':
			depth--
		case c == '.' && depth == 0:
			return true
		}
	}
	return false
}

// typeOf returns how to write column i of rel. Types in pg_catalog (named
// without a schema by a QualifiedTypes record) need no look-up; others are
// looked up in the target once: their key comparison uses the equality
// operator of their default B-tree operator class (citext's, say) when it
// is not pg_catalog's. Names recorded under the capture session's
// search_path (old change sets) are resolved under the database's own
// search_path and then written schema-qualified.
func (w *writer) typeOf(ctx context.Context, rel *changeset.Relation, i int) (typeInfo, error) {
	ri := w.rel(rel)
	if i < len(ri.types) && ri.types[i].eqOp != "" {
		return ri.types[i], nil
	}
	ti, err := w.lookupColumn(ctx, rel, i)
	if err != nil {
		return ti, err
	}
	if i < len(ri.types) {
		ri.types[i] = ti
	}
	return ti, nil
}

// relInfo caches, per Relation record, what the writer looked up for it.
type relInfo struct {
	types      []typeInfo // by column; eqOp "" until looked up
	table      *tableInfo
	tableKnown bool
	noGroup    bool // updates are not grouped (see group.go)
	groupKnown bool
}

// rel returns the cache entry of rel (dropped after DDL, and when many
// Relation records were seen).
func (w *writer) rel(rel *changeset.Relation) *relInfo {
	ri, ok := w.rels[rel]
	if !ok {
		if len(w.rels) >= 10000 {
			clear(w.rels)
		}
		ri = &relInfo{types: make([]typeInfo, len(rel.Columns))}
		w.rels[rel] = ri
	}
	return ri
}

// lookupColumn is typeOf without the per-Relation cache.
func (w *writer) lookupColumn(ctx context.Context, rel *changeset.Relation, i int) (typeInfo, error) {
	if i >= len(rel.Columns) {
		return typeInfo{eqOp: pgEq}, nil
	}
	c := rel.Columns[i]
	if c.TypeName == "" {
		return typeInfo{eqOp: pgEq}, nil
	}
	k := typeKey{name: c.TypeName, mod: c.TypeMod, old: !rel.QualifiedTypes}
	if ti, ok := w.types[k]; ok {
		return ti, nil
	}
	if !k.old && !qualified(c.TypeName) {
		ti := typeInfo{cast: c.TypeName, eqOp: pgEq}
		w.types[k] = ti
		return ti, nil
	}
	ti, err := w.lookupType(ctx, k)
	if err != nil {
		return typeInfo{}, w.failf("column %s of %s: %w", c.Name, rel.QualifiedName(), err)
	}
	w.types[k] = ti
	return ti, nil
}

// lookupType resolves a type name in the target.
func (w *writer) lookupType(ctx context.Context, k typeKey) (typeInfo, error) {
	if err := w.flush(ctx); err != nil {
		return typeInfo{}, err
	}
	if err := w.drain(ctx); err != nil {
		return typeInfo{}, err
	}
	var oid []byte
	if k.old {
		// to_regtype only reads the catalog. pg_temp is searched last.
		path := w.dbPath
		if !strings.Contains(path, "pg_temp") {
			path += ", pg_temp"
		}
		res, err := w.conn.Exec(ctx, "SELECT pg_catalog.set_config('search_path', "+quoteLit(path)+", false); "+
			"SELECT pg_catalog.to_regtype("+quoteLit(k.name)+")::pg_catalog.oid; "+
			"SELECT pg_catalog.set_config('search_path', 'pg_catalog, pg_temp', false)").ReadAll()
		if err != nil {
			return typeInfo{}, fmt.Errorf("resolve type %s: %w", k.name, err)
		}
		if len(res) == 3 && len(res[1].Rows) == 1 {
			oid = res[1].Rows[0][0]
		}
	} else {
		res := w.conn.ExecParams(ctx, "SELECT pg_catalog.to_regtype($1)::pg_catalog.oid", [][]byte{[]byte(k.name)}, nil, nil, nil).Read()
		if res.Err != nil {
			return typeInfo{}, fmt.Errorf("resolve type %s: %w", k.name, res.Err)
		}
		if len(res.Rows) == 1 {
			oid = res.Rows[0][0]
		}
	}
	if oid == nil {
		return typeInfo{}, fmt.Errorf("type %s does not exist in the restored database", k.name)
	}
	res := w.conn.ExecParams(ctx, `WITH RECURSIVE b(oid, base, depth) AS (
		SELECT t.oid, t.typbasetype, 0 FROM pg_catalog.pg_type t WHERE t.oid = $1::pg_catalog.oid
		UNION ALL
		SELECT t.oid, t.typbasetype, b.depth + 1 FROM pg_catalog.pg_type t JOIN b ON t.oid = b.base WHERE b.depth < 100)
	SELECT pg_catalog.format_type($1::pg_catalog.oid, $2::pg_catalog.int4),
	  (SELECT pg_catalog.format_type(oc.opcintype, NULL) FROM pg_catalog.pg_opclass oc
	     JOIN pg_catalog.pg_am am ON am.oid = oc.opcmethod AND am.amname = 'btree'
	     JOIN pg_catalog.pg_amop ao ON ao.amopfamily = oc.opcfamily AND ao.amopstrategy = 3
	          AND ao.amoplefttype = oc.opcintype AND ao.amoprighttype = oc.opcintype
	     JOIN pg_catalog.pg_operator o ON o.oid = ao.amopopr
	    WHERE oc.opcdefault AND oc.opcintype = (SELECT oid FROM b ORDER BY depth DESC LIMIT 1)
	      AND o.oprnamespace <> 'pg_catalog'::pg_catalog.regnamespace LIMIT 1),
	  (SELECT pg_catalog.format('OPERATOR(%I.%s)', n.nspname, o.oprname) FROM pg_catalog.pg_opclass oc
	     JOIN pg_catalog.pg_am am ON am.oid = oc.opcmethod AND am.amname = 'btree'
	     JOIN pg_catalog.pg_amop ao ON ao.amopfamily = oc.opcfamily AND ao.amopstrategy = 3
	          AND ao.amoplefttype = oc.opcintype AND ao.amoprighttype = oc.opcintype
	     JOIN pg_catalog.pg_operator o ON o.oid = ao.amopopr
	     JOIN pg_catalog.pg_namespace n ON n.oid = o.oprnamespace
	    WHERE oc.opcdefault AND oc.opcintype = (SELECT oid FROM b ORDER BY depth DESC LIMIT 1)
	      AND o.oprnamespace <> 'pg_catalog'::pg_catalog.regnamespace LIMIT 1)`,
		[][]byte{oid, []byte(strconv.Itoa(int(k.mod)))}, nil, nil, nil).Read()
	if res.Err != nil {
		return typeInfo{}, fmt.Errorf("look up type %s: %w", k.name, res.Err)
	}
	if len(res.Rows) != 1 {
		return typeInfo{}, fmt.Errorf("type %s does not exist in the restored database", k.name)
	}
	row := res.Rows[0]
	ti := typeInfo{cast: string(row[0]), eqOp: pgEq}
	if row[1] != nil && row[2] != nil {
		ti.eqType, ti.eqOp = string(row[1]), string(row[2])
	}
	return ti, nil
}

// tableInfo is a table whose changes run with its owner's privileges.
type tableInfo struct {
	fn string // owner function, schema-qualified
}

// table returns the owner function of rel's table, or nil when its changes
// can run no code of a role that is not a superuser (or its owner is a
// superuser) and are written directly.
func (w *writer) table(ctx context.Context, rel *changeset.Relation) (*tableInfo, error) {
	ri := w.rel(rel)
	if ri.tableKnown {
		return ri.table, nil
	}
	if w.tables == nil {
		if err := w.flush(ctx); err != nil {
			return nil, err
		}
		if err := w.drain(ctx); err != nil {
			return nil, err
		}
		m, err := ownerTables(ctx, w.conn, w.setup)
		if err != nil {
			return nil, w.failf("%w", err)
		}
		u, err := uniqueTables(ctx, w.conn)
		if err != nil {
			return nil, w.failf("%w", err)
		}
		w.tables, w.uniques = m, u
	}
	ri.table, ri.tableKnown = w.tables[rel.QualifiedName()], true
	return ri.table, nil
}

// uniqueTables returns the tables (schema-qualified, quoted) with a unique
// index or an exclusion constraint besides their replica identity: an
// update of several rows in one statement could violate it where the
// source's updates one after the other did not, so their updates are not
// grouped.
func uniqueTables(ctx context.Context, conn *pgconn.PgConn) (map[string]bool, error) {
	res := conn.ExecParams(ctx, `SELECT DISTINCT n.nspname, c.relname FROM pg_catalog.pg_index i
		JOIN pg_catalog.pg_class c ON c.oid = i.indrelid
		JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
		WHERE c.relkind IN ('r', 'p') AND (i.indisunique OR i.indisexclusion)
		  AND NOT (c.relreplident = 'd' AND i.indisprimary) AND NOT (c.relreplident = 'i' AND i.indisreplident)`, nil, nil, nil, nil).Read()
	if res.Err != nil {
		return nil, fmt.Errorf("find the tables with unique indexes: %w", res.Err)
	}
	m := map[string]bool{}
	for _, row := range res.Rows {
		m[changeset.QuoteIdent(string(row[0]))+"."+changeset.QuoteIdent(string(row[1]))] = true
	}
	return m, nil
}

// untrustedTablesSQL lists the tables (relkind r, p) whose inserts, updates
// and deletes can run code of a role that is not a superuser, with their
// owner when that owner is not a superuser. Trusted code: functions in
// pg_catalog, and C or internal functions owned by a superuser. Reached
// from a table: its CHECK, unique, primary-key and exclusion constraints,
// its indexes (expressions, predicates), its generated columns, the
// partition keys of it and its ancestors, and the types of its columns
// (domain constraints, base, element, composite attribute and range
// subtypes, range canonical and subtype_diff functions), transitively.
const untrustedTablesSQL = `WITH RECURSIVE
untrusted_fn AS (
  SELECT p.oid FROM pg_catalog.pg_proc p
   WHERE p.pronamespace <> 'pg_catalog'::pg_catalog.regnamespace
     AND NOT (p.prolang IN (SELECT l.oid FROM pg_catalog.pg_language l WHERE l.lanname IN ('c', 'internal'))
              AND EXISTS (SELECT 1 FROM pg_catalog.pg_roles r WHERE r.oid = p.proowner AND r.rolsuper))),
untrusted_op AS (
  SELECT o.oid FROM pg_catalog.pg_operator o WHERE o.oprcode IN (SELECT oid FROM untrusted_fn)),
dep_fn AS (
  SELECT d.classid, d.objid FROM pg_catalog.pg_depend d
   WHERE (d.refclassid = 'pg_catalog.pg_proc'::pg_catalog.regclass AND d.refobjid IN (SELECT oid FROM untrusted_fn))
      OR (d.refclassid = 'pg_catalog.pg_operator'::pg_catalog.regclass AND d.refobjid IN (SELECT oid FROM untrusted_op))),
bad_type(oid) AS (
  SELECT c.contypid FROM pg_catalog.pg_constraint c
   WHERE c.contypid <> 0 AND c.oid IN (SELECT objid FROM dep_fn WHERE classid = 'pg_catalog.pg_constraint'::pg_catalog.regclass)
  UNION
  SELECT r.rngtypid FROM pg_catalog.pg_range r
   WHERE r.rngcanonical IN (SELECT oid FROM untrusted_fn) OR r.rngsubdiff IN (SELECT oid FROM untrusted_fn)
  UNION
  SELECT t.oid FROM bad_type b, pg_catalog.pg_type t
   WHERE t.typbasetype = b.oid OR t.typelem = b.oid
      OR (t.typrelid <> 0 AND EXISTS (SELECT 1 FROM pg_catalog.pg_attribute a WHERE a.attrelid = t.typrelid AND a.atttypid = b.oid AND a.attnum > 0))
      OR EXISTS (SELECT 1 FROM pg_catalog.pg_range r WHERE (r.rngtypid = t.oid AND r.rngsubtype = b.oid) OR (r.rngmultitypid = t.oid AND r.rngtypid = b.oid))
      OR EXISTS (SELECT 1 FROM pg_catalog.pg_constraint c JOIN pg_catalog.pg_depend d
                   ON d.classid = 'pg_catalog.pg_constraint'::pg_catalog.regclass AND d.objid = c.oid
                  AND d.refclassid = 'pg_catalog.pg_type'::pg_catalog.regclass
                WHERE c.contypid = t.oid AND d.refobjid = b.oid)),
bad_obj AS (
  SELECT classid, objid FROM dep_fn
  UNION
  SELECT d.classid, d.objid FROM pg_catalog.pg_depend d
   WHERE d.refclassid = 'pg_catalog.pg_type'::pg_catalog.regclass AND d.refobjid IN (SELECT oid FROM bad_type))
SELECT n.nspname, c.relname, c.relowner::pg_catalog.int8, pg_catalog.quote_ident(o.rolname)
  FROM pg_catalog.pg_class c
  JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
  JOIN pg_catalog.pg_roles o ON o.oid = c.relowner
 WHERE c.relkind IN ('r', 'p') AND NOT o.rolsuper
   AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg\_toast%'
   AND (EXISTS (SELECT 1 FROM pg_catalog.pg_attribute a WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
                  AND a.atttypid IN (SELECT oid FROM bad_type))
     OR EXISTS (SELECT 1 FROM pg_catalog.pg_constraint k WHERE k.conrelid = c.oid AND k.contype <> 'f'
                  AND k.oid IN (SELECT objid FROM bad_obj WHERE classid = 'pg_catalog.pg_constraint'::pg_catalog.regclass))
     OR EXISTS (SELECT 1 FROM pg_catalog.pg_index i WHERE i.indrelid = c.oid
                  AND i.indexrelid IN (SELECT objid FROM bad_obj WHERE classid = 'pg_catalog.pg_class'::pg_catalog.regclass))
     OR EXISTS (SELECT 1 FROM pg_catalog.pg_attrdef ad JOIN pg_catalog.pg_attribute a ON a.attrelid = ad.adrelid AND a.attnum = ad.adnum
                 WHERE ad.adrelid = c.oid AND a.attgenerated <> ''
                   AND ad.oid IN (SELECT objid FROM bad_obj WHERE classid = 'pg_catalog.pg_attrdef'::pg_catalog.regclass))
     OR EXISTS (SELECT 1 FROM pg_catalog.pg_partition_ancestors(c.oid) pa
                 WHERE pa.relid IN (SELECT objid FROM bad_obj WHERE classid = 'pg_catalog.pg_class'::pg_catalog.regclass)))`

// UntrustedTablesSQL is untrustedTablesSQL, for the restore's data load,
// which writes the same tables with their owner's privileges
// (engine/restore, ownerload.go). Columns: schema, table, owner OID,
// owner (quoted).
const UntrustedTablesSQL = untrustedTablesSQL

// UntrustedSchemaSQL returns why schema $1 (OID) may not be on the
// search_path under which code runs with the privileges of a role that
// trusts only role $2 (OID) and superusers (no row: it may): a role may
// create objects in it (its owner, a role holding CREATE on it;
// pg_database_owner stands for the database's owner), or a function,
// operator, relation, type, collation, conversion or text search object in
// it belongs to a role, that is neither a superuser nor a member of $2.
// Such a role could plant an object there (an exact-match overload beats
// pg_catalog's, CVE-2018-1058) that unqualified names then reach. The
// restore (engine/restore, userfuncs.go) and the drill's checks use it.
const UntrustedSchemaSQL = `
WITH creators AS (
  SELECT CASE WHEN r.rolname = 'pg_database_owner'
              THEN (SELECT d.datdba FROM pg_catalog.pg_database d WHERE d.datname = pg_catalog.current_database())
              ELSE r.oid END AS who, r.rolname AS via
    FROM pg_catalog.pg_roles r
   WHERE pg_catalog.has_schema_privilege(r.oid, $1::pg_catalog.oid, 'CREATE')),
objects AS (
  SELECT 'function ' || p.oid::pg_catalog.regprocedure::pg_catalog.text AS what, p.proowner AS who FROM pg_catalog.pg_proc p WHERE p.pronamespace = $1::pg_catalog.oid
  UNION ALL SELECT 'operator ' || o.oid::pg_catalog.regoperator::pg_catalog.text, o.oprowner FROM pg_catalog.pg_operator o WHERE o.oprnamespace = $1::pg_catalog.oid
  UNION ALL SELECT 'relation ' || c.oid::pg_catalog.regclass::pg_catalog.text, c.relowner FROM pg_catalog.pg_class c WHERE c.relnamespace = $1::pg_catalog.oid
  UNION ALL SELECT 'type ' || t.oid::pg_catalog.regtype::pg_catalog.text, t.typowner FROM pg_catalog.pg_type t WHERE t.typnamespace = $1::pg_catalog.oid
  UNION ALL SELECT 'collation ' || c.collname::pg_catalog.text, c.collowner FROM pg_catalog.pg_collation c WHERE c.collnamespace = $1::pg_catalog.oid
  UNION ALL SELECT 'conversion ' || c.conname::pg_catalog.text, c.conowner FROM pg_catalog.pg_conversion c WHERE c.connamespace = $1::pg_catalog.oid
  UNION ALL SELECT 'text search configuration ' || c.cfgname::pg_catalog.text, c.cfgowner FROM pg_catalog.pg_ts_config c WHERE c.cfgnamespace = $1::pg_catalog.oid
  UNION ALL SELECT 'text search dictionary ' || d.dictname::pg_catalog.text, d.dictowner FROM pg_catalog.pg_ts_dict d WHERE d.dictnamespace = $1::pg_catalog.oid),
why AS (
  SELECT 1 AS k, 'role ' || pg_catalog.quote_ident(r.rolname) ||
         CASE WHEN c.via <> r.rolname THEN ' (as ' || c.via || ')' ELSE '' END || ' may create objects in it' AS reason
    FROM creators c JOIN pg_catalog.pg_roles r ON r.oid = c.who
   WHERE NOT r.rolsuper AND NOT pg_catalog.pg_has_role(r.oid, $2::pg_catalog.oid, 'MEMBER')
  UNION ALL
  SELECT 2, o.what || ' belongs to role ' || pg_catalog.quote_ident(r.rolname)
    FROM objects o JOIN pg_catalog.pg_roles r ON r.oid = o.who
   WHERE NOT r.rolsuper AND NOT pg_catalog.pg_has_role(r.oid, $2::pg_catalog.oid, 'MEMBER'))
SELECT reason FROM why ORDER BY k, reason LIMIT 1`

// ownerTables classifies the target's tables (untrustedTablesSQL) and
// makes sure an owner function exists for each owner concerned.
func ownerTables(ctx context.Context, conn *pgconn.PgConn, st *sessionSettings) (map[string]*tableInfo, error) {
	res := conn.ExecParams(ctx, untrustedTablesSQL, nil, nil, nil, nil).Read()
	if res.Err != nil {
		return nil, fmt.Errorf("find the tables whose changes run their owner's code: %w", res.Err)
	}
	m := map[string]*tableInfo{}
	fns := map[string]string{}
	for _, row := range res.Rows {
		owner := string(row[2])
		fn, ok := fns[owner]
		if !ok {
			var err error
			if fn, err = ownerFunction(ctx, conn, owner, string(row[3]), st); err != nil {
				return nil, err
			}
			fns[owner] = fn
		}
		m[changeset.QuoteIdent(string(row[0]))+"."+changeset.QuoteIdent(string(row[1]))] = &tableInfo{fn: fn}
	}
	return m, nil
}

// ownerFunction creates (or replaces) the SECURITY DEFINER function that
// runs a statement as the role with OID owner, and returns its name. It
// runs the statement with EXECUTE … USING the text[] of its parameters and
// returns the rows it changed; then it fails if the session's prepared
// statements changed (the owner's code could have replaced one of replay's
// with its own, to be run later as the superuser) and puts back the
// session settings (which the owner's code could have changed).
func ownerFunction(ctx context.Context, conn *pgconn.PgConn, owner, ownerIdent string, st *sessionSettings) (string, error) {
	if _, err := strconv.ParseUint(owner, 10, 32); err != nil {
		return "", fmt.Errorf("owner OID %q", owner)
	}
	name := replaySchema + ".as_" + owner
	var restore []string
	for i, n := range st.names {
		restore = append(restore, "("+quoteLit(n)+", "+quoteLit(st.values[i])+")")
	}
	body := `DECLARE n pg_catalog.int8; before pg_catalog.text; after pg_catalog.text;
BEGIN
  SELECT pg_catalog.string_agg(name || ' ' || statement, ' ' ORDER BY name) INTO before FROM pg_catalog.pg_prepared_statements;
  EXECUTE q USING a;
  GET DIAGNOSTICS n = ROW_COUNT;
  SELECT pg_catalog.string_agg(name || ' ' || statement, ' ' ORDER BY name) INTO after FROM pg_catalog.pg_prepared_statements;
  IF before IS DISTINCT FROM after THEN
    RAISE EXCEPTION 'code of the table''s owner changed the prepared statements of the replay session; replay refuses to continue';
  END IF;
  PERFORM pg_catalog.set_config(s.n, s.v, false) FROM (VALUES ` + strings.Join(restore, ", ") + `) AS s(n, v);
  RETURN n;
END`
	q := "CREATE OR REPLACE FUNCTION " + name + "(q pg_catalog.text, a pg_catalog.text[]) RETURNS pg_catalog.int8 LANGUAGE plpgsql SECURITY DEFINER AS " +
		quoteLit(body) + "; " +
		"ALTER FUNCTION " + name + "(pg_catalog.text, pg_catalog.text[]) OWNER TO " + ownerIdent + "; " +
		"REVOKE ALL ON FUNCTION " + name + "(pg_catalog.text, pg_catalog.text[]) FROM PUBLIC"
	if err := conn.Exec(ctx, q).Close(); err != nil {
		return "", fmt.Errorf("create the function that applies changes as the role with OID %s: %w", owner, err)
	}
	return name, nil
}

package chain

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
)

// CatalogPrint is a fingerprint of a database's schema: one entry per
// object (schema, relation with its columns, defaults, constraints,
// indexes, triggers, rules and policies, type with its enum labels or
// domain constraints, function, extension; from version 2 also statistics
// objects, collations, operators, operator classes and families, casts,
// event triggers, default privileges, text search configurations and
// dictionaries, foreign-data wrappers and servers, procedural languages,
// access methods, the user's publications and subscriptions, extension
// comments and configuration tables, the database's owner, privileges,
// comment and settings, and per relation the details pg_dump prints
// beside its definition: statistics targets, storage, compression, column
// options, access method, comments of its indexes, constraints, triggers,
// rules and policies, security labels, the column owning a sequence,
// whether the chain's publication publishes it), keyed by kind and schema-qualified name, whose value
// is the MD5 of the object's description, which includes its OID so that a
// dropped and re-created object of the same name and shape is a
// difference. What does not change how rows replay or what pg_dump
// --schema-only prints is left out (relfilenode, statistics data, sequence
// values, index OIDs, whose REINDEX CONCURRENTLY changes them). It is
// stored as catalog.json in the chain directory with the position it was
// proven at.
//
// From version 2 each entry also records the OIDs of the catalog rows its
// description covers (Parts: a table's own OID, its row type, indexes,
// constraints, triggers, rules, policies and defaults) and the OIDs of
// the user objects those depend on (Deps, from pg_depend), so that a
// difference can be matched to the objects captured DDL touched
// (Unexplained).
type CatalogPrint struct {
	// Version is the description format (0 or 1: schemas, relations,
	// types, functions and extensions only; 2: see above).
	Version int `json:"version,omitempty"`
	// LSN is the WAL insert position read just before the catalog: every
	// transaction that committed before it is visible in the print.
	LSN string `json:"lsn"`
	// Time is the server's clock read together with LSN.
	Time    time.Time         `json:"time"`
	Hash    string            `json:"hash"`
	Objects map[string]string `json:"objects"`
	// Bare is, for entries with privileges, the MD5 of the description
	// without them (an entry missing here has none: Bare equals Objects).
	Bare  map[string]string   `json:"bare,omitempty"`
	Parts map[string][]uint32 `json:"parts,omitempty"`
	Deps  map[string][]uint32 `json:"deps,omitempty"`
}

// CatalogVersion is the description format ReadCatalog writes.
const CatalogVersion = 2

// v1Kinds are the kinds of objects version 1 prints had, with the same
// descriptions since: a newer print is compared with an older one on them.
var v1Kinds = map[string]bool{"schema": true, "relation": true, "type": true, "function": true, "extension": true}

// Kind returns the kind of a print's key ("relation public.t" → "relation",
// "event trigger x" → "event").
func Kind(key string) string { k, _, _ := strings.Cut(key, " "); return k }

// Position returns LSN as a number.
func (c *CatalogPrint) Position() uint64 { l, _ := ParseLSN(c.LSN); return l }

// catalogCTE names the schemas whose objects the print covers (all but
// the system's and this program's, pme2go_*) and the tables the chain's
// publication ($1) publishes: a table taken out of it (ALTER PUBLICATION
// … DROP TABLE by hand) is a difference, as its changes would be lost.
const catalogCTE = `
WITH ns AS (
  SELECT oid, nspname FROM pg_namespace
   WHERE nspname NOT IN ('pg_catalog', 'information_schema') AND nspname NOT LIKE 'pg\_toast%'
     AND nspname NOT LIKE 'pg\_temp\_%' AND nspname NOT LIKE 'pme2go\_%'),
pub AS (
  SELECT format('%I.%I', schemaname, tablename) AS name FROM pg_publication_tables WHERE pubname = $1)
`

// catalogBranch is one kind of object in the catalog print: its key, the
// text describing it, the OIDs of the catalog rows the text covers, and
// the FROM clause. Privileges in desc are marked {{expression}}: the query
// computes each description once with them and once without (bare). The
// branches of version 1 (schema, relation, type, function, extension)
// keep their descriptions byte for byte: older prints are compared with
// them.
type catalogBranch struct{ key, desc, parts, from string }

var catalogBranches = []catalogBranch{
	{key: `'schema ' || quote_ident(ns.nspname)`,
		desc:  `concat_ws('|', n.oid, pg_get_userbyid(n.nspowner), {{n.nspacl::text}}, obj_description(n.oid, 'pg_namespace'))`,
		parts: `ARRAY[n.oid]`,
		from:  `FROM ns JOIN pg_namespace n ON n.oid = ns.oid`},
	{key: `'relation ' || format('%I.%I', ns.nspname, c.relname)`,
		desc: `concat_ws('|', c.oid, c.relkind, c.relpersistence, pg_get_userbyid(c.relowner), {{c.relacl::text}}, c.reloptions::text,
         c.relreplident, c.relrowsecurity, c.relforcerowsecurity, pg_get_expr(c.relpartbound, c.oid), c.reloftype,
         obj_description(c.oid, 'pg_class'),
         (SELECT string_agg(concat_ws(':', a.attnum, a.attname, format_type(a.atttypid, a.atttypmod), a.attnotnull, a.attisdropped,
                   a.attgenerated, a.attidentity, pg_get_expr(d.adbin, d.adrelid), a.attcollation, {{a.attacl::text}}, col_description(c.oid, a.attnum)), ','
                   ORDER BY a.attnum)
            FROM pg_attribute a LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
           WHERE a.attrelid = c.oid AND a.attnum > 0),
         (SELECT string_agg(i.inhparent::text, ',' ORDER BY i.inhseqno) FROM pg_inherits i WHERE i.inhrelid = c.oid),
         (SELECT string_agg(concat_ws(':', co.conname, pg_get_constraintdef(co.oid), co.convalidated), ',' ORDER BY co.conname)
            FROM pg_constraint co WHERE co.conrelid = c.oid),
         (SELECT string_agg(concat_ws(':', ic.relname, pg_get_indexdef(x.indexrelid), x.indisclustered, x.indisreplident, x.indisvalid), ',' ORDER BY ic.relname)
            FROM pg_index x JOIN pg_class ic ON ic.oid = x.indexrelid WHERE x.indrelid = c.oid),
         (SELECT string_agg(concat_ws(':', tg.tgname, pg_get_triggerdef(tg.oid), tg.tgenabled), ',' ORDER BY tg.tgname)
            FROM pg_trigger tg WHERE tg.tgrelid = c.oid AND NOT tg.tgisinternal),
         (SELECT string_agg(concat_ws(':', r.rulename, pg_get_ruledef(r.oid), r.ev_enabled), ',' ORDER BY r.rulename)
            FROM pg_rewrite r WHERE r.ev_class = c.oid),
         (SELECT string_agg(concat_ws(':', po.polname, po.polcmd, po.polpermissive, po.polroles::text, pg_get_expr(po.polqual, po.polrelid),
                   pg_get_expr(po.polwithcheck, po.polrelid)), ',' ORDER BY po.polname)
            FROM pg_policy po WHERE po.polrelid = c.oid),
         (SELECT concat_ws(':', s.seqtypid, s.seqstart, s.seqincrement, s.seqmax, s.seqmin, s.seqcache, s.seqcycle)
            FROM pg_sequence s WHERE s.seqrelid = c.oid))`,
		parts: `ARRAY[c.oid, c.reltype]
         || ARRAY(SELECT x.indexrelid FROM pg_index x WHERE x.indrelid = c.oid)
         || ARRAY(SELECT co.oid FROM pg_constraint co WHERE co.conrelid = c.oid)
         || ARRAY(SELECT tg.oid FROM pg_trigger tg WHERE tg.tgrelid = c.oid)
         || ARRAY(SELECT r.oid FROM pg_rewrite r WHERE r.ev_class = c.oid)
         || ARRAY(SELECT po.oid FROM pg_policy po WHERE po.polrelid = c.oid)
         || ARRAY(SELECT d.oid FROM pg_attrdef d WHERE d.adrelid = c.oid)`,
		from: `FROM pg_class c JOIN ns ON ns.oid = c.relnamespace
 WHERE c.relkind NOT IN ('i', 'I', 't') AND c.relpersistence <> 't'`},
	{key: `'relation-details ' || format('%I.%I', ns.nspname, c.relname)`,
		desc: `concat_ws('|', c.relam, c.reltablespace,
         (SELECT string_agg(concat_ws(':', a.attnum, a.attstattarget, a.attstorage, a.attcompression, a.attoptions::text, a.attfdwoptions::text), ',' ORDER BY a.attnum)
            FROM pg_attribute a WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped),
         (SELECT string_agg(concat_ws(':', ic.relname, ic.reltablespace, obj_description(ic.oid, 'pg_class'),
                   (SELECT string_agg(concat_ws('=', ia.attnum, ia.attstattarget), ',' ORDER BY ia.attnum) FROM pg_attribute ia WHERE ia.attrelid = ic.oid AND ia.attstattarget >= 0)), ',' ORDER BY ic.relname)
            FROM pg_index x JOIN pg_class ic ON ic.oid = x.indexrelid WHERE x.indrelid = c.oid),
         (SELECT string_agg(concat_ws(':', co.conname, obj_description(co.oid, 'pg_constraint')), ',' ORDER BY co.conname)
            FROM pg_constraint co WHERE co.conrelid = c.oid),
         (SELECT string_agg(concat_ws(':', tg.tgname, obj_description(tg.oid, 'pg_trigger')), ',' ORDER BY tg.tgname)
            FROM pg_trigger tg WHERE tg.tgrelid = c.oid AND NOT tg.tgisinternal),
         (SELECT string_agg(concat_ws(':', r.rulename, obj_description(r.oid, 'pg_rewrite')), ',' ORDER BY r.rulename)
            FROM pg_rewrite r WHERE r.ev_class = c.oid),
         (SELECT string_agg(concat_ws(':', po.polname, obj_description(po.oid, 'pg_policy')), ',' ORDER BY po.polname)
            FROM pg_policy po WHERE po.polrelid = c.oid),
         (SELECT string_agg(concat_ws(':', sl.objsubid, sl.provider, sl.label), ',' ORDER BY sl.objsubid, sl.provider)
            FROM pg_seclabel sl WHERE sl.objoid = c.oid AND sl.classoid = 'pg_class'::regclass),
         CASE WHEN EXISTS (SELECT 1 FROM pub WHERE pub.name = format('%I.%I', ns.nspname, c.relname)) THEN 'published' END,
         (SELECT string_agg(concat_ws(':', d.refobjid::regclass::text, d.refobjsubid, d.deptype), ',' ORDER BY d.refobjid, d.refobjsubid)
            FROM pg_depend d WHERE c.relkind = 'S' AND d.classid = 'pg_class'::regclass AND d.objid = c.oid
             AND d.refclassid = 'pg_class'::regclass AND d.deptype IN ('a', 'i')))`,
		parts: `ARRAY[c.oid, c.reltype]
         || ARRAY(SELECT x.indexrelid FROM pg_index x WHERE x.indrelid = c.oid)
         || ARRAY(SELECT co.oid FROM pg_constraint co WHERE co.conrelid = c.oid)
         || ARRAY(SELECT tg.oid FROM pg_trigger tg WHERE tg.tgrelid = c.oid)
         || ARRAY(SELECT r.oid FROM pg_rewrite r WHERE r.ev_class = c.oid)
         || ARRAY(SELECT po.oid FROM pg_policy po WHERE po.polrelid = c.oid)`,
		from: `FROM pg_class c JOIN ns ON ns.oid = c.relnamespace
 WHERE c.relkind NOT IN ('i', 'I', 't') AND c.relpersistence <> 't'`},
	{key: `'type ' || format('%I.%I', ns.nspname, t.typname)`,
		desc: `concat_ws('|', t.oid, t.typtype, pg_get_userbyid(t.typowner), {{t.typacl::text}}, obj_description(t.oid, 'pg_type'),
         format_type(t.typbasetype, t.typtypmod), t.typnotnull, t.typdefault, t.typcollation,
         (SELECT string_agg(e.enumlabel, ',' ORDER BY e.enumsortorder) FROM pg_enum e WHERE e.enumtypid = t.oid),
         (SELECT string_agg(concat_ws(':', co.conname, pg_get_constraintdef(co.oid), co.convalidated), ',' ORDER BY co.conname)
            FROM pg_constraint co WHERE co.contypid = t.oid),
         (SELECT concat_ws(':', format_type(r.rngsubtype, NULL), r.rngcollation, r.rngsubopc, r.rngcanonical, r.rngsubdiff)
            FROM pg_range r WHERE r.rngtypid = t.oid))`,
		parts: `ARRAY[t.oid, t.typarray]
         || ARRAY(SELECT co.oid FROM pg_constraint co WHERE co.contypid = t.oid)
         || ARRAY(SELECT r.rngmultitypid FROM pg_range r WHERE r.rngtypid = t.oid)`,
		from: `FROM pg_type t JOIN ns ON ns.oid = t.typnamespace
 WHERE t.typtype IN ('e', 'd', 'r', 'm')`},
	{key: `'function ' || p.oid::regprocedure::text`,
		desc: `concat_ws('|', p.oid, pg_get_userbyid(p.proowner), {{p.proacl::text}}, obj_description(p.oid, 'pg_proc'),
         CASE WHEN p.prokind = 'a'
              THEN (SELECT concat_ws(':', a.aggtransfn, a.aggfinalfn, a.aggtranstype, a.agginitval) FROM pg_aggregate a WHERE a.aggfnoid = p.oid)
              ELSE md5(pg_get_functiondef(p.oid)) END)`,
		parts: `ARRAY[p.oid]`,
		from: `FROM pg_proc p JOIN ns ON ns.oid = p.pronamespace
 WHERE p.proname NOT LIKE 'pme2go\_%'`},
	{key: `'extension ' || quote_ident(x.extname)`,
		desc:  `concat_ws('|', x.extversion, x.extnamespace::regnamespace::text)`,
		parts: `ARRAY[x.oid]`,
		from:  `FROM pg_extension x`},
	{key: `'statistics ' || format('%I.%I', ns.nspname, s.stxname)`,
		desc:  `concat_ws('|', s.oid, pg_get_userbyid(s.stxowner), pg_get_statisticsobjdef(s.oid), s.stxstattarget, obj_description(s.oid, 'pg_statistic_ext'))`,
		parts: `ARRAY[s.oid]`,
		from:  `FROM pg_statistic_ext s JOIN ns ON ns.oid = s.stxnamespace`},
	{key: `'collation ' || format('%I.%I', ns.nspname, co.collname) || ' ' || co.collencoding`,
		desc:  `concat_ws('|', co.oid, pg_get_userbyid(co.collowner), (to_jsonb(co) - 'collversion' - 'collowner')::text, obj_description(co.oid, 'pg_collation'))`,
		parts: `ARRAY[co.oid]`,
		from:  `FROM pg_collation co JOIN ns ON ns.oid = co.collnamespace`},
	{key: `'operator ' || o.oid::regoperator::text`,
		desc:  `concat_ws('|', o.oid, pg_get_userbyid(o.oprowner), (to_jsonb(o) - 'oprowner')::text, obj_description(o.oid, 'pg_operator'))`,
		parts: `ARRAY[o.oid]`,
		from:  `FROM pg_operator o JOIN ns ON ns.oid = o.oprnamespace`},
	{key: `'operator class ' || format('%I.%I', ns.nspname, oc.opcname) || ' using ' || am.amname`,
		desc:  `concat_ws('|', oc.oid, pg_get_userbyid(oc.opcowner), (to_jsonb(oc) - 'opcowner')::text, obj_description(oc.oid, 'pg_opclass'))`,
		parts: `ARRAY[oc.oid]`,
		from:  `FROM pg_opclass oc JOIN ns ON ns.oid = oc.opcnamespace JOIN pg_am am ON am.oid = oc.opcmethod`},
	{key: `'operator family ' || format('%I.%I', ns.nspname, f.opfname) || ' using ' || am.amname`,
		desc: `concat_ws('|', f.oid, pg_get_userbyid(f.opfowner), obj_description(f.oid, 'pg_opfamily'),
         (SELECT string_agg(concat_ws(':', ao.amopstrategy, ao.amopopr::regoperator::text, ao.amoplefttype, ao.amoprighttype, ao.amoppurpose), ',' ORDER BY 1)
            FROM pg_amop ao WHERE ao.amopfamily = f.oid),
         (SELECT string_agg(concat_ws(':', ap.amprocnum, ap.amproc::regprocedure::text, ap.amproclefttype, ap.amprocrighttype), ',' ORDER BY 1)
            FROM pg_amproc ap WHERE ap.amprocfamily = f.oid))`,
		parts: `ARRAY[f.oid]
         || ARRAY(SELECT ao.oid FROM pg_amop ao WHERE ao.amopfamily = f.oid)
         || ARRAY(SELECT ap.oid FROM pg_amproc ap WHERE ap.amprocfamily = f.oid)`,
		from: `FROM pg_opfamily f JOIN ns ON ns.oid = f.opfnamespace JOIN pg_am am ON am.oid = f.opfmethod`},
	{key: `'cast ' || format('(%s AS %s)', format_type(ca.castsource, NULL), format_type(ca.casttarget, NULL))`,
		desc:  `concat_ws('|', ca.oid, ca.castfunc::regprocedure::text, ca.castcontext, ca.castmethod, obj_description(ca.oid, 'pg_cast'))`,
		parts: `ARRAY[ca.oid]`,
		from:  `FROM pg_cast ca WHERE ca.oid >= 16384`},
	{key: `'event trigger ' || quote_ident(et.evtname)`,
		desc: `concat_ws('|', et.oid, et.evtevent, pg_get_userbyid(et.evtowner), et.evtfoid::regprocedure::text, et.evtenabled, et.evttags::text,
         obj_description(et.oid, 'pg_event_trigger'))`,
		parts: `ARRAY[et.oid]`,
		from:  `FROM pg_event_trigger et WHERE et.evtname NOT LIKE 'pme2go\_%'`},
	{key: `'default privileges ' || concat_ws(' ', pg_get_userbyid(da.defaclrole), (SELECT quote_ident(n.nspname) FROM pg_namespace n WHERE n.oid = da.defaclnamespace), da.defaclobjtype)`,
		desc:  `concat_ws('|', da.oid, {{da.defaclacl::text}})`,
		parts: `ARRAY[da.oid]`,
		from:  `FROM pg_default_acl da`},
	{key: `'text search configuration ' || format('%I.%I', ns.nspname, cf.cfgname)`,
		desc: `concat_ws('|', cf.oid, pg_get_userbyid(cf.cfgowner), cf.cfgparser::regproc::text, obj_description(cf.oid, 'pg_ts_config'),
         (SELECT string_agg(concat_ws(':', m.maptokentype, m.mapseqno, m.mapdict::regdictionary::text), ',' ORDER BY m.maptokentype, m.mapseqno)
            FROM pg_ts_config_map m WHERE m.mapcfg = cf.oid))`,
		parts: `ARRAY[cf.oid]`,
		from:  `FROM pg_ts_config cf JOIN ns ON ns.oid = cf.cfgnamespace`},
	{key: `'text search dictionary ' || format('%I.%I', ns.nspname, di.dictname)`,
		desc:  `concat_ws('|', di.oid, pg_get_userbyid(di.dictowner), di.dicttemplate, di.dictinitoption, obj_description(di.oid, 'pg_ts_dict'))`,
		parts: `ARRAY[di.oid]`,
		from:  `FROM pg_ts_dict di JOIN ns ON ns.oid = di.dictnamespace`},
	{key: `'foreign-data wrapper ' || quote_ident(w.fdwname)`,
		desc:  `concat_ws('|', w.oid, pg_get_userbyid(w.fdwowner), w.fdwhandler, w.fdwvalidator, {{w.fdwacl::text}}, w.fdwoptions::text, obj_description(w.oid, 'pg_foreign_data_wrapper'))`,
		parts: `ARRAY[w.oid]`,
		from:  `FROM pg_foreign_data_wrapper w`},
	{key: `'server ' || quote_ident(sv.srvname)`,
		desc: `concat_ws('|', sv.oid, pg_get_userbyid(sv.srvowner), sv.srvfdw, sv.srvtype, sv.srvversion, {{sv.srvacl::text}}, sv.srvoptions::text,
         obj_description(sv.oid, 'pg_foreign_server'),
         (SELECT string_agg(concat_ws(':', um.umuser, um.umoptions::text), ',' ORDER BY um.umuser) FROM pg_user_mapping um WHERE um.umserver = sv.oid))`,
		parts: `ARRAY[sv.oid] || ARRAY(SELECT um.oid FROM pg_user_mapping um WHERE um.umserver = sv.oid)`,
		from:  `FROM pg_foreign_server sv`},
	{key: `'language ' || quote_ident(l.lanname)`,
		desc:  `concat_ws('|', l.oid, pg_get_userbyid(l.lanowner), l.lanpltrusted, l.lanplcallfoid, l.laninline, l.lanvalidator, {{l.lanacl::text}}, obj_description(l.oid, 'pg_language'))`,
		parts: `ARRAY[l.oid]`,
		from:  `FROM pg_language l WHERE l.oid >= 16384`},
	// Publications and subscriptions of the user (pg_dump prints them;
	// this program's own, pme2go_*, are left out), and access methods.
	// Tables a publication gets through FOR TABLES IN SCHEMA or FOR ALL
	// TABLES are not listed (every new table would change it).
	{key: `'publication ' || quote_ident(pb.pubname)`,
		desc: `concat_ws('|', pb.oid, pg_get_userbyid(pb.pubowner), pb.puballtables, pb.pubinsert, pb.pubupdate, pb.pubdelete, pb.pubtruncate,
         pb.pubviaroot, obj_description(pb.oid, 'pg_publication'),
         (SELECT string_agg((to_jsonb(pr) - 'oid' - 'prpubid')::text, ',' ORDER BY pr.prrelid) FROM pg_publication_rel pr WHERE pr.prpubid = pb.oid))`,
		parts: `ARRAY[pb.oid] || ARRAY(SELECT pr.oid FROM pg_publication_rel pr WHERE pr.prpubid = pb.oid)`,
		from:  `FROM pg_publication pb WHERE pb.pubname NOT LIKE 'pme2go\_%'`},
	{key: `'subscription ' || quote_ident(su.subname)`,
		desc:  `concat_ws('|', su.oid, pg_get_userbyid(su.subowner), su.subenabled, su.subslotname, su.subsynccommit, su.subpublications::text, shobj_description(su.oid, 'pg_subscription'))`,
		parts: `ARRAY[su.oid]`,
		from:  `FROM pg_subscription su WHERE su.subdbid = (SELECT oid FROM pg_database WHERE datname = current_database())`},
	{key: `'access method ' || quote_ident(am.amname)`,
		desc:  `concat_ws('|', am.oid, am.amtype, am.amhandler, obj_description(am.oid, 'pg_am'))`,
		parts: `ARRAY[am.oid]`,
		from:  `FROM pg_am am WHERE am.oid >= 16384`},
	{key: `'extension-details ' || quote_ident(x.extname)`,
		desc:  `concat_ws('|', obj_description(x.oid, 'pg_extension'), x.extrelocatable, x.extconfig::regclass[]::text, x.extcondition::text)`,
		parts: `ARRAY[x.oid]`,
		from:  `FROM pg_extension x`},
	// The database itself: what pg_dump --create prints for it (owner,
	// privileges, comment, ALTER DATABASE … SET and ALTER ROLE … IN
	// DATABASE … SET), which a restore brings back from the full backup.
	// Event triggers do not fire for these: a change ends the chain.
	{key: `'database ' || quote_ident(d.datname)`,
		desc: `concat_ws('|', d.oid, pg_get_userbyid(d.datdba), {{d.datacl::text}}, shobj_description(d.oid, 'pg_database'),
         (SELECT string_agg(concat_ws(':', rs.setrole, rs.setconfig::text), ',' ORDER BY rs.setrole)
            FROM pg_db_role_setting rs WHERE rs.setdatabase = d.oid))`,
		parts: `ARRAY[d.oid]`,
		from:  `FROM pg_database d WHERE d.datname = current_database()`},
}

// depQuery lists the dependencies between user objects (pg_depend): which
// object each covered row depends on, and whether that is a schema.
const depQuery = `SELECT d.objid, d.refobjid, d.refclassid = 'pg_catalog.pg_namespace'::pg_catalog.regclass
  FROM pg_catalog.pg_depend d
 WHERE d.objid >= 16384 AND (d.refobjid >= 16384 OR d.refclassid = 'pg_catalog.pg_namespace'::pg_catalog.regclass)
   AND d.deptype IN ('n', 'a', 'i', 'e') AND d.objid <> d.refobjid`

var aclMark = regexp.MustCompile(`\{\{([^}]*)\}\}`)

// catalogSQL is the statement readCatalogOnce runs: every object's key, the
// MD5 of its description with privileges and without (NULL when it has
// none), and the OIDs its description covers. It runs with
// search_path = pg_catalog, so that every name printed is qualified.
var catalogSQL = func() string {
	var b strings.Builder
	b.WriteString(catalogCTE)
	for i, br := range catalogBranches {
		if i > 0 {
			b.WriteString("\nUNION ALL\n")
		}
		bare := "NULL::text"
		if aclMark.MatchString(br.desc) {
			bare = "md5(coalesce(" + aclMark.ReplaceAllString(br.desc, "NULL") + ", ''))"
		}
		fmt.Fprintf(&b, "SELECT %s, md5(coalesce(%s, '')), %s, (%s)::oid[]\n  %s", br.key, aclMark.ReplaceAllString(br.desc, "$1"), bare, br.parts, br.from)
	}
	return b.String()
}()

// ReadCatalog fingerprints the schema of the database conn is connected
// to. The position (pg_current_wal_insert_lsn() and clock_timestamp()) is read in
// a statement before the catalog, so every transaction committed before it
// is in the print. A concurrent DROP can make the catalog functions fail
// ("cache lookup failed"); the read is retried a few times.
//
// publication is the chain's publication: whether each table is in it is
// part of the print.
func ReadCatalog(ctx context.Context, conn *pgx.Conn, publication string) (*CatalogPrint, error) {
	var err error
	for attempt := 0; attempt < 3; attempt++ {
		var cp *CatalogPrint
		if cp, err = readCatalogOnce(ctx, conn, "", publication); err == nil {
			return cp, nil
		}
		if ctx.Err() != nil {
			break
		}
	}
	return nil, err
}

func readCatalogOnce(ctx context.Context, conn *pgx.Conn, snapshot, publication string) (*CatalogPrint, error) {
	cp := &CatalogPrint{Version: CatalogVersion, Objects: map[string]string{}, Bare: map[string]string{},
		Parts: map[string][]uint32{}, Deps: map[string][]uint32{}}
	if snapshot == "" {
		if err := conn.QueryRow(ctx, `SELECT pg_current_wal_insert_lsn()::text, clock_timestamp()`).Scan(&cp.LSN, &cp.Time); err != nil {
			return nil, fmt.Errorf("read the WAL position before the catalog: %w", err)
		}
	}
	opts := pgx.TxOptions{AccessMode: pgx.ReadOnly, IsoLevel: pgx.RepeatableRead}
	tx, err := conn.BeginTx(ctx, opts)
	if err != nil {
		return nil, fmt.Errorf("read the catalog: %w", err)
	}
	defer tx.Rollback(context.Background())
	if snapshot != "" {
		if _, err := tx.Exec(ctx, "SET TRANSACTION SNAPSHOT '"+snapshot+"'"); err != nil {
			return nil, fmt.Errorf("read the catalog at snapshot %s: %w", snapshot, err)
		}
	}
	if _, err := tx.Exec(ctx, "SET LOCAL search_path = pg_catalog, pg_temp"); err != nil {
		return nil, fmt.Errorf("read the catalog: %w", err)
	}
	rows, err := tx.Query(ctx, catalogSQL, publication)
	if err != nil {
		return nil, fmt.Errorf("read the catalog: %w", err)
	}
	owner := map[uint32]string{}
	for rows.Next() {
		var k, v string
		var bare *string
		var parts []uint32
		if err := rows.Scan(&k, &v, &bare, &parts); err != nil {
			return nil, fmt.Errorf("read the catalog: %w", err)
		}
		cp.Objects[k] = v
		if bare != nil && *bare != v {
			cp.Bare[k] = *bare
		}
		parts = uniqueOIDs(parts)
		cp.Parts[k] = parts
		for _, o := range parts {
			if _, ok := owner[o]; !ok || Kind(k) != "relation-details" {
				owner[o] = k
			}
		}
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read the catalog: %w", err)
	}
	rows, err = tx.Query(ctx, depQuery)
	if err != nil {
		return nil, fmt.Errorf("read the catalog's dependencies: %w", err)
	}
	for rows.Next() {
		var obj, ref uint32
		var schema bool
		if err := rows.Scan(&obj, &ref, &schema); err != nil {
			return nil, fmt.Errorf("read the catalog's dependencies: %w", err)
		}
		k, ok := owner[obj]
		if !ok {
			continue
		}
		for _, key := range []string{k, "relation-details " + strings.TrimPrefix(k, "relation ")} {
			if _, ok := cp.Objects[key]; ok && !slices.Contains(cp.Parts[key], ref) {
				cp.Deps[key] = append(cp.Deps[key], ref)
			}
		}
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read the catalog's dependencies: %w", err)
	}
	for k, d := range cp.Deps {
		cp.Deps[k] = uniqueOIDs(d)
	}
	cp.Hash = hashObjects(cp.Objects)
	return cp, nil
}

// symmetricDiff returns the OIDs in exactly one of the sorted lists a, b.
func symmetricDiff(a, b []uint32) []uint32 {
	var out []uint32
	for _, x := range a {
		if _, ok := slices.BinarySearch(b, x); !ok {
			out = append(out, x)
		}
	}
	for _, x := range b {
		if _, ok := slices.BinarySearch(a, x); !ok {
			out = append(out, x)
		}
	}
	return out
}

func uniqueOIDs(in []uint32) []uint32 {
	out := slices.DeleteFunc(slices.Clone(in), func(o uint32) bool { return o == 0 })
	slices.Sort(out)
	return slices.Compact(out)
}

func hashObjects(objs map[string]string) string {
	keys := make([]string, 0, len(objs))
	for k := range objs {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	h := sha256.New()
	for _, k := range keys {
		fmt.Fprintf(h, "%s\x00%s\n", k, objs[k])
	}
	return hex.EncodeToString(h.Sum(nil))
}

// comparable returns the objects of o to compare with c: all of them when
// both have the same version, else only the kinds an older c had.
func (c *CatalogPrint) comparable(o *CatalogPrint) map[string]string {
	if c.Version >= o.Version {
		return o.Objects
	}
	out := map[string]string{}
	for k, v := range o.Objects {
		if c.Version >= 2 || v1Kinds[Kind(k)] {
			out[k] = v
		}
	}
	return out
}

// Same reports whether c and the newer print o print the same catalog.
func (c *CatalogPrint) Same(o *CatalogPrint) bool {
	if c.Version == o.Version {
		return c.Hash == o.Hash
	}
	return hashObjects(c.Objects) == hashObjects(c.comparable(o))
}

// changed lists the keys that differ between c and the newer print o.
func (c *CatalogPrint) changed(o *CatalogPrint) map[string]string {
	now := c.comparable(o)
	out := map[string]string{}
	for k, v := range now {
		old, ok := c.Objects[k]
		switch {
		case !ok:
			out[k] = "created"
		case old != v:
			out[k] = "changed"
		}
	}
	for k := range c.Objects {
		if _, ok := now[k]; !ok {
			out[k] = "dropped"
		}
	}
	return out
}

// Diff names what differs between the old print c and the newer print o,
// at most max entries ("relation public.t changed", "type public.mood
// changed", "relation public.n created", …).
func (c *CatalogPrint) Diff(o *CatalogPrint, max int) []string {
	return describe(c.changed(o), max)
}

func describe(m map[string]string, max int) []string {
	out := make([]string, 0, len(m))
	for k, how := range m {
		out = append(out, k+" "+how)
	}
	sort.Strings(out)
	if len(out) > max {
		out = append(out[:max], fmt.Sprintf("and %d more", len(out)-max))
	}
	return out
}

// Explains says what captured DDL touched between two prints.
type Explains struct {
	// Touched reports whether captured DDL touched the object with this
	// OID (created, altered, commented, dropped: pg_event_trigger_ddl_commands
	// and pg_event_trigger_dropped_objects).
	Touched func(oid uint32) bool
	// Privileges reports whether captured GRANT, REVOKE or ALTER DEFAULT
	// PRIVILEGES (which PostgreSQL reports without the objects) may have
	// changed the privileges of objects of this kind of print key
	// ("relation", "function", "default", …).
	Privileges func(kind string) bool
}

// Matchable reports whether c records which OIDs its entries cover, so
// that Unexplained can match differences to the objects DDL touched
// (prints of version 2 on).
func (c *CatalogPrint) Matchable() bool { return c.Version >= 2 && c.Parts != nil }

// Unexplained names the differences between the old print c and the newer
// print o that no captured DDL explains, at most max entries. A
// difference of an entry is explained when DDL touched one of the OIDs it
// covers (in either print), or an object it started or stopped depending
// on (a partition detached: the DDL names its parent); when only its
// privileges changed and a
// GRANT, REVOKE or ALTER DEFAULT PRIVILEGES for its kind was captured;
// when an object it depends on (pg_depend) differs and is explained
// itself (a renamed column shows in the views over it, a renamed type in
// the columns of that type); or when its schema was renamed by captured
// DDL. Both prints must be Matchable.
func (c *CatalogPrint) Unexplained(o *CatalogPrint, ex Explains, max int) []string {
	diff := c.changed(o)
	owners := func(p *CatalogPrint) map[uint32]string {
		m := map[uint32]string{}
		for k, parts := range p.Parts {
			for _, oid := range parts {
				if _, ok := m[oid]; !ok || Kind(k) != "relation-details" {
					m[oid] = k
				}
			}
		}
		return m
	}
	oldOwner, newOwner := owners(c), owners(o)
	bare := func(p *CatalogPrint, k string) string {
		if b, ok := p.Bare[k]; ok {
			return b
		}
		return p.Objects[k]
	}
	// Explained entries are remembered; an entry being decided counts as
	// unexplained on the way (dependency cycles), and so is decided again
	// later rather than remembered as unexplained.
	const explainedMark, visiting = 1, 2
	memo := map[string]int{}
	var explained func(k string) bool
	explained = func(k string) bool {
		switch memo[k] {
		case explainedMark:
			return true
		case visiting:
			return false
		}
		memo[k] = visiting
		ok := func() bool {
			for _, p := range [...]*CatalogPrint{c, o} {
				for _, oid := range p.Parts[k] {
					if ex.Touched(oid) {
						return true
					}
				}
			}
			if ex.Privileges != nil && ex.Privileges(Kind(k)) &&
				((diff[k] == "changed" && bare(c, k) == bare(o, k)) || Kind(k) == "default") {
				// Privileges alone changed (default privileges are
				// nothing but privileges: created and dropped too).
				return true
			}
			// A dependency that appeared or went away (a partition
			// attached or detached, an inheritance parent added or
			// removed) is explained by DDL that touched either end.
			for _, dep := range symmetricDiff(c.Deps[k], o.Deps[k]) {
				if ex.Touched(dep) {
					return true
				}
			}
			for _, p := range [...]*CatalogPrint{c, o} {
				for _, dep := range p.Deps[k] {
					ok, nk := oldOwner[dep], newOwner[dep]
					if Kind(ok) == "schema" || Kind(nk) == "schema" {
						// Its schema: only a rename (or drop) of the
						// schema changes how the entry prints.
						if ok != nk && ex.Touched(dep) {
							return true
						}
						continue
					}
					for _, dk := range [...]string{ok, nk} {
						if dk != "" && dk != k && diff[dk] != "" && explained(dk) {
							return true
						}
					}
				}
			}
			return false
		}()
		delete(memo, k)
		if ok {
			memo[k] = explainedMark
		}
		return ok
	}
	left := map[string]string{}
	for k, how := range diff {
		if !explained(k) {
			left[k] = how
		}
	}
	return describe(left, max)
}

// LoadCatalog reads the chain's last proven catalog print; nil when none
// was recorded (chains started by older versions).
func (s *State) LoadCatalog() (*CatalogPrint, error) {
	b, err := os.ReadFile(filepath.Join(s.dir, "catalog.json"))
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("chain %s: read catalog.json: %w", s.ID, err)
	}
	cp := &CatalogPrint{}
	if err := json.Unmarshal(b, cp); err != nil {
		return nil, fmt.Errorf("chain %s: catalog.json is damaged (%v); take a new full backup", s.ID, err)
	}
	return cp, nil
}

// SaveCatalog writes catalog.json atomically.
func (s *State) SaveCatalog(cp *CatalogPrint) error {
	return s.saveJSON("catalog.json", "catalog", cp)
}

// SetEnd records, before the chain is marked broken, the point up to which
// its change sets are exact: every transaction whose commit LSN is below
// lsn, and every time target up to t. Restores refuse targets past it.
func (s *State) SetEnd(lsn uint64, t time.Time) error {
	if s.dir != "" {
		if err := s.Reload(); err != nil {
			return err
		}
	}
	if old, _ := ParseLSN(s.EndLSN); old != 0 && old <= lsn {
		return nil
	}
	s.EndLSN, s.EndTime = FormatLSN(lsn), t.UTC()
	return s.Save()
}

// snapshotExtras records what the capture compares against later, as of
// the exported snapshot the full backup dumps: the catalog print (proven
// at the slot's consistent point) and the large objects' state.
func (s *State) snapshotExtras(ctx context.Context, conn *pgx.Conn, snapshot, consistent string) error {
	cp, err := readCatalogOnce(ctx, conn, snapshot, s.Publication)
	if err != nil {
		return err
	}
	cp.LSN, cp.Time = consistent, time.Now().UTC()
	if err := s.SaveCatalog(cp); err != nil {
		return err
	}
	// Without the right to read large objects, the first incremental
	// carries all of them instead of the changed ones.
	if los, err := ReadLargeObjects(ctx, conn, snapshot); err == nil {
		return s.SaveLargeObjects(los)
	}
	return nil
}

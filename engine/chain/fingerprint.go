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
	"sort"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pme2go/pme2go-backup/engine/fsutil"
)

// CatalogPrint is a fingerprint of a database's schema: one entry per
// object (schema, relation with its columns, defaults, constraints,
// indexes, triggers, rules and policies, type with its enum labels or
// domain constraints, function, extension), keyed by kind and
// schema-qualified name, whose value is the MD5 of the object's
// description, which includes its OID so that a dropped and re-created
// object of the same name and shape is a difference. What does not change
// how rows replay or what pg_dump --schema-only prints is left out
// (relfilenode, statistics, sequence values, index OIDs, whose REINDEX
// CONCURRENTLY changes them). It is stored as catalog.json in the chain
// directory with the position it was proven at.
type CatalogPrint struct {
	// LSN is the WAL insert position read just before the catalog: every
	// transaction that committed before it is visible in the print.
	LSN string `json:"lsn"`
	// Time is the server's clock read together with LSN.
	Time    time.Time         `json:"time"`
	Hash    string            `json:"hash"`
	Objects map[string]string `json:"objects"`
}

// Position returns LSN as a number.
func (c *CatalogPrint) Position() uint64 { l, _ := ParseLSN(c.LSN); return l }

// catalogQuery lists every user object whose definition matters for replay
// or for the restored schema, with a text describing it. It runs with
// search_path = pg_catalog, so that every name printed is qualified.
// Objects of this program (schemas and functions named pme2go_*) are left
// out; publications, event triggers and database-level settings too.
const catalogQuery = `
WITH ns AS (
  SELECT oid, nspname FROM pg_namespace
   WHERE nspname NOT IN ('pg_catalog', 'information_schema') AND nspname NOT LIKE 'pg\_toast%'
     AND nspname NOT LIKE 'pg\_temp\_%' AND nspname NOT LIKE 'pme2go\_%')
SELECT 'schema ' || quote_ident(ns.nspname),
       concat_ws('|', n.oid, pg_get_userbyid(n.nspowner), n.nspacl::text, obj_description(n.oid, 'pg_namespace'))
  FROM ns JOIN pg_namespace n ON n.oid = ns.oid
UNION ALL
SELECT 'relation ' || format('%I.%I', ns.nspname, c.relname),
       concat_ws('|', c.oid, c.relkind, c.relpersistence, pg_get_userbyid(c.relowner), c.relacl::text, c.reloptions::text,
         c.relreplident, c.relrowsecurity, c.relforcerowsecurity, pg_get_expr(c.relpartbound, c.oid), c.reloftype,
         obj_description(c.oid, 'pg_class'),
         (SELECT string_agg(concat_ws(':', a.attnum, a.attname, format_type(a.atttypid, a.atttypmod), a.attnotnull, a.attisdropped,
                   a.attgenerated, a.attidentity, pg_get_expr(d.adbin, d.adrelid), a.attcollation, a.attacl::text, col_description(c.oid, a.attnum)), ','
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
            FROM pg_sequence s WHERE s.seqrelid = c.oid))
  FROM pg_class c JOIN ns ON ns.oid = c.relnamespace
 WHERE c.relkind NOT IN ('i', 'I', 't') AND c.relpersistence <> 't'
UNION ALL
SELECT 'type ' || format('%I.%I', ns.nspname, t.typname),
       concat_ws('|', t.oid, t.typtype, pg_get_userbyid(t.typowner), t.typacl::text, obj_description(t.oid, 'pg_type'),
         format_type(t.typbasetype, t.typtypmod), t.typnotnull, t.typdefault, t.typcollation,
         (SELECT string_agg(e.enumlabel, ',' ORDER BY e.enumsortorder) FROM pg_enum e WHERE e.enumtypid = t.oid),
         (SELECT string_agg(concat_ws(':', co.conname, pg_get_constraintdef(co.oid), co.convalidated), ',' ORDER BY co.conname)
            FROM pg_constraint co WHERE co.contypid = t.oid),
         (SELECT concat_ws(':', format_type(r.rngsubtype, NULL), r.rngcollation, r.rngsubopc, r.rngcanonical, r.rngsubdiff)
            FROM pg_range r WHERE r.rngtypid = t.oid))
  FROM pg_type t JOIN ns ON ns.oid = t.typnamespace
 WHERE t.typtype IN ('e', 'd', 'r', 'm')
UNION ALL
SELECT 'function ' || p.oid::regprocedure::text,
       concat_ws('|', p.oid, pg_get_userbyid(p.proowner), p.proacl::text, obj_description(p.oid, 'pg_proc'),
         CASE WHEN p.prokind = 'a'
              THEN (SELECT concat_ws(':', a.aggtransfn, a.aggfinalfn, a.aggtranstype, a.agginitval) FROM pg_aggregate a WHERE a.aggfnoid = p.oid)
              ELSE md5(pg_get_functiondef(p.oid)) END)
  FROM pg_proc p JOIN ns ON ns.oid = p.pronamespace
 WHERE p.proname NOT LIKE 'pme2go\_%'
UNION ALL
SELECT 'extension ' || quote_ident(x.extname), concat_ws('|', x.extversion, x.extnamespace::regnamespace::text)
  FROM pg_extension x`

// ReadCatalog fingerprints the schema of the database conn is connected
// to. The position (pg_current_wal_insert_lsn() and clock_timestamp()) is read in
// a statement before the catalog, so every transaction committed before it
// is in the print. A concurrent DROP can make the catalog functions fail
// ("cache lookup failed"); the read is retried a few times.
func ReadCatalog(ctx context.Context, conn *pgx.Conn) (*CatalogPrint, error) {
	var err error
	for attempt := 0; attempt < 3; attempt++ {
		var cp *CatalogPrint
		if cp, err = readCatalogOnce(ctx, conn, ""); err == nil {
			return cp, nil
		}
		if ctx.Err() != nil {
			break
		}
	}
	return nil, err
}

func readCatalogOnce(ctx context.Context, conn *pgx.Conn, snapshot string) (*CatalogPrint, error) {
	cp := &CatalogPrint{Objects: map[string]string{}}
	if snapshot == "" {
		if err := conn.QueryRow(ctx, `SELECT pg_current_wal_insert_lsn()::text, clock_timestamp()`).Scan(&cp.LSN, &cp.Time); err != nil {
			return nil, fmt.Errorf("read the WAL position before the catalog: %w", err)
		}
	}
	opts := pgx.TxOptions{AccessMode: pgx.ReadOnly}
	if snapshot != "" {
		opts.IsoLevel = pgx.RepeatableRead
	}
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
	rows, err := tx.Query(ctx, "SELECT k, md5(coalesce(v, '')) FROM ("+catalogQuery+") AS o(k, v)")
	if err != nil {
		return nil, fmt.Errorf("read the catalog: %w", err)
	}
	for rows.Next() {
		var k, v string
		if err := rows.Scan(&k, &v); err != nil {
			return nil, fmt.Errorf("read the catalog: %w", err)
		}
		cp.Objects[k] = v
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read the catalog: %w", err)
	}
	cp.Hash = hashObjects(cp.Objects)
	return cp, nil
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

// Same reports whether c and o print the same catalog.
func (c *CatalogPrint) Same(o *CatalogPrint) bool { return c.Hash == o.Hash }

// Diff names what differs between the old print c and the newer print o,
// at most max entries ("relation public.t changed", "type public.mood
// changed", "relation public.n created", …).
func (c *CatalogPrint) Diff(o *CatalogPrint, max int) []string {
	var out []string
	for k, v := range o.Objects {
		old, ok := c.Objects[k]
		switch {
		case !ok:
			out = append(out, k+" created")
		case old != v:
			out = append(out, k+" changed")
		}
	}
	for k := range c.Objects {
		if _, ok := o.Objects[k]; !ok {
			out = append(out, k+" dropped")
		}
	}
	sort.Strings(out)
	if len(out) > max {
		out = append(out[:max], fmt.Sprintf("and %d more", len(out)-max))
	}
	return out
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
	b, err := json.Marshal(cp)
	if err != nil {
		return fmt.Errorf("chain %s: encode catalog: %w", s.ID, err)
	}
	if err := fsutil.WriteFileAtomic(filepath.Join(s.dir, "catalog.json"), b, 0o600); err != nil {
		return fmt.Errorf("chain %s: write catalog.json: %w", s.ID, err)
	}
	return nil
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
	cp, err := readCatalogOnce(ctx, conn, snapshot)
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

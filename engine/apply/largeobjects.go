package apply

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pme2go/pme2go-backup/engine/capture"
	"github.com/pme2go/pme2go-backup/engine/chain"
)

// LargeObjectsReport says what a point-in-time restore did with large
// objects, which logical decoding does not carry. Capture records their
// complete state at each seal; the restore puts back the state recorded
// by the last archive it used, so they are exact as of AsOf (the seal),
// not per transaction.
type LargeObjectsReport struct {
	AsOf    time.Time `json:"asOf"`
	Count   int       `json:"count"`   // large objects in that state
	Written int       `json:"written"` // created or rewritten in the restored database
	Removed int       `json:"removed"` // unlinked (not in that state)
	// Exact is true when the state did not change between the capture
	// before the one used (or the full backup) and the one used: then it is
	// the state at the target.
	Exact bool `json:"exact"`
	// Note says how exact the state is, for the restore's output.
	Note string `json:"note"`
}

// loSegment returns the large-object directory extracted beside a segment.
func loSegment(seg segment) string {
	return filepath.Join(filepath.Dir(filepath.Dir(seg.path)), "largeobjects", filepath.Base(seg.path))
}

// ApplyLargeObjects brings the large objects of the database conn is
// connected to (the restored full backup, after replay) to a state the
// plan's archives recorded: for --latest the last one; for other targets
// the first taken at or after the target's time (the target time, or the
// last replayed commit's time), else the last. Capture records the state
// at each seal and, while streaming, whenever it changed (at most every
// capture.Options.LargeObjectInterval). It returns nil when the plan's
// archives recorded none (older archives, or capture without the right to
// read them).
func ApplyLargeObjects(ctx context.Context, conn *pgx.Conn, p *Plan) (*LargeObjectsReport, error) {
	type snap struct {
		idx *capture.LargeObjectIndex
		dir string
	}
	var snaps []snap
	data := map[uint32]map[string]string{} // oid -> md5 -> file
	add := func(archive, dir string) error {
		idx, err := capture.ReadLargeObjectIndex(dir)
		if err != nil {
			return fmt.Errorf("incremental %s: %w", archive, err)
		}
		if idx == nil {
			return nil
		}
		snaps = append(snaps, snap{idx, dir})
		for _, oid := range idx.Data {
			if data[oid] == nil {
				data[oid] = map[string]string{}
			}
			data[oid][idx.Objects[oid].MD5] = filepath.Join(dir, strconv.FormatUint(uint64(oid), 10))
		}
		return nil
	}
	for _, seg := range p.segments {
		dir := loSegment(seg)
		subs, _ := filepath.Glob(filepath.Join(dir, "s*"))
		sort.Strings(subs)
		for _, sub := range subs {
			if err := add(seg.archive, sub); err != nil {
				return nil, err
			}
		}
		if err := add(seg.archive, dir); err != nil {
			return nil, err
		}
	}
	if len(snaps) == 0 {
		return nil, nil
	}
	sort.SliceStable(snaps, func(i, j int) bool { return snaps[i].idx.Taken.Before(snaps[j].idx.Taken) })
	chosen, exact := len(snaps)-1, false
	if p.Target.Kind != Latest {
		at := p.Target.Time
		if p.Target.Kind != Time {
			at = p.LastCommitTime
		}
		for i, sn := range snaps {
			if !sn.idx.Taken.Before(at) {
				chosen = i
				break
			}
		}
		// The first capture at or after the target; but when the one
		// before it was still seen unchanged at the target, that one is
		// the state at the target.
		if s := snaps[chosen].idx.Since; chosen > 0 && !s.IsZero() && !at.After(s) {
			chosen, exact = chosen-1, true
		}
	}
	last := snaps[chosen].idx
	cur, err := chain.ReadLargeObjects(ctx, conn, "")
	if err != nil {
		return nil, err
	}
	rep := &LargeObjectsReport{AsOf: last.Taken, Count: len(last.Objects)}
	var missing []string // roles the recorded owners and privileges name that do not exist here
	// The state recorded before it: the previous capture's, or the full
	// backup's (what was restored). Unchanged means exact at the target.
	prior := cur
	if chosen > 0 {
		prior = snaps[chosen-1].idx.Objects
	}
	rep.Exact = exact || sameObjects(prior, last.Objects)
	for oid := range cur {
		if _, ok := last.Objects[oid]; !ok {
			if _, err := conn.Exec(ctx, `SELECT pg_catalog.lo_unlink($1)`, oid); err != nil {
				return nil, fmt.Errorf("remove large object %d: %w", oid, err)
			}
			rep.Removed++
		}
	}
	for oid, want := range last.Objects {
		have, ok := cur[oid]
		if !ok || have.MD5 != want.MD5 {
			file := data[oid][want.MD5]
			if file == "" {
				return nil, fmt.Errorf("large object %d (md5 %s) is in the recorded state but its data is in no archive of the plan; run pme2go-backup verify", oid, want.MD5)
			}
			b, err := os.ReadFile(file)
			if err != nil {
				return nil, fmt.Errorf("read large object %d: %w", oid, err)
			}
			if ok {
				if _, err := conn.Exec(ctx, `SELECT pg_catalog.lo_unlink($1)`, oid); err != nil {
					return nil, fmt.Errorf("replace large object %d: %w", oid, err)
				}
			}
			if _, err := conn.Exec(ctx, `SELECT pg_catalog.lo_from_bytea($1, $2)`, oid, b); err != nil {
				return nil, fmt.Errorf("write large object %d: %w", oid, err)
			}
			rep.Written++
			have = chain.LargeObject{}
		}
		if want.Owner != "" && have.Owner != want.Owner {
			// The owner's role may not exist where the restore runs
			// (restore without globals): then the restorer keeps it.
			var exists bool
			conn.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = $1)`, want.Owner).Scan(&exists)
			if exists {
				if _, err := conn.Exec(ctx, fmt.Sprintf("ALTER LARGE OBJECT %d OWNER TO %s", oid, pgx.Identifier{want.Owner}.Sanitize())); err != nil {
					return nil, fmt.Errorf("give large object %d to %s: %w", oid, want.Owner, err)
				}
			} else {
				missing = append(missing, fmt.Sprintf("owner %s of large object %d", want.Owner, oid))
			}
		}
		if have.Comment != want.Comment {
			q := fmt.Sprintf("COMMENT ON LARGE OBJECT %d IS NULL", oid)
			if want.Comment != "" {
				q = fmt.Sprintf("COMMENT ON LARGE OBJECT %d IS %s", oid, quoteLit(want.Comment))
			}
			if _, err := conn.Exec(ctx, q); err != nil {
				return nil, fmt.Errorf("comment on large object %d: %w", oid, err)
			}
		}
		if have.ACL != want.ACL || have.Owner != want.Owner {
			m, err := setLargeObjectACL(ctx, conn, oid, want.ACL)
			if err != nil {
				return nil, err
			}
			missing = append(missing, m...)
		}
	}
	rep.Note = "large objects are restored as recorded at " + last.Taken.UTC().Format(time.RFC3339Nano) + " (captured at each seal and, while streaming, when they changed), not per transaction"
	if rep.Exact {
		rep.Note = "large objects did not change around the target (same state at the captures before and after it); restored as recorded at " + last.Taken.UTC().Format(time.RFC3339Nano)
	}
	if len(missing) > 0 {
		rep.Exact = false
		if len(missing) > 6 {
			missing = append(missing[:6], fmt.Sprintf("and %d more", len(missing)-6))
		}
		rep.Note += "; roles missing here (restore the globals first), so these stay with the restoring role or without the privilege: " + strings.Join(missing, ", ")
	}
	p.LargeObjects = rep
	return rep, nil
}

// sameObjects reports whether two recorded states are the same: data,
// owner, privileges and comment of every large object.
func sameObjects(a, b chain.LargeObjects) bool {
	if len(a) != len(b) {
		return false
	}
	for oid, x := range a {
		if y, ok := b[oid]; !ok || x != y {
			return false
		}
	}
	return true
}

// setLargeObjectACL gives large object oid exactly the privileges acl (the
// text of pg_largeobject_metadata.lomacl as captured, "" for the default):
// every privilege it has is revoked and each recorded one granted (so
// that PostgreSQL records the roles' dependencies, pg_shdepend), then the
// ACL is written as recorded, so that the order of its items and the
// grantors match the source (GRANT run by a superuser records the owner
// as grantor). A grantee role that does not exist here is left out; the
// names of such roles are returned.
func setLargeObjectACL(ctx context.Context, conn *pgx.Conn, oid uint32, acl string) ([]string, error) {
	rows, err := conn.Query(ctx, `SELECT DISTINCT CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE pg_catalog.quote_ident(pg_catalog.pg_get_userbyid(a.grantee)) END
	   FROM pg_catalog.pg_largeobject_metadata m, pg_catalog.aclexplode(m.lomacl) a WHERE m.oid = $1`, oid)
	if err != nil {
		return nil, fmt.Errorf("read the privileges of large object %d: %w", oid, err)
	}
	grantees, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, fmt.Errorf("read the privileges of large object %d: %w", oid, err)
	}
	if len(grantees) > 0 {
		if _, err := conn.Exec(ctx, fmt.Sprintf("REVOKE ALL ON LARGE OBJECT %d FROM %s CASCADE", oid, strings.Join(grantees, ", "))); err != nil {
			return nil, fmt.Errorf("reset the privileges of large object %d: %w", oid, err)
		}
	}
	var missing []string
	if acl != "" {
		// The recorded items: PostgreSQL splits the array (quoting),
		// each item is grantee=privileges/grantor with names quoted as
		// identifiers where needed.
		rows, err := conn.Query(ctx, `SELECT pg_catalog.unnest($1::pg_catalog.text[])`, acl)
		if err != nil {
			return nil, fmt.Errorf("read the recorded privileges of large object %d: %w", oid, err)
		}
		texts, err := pgx.CollectRows(rows, pgx.RowTo[string])
		if err != nil {
			return nil, fmt.Errorf("read the recorded privileges of large object %d: %w", oid, err)
		}
		type item struct {
			grantee, privs string
			grantOption    bool
			exists         bool
		}
		var items []item
		for _, t := range texts {
			g, rest := aclName(t)
			privs, _, _ := strings.Cut(strings.TrimPrefix(rest, "="), "/")
			it := item{grantee: g, privs: privs, grantOption: strings.Contains(privs, "*"), exists: true}
			if g == "" {
				it.grantee = "PUBLIC"
			} else if err := conn.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = $1)`, g).Scan(&it.exists); err != nil {
				return nil, fmt.Errorf("look up role %s: %w", g, err)
			}
			items = append(items, it)
		}
		for _, it := range items {
			if !it.exists {
				missing = append(missing, fmt.Sprintf("grantee %s of large object %d", it.grantee, oid))
				continue
			}
			var privs []string
			if strings.Contains(it.privs, "r") {
				privs = append(privs, "SELECT")
			}
			if strings.Contains(it.privs, "w") {
				privs = append(privs, "UPDATE")
			}
			if len(privs) == 0 {
				continue
			}
			who := "PUBLIC"
			if it.grantee != "PUBLIC" {
				who = pgx.Identifier{it.grantee}.Sanitize()
			}
			q := fmt.Sprintf("GRANT %s ON LARGE OBJECT %d TO %s", strings.Join(privs, ", "), oid, who)
			if it.grantOption {
				q += " WITH GRANT OPTION"
			}
			if _, err := conn.Exec(ctx, q); err != nil {
				return nil, fmt.Errorf("grant privileges on large object %d: %w", oid, err)
			}
		}
	}
	if len(missing) > 0 {
		return missing, nil
	}
	// Exactly as recorded: item order and grantors (the items are the
	// same, so the dependencies recorded above stay right), or the
	// default (NULL).
	var want any
	if acl != "" {
		want = acl
	}
	if _, err := conn.Exec(ctx, `UPDATE pg_catalog.pg_largeobject_metadata SET lomacl = $2::pg_catalog.aclitem[] WHERE oid = $1 AND lomacl::pg_catalog.text IS DISTINCT FROM $2`, oid, want); err != nil {
		return nil, fmt.Errorf("set the privileges of large object %d: %w", oid, err)
	}
	return nil, nil
}

// aclName reads the role name at the start of an aclitem's text (quoted
// as an identifier when needed; "" for PUBLIC) and returns it with the
// rest of the text.
func aclName(s string) (string, string) {
	if !strings.HasPrefix(s, `"`) {
		name, rest, _ := strings.Cut(s, "=")
		return name, "=" + rest
	}
	var b strings.Builder
	for i := 1; i < len(s); i++ {
		if s[i] == '"' {
			if i+1 < len(s) && s[i+1] == '"' {
				b.WriteByte('"')
				i++
				continue
			}
			return b.String(), s[i+1:]
		}
		b.WriteByte(s[i])
	}
	return b.String(), ""
}

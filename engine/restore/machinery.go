package restore

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"strings"

	"github.com/jackc/pgx/v5"

	"github.com/pme2go/pme2go-backup/engine/chain"
	"github.com/pme2go/pme2go-backup/engine/config"
	"github.com/pme2go/pme2go-backup/engine/pgclient"
)

// A restored database carries none of pme2go-backup's machinery (chain
// publications, the DDL capture event trigger, its function, our schema and
// comments on them): it would make UPDATE and DELETE on tables without a
// replica identity fail in the restored copy, fire our trigger on the
// restored database's DDL, and need privileges a restore does not. Two
// layers keep them out, both recognising our objects with the predicates of
// engine/chain (chain.IsOurs, chain.IsOurSchema, chain.IsOurFunction):
//
//  1. ourTOCList leaves their entries out of the dump's table of contents
//     (pg_restore -l, then -L), so pg_restore never creates them;
//  2. dropMachinery drops whatever is still there in the scratch database
//     (a scratch database of an older version resumed with --resume, an
//     entry the list did not recognise, DDL replay) before the swap.
//
// The user's own publications, event triggers and functions are kept.

// ourTOCList writes the list of dumpDir's table of contents to listFile
// with the entries of our machinery commented out, for pg_restore -L. It
// returns the entries it left out (as pg_restore -l prints them).
func ourTOCList(ctx context.Context, cfg *config.Config, target pgclient.Target, log *slog.Logger, dumpDir, db, listFile string) ([]string, error) {
	tool, err := findTool(ctx, "pg_restore", cfg.PgBinDir)
	if err != nil {
		return nil, err
	}
	full := listFile + ".all"
	defer os.Remove(full)
	if err := tool.Run(ctx, log, target, db, "-l", "-f", full, dumpDir); err != nil {
		return nil, fmt.Errorf("read the table of contents of %s: %w", dumpDir, err)
	}
	data, err := os.ReadFile(full)
	if err != nil {
		return nil, fmt.Errorf("read the table of contents of %s: %w", dumpDir, err)
	}
	out, left := filterTOC(string(data))
	if err := os.WriteFile(listFile, []byte(out), 0o600); err != nil {
		return nil, fmt.Errorf("write restore list: %w", err)
	}
	return left, nil
}

// filterTOC comments out (with "; pme2go: ") the lines of a pg_restore -l
// listing that are entries of our machinery, and returns the new listing
// and the lines left out.
func filterTOC(listing string) (string, []string) {
	lines := strings.Split(listing, "\n")
	// Our publications, first, so that their tables' entries
	// ("PUBLICATION TABLE schema pub table owner") are recognised whatever
	// the schema's name.
	pubs := map[string]bool{}
	for _, l := range lines {
		if rest, ok := tocRest(l); ok {
			if name, ok := strings.CutPrefix(rest, "PUBLICATION - "); ok {
				if f := strings.Fields(name); len(f) > 0 && chain.IsOurs(f[0]) {
					pubs[f[0]] = true
				}
			}
		}
	}
	var left []string
	for i, l := range lines {
		rest, ok := tocRest(l)
		if !ok || !ourTOCEntry(rest, pubs) {
			continue
		}
		left = append(left, l)
		lines[i] = "; pme2go: " + l
	}
	return strings.Join(sectionLeaders(lines), "\n"), left
}

// sectionLeaders moves the comments, grants and security labels that
// come before the first other entry of a listing (as "ACL - SCHEMA
// public" does) to just after that entry when it belongs to the pre-data
// section. pg_restore -L puts the entries left out of the list first, and
// an entry without a section of its own takes the section of the entry
// before it: the last one left out, one of our event triggers
// (post-data). Such a grant would wait for the data and post-data step,
// while the restore needs the schemas' grants in place after the
// pre-data step (userfuncs.go).
func sectionLeaders(lines []string) []string {
	var lead []int
	for i, l := range lines {
		rest, ok := tocRest(l)
		if !ok {
			continue
		}
		if strings.HasPrefix(rest, "ACL ") || strings.HasPrefix(rest, "COMMENT ") || strings.HasPrefix(rest, "SECURITY LABEL ") {
			lead = append(lead, i)
			continue
		}
		if len(lead) == 0 || !preDataEntry(rest) {
			return lines
		}
		out := make([]string, 0, len(lines))
		moved := map[int]bool{}
		for _, k := range lead {
			moved[k] = true
		}
		for k, x := range lines[:i+1] {
			if !moved[k] {
				out = append(out, x)
			}
		}
		for _, k := range lead {
			out = append(out, lines[k])
		}
		return append(out, lines[i+1:]...)
	}
	return lines
}

// preDataEntry reports whether a listing entry ("<desc> <schema> <tag>
// <owner>") is of the pre-data section: not one of the data or post-data
// kinds pg_dump writes.
func preDataEntry(rest string) bool {
	for _, d := range []string{"TABLE DATA ", "SEQUENCE SET ", "BLOB", "LARGE OBJECT", "MATERIALIZED VIEW DATA ",
		"CONSTRAINT ", "FK CONSTRAINT ", "CHECK CONSTRAINT ", "INDEX ", "INDEX ATTACH ", "TRIGGER ", "EVENT TRIGGER ", "RULE ",
		"POLICY ", "ROW SECURITY ", "PUBLICATION", "SUBSCRIPTION", "STATISTICS ", "DEFAULT ACL "} {
		if strings.HasPrefix(rest, d) {
			return false
		}
	}
	return true
}

// tocRest returns what follows "<dump id>; <catalog oid> <oid> " in a line
// of pg_restore -l: "<desc> <schema> <tag> <owner>".
func tocRest(line string) (string, bool) {
	if strings.HasPrefix(line, ";") {
		return "", false
	}
	_, rest, ok := strings.Cut(line, "; ")
	if !ok {
		return "", false
	}
	f := strings.SplitN(rest, " ", 3)
	if len(f) != 3 {
		return "", false
	}
	return f[2], true
}

// ourTOCEntry reports whether a table of contents entry ("<desc> <schema>
// <tag> <owner>") creates, comments on or grants on one of our objects.
// Names with spaces are printed unquoted; ours never have any.
func ourTOCEntry(rest string, pubs map[string]bool) bool {
	fields := strings.Fields(rest)
	// Anything in, or on, our schema (SCHEMA, its COMMENT and ACL, its
	// functions and their ACLs, …). The last field is the owner.
	for _, f := range fields[:max(len(fields)-1, 0)] {
		if chain.IsOurSchema(f) {
			return true
		}
	}
	first := func(s string) string {
		if f := strings.Fields(s); len(f) > 0 {
			return f[0]
		}
		return ""
	}
	fn := func(s string) bool { // "<schema> <name>(<args>) <owner>"
		f := strings.Fields(s)
		if len(f) < 2 {
			return false
		}
		name, _, _ := strings.Cut(f[1], "(")
		return chain.IsOurFunction(f[0], name)
	}
	for _, desc := range []string{"PUBLICATION TABLES IN SCHEMA ", "PUBLICATION TABLE "} {
		if s, ok := strings.CutPrefix(rest, desc); ok {
			f := strings.Fields(s)
			for _, x := range f[:max(len(f)-1, 0)] {
				if pubs[x] {
					return true
				}
			}
			return len(f) > 1 && chain.IsOurs(f[1])
		}
	}
	for _, desc := range []string{"PUBLICATION - ", "EVENT TRIGGER - "} {
		if s, ok := strings.CutPrefix(rest, desc); ok {
			return chain.IsOurs(first(s))
		}
	}
	if s, ok := strings.CutPrefix(rest, "FUNCTION "); ok {
		return fn(s)
	}
	for _, desc := range []string{"COMMENT ", "ACL ", "SECURITY LABEL "} {
		s, ok := strings.CutPrefix(rest, desc)
		if !ok {
			continue
		}
		// "- EVENT TRIGGER name owner", "- PUBLICATION name owner",
		// "schema FUNCTION name(args) owner".
		if t, ok := strings.CutPrefix(s, "- EVENT TRIGGER "); ok {
			return chain.IsOurs(first(t))
		}
		if t, ok := strings.CutPrefix(s, "- PUBLICATION "); ok {
			return chain.IsOurs(first(t))
		}
		f := strings.Fields(s)
		if len(f) >= 3 && f[1] == "FUNCTION" {
			return fn(f[0] + " " + f[2])
		}
		return false
	}
	return false
}

// dropMachinery drops our publications, event triggers, functions and
// schemas from the database conn is connected to (a scratch database before
// its swap) in one transaction, and returns what it dropped ("publication
// pme2go_…", …). Our schema is dropped with CASCADE: everything in it is
// ours.
func dropMachinery(ctx context.Context, conn *pgx.Conn) ([]string, error) {
	q := `SELECT 'event trigger', format('EVENT TRIGGER %I', e.evtname), e.evtname
	        FROM pg_event_trigger e JOIN pg_proc p ON p.oid = e.evtfoid JOIN pg_namespace n ON n.oid = p.pronamespace
	       WHERE ` + chain.OursSQL("e.evtname") + ` OR ` + chain.OurSchemaSQL("n.nspname") + `
	          OR (n.nspname = 'public' AND p.proname = '` + chain.LegacyDDLFunction + `')
	      UNION ALL
	      SELECT 'publication', format('PUBLICATION %I', pubname), pubname FROM pg_publication WHERE ` + chain.OursSQL("pubname") + `
	      UNION ALL
	      SELECT 'function', format('FUNCTION %s', p.oid::regprocedure), format('%I.%I()', n.nspname, p.proname)
	        FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
	       WHERE n.nspname = 'public' AND p.proname = '` + chain.LegacyDDLFunction + `'
	      UNION ALL
	      SELECT 'schema', format('SCHEMA %I CASCADE', nspname), nspname FROM pg_namespace WHERE ` + chain.OurSchemaSQL("nspname")
	rows, err := conn.Query(ctx, q)
	if err != nil {
		return nil, fmt.Errorf("look for pme2go-backup objects in the restored database: %w", err)
	}
	type obj struct{ kind, drop, name string }
	objs, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (obj, error) {
		var o obj
		err := r.Scan(&o.kind, &o.drop, &o.name)
		return o, err
	})
	if err != nil || len(objs) == 0 {
		if err != nil {
			err = fmt.Errorf("look for pme2go-backup objects in the restored database: %w", err)
		}
		return nil, err
	}
	tx, err := conn.Begin(ctx)
	if err != nil {
		return nil, fmt.Errorf("drop pme2go-backup objects from the restored database: %w", err)
	}
	defer tx.Rollback(context.Background())
	// The user's event triggers (sql_drop, ddl_command_*) must not run
	// during our drops, with our privileges: they are disabled in this
	// transaction and given their exact enable state back before it
	// commits, so nobody ever sees them off.
	rows, err = tx.Query(ctx, `SELECT format('%I', evtname), CASE evtenabled WHEN 'A' THEN 'ENABLE ALWAYS' WHEN 'R' THEN 'ENABLE REPLICA' ELSE 'ENABLE' END
	     FROM pg_event_trigger WHERE evtenabled <> 'D' AND NOT (`+chain.OursSQL("evtname")+`)`)
	if err != nil {
		return nil, fmt.Errorf("list event triggers of the restored database: %w", err)
	}
	type evt struct{ name, enable string }
	userEvts, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (evt, error) {
		var e evt
		err := r.Scan(&e.name, &e.enable)
		return e, err
	})
	if err != nil {
		return nil, fmt.Errorf("list event triggers of the restored database: %w", err)
	}
	for _, e := range userEvts {
		if _, err := tx.Exec(ctx, "ALTER EVENT TRIGGER "+e.name+" DISABLE"); err != nil {
			return nil, fmt.Errorf("disable event trigger %s during our drops: %w", e.name, err)
		}
	}
	var done []string
	for _, o := range objs {
		if _, err := tx.Exec(ctx, "DROP "+o.drop); err != nil {
			return nil, fmt.Errorf("drop %s %s from the restored database: %w", o.kind, o.name, err)
		}
		done = append(done, o.kind+" "+o.name)
	}
	for _, e := range userEvts {
		if _, err := tx.Exec(ctx, "ALTER EVENT TRIGGER "+e.name+" "+e.enable); err != nil {
			return nil, fmt.Errorf("give event trigger %s its state back: %w", e.name, err)
		}
	}
	if err := tx.Commit(ctx); err != nil {
		return nil, fmt.Errorf("drop pme2go-backup objects from the restored database: %w", err)
	}
	return done, nil
}

// RemoveMachinery drops pme2go-backup's publications, event triggers,
// functions and schemas (those engine/chain recognises as ours, of any
// installation and version) from database db, for example a database
// restored by an older version, and returns what it dropped. It never
// touches the user's own objects. It needs the privileges to drop them (an
// event trigger needs a superuser).
func RemoveMachinery(ctx context.Context, target pgclient.Target, db string, log *slog.Logger) ([]string, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return removeMachinery(ctx, target, db, log)
}

// removeMachinery runs dropMachinery in database db and logs what it did.
func removeMachinery(ctx context.Context, target pgclient.Target, db string, log *slog.Logger) ([]string, error) {
	conn, err := target.Connect(ctx, db)
	if err != nil {
		return nil, err
	}
	defer conn.Close(context.Background())
	done, err := dropMachinery(ctx, conn)
	for _, d := range done {
		log.Info("pme2go-backup object removed from the restored database", "database", db, "object", d)
	}
	return done, err
}

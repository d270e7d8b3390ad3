package restore

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"regexp"
	"strconv"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/pme2go/pme2go-backup/engine/config"
	"github.com/pme2go/pme2go-backup/engine/pgclient"
)

// Database-level settings come back with a restored database: its comment,
// its grants (GRANT CONNECT, CREATE, TEMPORARY … ON DATABASE), its
// properties (CONNECTION LIMIT, IS_TEMPLATE), ALTER DATABASE … SET and ALTER
// ROLE … IN DATABASE … SET, and security labels. pg_dump already records
// them in every dump of the archive (format 1, old archives included), as
// the table of contents entries "DATABASE PROPERTIES", "COMMENT - DATABASE",
// "ACL - DATABASE" and "SECURITY LABEL - DATABASE", which pg_restore
// applies only with --create, i.e. to a database of the dumped name.
// dumpedSettings has pg_restore print exactly those entries as SQL, and
// applySettings runs them against the scratch database, with the database
// name in each statement replaced by the scratch database's: so they ride
// along with the swap, and a restore under another name (--target-db) gets
// them under its name. Ownership and encoding/locale are set when the
// scratch database is created (createDatabase).

// settingTypes are the table of contents entries holding database-level
// settings (desc and the start of the tag, as pg_restore -l prints them).
var settingEntries = []string{"DATABASE PROPERTIES - ", "COMMENT - DATABASE ", "ACL - DATABASE ", "SECURITY LABEL - DATABASE "}

// settingSections are the object types of those entries in pg_restore's
// script output ("-- Name: …; Type: …; Schema: …").
var settingSections = map[string]bool{"DATABASE PROPERTIES": true, "COMMENT": true, "ACL": true, "SECURITY LABEL": true}

// dumpedSettings returns the name of the database dumpDir was dumped from
// (as its table of contents records it) and the SQL statements setting its
// database-level properties, with noACL leaving out its grants.
func dumpedSettings(ctx context.Context, cfg *config.Config, target pgclient.Target, log *slog.Logger, dumpDir, db string, noACL bool) (string, []string, error) {
	tool, err := findTool(ctx, "pg_restore", cfg.PgBinDir)
	if err != nil {
		return "", nil, err
	}
	base := dumpDir + ".settings"
	defer os.Remove(base + ".all")
	defer os.Remove(base + ".list")
	defer os.Remove(base + ".sql")
	if err := tool.Run(ctx, log, target, db, "--create", "-l", "-f", base+".all", dumpDir); err != nil {
		return "", nil, fmt.Errorf("read the table of contents of %s: %w", dumpDir, err)
	}
	data, err := os.ReadFile(base + ".all")
	if err != nil {
		return "", nil, fmt.Errorf("read the table of contents of %s: %w", dumpDir, err)
	}
	name, list := settingsTOC(string(data), noACL)
	if name == "" {
		return "", nil, fmt.Errorf("the table of contents of %s names no database", dumpDir)
	}
	if len(list) == 0 {
		return name, nil, nil
	}
	if err := os.WriteFile(base+".list", []byte(strings.Join(list, "\n")+"\n"), 0o600); err != nil {
		return "", nil, fmt.Errorf("write restore list: %w", err)
	}
	if err := tool.Run(ctx, log, target, db, "--create", "-L", base+".list", "-f", base+".sql", dumpDir); err != nil {
		return "", nil, fmt.Errorf("read the database settings of %s: %w", dumpDir, err)
	}
	script, err := os.ReadFile(base + ".sql")
	if err != nil {
		return "", nil, fmt.Errorf("read the database settings of %s: %w", dumpDir, err)
	}
	return name, settingStatements(string(script)), nil
}

// settingsTOC returns the database name of a pg_restore --create -l listing
// (its "dbname:" header line) and the listing's lines of database-level
// settings.
func settingsTOC(listing string, noACL bool) (string, []string) {
	name := ""
	var out []string
	for _, l := range strings.Split(listing, "\n") {
		if v, ok := strings.CutPrefix(l, ";     dbname: "); ok && name == "" {
			name = v
			continue
		}
		rest, ok := tocRest(l)
		if !ok {
			continue
		}
		for _, e := range settingEntries {
			if strings.HasPrefix(rest, e) && !(noACL && e == "ACL - DATABASE ") {
				out = append(out, l)
			}
		}
	}
	return name, out
}

var sectionHeader = regexp.MustCompile(`^-- Name: .*; Type: ([A-Z ]+); Schema: `)

// settingStatements splits pg_restore's script output into statements and
// keeps those of the database-level settings sections, leaving out
// comments, psql meta-commands (\connect, \restrict) and the session SET
// commands pg_restore emits after each \connect.
func settingStatements(script string) []string {
	var out []string
	section := ""
	var cur strings.Builder
	inQuote := byte(0) // ' or " while inside a literal or identifier
	for i := 0; i < len(script); i++ {
		ch := script[i]
		atStart := strings.TrimSpace(cur.String()) == ""
		switch {
		case inQuote != 0:
			cur.WriteByte(ch)
			if ch == inQuote {
				if i+1 < len(script) && script[i+1] == inQuote {
					cur.WriteByte(ch)
					i++
				} else {
					inQuote = 0
				}
			}
			continue
		case atStart && (ch == '\\' || (ch == '-' && i+1 < len(script) && script[i+1] == '-')):
			end := strings.IndexByte(script[i:], '\n')
			if end < 0 {
				end = len(script) - i
			}
			if m := sectionHeader.FindStringSubmatch(script[i : i+end]); m != nil {
				section = m[1]
			}
			i += end
			cur.Reset()
			continue
		case ch == '\'' || ch == '"':
			inQuote = ch
		case ch == ';':
			stmt := strings.TrimSpace(cur.String())
			cur.Reset()
			if settingSections[section] && !strings.HasPrefix(stmt, "SET ") && !strings.HasPrefix(stmt, "SELECT ") {
				out = append(out, stmt)
			}
			continue
		}
		cur.WriteByte(ch)
	}
	return out
}

// renameInSetting rewrites a settings statement naming the database
// "DATABASE <qfrom>" to name qto instead; false when the statement does not
// name it so (it is then not run: it could act on another database).
func renameInSetting(stmt, qfrom, qto string) (string, bool) {
	key := "DATABASE " + qfrom
	for off := 0; ; {
		i := strings.Index(stmt[off:], key)
		if i < 0 {
			return "", false
		}
		i += off
		end := i + len(key)
		if end == len(stmt) || strings.ContainsRune(" \n\t;", rune(stmt[end])) {
			return stmt[:i] + "DATABASE " + qto + stmt[end:], true
		}
		off = end
	}
}

// applySettings runs the database-level settings dumped from database
// source against database db (the scratch database). A statement that fails
// (a role that does not exist here, a setting this server does not know)
// is logged and named in the returned notes; the restore goes on. Without a
// comment in the dump, db's comment is removed (a point-in-time scratch
// database carries one of ours). The dumped CONNECTION LIMIT is not
// applied but returned (-1 without one): the scratch database keeps
// CONNECTION LIMIT 0 until it is swapped in (setConnLimit).
func applySettings(ctx context.Context, maint *pgx.Conn, source, db string, stmts []string, log *slog.Logger) ([]string, int, error) {
	limit := -1
	var qfrom string
	if err := maint.QueryRow(ctx, `SELECT quote_ident($1)`, source).Scan(&qfrom); err != nil {
		return nil, limit, fmt.Errorf("database settings: %w", err)
	}
	qto := ident(db)
	var notes []string
	hasComment := false
	for _, s := range stmts {
		q, ok := renameInSetting(s, qfrom, qto)
		if !ok {
			log.Warn("database setting not applied: it does not name the dumped database", "database", db, "statement", s)
			notes = append(notes, "database setting not applied (it does not name the dumped database): "+s)
			continue
		}
		if strings.HasPrefix(q, "COMMENT ON DATABASE ") {
			hasComment = true
		}
		if m := connLimitStmt.FindStringSubmatch(q); m != nil {
			if n, err := strconv.Atoi(m[1]); err == nil {
				limit = n
				continue
			}
		}
		if _, err := maint.Exec(ctx, q); err != nil {
			log.Warn("database setting not applied", "database", db, "statement", q, "error", err)
			notes = append(notes, fmt.Sprintf("database setting not applied: %s: %v", q, err))
		}
	}
	if !hasComment {
		if _, err := maint.Exec(ctx, "COMMENT ON DATABASE "+qto+" IS NULL"); err != nil {
			return notes, limit, fmt.Errorf("database settings: %w", err)
		}
	}
	return notes, limit, nil
}

// connLimitStmt is pg_dump's statement of a database's connection limit.
var connLimitStmt = regexp.MustCompile(`^ALTER DATABASE .* CONNECTION LIMIT = (-?[0-9]+)$`)

// setConnLimit gives database db the connection limit limit unless it has
// it already (a role that is not a superuser then needs no privilege).
func setConnLimit(ctx context.Context, q interface {
	Exec(context.Context, string, ...any) (pgconn.CommandTag, error)
	QueryRow(context.Context, string, ...any) pgx.Row
}, db string, limit int) error {
	var cur int
	if err := q.QueryRow(ctx, `SELECT datconnlimit FROM pg_catalog.pg_database WHERE datname = $1`, db).Scan(&cur); err != nil {
		return fmt.Errorf("look up database %s: %w", db, err)
	}
	if cur == limit {
		return nil
	}
	if _, err := q.Exec(ctx, "ALTER DATABASE "+ident(db)+" CONNECTION LIMIT "+strconv.Itoa(limit)); err != nil {
		return fmt.Errorf("give database %s its connection limit %d: %w", db, limit, err)
	}
	return nil
}

// restoreSettings applies the database-level settings of dumpDir to the
// scratch database fresh, restored for target, and returns what the output
// should say and the dumped connection limit (applied at the swap).
func restoreSettings(ctx context.Context, cfg *config.Config, target pgclient.Target, maint *pgx.Conn, opts Options, st Step, dumpDir, fresh string, pre *settingsFuture) ([]string, int, error) {
	source, stmts, err := pre.get(ctx, cfg, target, opts.Log, dumpDir, fresh, opts.NoOwner)
	if err != nil {
		return nil, -1, err
	}
	notes, limit, err := applySettings(ctx, maint, source, fresh, stmts, opts.Log)
	if err != nil {
		return notes, limit, err
	}
	if len(stmts) > 0 && st.Target != st.Source {
		notes = append(notes, fmt.Sprintf("database-level settings of %s (comment, grants, connection limit, ALTER DATABASE/ROLE … SET) applied to %s", st.Source, st.Target))
	}
	return notes, limit, nil
}

// settingsFuture reads the database-level settings (dumpedSettings) while
// the data is restored: they need only the table of contents.
type settingsFuture struct {
	started bool // run was called
	done    chan struct{}
	source  string
	stmts   []string
	err     error
}

// run computes the settings and closes f.done; pgRestore starts it once
// toc.dat is proven.
func (f *settingsFuture) run(ctx context.Context, cfg *config.Config, target pgclient.Target, log *slog.Logger, dumpDir, db string, noACL bool) {
	defer close(f.done)
	f.source, f.stmts, f.err = dumpedSettings(ctx, cfg, target, log, dumpDir, db, noACL)
}

// wait waits for run to end if it was started, so that no pg_restore of
// the settings outlives its restore.
func (f *settingsFuture) wait() {
	if f.started {
		<-f.done
	}
}

// get returns the settings computed by run, or computes them now when run
// was never started (a resumed point-in-time restore).
func (f *settingsFuture) get(ctx context.Context, cfg *config.Config, target pgclient.Target, log *slog.Logger, dumpDir, db string, noACL bool) (string, []string, error) {
	if f == nil || !f.started {
		return dumpedSettings(ctx, cfg, target, log, dumpDir, db, noACL)
	}
	select {
	case <-f.done:
		return f.source, f.stmts, f.err
	case <-ctx.Done():
		return "", nil, ctx.Err()
	}
}

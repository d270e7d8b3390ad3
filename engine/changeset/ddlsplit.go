package changeset

import (
	"encoding/json"
	"fmt"
	"strings"
)

// Statement is one statement of a query string: its text (without the
// terminating semicolon, surrounding space kept out) and its words (keywords
// and unquoted identifiers, upper-cased; quoted names, literals and
// comments left out) in order.
type Statement struct {
	Text  string
	Words []string
}

// SplitStatements splits a query string into its statements at the
// semicolons that are not inside a quoted literal ('…', E'…' with
// backslash escapes), a quoted identifier ("…"), a dollar-quoted string
// ($tag$…$tag$), a comment (-- to end of line, /* … */ nested) or a
// BEGIN ATOMIC … END function body. Empty statements are dropped.
func SplitStatements(q string) []Statement {
	var out []Statement
	start := 0
	var words []string
	atomic, caseDepth := false, 0
	flush := func(end int) {
		t := strings.TrimSpace(q[start:end])
		if t != "" {
			out = append(out, Statement{Text: t, Words: words})
		}
		words = nil
	}
	i := 0
	for i < len(q) {
		c := q[i]
		switch {
		case c == '-' && i+1 < len(q) && q[i+1] == '-':
			for i < len(q) && q[i] != '\n' {
				i++
			}
		case c == '/' && i+1 < len(q) && q[i+1] == '*':
			depth := 0
			for i < len(q) {
				if q[i] == '/' && i+1 < len(q) && q[i+1] == '*' {
					depth++
					i += 2
					continue
				}
				if q[i] == '*' && i+1 < len(q) && q[i+1] == '/' {
					depth--
					i += 2
					if depth == 0 {
						break
					}
					continue
				}
				i++
			}
		case c == '\'':
			escapes := i > 0 && (q[i-1] == 'E' || q[i-1] == 'e') && (i < 2 || !isIdentByte(q[i-2]))
			i++
			for i < len(q) {
				if escapes && q[i] == '\\' {
					i += 2
					continue
				}
				if q[i] == '\'' {
					if i+1 < len(q) && q[i+1] == '\'' {
						i += 2
						continue
					}
					break
				}
				i++
			}
			i++
		case c == '"':
			i++
			for i < len(q) {
				if q[i] == '"' {
					if i+1 < len(q) && q[i+1] == '"' {
						i += 2
						continue
					}
					break
				}
				i++
			}
			i++
		case c == '$' && (i == 0 || !isIdentByte(q[i-1])):
			j := i + 1
			for j < len(q) && isIdentByte(q[j]) && !(q[j] >= '0' && q[j] <= '9' && j == i+1) {
				j++
			}
			if j < len(q) && q[j] == '$' {
				tag := q[i : j+1]
				if k := strings.Index(q[j+1:], tag); k >= 0 {
					i = j + 1 + k + len(tag)
				} else {
					i = len(q)
				}
			} else {
				i = j
			}
		case isIdentByte(c) && !(c >= '0' && c <= '9'):
			j := i
			for j < len(q) && isIdentByte(q[j]) {
				j++
			}
			w := strings.ToUpper(q[i:j])
			words = append(words, w)
			switch {
			case w == "ATOMIC" && len(words) >= 2 && words[len(words)-2] == "BEGIN":
				atomic = true
			case atomic && w == "CASE":
				caseDepth++
			case atomic && w == "END":
				if caseDepth > 0 {
					caseDepth--
				} else {
					atomic = false
				}
			}
			i = j
		case c == ';' && !atomic:
			flush(i)
			i++
			start = i
		default:
			i++
		}
	}
	flush(len(q))
	return out
}

func isIdentByte(c byte) bool {
	return c == '_' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c >= 0x80
}

// firesEventTrigger reports whether a statement fires ddl_command_end
// (PostgreSQL's event trigger firing matrix): CREATE, ALTER, DROP, COMMENT,
// GRANT and REVOKE on objects, SECURITY LABEL, REFRESH MATERIALIZED VIEW,
// IMPORT FOREIGN SCHEMA, SELECT … INTO, but not commands on databases,
// roles, tablespaces, event triggers, role membership or ALTER SYSTEM.
func firesEventTrigger(w []string) bool {
	if len(w) == 0 {
		return false
	}
	has := func(s string) bool {
		for _, x := range w {
			if x == s {
				return true
			}
		}
		return false
	}
	shared := func(i int) bool {
		if i >= len(w) {
			return false
		}
		switch w[i] {
		case "DATABASE", "ROLE", "USER", "GROUP", "TABLESPACE", "SYSTEM":
			return true
		case "EVENT":
			return i+1 < len(w) && w[i+1] == "TRIGGER"
		}
		return false
	}
	switch w[0] {
	case "CREATE", "ALTER", "DROP":
		i := 1
		for i < len(w) && (w[i] == "OR" || w[i] == "REPLACE" || w[i] == "UNIQUE" || w[i] == "TEMP" ||
			w[i] == "TEMPORARY" || w[i] == "UNLOGGED" || w[i] == "GLOBAL" || w[i] == "LOCAL" || w[i] == "TRUSTED" ||
			w[i] == "PROCEDURAL" || w[i] == "DEFAULT" || w[i] == "RECURSIVE") {
			i++
		}
		return !shared(i)
	case "COMMENT", "SECURITY":
		for i, x := range w {
			if x == "ON" {
				return !shared(i + 1)
			}
		}
		return true
	case "GRANT", "REVOKE":
		// GRANT role TO role (membership) has no ON.
		for i, x := range w {
			if x == "ON" {
				return !(i+1 < len(w) && (w[i+1] == "DATABASE" || w[i+1] == "TABLESPACE"))
			}
		}
		return false
	case "REFRESH", "IMPORT":
		return true
	case "SELECT":
		return has("INTO")
	}
	return false
}

// tagMatches reports whether the command tag (TG_TAG: "CREATE INDEX",
// "CREATE TABLE AS", "SELECT INTO", …) can be the tag of a statement with
// these words: the tag's first two words appear in order among the
// statement's first eight.
func tagMatches(tag string, w []string) bool {
	tw := strings.Fields(strings.ToUpper(tag))
	if len(tw) > 2 {
		tw = tw[:2]
	}
	if len(w) > 8 {
		w = w[:8]
	}
	j := 0
	for _, x := range w {
		if j < len(tw) && x == tw[j] {
			j++
		}
	}
	return j == len(tw)
}

// stripConcurrently removes the CONCURRENTLY keyword (outside literals,
// quoted names and comments) from a statement, so that it runs inside a
// transaction block at its position in replay. It reports whether it did.
func stripConcurrently(stmt string) (string, bool) {
	up := strings.ToUpper(stmt)
	// Walk with the lexer's rules: only a bare word counts.
	var b strings.Builder
	found := false
	i := 0
	for i < len(stmt) {
		j := skipNonWord(stmt, i)
		if j > i {
			b.WriteString(stmt[i:j])
			i = j
			continue
		}
		k := i
		for k < len(stmt) && isIdentByte(stmt[k]) {
			k++
		}
		if k == i {
			b.WriteByte(stmt[i])
			i++
			continue
		}
		if up[i:k] == "CONCURRENTLY" {
			found = true
			for k < len(stmt) && stmt[k] == ' ' {
				k++
			}
		} else {
			b.WriteString(stmt[i:k])
		}
		i = k
	}
	return b.String(), found
}

// skipNonWord returns the end of a literal, quoted name or comment that
// starts at i (i itself when none does).
func skipNonWord(s string, i int) int {
	rest := s[i:]
	switch {
	case strings.HasPrefix(rest, "--"), strings.HasPrefix(rest, "/*"), strings.HasPrefix(rest, "'"),
		strings.HasPrefix(rest, `"`), strings.HasPrefix(rest, "$") && (i == 0 || !isIdentByte(s[i-1])):
		// Reuse the splitter on the remainder: the first token's end is
		// where its first word starts being counted.
		st := lexOne(rest)
		return i + st
	}
	return i
}

// lexOne returns the length of the quoted or commented token at the start
// of s (0 when s does not start with one).
func lexOne(s string) int {
	switch {
	case strings.HasPrefix(s, "--"):
		if k := strings.IndexByte(s, '\n'); k >= 0 {
			return k
		}
		return len(s)
	case strings.HasPrefix(s, "/*"):
		depth, i := 0, 0
		for i < len(s) {
			if strings.HasPrefix(s[i:], "/*") {
				depth++
				i += 2
				continue
			}
			if strings.HasPrefix(s[i:], "*/") {
				depth--
				i += 2
				if depth == 0 {
					return i
				}
				continue
			}
			i++
		}
		return len(s)
	case s[0] == '\'' || s[0] == '"':
		q := s[0]
		i := 1
		for i < len(s) {
			if s[i] == q {
				if i+1 < len(s) && s[i+1] == q {
					i += 2
					continue
				}
				return i + 1
			}
			i++
		}
		return len(s)
	case s[0] == '$':
		j := 1
		for j < len(s) && isIdentByte(s[j]) {
			j++
		}
		if j < len(s) && s[j] == '$' {
			tag := s[:j+1]
			if k := strings.Index(s[j+1:], tag); k >= 0 {
				return j + 1 + k + len(tag)
			}
			return len(s)
		}
	}
	return 0
}

// triggerPayload is the JSON the event trigger emits (see
// chain.TriggerSQL): the whole query string and the number of this firing
// within it, or (for statements of its own) the statement itself.
type triggerPayload struct {
	V          int      `json:"v"`
	Query      *string  `json:"query"`
	N          int      `json:"n"`
	Tag        string   `json:"tag"`
	SearchPath string   `json:"searchPath"`
	Role       string   `json:"role"`
	Statement  string   `json:"statement"`
	Rewrite    *string  `json:"rewrite"`
	Unlogged   []string `json:"unlogged"`
	// Objects lists the OIDs of the objects the statement created,
	// altered or dropped (pg_event_trigger_ddl_commands and
	// pg_event_trigger_dropped_objects); absent in payloads of triggers
	// installed by older versions.
	Objects *[]int64 `json:"objects"`
	// Grants lists the object types of commands reported without their
	// objects (GRANT, REVOKE, ALTER DEFAULT PRIVILEGES: "TABLE", …).
	Grants []string `json:"grants"`
}

// ResolvedDDL is what capture stores for one event trigger message.
type ResolvedDDL struct {
	DDL DDL
	// Unlogged lists the unlogged tables the statement created: not
	// published, not covered by incrementals.
	Unlogged []string
	// End, when set, is why the statement cannot be replayed exactly: the
	// chain ends at this message.
	End string
	// Objects are the OIDs of the objects the statement touched, and
	// Grants the object types of privilege commands it ran (see
	// triggerPayload); Known is false for payloads that do not say
	// (triggers installed by older versions).
	Objects []uint32
	Grants  []string
	Known   bool
}

// ResolveDDL turns the event trigger's payload into the DDL record stored
// in change sets: the one statement of the query string that fired the
// trigger (the n-th statement that fires event triggers), without
// CONCURRENTLY. Its End field says why a statement cannot be replayed
// exactly: the firing cannot be matched to a statement, or a column type
// change rewrote a table with a USING expression that calls functions.
func ResolveDDL(content []byte) (ResolvedDDL, error) {
	var p triggerPayload
	if err := json.Unmarshal(content, &p); err != nil {
		return ResolvedDDL{}, fmt.Errorf("captured DDL: bad payload: %w", err)
	}
	r := ResolvedDDL{DDL: DDL{V: DDLVersion, SearchPath: p.SearchPath, Role: p.Role, Tag: p.Tag, Statement: p.Statement}, Unlogged: p.Unlogged,
		Grants: p.Grants, Known: p.Objects != nil || p.Query == nil}
	if p.Objects != nil {
		for _, o := range *p.Objects {
			r.Objects = append(r.Objects, uint32(o))
		}
	}
	if p.Query == nil {
		return r, nil
	}
	var firing []Statement
	rollback := false
	for _, s := range SplitStatements(*p.Query) {
		if firesEventTrigger(s.Words) {
			firing = append(firing, s)
		}
		if len(s.Words) > 0 && (s.Words[0] == "ROLLBACK" || s.Words[0] == "ABORT") {
			rollback = true
		}
	}
	if rollback && len(firing) > 1 {
		// The trigger's firing count is a session setting, which a
		// rollback puts back: the n-th firing may not be the n-th statement.
		r.End = fmt.Sprintf("a query string with ROLLBACK among several DDL statements (%q): cannot tell which statement ran %s", abbreviate(*p.Query, 200), p.Tag)
		return r, nil
	}
	var st Statement
	switch {
	case p.N >= 1 && p.N <= len(firing):
		st = firing[p.N-1]
	case len(firing) == 1:
		st = firing[0]
	default:
		r.End = fmt.Sprintf("cannot tell which statement of %q ran %s (firing %d of %d)", abbreviate(*p.Query, 200), p.Tag, p.N, len(firing))
		return r, nil
	}
	if !tagMatches(p.Tag, st.Words) {
		r.End = fmt.Sprintf("%s does not match statement %d of %q: it ran inside another statement", p.Tag, p.N, abbreviate(*p.Query, 200))
		return r, nil
	}
	r.DDL.Statement, r.DDL.Concurrently = stripConcurrently(st.Text)
	if p.Rewrite != nil && *p.Rewrite != "" {
		if why := volatileRewrite(*p.Rewrite, st); why != "" {
			r.End = why
		}
	}
	return r, nil
}

// volatileRewrite decides whether the table rewrites listed by the
// table_rewrite trigger ("table:reason" pairs, reason as
// pg_event_trigger_table_rewrite_reason: 1 persistence, 2 default value,
// 4 column type, 8 access method) give the same rows when the statement is
// replayed. A column type change is deterministic unless its USING
// expression calls a function (which may be volatile); the trigger ends the
// chain itself for volatile defaults.
func volatileRewrite(list string, st Statement) string {
	for _, item := range strings.Split(list, ",") {
		table, reason, _ := strings.Cut(item, ":")
		var why int
		fmt.Sscanf(reason, "%d", &why)
		if why&2 != 0 {
			return fmt.Sprintf("table %s rewritten with a volatile default by %q", table, abbreviate(st.Text, 200))
		}
		if why&4 != 0 && usingCallsFunction(st.Text) {
			return fmt.Sprintf("table %s rewritten by %q, whose USING expression calls a function: replaying it may give other values than the source has", table, abbreviate(st.Text, 200))
		}
	}
	return ""
}

// usingCallsFunction reports whether a USING clause of the statement calls
// something by name (a word directly followed by "("), other than a few
// immutable builtins and type names with a modifier.
func usingCallsFunction(stmt string) bool {
	up := strings.ToUpper(stmt)
	idx := 0
	for {
		k := indexWord(up[idx:], "USING")
		if k < 0 {
			return false
		}
		expr := up[idx+k+5:]
		for i := 0; i < len(expr); i++ {
			if n := lexOne(expr[i:]); n > 0 {
				i += n - 1
				continue
			}
			if expr[i] != '(' {
				continue
			}
			j := i
			for j > 0 && expr[j-1] == ' ' {
				j--
			}
			e := j
			for j > 0 && isIdentByte(expr[j-1]) {
				j--
			}
			name := expr[j:e]
			switch name {
			case "", "LOWER", "UPPER", "TRIM", "BTRIM", "LTRIM", "RTRIM", "ABS", "ROUND", "TRUNC", "FLOOR", "CEIL",
				"SUBSTR", "SUBSTRING", "LENGTH", "COALESCE", "NULLIF", "GREATEST", "LEAST", "CAST", "REPLACE",
				"NUMERIC", "DECIMAL", "VARCHAR", "CHAR", "CHARACTER", "VARYING", "BIT", "TIMESTAMP", "TIME", "INTERVAL":
				continue
			}
			return true
		}
		idx += k + 5
	}
}

func indexWord(s, w string) int {
	off := 0
	for {
		k := strings.Index(s[off:], w)
		if k < 0 {
			return -1
		}
		k += off
		if (k == 0 || !isIdentByte(s[k-1])) && (k+len(w) == len(s) || !isIdentByte(s[k+len(w)])) {
			return k
		}
		off = k + len(w)
	}
}

func abbreviate(s string, n int) string {
	s = strings.Join(strings.Fields(s), " ")
	if len(s) > n {
		return s[:n] + "…"
	}
	return s
}

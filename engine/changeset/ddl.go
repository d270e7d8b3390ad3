package changeset

import (
	"encoding/json"
	"fmt"
	"strings"
)

// EndPrefix starts the prefix of the logical messages by which an
// installation's event trigger ends its chain at that point (a new table
// that cannot be published safely, a table rewrite or a statement the text
// cannot reproduce); the content is the reason. The full prefix carries the
// installation's short id: "pme2go.end.<id8>".
const EndPrefix = "pme2go.end"

// DDLPrefixFor returns the prefix of the DDL messages of the installation
// id8: "pme2go.ddl.<id8>", or the legacy DDLPrefix when id8 is "".
// Logical messages reach every slot of a database, so each installation
// reads only its own prefix.
func DDLPrefixFor(id8 string) string {
	if id8 == "" {
		return DDLPrefix
	}
	return DDLPrefix + "." + id8
}

// EndPrefixFor returns "pme2go.end.<id8>".
func EndPrefixFor(id8 string) string { return EndPrefix + "." + id8 }

// IsDDLPrefix reports whether prefix is the one of captured DDL: the legacy
// DDLPrefix or DDLPrefix followed by an installation's short id. Change sets
// hold only the messages of the installation that captured them.
func IsDDLPrefix(prefix string) bool {
	return prefix == DDLPrefix || (strings.HasPrefix(prefix, DDLPrefix+".") && len(prefix) > len(DDLPrefix)+1)
}

// DDLVersion is the payload version of captured DDL messages written now.
const DDLVersion = 2

// DDL is one captured DDL statement, the payload of a DDL message
// (JSON; version 1 payloads, written before, are the plain query text).
type DDL struct {
	V int `json:"v"`
	// SearchPath is the search_path of the session that ran the statement,
	// as current_setting('search_path') showed it; replay sets it around
	// the statement.
	SearchPath string `json:"searchPath"`
	// Role is the role that ran the statement (current_user, quoted as an
	// identifier is not: the plain name); replay runs it as that role so
	// that the objects it creates get the same owner.
	Role string `json:"role"`
	// Tag is the command tag ("CREATE TABLE", …).
	Tag string `json:"tag"`
	// Statement is the text of the one statement that fired the trigger.
	Statement string `json:"statement"`
	// Concurrently is set when the statement used CONCURRENTLY (it was
	// recorded without it, so that it runs inside a transaction block).
	Concurrently bool `json:"concurrently,omitempty"`
}

// ParseDDL decodes the content of a DDL message: a JSON payload of version 2,
// or (legacy) the plain statement text.
func ParseDDL(content []byte) (DDL, error) {
	s := strings.TrimSpace(string(content))
	if strings.HasPrefix(s, "{") {
		var d DDL
		if err := json.Unmarshal(content, &d); err == nil && d.V >= 2 {
			if d.V > DDLVersion {
				return d, fmt.Errorf("captured DDL payload version %d is newer than this program understands (%d); use a newer pme2go-backup", d.V, DDLVersion)
			}
			return d, nil
		}
	}
	return DDL{V: 1, Statement: string(content)}, nil
}

// SQL renders the statement for a person: its role and search_path as SET
// commands around it (for show-changes).
func (d DDL) SQL() string {
	stmt := strings.TrimSpace(d.Statement)
	if !strings.HasSuffix(stmt, ";") {
		stmt += ";"
	}
	if d.V < 2 {
		return stmt
	}
	var b strings.Builder
	if d.Role != "" {
		fmt.Fprintf(&b, "SET ROLE %s;\n", QuoteIdent(d.Role))
	}
	sp := d.SearchPath
	if strings.TrimSpace(sp) == "" {
		sp = "''"
	}
	fmt.Fprintf(&b, "SET search_path = %s;\n", sp)
	b.WriteString(stmt)
	b.WriteString("\nRESET search_path;")
	if d.Role != "" {
		b.WriteString("\nRESET ROLE;")
	}
	return b.String()
}

package chain

import (
	"regexp"
	"strings"
)

// What pme2go-backup creates in a source database, recognised by name. This
// is the one place that says which server objects are ours: restore uses it
// to keep them out of restored databases, and whatever creates a new kind of
// object must keep it true. It covers the names of every version and every
// installation (a restored database carries no chain of any installation):
//
//   - publications and event triggers named pme2go_… (Prefix): the chain's
//     publication pme2go_<chain id> of format 1, pme2go_<id8>_… since the
//     installation identity;
//   - the DDL capture function public.pme2go_capture_ddl() of format 1;
//   - our schema pme2go_<id8> (8 lower-case hex digits: the short
//     installation id) and everything in it.
//
// A user object whose name starts with pme2go_ is taken for ours: do not
// name your own publications or event triggers that way.

// LegacyDDLFunction is the DDL capture function of chains created before the
// installation identity (schema public).
const LegacyDDLFunction = "pme2go_capture_ddl"

var ourSchema = regexp.MustCompile(`^pme2go_[0-9a-f]{8}$`)

// IsOurs reports whether a publication, event trigger or replication slot
// named name was created by pme2go-backup (any installation, any version).
func IsOurs(name string) bool {
	return strings.HasPrefix(name, Prefix)
}

// IsOurSchema reports whether the schema named name is one pme2go-backup
// creates to hold its functions (pme2go_<id8>).
func IsOurSchema(name string) bool {
	return ourSchema.MatchString(name)
}

// IsOurFunction reports whether the function schema.name is ours: anything in
// one of our schemas, and the legacy public.pme2go_capture_ddl.
func IsOurFunction(schema, name string) bool {
	return IsOurSchema(schema) || (schema == "public" && name == LegacyDDLFunction)
}

// OursSQL is a boolean SQL expression over the catalog name column col
// (for example pubname, evtname) that is true for our objects, the
// counterpart of IsOurs for catalog queries.
func OursSQL(col string) string {
	return col + ` LIKE 'pme2go\_%'`
}

// OurSchemaSQL is the SQL counterpart of IsOurSchema for the column col.
func OurSchemaSQL(col string) string {
	return col + ` ~ '^pme2go_[0-9a-f]{8}$'`
}

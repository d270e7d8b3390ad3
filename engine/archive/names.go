package archive

import (
	"errors"
	"fmt"
	"strings"
	"time"
)

// errUnsafeName is wrapped by every member name validation error.
var errUnsafeName = errors.New("unsafe member name")

// CleanMemberName validates a tar member name and returns it without a
// trailing slash. Names must be relative, slash-separated paths without
// empty, "." or ".." components and without NUL bytes. Directory names may
// carry one trailing slash.
func CleanMemberName(name string) (string, error) {
	n := strings.TrimSuffix(name, "/")
	switch {
	case n == "":
		return "", fmt.Errorf("%w %q: name is empty", errUnsafeName, name)
	case strings.HasPrefix(n, "/"):
		return "", fmt.Errorf("%w %q: absolute path", errUnsafeName, name)
	case strings.ContainsRune(n, 0):
		return "", fmt.Errorf("%w %q: contains a NUL byte", errUnsafeName, name)
	}
	for part := range strings.SplitSeq(n, "/") {
		switch part {
		case "":
			return "", fmt.Errorf("%w %q: empty path component", errUnsafeName, name)
		case ".":
			return "", fmt.Errorf("%w %q: \".\" path component", errUnsafeName, name)
		case "..":
			return "", fmt.Errorf("%w %q: \"..\" path component escapes the archive", errUnsafeName, name)
		}
	}
	return n, nil
}

// joinMember joins a member prefix and a relative slash path.
func joinMember(prefix, rel string) string {
	prefix = strings.TrimSuffix(prefix, "/")
	switch {
	case prefix == "":
		return rel
	case rel == "" || rel == ".":
		return prefix
	}
	return prefix + "/" + rel
}

// TimestampName renders t (in UTC) the way archives are named:
// 2025-08-24T14-30-00-000Z (full_backup_<ts>, incremental_backup_<ts>).
func TimestampName(t time.Time) string {
	return strings.NewReplacer(":", "-", ".", "-").Replace(t.UTC().Format("2006-01-02T15:04:05.000Z"))
}

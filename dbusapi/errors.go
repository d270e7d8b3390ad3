package dbusapi

import (
	"errors"
	"strings"
	"unicode"

	"github.com/godbus/dbus/v5"
)

// Error codes the daemon itself uses; they are the engine's codes
// (engine/errs) where one exists. The engine's codes (the seed's ENOENT,
// EACCES, ENOSPC, CONN_ERR, PG_DUMP_ERR and the front door's own) pass
// through unchanged.
const (
	CodeNotAuthorized = "NOT_AUTHORIZED"
	CodeBusy          = "BUSY"
	CodeInvalidArgs   = "USAGE" // malformed arguments
	CodeCancelled     = "CANCELED"
	CodeNoSuchJob     = "NO_SUCH_JOB"
	CodeFailed        = "FAILED"
	CodeUnavailable   = "UNAVAILABLE" // the daemon cannot be reached (client side) or is stopping
)

// errorNames maps codes to the last element of their D-Bus error name. A code
// not listed maps to its CamelCase form (CHAIN_BROKEN -> ChainBroken).
var errorNames = map[string]string{
	CodeNotAuthorized: "NotAuthorized",
	CodeBusy:          "Busy",
	CodeInvalidArgs:   "InvalidArgs",
	CodeCancelled:     "Cancelled",
	CodeNoSuchJob:     "NoSuchJob",
	CodeFailed:        "Failed",
	CodeUnavailable:   "Unavailable",
	"ENOENT":          "NoSuchFile",
	"EACCES":          "PermissionDenied",
	"ENOSPC":          "NoSpace",
	"CONN_ERR":        "ConnectionFailed",
	"PG_DUMP_ERR":     "DumpFailed",
	"PG_RESTORE_ERR":  "RestoreFailed",
	"NOT_FOUND":       "NotFound",
}

// Error is a failure as the API reports it: a code (the same in CLI output,
// D-Bus error names, REST bodies, logs and the man pages), a human message
// and the fix. It is sent as the D-Bus error ErrorPrefix+Name() with the
// body (s text, s code, s fix, s action), text being the message followed by
// the fix, action the engine's machine-readable fix ("force", "target-db",
// ...; see engine/errs) or "".
type Error struct {
	Code    string
	Message string
	Fix     string
	Action  string
}

func (e *Error) Error() string {
	if e.Fix == "" {
		return e.Message
	}
	return e.Message + "\nFix: " + e.Fix
}

// Name is the D-Bus error name of e.
func (e *Error) Name() string { return ErrorName(e.Code) }

// ErrorName is the D-Bus error name for code.
func ErrorName(code string) string {
	if n, ok := errorNames[code]; ok {
		return ErrorPrefix + n
	}
	var b strings.Builder
	upper := true
	for _, r := range code {
		switch {
		case r == '_' || r == '-' || r == '.':
			upper = true
		case unicode.IsLetter(r) || unicode.IsDigit(r):
			if upper {
				b.WriteRune(unicode.ToUpper(r))
			} else {
				b.WriteRune(unicode.ToLower(r))
			}
			upper = false
		}
	}
	if b.Len() == 0 || !unicode.IsLetter(rune(b.String()[0])) {
		return ErrorPrefix + "Failed"
	}
	return ErrorPrefix + b.String()
}

// codeFromName is the inverse of ErrorName for the listed codes.
func codeFromName(name string) string {
	suffix, ok := strings.CutPrefix(name, ErrorPrefix)
	if !ok {
		return ""
	}
	for code, n := range errorNames {
		if n == suffix {
			return code
		}
	}
	return ""
}

// Errorf builds an *Error.
func Errorf(code, fix, message string) *Error {
	return &Error{Code: code, Message: message, Fix: fix}
}

// AsError returns err as an *Error: itself when it is one, else code FAILED
// with err's text.
func AsError(err error) *Error {
	var e *Error
	if errors.As(err, &e) {
		return e
	}
	return &Error{Code: CodeFailed, Message: err.Error()}
}

// toDBus converts err for sending.
func toDBus(err error) *dbus.Error {
	e := AsError(err)
	return dbus.NewError(e.Name(), []any{e.Error(), e.Code, e.Fix, e.Action})
}

// FromDBus converts an error received from the daemon back into an *Error
// (code, message and fix restored from the body); other errors, such as
// org.freedesktop.DBus.Error.AccessDenied from the bus policy, are wrapped
// with a code chosen from their name.
func FromDBus(err error) *Error {
	if err == nil {
		return nil
	}
	var de dbus.Error
	var dep *dbus.Error
	switch {
	case errors.As(err, &dep):
		de = *dep
	case errors.As(err, &de):
	default:
		var e *Error
		if errors.As(err, &e) {
			return e
		}
		return &Error{Code: CodeFailed, Message: err.Error()}
	}
	text := de.Error()
	if strings.HasPrefix(de.Name, ErrorPrefix) {
		e := &Error{Code: codeFromName(de.Name), Message: text}
		if len(de.Body) >= 3 {
			code, _ := de.Body[1].(string)
			fix, _ := de.Body[2].(string)
			if code != "" {
				e.Code = code
			}
			e.Fix = fix
			if len(de.Body) >= 4 {
				e.Action, _ = de.Body[3].(string)
			}
			if fix != "" {
				e.Message = strings.TrimSuffix(text, "\nFix: "+fix)
			}
		}
		if e.Code == "" {
			e.Code = CodeFailed
		}
		return e
	}
	switch de.Name {
	case "org.freedesktop.DBus.Error.AccessDenied":
		return &Error{Code: CodeNotAuthorized, Message: text,
			Fix: "run as root or as a member of the pme2go-backup group (the bus policy refused the call)"}
	case "org.freedesktop.DBus.Error.ServiceUnknown", "org.freedesktop.DBus.Error.NameHasNoOwner",
		"org.freedesktop.DBus.Error.NoReply", "org.freedesktop.DBus.Error.Disconnected":
		return &Error{Code: CodeUnavailable, Message: text}
	case "org.freedesktop.DBus.Error.InvalidArgs":
		return &Error{Code: CodeInvalidArgs, Message: text}
	}
	return &Error{Code: CodeFailed, Message: de.Name + ": " + text}
}

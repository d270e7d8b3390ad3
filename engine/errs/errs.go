// Package errs defines the error type every front-door operation returns:
// a machine-readable Code, a human Message and a Fix given as data (an
// Action a client maps to its own words — a CLI flag, a D-Bus method — and a
// Text without any client's syntax). Engine packages return *Error (or wrap
// one with %w); errors.Is matches by code against the sentinels below, and
// Classify gives any error its code.
package errs

import (
	"context"
	"errors"
	"os"
	"syscall"

	"github.com/jackc/pgx/v5/pgconn"
)

// Code names a kind of failure. The seed's codes are kept where they apply;
// the others are ours. The same code appears in CLI output, D-Bus error
// names, REST bodies, logs and the man pages' troubleshooting table.
type Code string

// Codes.
const (
	// The seed's.
	ENOENT    Code = "ENOENT"      // a file, directory or archive does not exist
	EACCES    Code = "EACCES"      // permission denied on a file or directory
	ENOSPC    Code = "ENOSPC"      // no space left on the backup device
	ConnErr   Code = "CONN_ERR"    // PostgreSQL could not be reached or refused the login
	PgDumpErr Code = "PG_DUMP_ERR" // pg_dump or pg_dumpall failed

	// Ours.
	Failed            Code = "FAILED"             // anything not classified below
	Usage             Code = "USAGE"              // the request itself is malformed
	Config            Code = "CONFIG"             // a configuration value is wrong
	NotFound          Code = "NOT_FOUND"          // a named backup, mark or database does not exist
	Busy              Code = "BUSY"               // another process holds the lock for this work
	NeedsForce        Code = "NEEDS_FORCE"        // the operation would replace data; ask for it explicitly
	NeedsResume       Code = "NEEDS_RESUME"       // an interrupted restore is in the way; resume it or drop it
	ChainEnded        Code = "CHAIN_ENDED"        // the chain ended before the target; newer data needs a new full backup
	TargetUnreachable Code = "TARGET_UNREACHABLE" // no backup holds the requested point in time
	PgRestoreErr      Code = "PG_RESTORE_ERR"     // pg_restore failed; the target is unchanged
	VerifyFailed      Code = "VERIFY_FAILED"      // an archive failed verification
	DrillFailed       Code = "DRILL_FAILED"       // a restore drill found the restored database unlike the backup, or could not restore it
	SelfTestFailed    Code = "SELFTEST_FAILED"    // the self-test found a problem
	Unsupported       Code = "UNSUPPORTED"        // the server cannot do what is asked (e.g. wal_level)
	NotAuthorized     Code = "NOT_AUTHORIZED"     // the caller may not do this (daemon)
	Canceled          Code = "CANCELED"           // the operation was cancelled
	KeyErr            Code = "KEY_ERR"            // an encryption key is missing, unreadable or does not open the archive
)

// Action names what fixes an error, in terms of the operation's options, so
// that each client can word it (the CLI as a flag, the daemon as an option
// of its method).
type Action string

// Actions.
const (
	ActForce          Action = "force"           // repeat with the Force option (replace data; safety backup first)
	ActResume         Action = "resume"          // repeat with the Resume option
	ActNoResume       Action = "no-resume"       // repeat without the Resume option
	ActChooseDatabase Action = "choose-database" // name one database (Databases option)
	ActTargetDB       Action = "target-db"       // restore beside the database (TargetDB option)
	ActLatest         Action = "latest"          // restore to the newest point instead
	ActIncremental    Action = "incremental"     // take an incremental backup first
	ActFullBackup     Action = "full-backup"     // take a new full backup (starts a new chain)
	ActRestoreGlobals Action = "restore-globals" // repeat with RestoreGlobals
	ActNoOwner        Action = "no-owner"        // repeat with NoOwner
	ActNoBackup       Action = "no-backup"       // leave out the backup name; let the target choose
	ActWait           Action = "wait"            // wait for the running operation, or stop it
	ActConfig         Action = "config"          // change the configuration (Text says which key)
	ActServer         Action = "server"          // change the PostgreSQL server (Text says how)
)

// Fix is what to do about an error. Action, when set, is one of the Act*
// constants; Text says it in words that name no client's flags.
type Fix struct {
	Action Action `json:"action,omitempty"`
	Text   string `json:"text,omitempty"`
}

// Error is a failure with its code and fix. Err, when set, is the cause
// (kept for errors.Is/As and logs).
type Error struct {
	Code    Code
	Message string
	Fix     *Fix
	Err     error
}

// Error renders the message, followed by the cause when there is one.
func (e *Error) Error() string {
	switch {
	case e.Message == "" && e.Err != nil:
		return e.Err.Error()
	case e.Message == "":
		return string(e.Code)
	case e.Err != nil:
		return e.Message + ": " + e.Err.Error()
	}
	return e.Message
}

// Unwrap returns the cause.
func (e *Error) Unwrap() error { return e.Err }

// Is matches another *Error with the same code and no message: the
// sentinels below, so errors.Is(err, errs.ErrBusy) holds for any BUSY error.
func (e *Error) Is(target error) bool {
	t, ok := target.(*Error)
	return ok && t.Message == "" && t.Err == nil && t.Code == e.Code
}

// Sentinels for errors.Is, one per code.
var (
	ErrNotFound          = &Error{Code: NotFound}
	ErrBusy              = &Error{Code: Busy}
	ErrNeedsForce        = &Error{Code: NeedsForce}
	ErrNeedsResume       = &Error{Code: NeedsResume}
	ErrChainEnded        = &Error{Code: ChainEnded}
	ErrTargetUnreachable = &Error{Code: TargetUnreachable}
	ErrUsage             = &Error{Code: Usage}
	ErrVerifyFailed      = &Error{Code: VerifyFailed}
	ErrUnsupported       = &Error{Code: Unsupported}
	ErrCanceled          = &Error{Code: Canceled}
)

// New returns an error with code and message.
func New(code Code, msg string) *Error { return &Error{Code: code, Message: msg} }

// Wrap returns an error with code and message caused by err.
func Wrap(code Code, msg string, err error) *Error { return &Error{Code: code, Message: msg, Err: err} }

// WithFix sets the fix and returns e.
func (e *Error) WithFix(a Action, text string) *Error {
	e.Fix = &Fix{Action: a, Text: text}
	return e
}

// CodeOf returns the code of err: the first *Error in its chain, else a
// code derived from well-known causes (missing file, permission, full disk,
// connection failure, cancellation), else Failed. nil has code "".
func CodeOf(err error) Code {
	if err == nil {
		return ""
	}
	var e *Error
	if errors.As(err, &e) && e.Code != "" {
		return e.Code
	}
	var ce *pgconn.ConnectError
	switch {
	case errors.Is(err, context.Canceled):
		return Canceled
	case errors.As(err, &ce):
		// Before the file errors: a server whose socket file is missing
		// (ENOENT) or refused (EACCES) is a connection failure.
		return ConnErr
	case errors.Is(err, syscall.ENOSPC):
		return ENOSPC
	case errors.Is(err, os.ErrPermission):
		return EACCES
	case errors.Is(err, os.ErrNotExist):
		return ENOENT
	}
	return Failed
}

// FixOf returns the fix of the first *Error in err's chain that has one.
func FixOf(err error) *Fix {
	for err != nil {
		if e, ok := err.(*Error); ok && e.Fix != nil {
			return e.Fix
		}
		switch u := err.(type) {
		case interface{ Unwrap() error }:
			err = u.Unwrap()
		case interface{ Unwrap() []error }:
			for _, x := range u.Unwrap() {
				if f := FixOf(x); f != nil {
					return f
				}
			}
			return nil
		default:
			return nil
		}
	}
	return nil
}

// Classify returns err as an *Error with its code (CodeOf) and fix (FixOf)
// and err's full text as the message. It returns nil for nil.
func Classify(err error) *Error {
	if err == nil {
		return nil
	}
	var e *Error
	if errors.As(err, &e) && e == err {
		if e.Code == "" {
			return &Error{Code: Failed, Message: e.Message, Fix: e.Fix, Err: e.Err}
		}
		return e
	}
	return &Error{Code: CodeOf(err), Message: err.Error(), Fix: FixOf(err), Err: err}
}

// JSON is the wire form of an error: {"error":{"code","message","fix"}}.
type JSON struct {
	Error JSONBody `json:"error"`
}

// JSONBody is the inside of JSON.
type JSONBody struct {
	Code    Code   `json:"code"`
	Message string `json:"message"`
	Fix     *Fix   `json:"fix,omitempty"`
}

// ToJSON renders err in its wire form.
func ToJSON(err error) JSON {
	if err == nil {
		return JSON{}
	}
	return JSON{Error: JSONBody{Code: CodeOf(err), Message: err.Error(), Fix: FixOf(err)}}
}

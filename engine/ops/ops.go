// Package ops is the engine's front door: one function per operation, each
// taking (ctx, cfg, Options, Progress) and returning (Result, error). The
// CLI, the daemon's jobs and the timers' clients call only this package (and
// the config, result and error types it names); the workflows below it
// (engine/backup, engine/incremental, engine/capture, engine/restore, …)
// stand side by side and the front door composes them.
//
// Results are plain data and are exactly what `pme2go-backup … --json`
// prints, with one convention: camelCase keys, LSNs as "X/Y" (lsn.LSN),
// times in RFC 3339, durations in seconds as a float (keys ending in
// "Seconds" or named "duration"), sizes in bytes.
//
// Errors are *Error (engine/errs) or wrap one: a Code (the seed's ENOENT,
// EACCES, ENOSPC, CONN_ERR, PG_DUMP_ERR where they apply, and ours), a
// Message and a Fix given as data (an Action naming an option, and words
// naming no client's flags). Use errors.Is with the Err* sentinels, or
// CodeOf / Classify for any error.
//
// Progress is one shape for every long operation (phase, done of total in a
// unit, the object worked on, a message); pass nil to ignore it. Options
// carry a *slog.Logger where the operation logs (nil: discard).
package ops

import (
	"io"
	"log/slog"
	"time"

	"github.com/pme2go/pme2go-backup/engine/errs"
	"github.com/pme2go/pme2go-backup/engine/lsn"
	"github.com/pme2go/pme2go-backup/engine/progress"
)

// Progress receives progress events; nil ignores them.
type Progress = progress.Func

// ProgressEvent is one progress report.
type ProgressEvent = progress.Event

// LSN is a WAL position; it prints and marshals as "X/Y".
type LSN = lsn.LSN

// Error is the front door's error type; see engine/errs.
type Error = errs.Error

// ErrorJSON is an error as data inside a result (code, message, fix), for
// what went wrong beside an operation that succeeded.
type ErrorJSON = errs.JSONBody

// Fix is what to do about an Error.
type Fix = errs.Fix

// Code names a kind of failure.
type Code = errs.Code

// Sentinels for errors.Is (matched by code).
var (
	ErrNotFound          = errs.ErrNotFound
	ErrBusy              = errs.ErrBusy
	ErrNeedsForce        = errs.ErrNeedsForce
	ErrNeedsResume       = errs.ErrNeedsResume
	ErrChainEnded        = errs.ErrChainEnded
	ErrTargetUnreachable = errs.ErrTargetUnreachable
	ErrUsage             = errs.ErrUsage
	ErrVerifyFailed      = errs.ErrVerifyFailed
	ErrUnsupported       = errs.ErrUnsupported
	ErrCanceled          = errs.ErrCanceled
)

// CodeOf returns err's code (see errs.CodeOf).
func CodeOf(err error) Code { return errs.CodeOf(err) }

// Classify returns err as an *Error with its code and fix.
func Classify(err error) *Error { return errs.Classify(err) }

// seconds renders d as seconds.
func seconds(d time.Duration) float64 { return d.Seconds() }

// logger returns l, or a logger that discards everything.
func logger(l *slog.Logger) *slog.Logger {
	if l != nil {
		return l
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

// parseLSN reads an "X/Y" text, 0 for empty or bad text (manifests and
// chain states written by this program always hold valid text).
func parseLSN(s string) LSN {
	l, _ := lsn.Parse(s)
	return l
}

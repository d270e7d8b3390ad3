package ops

import (
	"errors"

	"github.com/pme2go/pme2go-backup/engine/apply"
	"github.com/pme2go/pme2go-backup/engine/capture"
	"github.com/pme2go/pme2go-backup/engine/errs"
	"github.com/pme2go/pme2go-backup/engine/incremental"
	"github.com/pme2go/pme2go-backup/engine/lock"
	"github.com/pme2go/pme2go-backup/engine/restore"
)

// sentinels maps the engine packages' sentinel errors to codes and fixes,
// for errors that do not carry an *errs.Error yet.
var sentinels = []struct {
	err  error
	code errs.Code
	fix  *errs.Fix
}{
	{lock.ErrBusy, errs.Busy, &errs.Fix{Action: errs.ActWait, Text: "wait for the running operation to finish, or stop it"}},
	{restore.ErrNotEmpty, errs.NeedsForce, &errs.Fix{Action: errs.ActForce, Text: "replace the database (a safety backup is taken first), or restore beside it into another database"}},
	{capture.ErrChainEnded, errs.ChainEnded, &errs.Fix{Action: errs.ActFullBackup, Text: "take a new full backup; it starts a new chain"}},
	{incremental.ErrNoChain, errs.NotFound, &errs.Fix{Action: errs.ActFullBackup, Text: "take a full backup first (needs wal_level = logical and a role with REPLICATION)"}},
	{apply.ErrNoTarget, errs.Usage, nil},
}

// known gives err the code of the first engine sentinel it wraps, unless it
// already carries an *errs.Error with a code. The message is unchanged.
func known(err error) error {
	if err == nil {
		return nil
	}
	if c := errs.CodeOf(err); c != errs.Failed {
		return err
	}
	for _, s := range sentinels {
		if errors.Is(err, s.err) {
			return &errs.Error{Code: s.code, Err: err, Fix: s.fix}
		}
	}
	return err
}

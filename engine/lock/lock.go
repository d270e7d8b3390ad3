// Package lock provides the file locks that keep one writer per backup
// directory or chain: a second backup, or the daemon and a CLI, get a clear
// "already running (pid N)" instead of interleaving their work.
package lock

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"

	"github.com/pme2go/pme2go-backup/engine/errs"
)

// ErrBusy is returned (wrapped) when another process holds the lock.
var ErrBusy = errors.New("lock held by another process")

// Lock is a held advisory lock on a file.
type Lock struct {
	f *os.File
}

// TryAcquire takes an exclusive lock on path without waiting. what names the
// guarded work in the error ("backup", "capture"). The lock file records the
// holder's pid and is released when the process exits, even on SIGKILL.
func TryAcquire(path, what string) (*Lock, error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("open lock %s: %w", path, err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		buf := make([]byte, 32)
		n, _ := f.ReadAt(buf, 0)
		f.Close()
		pid := strings.TrimSpace(string(buf[:n]))
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, &errs.Error{Code: errs.Busy, Message: fmt.Sprintf("%s already running (pid %s)", what, pid), Err: ErrBusy,
				Fix: &errs.Fix{Action: errs.ActWait, Text: "wait for it to finish, or stop it"}}
		}
		return nil, fmt.Errorf("lock %s: %w", path, err)
	}
	if err := f.Truncate(0); err == nil {
		f.WriteAt([]byte(strconv.Itoa(os.Getpid())+"\n"), 0)
	}
	return &Lock{f: f}, nil
}

// Release drops the lock. It is safe to call on a nil Lock and more than once.
func (l *Lock) Release() error {
	if l == nil || l.f == nil {
		return nil
	}
	err := l.f.Close()
	l.f = nil
	return err
}

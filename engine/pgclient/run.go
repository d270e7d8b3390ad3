package pgclient

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"log/slog"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/pme2go/pme2go-backup/engine/errs"
)

// Run runs the client program with the target's environment for db,
// relays its stderr line by line to log tagged with the database, and kills
// it (and its parallel workers) when ctx is cancelled. The error carries the
// last stderr lines so the operator sees pg_dump's own words.
func (tool *Tool) Run(ctx context.Context, log *slog.Logger, t Target, db string, args ...string) error {
	env, cleanup, err := t.ChildEnv(db)
	if err != nil {
		return err
	}
	defer cleanup()
	cmd := exec.CommandContext(ctx, tool.Path, args...)
	cmd.Env = env
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = 5 * time.Second
	stderr, err := cmd.StderrPipe()
	if err != nil {
		return fmt.Errorf("%s: %w", tool.Name, err)
	}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start %s: %w", tool.Path, err)
	}
	tail := relay(log, tool.Name, db, stderr)
	// Read stderr to its end before Wait, which closes the pipe: waiting
	// first could lose the program's last words (os/exec: "it is incorrect
	// to call Wait before all reads from the pipe have completed").
	lines := tail()
	err = cmd.Wait()
	if ctx.Err() != nil {
		return fmt.Errorf("%s of database %s cancelled: %w", tool.Name, db, ctx.Err())
	}
	if err != nil {
		msg := strings.Join(lines, "; ")
		if msg == "" {
			msg = "no message"
		}
		return &errs.Error{Code: toolCode(tool.Name, msg), Message: fmt.Sprintf("%s of database %s failed (%v): %s", tool.Name, db, err, msg)}
	}
	return nil
}

// toolCode is the error code of a failed client program: ENOSPC when it
// ran out of space, else PG_DUMP_ERR for pg_dump and pg_dumpall,
// PG_RESTORE_ERR for pg_restore, FAILED for others.
func toolCode(name, msg string) errs.Code {
	switch {
	case strings.Contains(msg, "No space left on device"):
		return errs.ENOSPC
	case name == "pg_dump" || name == "pg_dumpall":
		return errs.PgDumpErr
	case name == "pg_restore":
		return errs.PgRestoreErr
	}
	return errs.Failed
}

// relay copies r to the log, one record per line, and returns a function
// that waits for the end of r and gives the last few lines.
func relay(log *slog.Logger, tool, db string, r io.Reader) func() []string {
	var mu sync.Mutex
	var last []string
	done := make(chan struct{})
	go func() {
		defer close(done)
		sc := bufio.NewScanner(r)
		sc.Buffer(make([]byte, 64*1024), 1<<20)
		for sc.Scan() {
			line := sc.Text()
			log.Warn(line, "tool", tool, "database", db)
			mu.Lock()
			last = append(last, line)
			if len(last) > 5 {
				last = last[1:]
			}
			mu.Unlock()
		}
		io.Copy(io.Discard, r) // past an overlong line: keep the pipe drained
	}()
	return func() []string {
		<-done
		mu.Lock()
		defer mu.Unlock()
		return append([]string(nil), last...)
	}
}

package errs

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"syscall"
	"testing"

	"github.com/jackc/pgx/v5/pgconn"
)

func TestIsByCode(t *testing.T) {
	err := fmt.Errorf("take backup: %w", New(Busy, "backup already running (pid 7)").WithFix(ActWait, "wait for it"))
	if !errors.Is(err, ErrBusy) {
		t.Fatal("errors.Is(BUSY) failed")
	}
	if errors.Is(err, ErrNotFound) {
		t.Fatal("BUSY matched NOT_FOUND")
	}
	var e *Error
	if !errors.As(err, &e) || e.Code != Busy || e.Fix.Action != ActWait {
		t.Fatalf("errors.As: %+v", e)
	}
	if CodeOf(err) != Busy || FixOf(err).Action != ActWait {
		t.Fatalf("CodeOf/FixOf: %s %+v", CodeOf(err), FixOf(err))
	}
}

func TestCodeOfCauses(t *testing.T) {
	for _, c := range []struct {
		err  error
		want Code
	}{
		{nil, ""},
		{errors.New("x"), Failed},
		{fmt.Errorf("open: %w", os.ErrNotExist), ENOENT},
		{&os.PathError{Op: "open", Path: "/x", Err: syscall.EACCES}, EACCES},
		{&os.PathError{Op: "write", Path: "/x", Err: syscall.ENOSPC}, ENOSPC},
		{fmt.Errorf("run: %w", context.Canceled), Canceled},
		{errors.Join(errors.New("a"), New(ChainEnded, "ended")), ChainEnded},
	} {
		if got := CodeOf(c.err); got != c.want {
			t.Errorf("CodeOf(%v) = %q, want %q", c.err, got, c.want)
		}
	}
}

// A server whose Unix socket file does not exist fails with a ConnectError
// around ENOENT: that is CONN_ERR (the seed's code, HTTP 503), not ENOENT.
func TestCodeOfMissingServerSocket(t *testing.T) {
	_, err := pgconn.Connect(context.Background(), "host="+t.TempDir()+"/nosuchdir port=5432 user=x dbname=x connect_timeout=5")
	if err == nil {
		t.Fatal("connected to a socket that does not exist")
	}
	if !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("the test needs an error around ENOENT: %v", err)
	}
	if got := CodeOf(fmt.Errorf("connect to app: %w", err)); got != ConnErr {
		t.Fatalf("CodeOf(%v) = %q, want %q", err, got, ConnErr)
	}
}

func TestJSON(t *testing.T) {
	err := fmt.Errorf("restore: %w", New(NeedsForce, "database app holds data").WithFix(ActForce, "replace it; a safety backup is taken first"))
	b, _ := json.Marshal(ToJSON(err))
	want := `{"error":{"code":"NEEDS_FORCE","message":"restore: database app holds data","fix":{"action":"force","text":"replace it; a safety backup is taken first"}}}`
	if string(b) != want {
		t.Fatalf("got  %s\nwant %s", b, want)
	}
}

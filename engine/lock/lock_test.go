package lock

import (
	"errors"
	"path/filepath"
	"strings"
	"testing"
)

func TestSecondHolderIsRefused(t *testing.T) {
	p := filepath.Join(t.TempDir(), "lock")
	a, err := TryAcquire(p, "backup")
	if err != nil {
		t.Fatal(err)
	}
	_, err = TryAcquire(p, "backup")
	if !errors.Is(err, ErrBusy) || !strings.Contains(err.Error(), "backup already running (pid") {
		t.Fatalf("second lock: %v", err)
	}
	a.Release()
	b, err := TryAcquire(p, "backup")
	if err != nil {
		t.Fatalf("after release: %v", err)
	}
	b.Release()
	b.Release()
}

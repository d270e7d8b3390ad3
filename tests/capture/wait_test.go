package capture_test

import (
	"context"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// waitFor polls cond every 20 ms until it holds, and fails the test naming
// what when it does not within a minute: a slow machine fails loudly
// instead of silently testing less.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(time.Minute); ; time.Sleep(20 * time.Millisecond) {
		if cond() {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
	}
}

// slotActivePID returns the pid streaming from slot, 0 when none.
func slotActivePID(t *testing.T, conn *pgx.Conn, slot string) int {
	t.Helper()
	var pid *int32
	if err := conn.QueryRow(context.Background(), `SELECT active_pid FROM pg_replication_slots WHERE slot_name = $1`, slot).Scan(&pid); err != nil {
		t.Fatalf("slot %s: %v", slot, err)
	}
	if pid == nil {
		return 0
	}
	return int(*pid)
}

// flushedPast reports whether the slot's confirmed flush position has
// reached lsn (text X/Y), i.e. capture stored everything committed before it.
func flushedPast(t *testing.T, conn *pgx.Conn, slot, lsn string) bool {
	t.Helper()
	var ok *bool
	if err := conn.QueryRow(context.Background(), `SELECT confirmed_flush_lsn >= $2::pg_lsn FROM pg_replication_slots WHERE slot_name = $1`, slot, lsn).Scan(&ok); err != nil {
		t.Fatalf("slot %s: %v", slot, err)
	}
	return ok != nil && *ok
}

// currentLSN returns pg_current_wal_lsn() as X/Y.
func currentLSN(t *testing.T, conn *pgx.Conn) string {
	t.Helper()
	var s string
	if err := conn.QueryRow(context.Background(), `SELECT pg_current_wal_lsn()::text`).Scan(&s); err != nil {
		t.Fatal(err)
	}
	return s
}

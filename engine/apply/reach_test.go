package apply

import (
	"strings"
	"testing"
	"time"
)

// TestDescribeChainEndWithoutTime: a chain that ended before any commit
// time was known prints no zero time ("0001-01-01…").
func TestDescribeChainEndWithoutTime(t *testing.T) {
	p := &Plan{ChainEnd: &ChainEnd{ChainID: "c1", LSN: "0/10", Reason: "r"}}
	got := strings.Join(p.describeReach(), "\n")
	if strings.Contains(got, "0001-01-01") || !strings.Contains(got, "chain c1 ended at LSN 0/10: r") {
		t.Fatalf("describeReach = %q", got)
	}
	p.ChainEnd.Time = time.Date(2026, 11, 29, 19, 0, 0, 0, time.UTC)
	if got := strings.Join(p.describeReach(), "\n"); !strings.Contains(got, "ended at LSN 0/10 (2026-11-29T19:00:00Z): r") {
		t.Fatalf("describeReach = %q", got)
	}
}

package ops

import (
	"context"
	"fmt"

	"github.com/pme2go/pme2go-backup/engine/config"
	"github.com/pme2go/pme2go-backup/engine/errs"
	"github.com/pme2go/pme2go-backup/engine/selftest"
)

// SelfTestOptions tune SelfTest (none yet).
type SelfTestOptions struct{}

// SelfTestResult lists every check's finding.
type SelfTestResult struct {
	Findings []Finding `json:"findings"`
	Failed   bool      `json:"failed"`
}

// Finding is one check: status "ok", "warn" or "fail", with the fix.
type Finding struct {
	Check   string `json:"check"`
	Status  string `json:"status"`
	Message string `json:"message"`
	Fix     string `json:"fix,omitempty"`
}

// SelfTest checks everything a backup needs (connection, privileges, client
// tools, wal_level, the backup directory) and never stops at the first
// failure. When a check fails the result is returned with an error of code
// SELFTEST_FAILED.
func SelfTest(ctx context.Context, cfg *config.Config, _ SelfTestOptions, _ Progress) (*SelfTestResult, error) {
	fs := selftest.Run(ctx, cfg)
	res := &SelfTestResult{Findings: []Finding{}, Failed: selftest.Failed(fs)}
	fails := 0
	for _, f := range fs {
		res.Findings = append(res.Findings, Finding{Check: f.Check, Status: string(f.Status), Message: f.Message, Fix: f.Fix})
		if f.Status == selftest.Fail {
			fails++
		}
	}
	if res.Failed {
		return res, errs.New(errs.SelfTestFailed, fmt.Sprintf("self-test failed: %d checks failed", fails))
	}
	return res, ctx.Err()
}

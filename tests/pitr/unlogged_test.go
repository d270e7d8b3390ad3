package pitr_test

import (
	"context"
	"encoding/json"
	"errors"
	"os/exec"
	"strings"
	"testing"

	"github.com/pme2go/pme2go-backup/engine/apply"
	"github.com/pme2go/pme2go-backup/engine/capture"
	"github.com/pme2go/pme2go-backup/engine/incremental"
	"github.com/pme2go/pme2go-backup/tests/pgharness"
)

// TestSetUnloggedMidChain: ALTER TABLE … SET UNLOGGED of a table holding
// rows, in the middle of a chain (its later changes would be in no change
// set), ends the chain there, and every restore says so: --latest restores
// the state just before the statement, data and sequences equal to the
// source then, and names the chain's end with the reason in its plan, in
// --json (differences, kind chain-ended) and with exit status 5; a time
// target after the statement is refused with the reason (CHAIN_ENDED). An
// unlogged sequence is reset to its start and named, as PostgreSQL's own
// recovery leaves it.
func TestSetUnloggedMidChain(t *testing.T) {
	c := pgharness.Start(t)
	c.CreateDB(t, "app")
	c.Exec(t, "app", `CREATE TABLE t (id serial PRIMARY KEY, v text); CREATE TABLE k (id serial PRIMARY KEY, v text);
		INSERT INTO t (v) VALUES ('a'), ('b'); INSERT INTO k (v) VALUES ('a');
		CREATE UNLOGGED SEQUENCE us START 10; SELECT nextval('us') FROM generate_series(1, 5)`)
	e := newEnv(t, c)
	ctx := context.Background()
	e.full(t)
	conn := c.Conn(t, "app")
	defer conn.Close(ctx)
	c.Exec(t, "app", `INSERT INTO t (v) VALUES ('c'); UPDATE k SET v = 'b'; INSERT INTO k (v) VALUES ('c')`)
	before := record(t, c, conn, "app")
	c.Exec(t, "app", `ALTER TABLE t SET UNLOGGED`)
	c.Exec(t, "app", `INSERT INTO t (v) VALUES ('lost'); INSERT INTO k (v) VALUES ('after')`)
	after := nowText(t, c)
	_, err := incremental.Take(ctx, e.cfg, incremental.Options{})
	if !errors.Is(err, capture.ErrChainEnded) || !strings.Contains(err.Error(), "set UNLOGGED") {
		t.Fatalf("incremental after SET UNLOGGED of a table with rows: %v, want the chain ended with the reason", err)
	}
	const reason = "table public.t set UNLOGGED"

	t.Run("latest", func(t *testing.T) {
		res, err := e.restoreTo(ctx, apply.Target{Kind: apply.Latest}, "r_unl_latest")
		if err != nil {
			t.Fatal(err)
		}
		sameReplayed(t, "latest before SET UNLOGGED", before.sums, sums(t, c, "r_unl_latest"), res)
		// The last read of the sequences was taken after the chain's end
		// (transactions no change set holds moved them): the sequences
		// that moved since the chain's start are named, and not behind.
		rc := c.Conn(t, "r_unl_latest")
		got := seqValues(t, rc)
		rc.Close(ctx)
		named := map[string]bool{}
		for _, n := range res.Replay.SequencesUnknown {
			named[n.Sequence] = true
		}
		// An unlogged sequence is reset to its start, as PostgreSQL's own
		// recovery does, and named.
		if !named["public.us"] || got["public.us"] != 9 {
			t.Errorf("unlogged sequence us: %d (named %v), want reset to its start (last_value 9 reported for not called) and named", got["public.us"], named["public.us"])
		}
		delete(before.seqs, "public.us")
		for k, v := range before.seqs {
			if !named[k] || got[k] < v {
				t.Errorf("sequence %s: %d, the source had %d before SET UNLOGGED; named as unknown: %v", k, got[k], v, named[k])
			}
		}
		if e := res.PITR.ChainEnd; e == nil || !strings.Contains(e.Reason, reason) {
			t.Fatalf("plan's chain end %+v does not name %q", res.PITR.ChainEnd, reason)
		}
		if g := res.PITR.Gap; g == nil || !strings.Contains(g.Reason, reason) {
			t.Fatalf("--latest gap %+v does not name %q", res.PITR.Gap, reason)
		}
		if !strings.Contains(strings.Join(res.PITR.Describe(), "\n"), reason) {
			t.Fatalf("plan description does not name %q:\n%s", reason, strings.Join(res.PITR.Describe(), "\n"))
		}
	})
	t.Run("after the statement", func(t *testing.T) {
		_, err := e.restoreTo(ctx, mustTarget(t, apply.TargetSpec{Time: after}), "r_unl_after")
		refusedAs(t, err, apply.CodeChainEnded)
		if !strings.Contains(err.Error(), reason) {
			t.Fatalf("refusal does not name %q: %v", reason, err)
		}
	})
	t.Run("cli", func(t *testing.T) {
		bin := buildCLI(t)
		out, err := e.cli(t, bin, "restore", "--latest", "--json", "--target-db", "r_unl_cli").Output()
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.ExitCode() != 5 {
			t.Fatalf("--latest after the chain ended: want exit status 5, got %v\n%s", err, out)
		}
		var res struct {
			Differences []struct{ Kind, Object, Message string } `json:"differences"`
		}
		if err := json.Unmarshal(out, &res); err != nil {
			t.Fatalf("--json output: %v\n%s", err, out)
		}
		found := false
		for _, d := range res.Differences {
			found = found || d.Kind == "chain-ended" && strings.Contains(d.Message, reason)
		}
		if !found {
			t.Fatalf("--json differences do not name the chain's end (%q):\n%s", reason, out)
		}
		out, err = e.cli(t, bin, "restore", "--latest", "--target-db", "r_unl_cli2").CombinedOutput()
		if !errors.As(err, &ee) || ee.ExitCode() != 5 || !strings.Contains(string(out), "DIFFERS") || !strings.Contains(string(out), reason) {
			t.Fatalf("--latest text output: want exit 5 and DIFFERS naming %q, got %v\n%s", reason, err, out)
		}
	})
}

package pitr_test

import (
	"context"
	"encoding/json"
	"errors"
	"os/exec"
	"slices"
	"sort"
	"strings"
	"testing"

	"github.com/pme2go/pme2go-backup/engine/apply"
	engineops "github.com/pme2go/pme2go-backup/engine/ops"
	"github.com/pme2go/pme2go-backup/tests/pgharness"
)

// TestSequencesAtTarget: sequences are not in the change stream; the chain
// reads them as it starts and at each seal, with the WAL positions around
// each read. A restore to a target with no commit between it and a read
// sets every sequence exactly to its value at the target (also one behind
// rows inserted with explicit keys: not raised); a target between two seals
// with sequence activity on both sides sets the sequences that did not move
// exactly and names each one that moved (text, --json differences, exit
// status 5), never setting an owned one behind its column's values.
func TestSequencesAtTarget(t *testing.T) {
	c := pgharness.Start(t)
	c.CreateDB(t, "app")
	c.Exec(t, "app", `CREATE TABLE t (id serial PRIMARY KEY, v text);
		CREATE TABLE u (id int GENERATED ALWAYS AS IDENTITY PRIMARY KEY, v text);
		CREATE TABLE x (id serial PRIMARY KEY, v text);
		CREATE SEQUENCE s; CREATE SEQUENCE d INCREMENT BY -1;
		INSERT INTO t (v) VALUES ('a'); INSERT INTO x (v) VALUES ('a')`)
	e := newEnv(t, c)
	e.full(t)
	conn := c.Conn(t, "app")
	ctx := context.Background()
	// Phase 1, then a quiet moment and a seal.
	c.Exec(t, "app", `INSERT INTO t (v) SELECT 'p1' FROM generate_series(1, 5);
		SELECT nextval('s') FROM generate_series(1, 3); SELECT nextval('d') FROM generate_series(1, 2);
		INSERT INTO x (id, v) VALUES (1000, 'explicit'); INSERT INTO u (v) VALUES ('p1')`)
	p1 := record(t, c, conn, "app")
	e.incremental(t)
	// Phase 2: activity before the target and after it, then a seal.
	c.Exec(t, "app", `INSERT INTO t (v) SELECT 'p2' FROM generate_series(1, 4); SELECT nextval('s'); INSERT INTO u (v) VALUES ('p2')`)
	p2 := record(t, c, conn, "app")
	if _, err := engineops.Mark(ctx, e.cfg, engineops.MarkOptions{Name: "at-p2"}, nil); err != nil {
		t.Fatal(err)
	}
	c.Exec(t, "app", `INSERT INTO t (v) SELECT 'p2b' FROM generate_series(1, 4); SELECT setval('s', 1); INSERT INTO u (v) VALUES ('p2b')`)
	e.incremental(t)
	final := record(t, c, conn, "app")

	check := func(t *testing.T, db string, want point, exact []string, unknown []string, spec ...apply.TargetSpec) *apply.Stats {
		t.Helper()
		target := apply.TargetSpec{Time: want.time}
		if len(spec) > 0 {
			target = spec[0]
		}
		res, err := e.restoreTo(ctx, mustTarget(t, target), db)
		if err != nil {
			t.Fatal(err)
		}
		sameReplayed(t, db, want.sums, sums(t, c, db), res)
		rc := c.Conn(t, db)
		got := seqValues(t, rc)
		rc.Close(ctx)
		var named []string
		for _, n := range res.Replay.SequencesUnknown {
			named = append(named, n.Sequence)
			if !strings.Contains(n.Message, "value at the target is unknown") {
				t.Errorf("note for %s does not say why: %s", n.Sequence, n.Message)
			}
			t.Logf("named: %s set to %d: %s", n.Sequence, n.Value, n.Message)
		}
		sort.Strings(named)
		if !slices.Equal(named, unknown) {
			t.Fatalf("sequences named as unknown at the target: %v, want %v", named, unknown)
		}
		for _, k := range exact {
			if got[k] != want.seqs[k] {
				t.Errorf("sequence %s is %d, the source had %d at the target", k, got[k], want.seqs[k])
			}
		}
		return res.Replay
	}
	all := []string{"public.d", "public.s", "public.t_id_seq", "public.u_id_seq", "public.x_id_seq"}
	t.Run("quiet target", func(t *testing.T) {
		check(t, "r_seq_p1", p1, all, nil)
	})
	t.Run("target between seals", func(t *testing.T) {
		check(t, "r_seq_p2", p2, []string{"public.d", "public.x_id_seq"}, []string{"public.s", "public.t_id_seq", "public.u_id_seq"})
		rc := c.Conn(t, "r_seq_p2")
		got := seqValues(t, rc)
		var maxT int64
		if err := rc.QueryRow(ctx, `SELECT max(id) FROM t`).Scan(&maxT); err != nil {
			t.Fatal(err)
		}
		rc.Close(ctx)
		if got["public.t_id_seq"] < maxT || got["public.u_id_seq"] < p2.seqs["public.u_id_seq"] {
			t.Fatalf("an owned sequence was left behind its column: %v (max(t.id) = %d)", got, maxT)
		}
	})
	t.Run("mark", func(t *testing.T) {
		// The mark carries a read of the sequences: exact at the mark,
		// with activity after it in the same change set.
		check(t, "r_seq_mark", p2, all, nil, apply.TargetSpec{Name: "at-p2"})
		check(t, "r_seq_mark_x", p2, all, nil, apply.TargetSpec{Name: "at-p2", Exclusive: true})
	})
	t.Run("latest", func(t *testing.T) {
		res, err := e.restoreTo(ctx, apply.Target{Kind: apply.Latest}, "r_seq_latest")
		if err != nil {
			t.Fatal(err)
		}
		if len(res.Replay.SequencesUnknown) > 0 {
			t.Fatalf("--latest named sequences: %+v", res.Replay.SequencesUnknown)
		}
		rc := c.Conn(t, "r_seq_latest")
		got := seqValues(t, rc)
		rc.Close(ctx)
		for _, k := range all {
			if got[k] != final.seqs[k] {
				t.Errorf("sequence %s is %d, the source has %d", k, got[k], final.seqs[k])
			}
		}
	})
	t.Run("cli", func(t *testing.T) {
		bin := buildCLI(t)
		out, err := e.cli(t, bin, "restore", "--json", "--target-time", p2.time, "--target-db", "r_seq_cli").Output()
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.ExitCode() != 5 {
			t.Fatalf("restore with unknown sequences: want exit status 5, got %v\n%s", err, out)
		}
		var res struct {
			Differences []struct{ Kind, Object, Message string } `json:"differences"`
		}
		if err := json.Unmarshal(out, &res); err != nil {
			t.Fatalf("--json output: %v\n%s", err, out)
		}
		var named []string
		for _, d := range res.Differences {
			if d.Kind == "sequence" {
				named = append(named, d.Object)
			}
		}
		sort.Strings(named)
		if !slices.Equal(named, []string{"public.s", "public.t_id_seq", "public.u_id_seq"}) {
			t.Fatalf("--json differences of kind sequence: %v\n%s", named, out)
		}
		out, err = e.cli(t, bin, "restore", "--target-time", p1.time, "--target-db", "r_seq_cli2").CombinedOutput()
		if err != nil || strings.Contains(string(out), "DIFFERS") {
			t.Fatalf("restore to a quiet target: want exit 0 and no difference, got %v\n%s", err, out)
		}
	})
}

package pitr_test

import (
	"context"
	"fmt"
	"math/rand"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// workloadSchema adds the tables the own workload drives to LoadAwkward's.
const workloadSchema = `
CREATE TABLE wl_toast (id int PRIMARY KEY, big text, n int);
ALTER TABLE wl_toast ALTER COLUMN big SET STORAGE EXTERNAL;
INSERT INTO wl_toast SELECT g, (SELECT string_agg(md5(g::text || i::text), '') FROM generate_series(1, 3000) i), 0 FROM generate_series(1, 5) g;
CREATE TABLE wl_parent (id serial PRIMARY KEY, name text);
CREATE TABLE wl_child (id serial PRIMARY KEY, parent int NOT NULL REFERENCES wl_parent, v text);
CREATE TABLE wl_dup (a int, b text, j json, p point);
ALTER TABLE wl_dup REPLICA IDENTITY FULL;
INSERT INTO wl_dup SELECT g % 3, 'dup', '{"k": [1, 2]}', '(1,2)' FROM generate_series(1, 30) g;
CREATE TABLE wl_large (id int PRIMARY KEY, v text);
CREATE TABLE wl_sub (id serial PRIMARY KEY, step text);
`

// worker runs the own workload, one transaction per operation, holding mu
// during each so that a checkpoint can pause it between transactions.
type worker struct {
	conn *pgx.Conn
	mu   sync.Mutex
	rnd  *rand.Rand
	n    int
	err  error
}

// ops are the workload's transactions; {i} is the iteration number.
var ops = []string{
	// Unchanged TOAST: only n changes, big stays out of the change.
	`UPDATE wl_toast SET n = n + 1 WHERE id = 1 + {i} % 5`,
	// Deletes and updates keyed by primary key, awkward values in the new tuple.
	`DELETE FROM public.big WHERE id IN ({i} * 7 % 50000 + 1, {i} * 13 % 50000 + 1)`,
	`UPDATE types.all_types SET c_integer = coalesce(c_integer, 0) + 1, c_text = c_text || E'\t\\' WHERE id IN (1, 2, 3, 5)`,
	`INSERT INTO types.all_types SELECT (jsonb_populate_record(NULL::types.all_types, to_jsonb(a) || jsonb_build_object('id', a.id + 100 * ({i} + 1)))).* FROM types.all_types a WHERE a.id IN (2, 3, 5)`,
	// Identity ALWAYS column, generated column, partitions with row movement.
	`INSERT INTO public.ident (qty, price) VALUES ({i} % 7 + 1, 1.25); UPDATE public.ident SET qty = qty + 1 WHERE id_always = 1`,
	`UPDATE public.measurements SET logdate = logdate + 300, value = value + 1 WHERE id = {i} % 300 + 1`,
	// Parent/child rows, truncated together now and then.
	`INSERT INTO wl_parent (name) VALUES ('p{i}'); INSERT INTO wl_child (parent, v) SELECT max(id), E'line\nbreak' FROM wl_parent`,
	// Rolled-back subtransactions.
	`BEGIN; INSERT INTO wl_sub (step) VALUES ('kept a {i}'); SAVEPOINT s; INSERT INTO wl_sub (step) VALUES ('rolled back'); UPDATE wl_toast SET n = -1; ROLLBACK TO s; INSERT INTO wl_sub (step) VALUES ('kept b'); SAVEPOINT s2; DELETE FROM wl_sub; RELEASE s2; INSERT INTO wl_sub (step) VALUES (NULL); COMMIT`,
	// REPLICA IDENTITY FULL with duplicate rows, json and point columns.
	`DELETE FROM wl_dup WHERE ctid = (SELECT ctid FROM wl_dup WHERE a = {i} % 3 LIMIT 1); INSERT INTO wl_dup VALUES ({i} % 3, 'dup', '{"k": [1, 2]}', '(1,2)'), ({i} % 3, 'dup', '{"k": [1, 2]}', '(1,2)')`,
	`UPDATE wl_dup SET b = 'upd' WHERE ctid = (SELECT ctid FROM wl_dup WHERE b = 'dup' LIMIT 1)`,
	`UPDATE public.nopk SET c = coalesce(c, 0) + 1 WHERE ctid = (SELECT ctid FROM public.nopk WHERE a = 1 LIMIT 1)`,
}

// failure returns the error that stopped the worker, if any.
func (w *worker) failure() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.err
}

// step runs the next operation (and, now and then, a multi-table TRUNCATE
// or the large transaction).
func (w *worker) step(ctx context.Context) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	i := w.n
	w.n++
	var q string
	switch {
	case i == 15:
		q = `INSERT INTO wl_large SELECT g, md5(g::text) FROM generate_series(1, 120000) g`
	case i == 90:
		q = `BEGIN; UPDATE wl_large SET v = v || '!' WHERE id % 20 = 0; DELETE FROM wl_large WHERE id % 50 = 1; COMMIT`
	case i%40 == 39:
		q = `TRUNCATE wl_child, wl_parent`
		if i%80 == 79 {
			q += ` RESTART IDENTITY`
		}
	case i == 30 || i == 200:
		q = `UPDATE public.toasted SET b = b || '\x01'::bytea WHERE id = 1` // t stays TOASTed, unchanged
	default:
		q = strings.ReplaceAll(ops[i%len(ops)], "{i}", strconv.Itoa(i))
	}
	if _, err := w.conn.Exec(ctx, q); err != nil {
		return fmt.Errorf("workload step %d: %s: %w", i, q, err)
	}
	return nil
}

// run steps until ctx ends.
func (w *worker) run(ctx context.Context) {
	for ctx.Err() == nil {
		if err := w.step(ctx); err != nil {
			if ctx.Err() == nil {
				w.mu.Lock()
				w.err = err
				w.mu.Unlock()
			}
			return
		}
		time.Sleep(time.Duration(5+w.rnd.Intn(20)) * time.Millisecond)
	}
}

// streamer keeps a `pme2go-backup stream` child running and kills it with
// SIGKILL on request.
type streamer struct {
	t       *testing.T
	logPath string
	start   func() *exec.Cmd
	kill    chan struct{}
	stop    chan struct{}
	done    chan struct{}
	kills   int
}

func newStreamer(t *testing.T, e *env, bin string) *streamer {
	s := &streamer{t: t, kill: make(chan struct{}), stop: make(chan struct{}), done: make(chan struct{})}
	logPath := filepath.Join(t.TempDir(), "stream.log")
	s.logPath = logPath
	s.start = func() *exec.Cmd {
		cmd := e.cli(t, bin, "stream")
		f, _ := os.OpenFile(logPath, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o600)
		cmd.Stdout, cmd.Stderr = f, f
		if err := cmd.Start(); err != nil {
			t.Errorf("start stream: %v", err)
			return nil
		}
		return cmd
	}
	go s.loop()
	return s
}

func (s *streamer) loop() {
	defer close(s.done)
	pendingKill := false
	for {
		before := s.captured()
		cmd := s.start()
		if cmd == nil {
			return
		}
		exited := make(chan struct{})
		go func() { cmd.Wait(); close(exited) }()
		tick := time.NewTicker(50 * time.Millisecond)
	run:
		for {
			select {
			case <-exited: // e.g. the killed session still held the slot: retry
				time.Sleep(200 * time.Millisecond)
				break run
			case <-s.kill:
				pendingKill = true
			case <-s.stop:
				tick.Stop()
				cmd.Process.Signal(syscall.SIGTERM)
				<-exited
				return
			case <-tick.C:
			}
			// A kill waits until this run has started capturing (its log
			// line is observable), so that every kill interrupts a
			// capturing stream however slow the machine is.
			if pendingKill && s.captured() > before {
				cmd.Process.Signal(syscall.SIGKILL)
				<-exited
				s.kills++
				pendingKill = false
				break run
			}
		}
		tick.Stop()
	}
}

// captured counts the runs of the stream that started capturing.
func (s *streamer) captured() int {
	b, _ := os.ReadFile(s.logPath)
	return strings.Count(string(b), "capturing changes")
}

// sealed counts the segments the stream sealed for incrementals.
func (s *streamer) sealed() int {
	b, _ := os.ReadFile(s.logPath)
	return strings.Count(string(b), "segment sealed for an incremental backup")
}

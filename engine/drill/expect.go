package drill

import (
	"bufio"
	"context"
	"fmt"
	"hash/maphash"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"time"

	"github.com/pme2go/pme2go-backup/engine/archive"
	"github.com/pme2go/pme2go-backup/engine/changeset"
	"github.com/pme2go/pme2go-backup/engine/config"
	"github.com/pme2go/pme2go-backup/engine/pgclient"
)

// relName is a table by schema and name, unquoted.
type relName struct{ Schema, Name string }

// String is the name for people (quoted only where needed).
func (r relName) String() string { return quoteIdent(r.Schema) + "." + quoteIdent(r.Name) }

// sql is the name for SQL text (always quoted).
func (r relName) sql() string {
	return changeset.QuoteIdent(r.Schema) + "." + changeset.QuoteIdent(r.Name)
}

// quoteIdent quotes an identifier only when it needs it (as quote_ident
// does for names that are not keywords).
func quoteIdent(s string) string {
	plain := s != ""
	for i, c := range s {
		if !(c == '_' || c >= 'a' && c <= 'z' || i > 0 && (c >= '0' && c <= '9' || c == '$')) {
			plain = false
			break
		}
	}
	if plain && !sqlKeywords[s] {
		return s
	}
	return changeset.QuoteIdent(s)
}

// sqlKeywords are reserved words that are common table or schema names;
// names among them are quoted (a quoted name is always correct SQL).
var sqlKeywords = map[string]bool{"user": true, "order": true, "group": true, "table": true, "select": true,
	"from": true, "where": true, "check": true, "default": true, "primary": true, "references": true,
	"limit": true, "offset": true, "all": true, "column": true, "constraint": true, "to": true, "end": true}

// tableSum is an order-independent digest of a table's rows: how many,
// and the sum (mod 2^64) of a 64-bit hash of each row's COPY text line.
type tableSum struct {
	Rows int64
	Sum  uint64
}

// summer hashes COPY lines; one seed per drill, so that the dump's and the
// restored table's digests compare.
type summer struct{ seed maphash.Seed }

func newSummer() *summer { return &summer{seed: maphash.MakeSeed()} }

func (s *summer) line(b []byte) uint64 { return maphash.Bytes(s.seed, b) }

// dumpData is what the full backup recorded of one database's tables.
type dumpData struct {
	Tables   map[relName]tableSum
	Encoding string // the dump's client_encoding
}

// readDump reads the table data of the pg_dump directory dumpDir through
// pg_restore (as an SQL script of the TABLE DATA entries only) and digests
// each table's COPY block.
func readDump(ctx context.Context, cfg *config.Config, target pgclient.Target, db, dumpDir string, sm *summer, log *slog.Logger) (*dumpData, error) {
	tool, err := pgclient.FindTool(ctx, "pg_restore", cfg.PgBinDir, 0)
	if err != nil {
		return nil, err
	}
	listAll := dumpDir + ".toc-all"
	list := dumpDir + ".toc-data"
	defer os.Remove(listAll)
	defer os.Remove(list)
	if err := tool.Run(ctx, log, target, db, "-l", "-f", listAll, dumpDir); err != nil {
		return nil, fmt.Errorf("read the table of contents of the full backup of %s: %w", db, err)
	}
	data, err := os.ReadFile(listAll)
	if err != nil {
		return nil, err
	}
	lines := strings.Split(string(data), "\n")
	for i, l := range lines {
		if strings.HasPrefix(l, ";") || l == "" {
			continue
		}
		_, rest, _ := strings.Cut(l, "; ")
		f := strings.SplitN(rest, " ", 3)
		if len(f) != 3 || !strings.HasPrefix(f[2], "TABLE DATA ") {
			lines[i] = ";" + l
		}
	}
	if err := os.WriteFile(list, []byte(strings.Join(lines, "\n")), 0o600); err != nil {
		return nil, err
	}
	env, cleanup, err := target.ChildEnv(db)
	if err != nil {
		return nil, err
	}
	defer cleanup()
	cmd := exec.CommandContext(ctx, tool.Path, "-L", list, "-f", "-", dumpDir)
	cmd.Env = env
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = 5 * time.Second
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start pg_restore: %w", err)
	}
	dd, perr := parseScript(out, sm)
	if perr != nil {
		io.Copy(io.Discard, out)
	}
	werr := cmd.Wait()
	if ctx.Err() != nil {
		return nil, ctx.Err()
	}
	if werr != nil {
		return nil, fmt.Errorf("pg_restore could not read the table data of the full backup of %s (%v): %s", db, werr, strings.TrimSpace(stderr.String()))
	}
	if perr != nil {
		return nil, fmt.Errorf("read the table data of the full backup of %s: %w", db, perr)
	}
	return dd, nil
}

// parseScript digests the COPY blocks of a pg_restore script: each block
// starts with "COPY schema.table (columns) FROM stdin;" and ends with a
// line "\.".
func parseScript(r io.Reader, sm *summer) (*dumpData, error) {
	dd := &dumpData{Tables: map[relName]tableSum{}}
	br := bufio.NewReaderSize(r, 1<<20)
	var cur *relName
	var sum tableSum
	for {
		line, err := br.ReadSlice('\n')
		if err == bufio.ErrBufferFull {
			// A row longer than the buffer: hash it whole.
			big := append([]byte(nil), line...)
			for err == bufio.ErrBufferFull {
				line, err = br.ReadSlice('\n')
				big = append(big, line...)
			}
			line = big
		}
		if len(line) == 0 && err != nil {
			if err == io.EOF {
				if cur != nil {
					return nil, fmt.Errorf("the data of %s ends without its end marker", cur)
				}
				return dd, nil
			}
			return nil, err
		}
		text := strings.TrimSuffix(string(trimNL(line)), "\r")
		if cur != nil {
			if text == `\.` {
				dd.Tables[*cur] = sum
				cur = nil
				continue
			}
			sum.Rows++
			sum.Sum += sm.line(trimNL(line))
			continue
		}
		if enc, ok := strings.CutPrefix(text, "SET client_encoding = '"); ok {
			dd.Encoding = strings.TrimSuffix(enc, "';")
			continue
		}
		if rest, ok := strings.CutPrefix(text, "COPY "); ok && strings.HasSuffix(text, " FROM stdin;") {
			rel, err := parseQualified(rest)
			if err != nil {
				return nil, fmt.Errorf("unreadable COPY statement %q: %w", text, err)
			}
			cur, sum = &rel, tableSum{}
		}
		if err == io.EOF {
			return dd, nil
		}
	}
}

func trimNL(b []byte) []byte {
	if n := len(b); n > 0 && b[n-1] == '\n' {
		return b[:n-1]
	}
	return b
}

// parseQualified reads `schema.table` (each part an SQL identifier, quoted
// or not) at the start of s.
func parseQualified(s string) (relName, error) {
	schema, rest, err := parseIdent(s)
	if err != nil {
		return relName{}, err
	}
	if !strings.HasPrefix(rest, ".") {
		return relName{}, fmt.Errorf("no schema-qualified name")
	}
	name, _, err := parseIdent(rest[1:])
	if err != nil {
		return relName{}, err
	}
	return relName{schema, name}, nil
}

func parseIdent(s string) (string, string, error) {
	if strings.HasPrefix(s, `"`) {
		var b strings.Builder
		for i := 1; i < len(s); i++ {
			if s[i] == '"' {
				if i+1 < len(s) && s[i+1] == '"' {
					b.WriteByte('"')
					i++
					continue
				}
				return b.String(), s[i+1:], nil
			}
			b.WriteByte(s[i])
		}
		return "", "", fmt.Errorf("unterminated quoted identifier")
	}
	i := strings.IndexAny(s, ". (")
	if i <= 0 {
		return "", "", fmt.Errorf("no identifier")
	}
	// Unquoted identifiers are folded to lower case by the server; pg_dump
	// quotes every name that is not already lower case.
	return s[:i], s[i:], nil
}

// deltas are what the replayed change sets did to each table.
type deltas struct {
	Inserts, Deletes, Updates map[relName]int64
	// Truncated: the table was truncated; its count restarts from the
	// inserts and deletes after the last truncation (Inserts and Deletes
	// hold only those).
	Truncated map[relName]bool
	// Touched: any change at all (such tables get no checksum).
	Touched map[relName]bool
	// DDL: the replayed range holds captured DDL.
	DDL          bool
	Transactions int64
}

func newDeltas() *deltas {
	return &deltas{Inserts: map[relName]int64{}, Deletes: map[relName]int64{}, Updates: map[relName]int64{},
		Truncated: map[relName]bool{}, Touched: map[relName]bool{}}
}

// readDeltas extracts the change sets of the incremental archives (in
// order) into work and counts, per table, the inserts, deletes and
// truncations of every transaction committed at or before lastLSN (the
// last transaction the restore replayed).
func readDeltas(ctx context.Context, archives []string, lastLSN uint64, work string) (*deltas, error) {
	dl := newDeltas()
	for i, path := range archives {
		dir := filepath.Join(work, fmt.Sprintf("inc-%d", i))
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return nil, err
		}
		if _, err := archive.Extract(ctx, path, dir); err != nil {
			return nil, fmt.Errorf("extract %s: %w", filepath.Base(path), err)
		}
		segs, _ := filepath.Glob(filepath.Join(dir, "changes", "*"))
		sort.Strings(segs)
		for _, seg := range segs {
			done, err := countSegment(ctx, seg, lastLSN, dl)
			if err != nil {
				return nil, fmt.Errorf("%s: change set %s: %w", filepath.Base(path), filepath.Base(seg), err)
			}
			if done {
				return dl, nil
			}
		}
		os.RemoveAll(dir)
	}
	return dl, nil
}

type txDelta struct {
	ins, del, upd map[relName]int64
	trunc         []relName
}

// countSegment adds one segment's transactions to dl; done reports that a
// transaction past lastLSN was reached.
func countSegment(ctx context.Context, path string, lastLSN uint64, dl *deltas) (done bool, err error) {
	r, err := changeset.Open(path)
	if err != nil {
		return false, err
	}
	defer r.Close()
	s := changeset.NewTxScanner(r)
	var tx *txDelta
	skip := false
	for s.Scan() {
		switch rec := s.Event().Record.(type) {
		case *changeset.Begin:
			if err := ctx.Err(); err != nil {
				return false, err
			}
			if rec.FinalLSN > lastLSN {
				return true, nil
			}
			skip = false
			tx = &txDelta{ins: map[relName]int64{}, del: map[relName]int64{}, upd: map[relName]int64{}}
		case *changeset.Change:
			if tx == nil || skip || len(rec.Raw) == 0 {
				continue
			}
			switch rec.Raw[0] {
			case 'I':
				if len(rec.Relations) > 0 {
					tx.ins[relOf(rec.Relations[0])]++
				}
			case 'D':
				if len(rec.Relations) > 0 {
					tx.del[relOf(rec.Relations[0])]++
				}
			case 'U':
				if len(rec.Relations) > 0 {
					tx.upd[relOf(rec.Relations[0])]++
				}
			case 'T':
				// A truncation resets counts in order with the other
				// changes of its transaction: fold what came before.
				for _, rel := range rec.Relations {
					n := relOf(rel)
					delete(tx.ins, n)
					delete(tx.del, n)
					tx.trunc = append(tx.trunc, n)
				}
			}
		case *changeset.Message:
			if changeset.IsDDLPrefix(rec.Prefix) {
				dl.DDL = true
			}
		case *changeset.Commit:
			if tx == nil {
				continue
			}
			for _, n := range tx.trunc {
				dl.Truncated[n] = true
				dl.Inserts[n], dl.Deletes[n] = 0, 0
				dl.Touched[n] = true
			}
			for n, c := range tx.ins {
				dl.Inserts[n] += c
				dl.Touched[n] = true
			}
			for n, c := range tx.del {
				dl.Deletes[n] += c
				dl.Touched[n] = true
			}
			for n, c := range tx.upd {
				dl.Updates[n] += c
				dl.Touched[n] = true
			}
			dl.Transactions++
			tx = nil
		}
	}
	return false, s.Err()
}

func relOf(r *changeset.Relation) relName { return relName{r.Schema, r.Name} }

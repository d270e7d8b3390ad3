package capture

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"
	pgc "github.com/jackc/pgx/v5/pgconn"

	"github.com/pme2go/pme2go-backup/engine/chain"
	"github.com/pme2go/pme2go-backup/engine/changeset"
	"github.com/pme2go/pme2go-backup/engine/config"
	"github.com/pme2go/pme2go-backup/engine/fsutil"
	"github.com/pme2go/pme2go-backup/engine/pgclient"
)

// SegmentExt ends every segment file name; the name is the segment's start
// LSN as 16 hex digits, so that names sort in LSN order.
const SegmentExt = ".changes"

// SegmentName returns the file name of the segment starting at lsn.
func SegmentName(lsn uint64) string { return fmt.Sprintf("%016X%s", lsn, SegmentExt) }

// Segments lists the chain's segment files in LSN order.
func Segments(st *chain.State) ([]string, error) {
	entries, err := os.ReadDir(st.SegmentsDir())
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("list segments of chain %s: %w", st.ID, err)
	}
	var out []string
	for _, e := range entries {
		if e.Type().IsRegular() && strings.HasSuffix(e.Name(), SegmentExt) && !fsutil.IsTemp(e.Name()) {
			out = append(out, filepath.Join(st.SegmentsDir(), e.Name()))
		}
	}
	sort.Strings(out)
	return out, nil
}

// SealOf returns the Seal record of the segment at path, or nil when the
// segment is still open.
func SealOf(path string) (*changeset.Seal, error) {
	r, err := changeset.Open(path)
	if err != nil {
		return nil, err
	}
	defer r.Close()
	for {
		_, err := r.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			if errors.Is(err, changeset.ErrTornTail) {
				return nil, nil
			}
			return nil, err
		}
	}
	s, _ := r.Sealed()
	return s, nil
}

// session is one capture connection pair and the open segment.
type session struct {
	cfg  *config.Config
	st   *chain.State
	opts Options
	conn *pgx.Conn
	repl *pgc.PgConn

	w        *changeset.Writer
	segStart uint64
	rels     map[uint32]*changeset.Relation
	inSeg    map[uint32]bool
	schema   *chain.Schema
	types    map[[2]int64]string
	proto    int
	version  int

	inTx, skip bool
	begin      changeset.Begin
	pos        uint64 // synced and confirmable position
	pendingEnd uint64 // end of the last commit seen, maybe not yet synced
	dirty      bool
	dirtySince time.Time
	dirtyFrom  int64
	stored     int64
	req        *pendingSeal

	catalog        *chain.CatalogPrint // last proven catalog
	pendingPrint   *chain.CatalogPrint // read, verdict waiting for the stream (CAPTURE_DDL)
	ending         bool                // the chain is being ended: no more proofs
	probe          *probe              // window probe in flight
	probeToken     string
	completeLSN    uint64    // the stream is complete up to here …
	completeTime   time.Time // … and this server time
	lastCommitTime time.Time
	txPos          uint64             // last WAL position seen in the open transaction
	loState        chain.LargeObjects // large objects at the last capture (streaming)
	loSeen         time.Time          // last time loState was seen unchanged
}

func open(ctx context.Context, cfg *config.Config, st *chain.State, opts Options) (*session, error) {
	if err := st.Reload(); err != nil {
		return nil, err
	}
	if st.Status != chain.StatusOpen {
		return nil, endedf("chain %s of database %s is %s (%s); take a new full backup", st.ID, st.Database, st.Status, st.Reason)
	}
	s := &session{cfg: cfg, st: st, opts: opts, rels: map[uint32]*changeset.Relation{},
		inSeg: map[uint32]bool{}, types: map[[2]int64]string{}}
	var err error
	if s.schema, err = st.LoadSchema(); err != nil {
		return nil, err
	}
	if s.catalog, err = st.LoadCatalog(); err != nil {
		return nil, err
	}
	if l, _ := chain.ParseLSN(st.CompleteLSN); l != 0 {
		s.completeLSN, s.completeTime = l, st.CompleteTime
	}
	if s.conn, err = pgclient.FromConfig(cfg).Connect(ctx, st.Database); err != nil {
		return nil, err
	}
	if err := s.conn.QueryRow(ctx, `SELECT current_setting('server_version_num')::int`).Scan(&s.version); err != nil {
		s.close()
		return nil, fmt.Errorf("server version: %w", err)
	}
	s.proto = 1
	if s.version >= 140000 {
		s.proto = 2
	}
	if err := s.openSegment(); err != nil {
		s.close()
		return nil, err
	}
	if err := s.checkSlot(ctx); err != nil {
		s.close()
		return nil, err
	}
	return s, nil
}

// openSegment continues the last unsealed segment, cutting a torn tail, or
// creates a new one where the last sealed segment (or the chain) says.
func (s *session) openSegment() error {
	if err := fsutil.EnsurePrivateDir(s.st.SegmentsDir()); err != nil {
		return fmt.Errorf("segments directory of chain %s: %w", s.st.ID, err)
	}
	segs, err := Segments(s.st)
	if err != nil {
		return err
	}
	start := s.st.NextSegment()
	if n := len(segs); n > 0 {
		seal, err := SealOf(segs[n-1])
		if err != nil {
			return fmt.Errorf("chain %s: %w", s.st.ID, err)
		}
		if seal == nil {
			w, rec, err := changeset.OpenAppend(segs[n-1])
			if err != nil {
				return err
			}
			if rec.Cut != nil {
				s.opts.Log.Warn("cut the torn tail of a segment back to its last whole transaction", "segment", segs[n-1], "bytes", rec.OriginalSize-rec.Size)
			}
			s.w, s.segStart = w, rec.Header.StartLSN
			s.pos = max(s.segStart, rec.LastEndLSN)
			return nil
		}
		start = max(start, seal.NextLSN)
	}
	return s.newSegment(start)
}

func (s *session) newSegment(start uint64) error {
	w, err := changeset.Create(filepath.Join(s.st.SegmentsDir(), SegmentName(start)), changeset.Header{
		SystemIdentifier: s.st.SystemIdentifier, Timeline: s.st.Timeline, Database: s.st.Database,
		ChainID: s.st.ID, Slot: s.st.Slot, Publication: s.st.Publication, StartLSN: start,
		ServerVersion: s.version, ProtoVersion: s.proto,
	})
	if err != nil {
		return err
	}
	s.w, s.segStart, s.pos = w, start, max(s.pos, start)
	s.inSeg = map[uint32]bool{}
	return nil
}

func (s *session) close() {
	if s.w != nil {
		s.w.Close()
		s.w = nil
	}
	if s.repl != nil {
		s.repl.Close(context.Background())
		s.repl = nil
	}
	if s.conn != nil {
		s.conn.Close(context.Background())
		s.conn = nil
	}
}

// typeName resolves format_type(oid, typmod), cached. It is rendered with
// search_path = pg_catalog (SET LOCAL, in the implicit transaction of one
// simple query), so that every type outside pg_catalog comes out
// schema-qualified whatever the session's search_path is: replay runs with
// search_path = pg_catalog and must find the same type. A failed look-up is
// an error, never a placeholder: a relation definition written with a wrong
// type name would make every restore through it fail.
func (s *session) typeName(ctx context.Context, oid uint32, mod int32) (string, error) {
	k := [2]int64{int64(oid), int64(mod)}
	if n, ok := s.types[k]; ok {
		return n, nil
	}
	q := fmt.Sprintf("SET LOCAL search_path = pg_catalog; SELECT pg_catalog.format_type(%d::pg_catalog.oid, %d)", oid, mod)
	res, err := s.conn.PgConn().Exec(ctx, q).ReadAll()
	if err != nil {
		return "", fmt.Errorf("look up the name of type oid %d: %w", oid, err)
	}
	if len(res) != 2 || len(res[1].Rows) != 1 || len(res[1].Rows[0]) != 1 || len(res[1].Rows[0][0]) == 0 {
		return "", fmt.Errorf("look up the name of type oid %d: no such type", oid)
	}
	n := string(res[1].Rows[0][0])
	s.types[k] = n
	return n, nil
}

// typeNames resolves the type name of every column of m (see typeName).
func (s *session) typeNames(ctx context.Context, m *pglogrepl.RelationMessage) (func(uint32, int32) string, error) {
	names := map[[2]int64]string{}
	for _, c := range m.Columns {
		n, err := s.typeName(ctx, c.DataType, c.TypeModifier)
		if err != nil {
			return nil, fmt.Errorf("relation %s.%s: %w", m.Namespace, m.RelationName, err)
		}
		names[[2]int64{int64(c.DataType), int64(c.TypeModifier)}] = n
	}
	return func(oid uint32, mod int32) string { return names[[2]int64{int64(oid), int64(mod)}] }, nil
}

// sync makes everything written durable and advances the confirmable
// position to the last commit written.
func (s *session) sync() error {
	if !s.dirty {
		return nil
	}
	if err := s.w.Sync(); err != nil {
		return err
	}
	s.pos = max(s.pos, s.pendingEnd)
	s.dirty = false
	if s.opts.Progress != nil {
		s.opts.Progress(Progress{Chain: s.st.ID, Database: s.st.Database, Position: chain.FormatLSN(s.pos), TxCount: s.stored})
	}
	return nil
}

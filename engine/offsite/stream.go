package offsite

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pme2go/pme2go-backup/engine/archive"
	"github.com/pme2go/pme2go-backup/engine/capture"
	"github.com/pme2go/pme2go-backup/engine/chain"
	"github.com/pme2go/pme2go-backup/engine/config"
	"github.com/pme2go/pme2go-backup/engine/crypt"
	"github.com/pme2go/pme2go-backup/engine/pgclient"
)

// Streaming sends the change-set segments of open chains to
// stream/<chain>/<segment>/<generation>/<offset> while a capture runs: each
// pass uploads the bytes appended since the previous pass as one object
// named by its offset (16 hex digits), so that concatenating a
// generation's objects in order gives a prefix of the segment. The file
// holds at least everything the capture fsynced (and acknowledged to the
// server); a torn tail is cut back to the last whole transaction when the
// segment is read, as after a crash. A new generation starts whenever the
// segment might have been rewritten (a capture cuts a torn tail back when
// it reopens a segment): at every start of the syncer, and when the file
// shrank or its last sent bytes changed. stream/<chain>/chain.json is the
// chain's state, stream/<chain>/sequences.json the sequence values taken
// at the last pass.

// streamer keeps what was sent of each segment in this process.
type streamer struct {
	r    *Repo
	cfg  *config.Config
	log  *slog.Logger
	mu   sync.Mutex
	pos  map[string]*segPos // by chain/segment
	conn map[string]*pgx.Conn
	meta map[string][32]byte // last chain.json/sequences sent, by key
	dbs  []string            // databases synced; empty: all
}

type segPos struct {
	gen       string
	off       int64
	lastStart int64
	lastSum   [32]byte
}

// StreamSync sends the open segments of the chains of dbs (all when
// empty; each capturing process syncs the databases it captures) every
// interval until ctx ends. A
// failed pass is logged and retried at the next interval; the returned
// error is ctx's. onPass, when set, is called after every pass with its
// error (nil: everything synced).
func (r *Repo) StreamSync(ctx context.Context, cfg *config.Config, dbs []string, interval time.Duration, log *slog.Logger, onPass func(error)) error {
	s := &streamer{r: r, cfg: cfg, dbs: dbs, log: log, pos: map[string]*segPos{}, conn: map[string]*pgx.Conn{}, meta: map[string][32]byte{}}
	defer s.close()
	t := time.NewTicker(interval)
	defer t.Stop()
	failing := false
	for {
		select {
		case <-ctx.Done():
			// One last pass, so that a stopping capture's tail is sent.
			fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), interval)
			s.pass(fctx)
			cancel()
			return ctx.Err()
		case <-t.C:
		}
		err := s.pass(ctx)
		if onPass != nil {
			onPass(err)
		}
		if err != nil && !failing && log != nil {
			log.Warn("streaming to the off-site repository failed; retrying every interval", "repository", r.S.String(), "error", err)
		} else if err == nil && failing && log != nil {
			log.Info("streaming to the off-site repository resumed", "repository", r.S.String())
		}
		failing = err != nil
	}
}

func (s *streamer) close() {
	for _, c := range s.conn {
		c.Close(context.Background())
	}
}

// SyncStreamsOnce makes one streaming pass (tests and `offsite sync`).
func (r *Repo) SyncStreamsOnce(ctx context.Context, cfg *config.Config) error {
	s := &streamer{r: r, cfg: cfg, pos: map[string]*segPos{}, conn: map[string]*pgx.Conn{}, meta: map[string][32]byte{}}
	defer s.close()
	return s.pass(ctx)
}

func (s *streamer) pass(ctx context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	states, err := chain.List(s.cfg)
	if err != nil {
		return err
	}
	var errList []error
	synced := map[string]*StreamPos{}
	for _, st := range states {
		if st.Status != chain.StatusOpen || (len(s.dbs) > 0 && !slices.Contains(s.dbs, st.Database)) {
			continue
		}
		segs, err := capture.Segments(st)
		if err != nil {
			errList = append(errList, err)
			continue
		}
		if len(segs) == 0 {
			continue
		}
		if err := s.sendMeta(ctx, st); err != nil {
			errList = append(errList, err)
			continue
		}
		for _, p := range segs {
			sp, err := s.sendSegment(ctx, st, p)
			if err != nil {
				errList = append(errList, err)
				continue
			}
			synced[st.ID+"/"+filepath.Base(p)] = &StreamPos{Chain: st.ID, Database: st.Database, Segment: filepath.Base(p), Generation: sp.gen, Offset: sp.off, Synced: time.Now().UTC()}
		}
	}
	if err := update(s.cfg, func(state *State) error {
		for k, v := range state.Streams {
			if _, ok := synced[k]; !ok && !slices.Contains(s.dbs, v.Database) && len(s.dbs) > 0 {
				synced[k] = v // another process's database
			}
		}
		state.Streams = synced
		return nil
	}); err != nil {
		errList = append(errList, err)
	}
	return errors.Join(errList...)
}

func streamDir(chainID string) string { return "stream/" + chainID + "/" }

// sendMeta uploads the chain's state and its sequences' current values
// when they changed.
func (s *streamer) sendMeta(ctx context.Context, st *chain.State) error {
	b, err := os.ReadFile(filepath.Join(st.Dir(), "chain.json"))
	if err != nil {
		return fmt.Errorf("read chain state: %w", err)
	}
	if err := s.putIfChanged(ctx, streamDir(st.ID)+"chain.json", b); err != nil {
		return err
	}
	conn := s.conn[st.Database]
	if conn == nil || conn.IsClosed() {
		conn, err = pgclient.FromConfig(s.cfg).Connect(ctx, st.Database)
		if err != nil {
			return fmt.Errorf("read sequences of %s for the off-site stream: %w", st.Database, err)
		}
		s.conn[st.Database] = conn
	}
	seq, err := capture.Sequences(ctx, conn)
	if err != nil {
		conn.Close(context.Background())
		delete(s.conn, st.Database)
		return err
	}
	sb, _ := json.Marshal(seq.Values)
	if sum := sha256.Sum256(sb); s.meta[streamDir(st.ID)+"sequences.values"] == sum {
		return nil
	} else {
		s.meta[streamDir(st.ID)+"sequences.values"] = sum
	}
	body, _ := json.MarshalIndent(seq, "", "  ")
	return s.putIfChanged(ctx, streamDir(st.ID)+"sequences.json", body)
}

func (s *streamer) putIfChanged(ctx context.Context, rel string, b []byte) error {
	sum := sha256.Sum256(b)
	if s.meta[rel] == sum {
		return nil
	}
	if _, err := s.r.Put(ctx, rel, bytes.NewReader(b), int64(len(b))); err != nil {
		return err
	}
	s.meta[rel] = sum
	return nil
}

// sendSegment uploads what was appended to the segment at p since the
// last pass.
func (s *streamer) sendSegment(ctx context.Context, st *chain.State, p string) (*segPos, error) {
	key := st.ID + "/" + filepath.Base(p)
	f, err := os.Open(p)
	if err != nil {
		return nil, fmt.Errorf("stream segment: %w", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	size := fi.Size()
	sp := s.pos[key]
	if sp != nil && (size < sp.off || !sameBytes(f, sp.lastStart, sp.off, sp.lastSum)) {
		sp = nil // rewritten: start a new generation
	}
	newGen := sp == nil
	if newGen {
		sp = &segPos{gen: strconv.FormatInt(time.Now().UnixNano(), 16)}
	}
	if size > sp.off {
		buf := make([]byte, size-sp.off)
		n, err := f.ReadAt(buf, sp.off)
		if err != nil && err != io.EOF {
			return nil, fmt.Errorf("stream segment: %w", err)
		}
		buf = buf[:n]
		rel := fmt.Sprintf("%s%s/%s/%016x-%016x", streamDir(st.ID), filepath.Base(p), sp.gen, sp.off, len(buf))
		body := buf
		if crypt.Enabled() {
			// Change sets hold table data: encrypted like the archives.
			if body, err = encrypt(buf); err != nil {
				return nil, err
			}
			rel += crypt.Suffix
		}
		if _, err := s.r.Put(ctx, rel, bytes.NewReader(body), int64(len(body))); err != nil {
			return nil, err
		}
		sp.lastStart, sp.lastSum = sp.off, sha256.Sum256(buf)
		sp.off += int64(len(buf))
	}
	s.pos[key] = sp
	if newGen && sp.off > 0 {
		// The new generation is complete up to what the file holds:
		// older ones are superseded.
		if err := s.r.dropGenerations(ctx, streamDir(st.ID)+filepath.Base(p)+"/", sp.gen); err != nil {
			return sp, err
		}
	}
	return sp, nil
}

// sameBytes reports whether the file's bytes [from, to) still hash to sum.
func sameBytes(f *os.File, from, to int64, sum [32]byte) bool {
	if to == from {
		return true
	}
	buf := make([]byte, to-from)
	if _, err := f.ReadAt(buf, from); err != nil {
		return false
	}
	return sha256.Sum256(buf) == sum
}

// dropGenerations removes the objects below dir not of generation keep.
func (r *Repo) dropGenerations(ctx context.Context, dir, keep string) error {
	objs, err := r.List(ctx, dir)
	if err != nil {
		return err
	}
	for _, o := range objs {
		gen, _, _ := strings.Cut(strings.TrimPrefix(o.Rel, dir), "/")
		if gen != keep {
			if err := r.Remove(ctx, o.Rel); err != nil {
				return err
			}
		}
	}
	return nil
}

// streamedSegment is one segment found below stream/: its chunks of the
// newest generation that is contiguous from offset 0.
type streamedSegment struct {
	chain, name string
	start       uint64
	chunks      []Object
}

// streamed lists the streamed chains: chain → its metadata objects and
// segments, in start order.
func (r *Repo) streamed(ctx context.Context) (map[string][]streamedSegment, map[string][]Object, error) {
	objs, err := r.List(ctx, "stream/")
	if err != nil {
		return nil, nil, err
	}
	type genKey struct{ chain, seg, gen string }
	gens := map[genKey][]Object{}
	meta := map[string][]Object{}
	for _, o := range objs {
		parts := strings.Split(strings.TrimPrefix(o.Rel, "stream/"), "/")
		switch len(parts) {
		case 2:
			meta[parts[0]] = append(meta[parts[0]], o)
		case 4:
			k := genKey{parts[0], parts[1], parts[2]}
			gens[k] = append(gens[k], o)
		}
	}
	best := map[[2]string]streamedSegment{}
	bestGen := map[[2]string]string{}
	for k, chunks := range gens {
		sort.Slice(chunks, func(i, j int) bool { return chunks[i].Rel < chunks[j].Rel })
		var off int64
		ok := true
		for _, c := range chunks {
			o, n, err := chunkRange(c.Rel)
			if err != nil || o != off {
				ok = false
				break
			}
			off += n
		}
		if !ok {
			continue
		}
		sk := [2]string{k.chain, k.seg}
		if g, seen := bestGen[sk]; seen && g > k.gen && len(g) >= len(k.gen) {
			continue
		}
		start, _ := strconv.ParseUint(strings.TrimSuffix(k.seg, capture.SegmentExt), 16, 64)
		best[sk], bestGen[sk] = streamedSegment{chain: k.chain, name: k.seg, start: start, chunks: chunks}, k.gen
	}
	out := map[string][]streamedSegment{}
	for sk, s := range best {
		out[sk[0]] = append(out[sk[0]], s)
	}
	for c := range out {
		sort.Slice(out[c], func(i, j int) bool { return out[c][i].start < out[c][j].start })
	}
	return out, meta, nil
}

// dropStreamsCovered removes the streamed segments that an uploaded
// incremental archive holds (its manifest's "segments"). The chain's
// chain.json and sequences.json stay (a few hundred bytes).
func (r *Repo) dropStreamsCovered(ctx context.Context, remotes []Remote) (int, error) {
	covered := map[string]bool{}
	for _, rb := range remotes {
		if rb.Manifest == nil || rb.Type != archive.KindIncremental {
			continue
		}
		segs, _ := rb.Manifest.Metadata["segments"].([]any)
		for _, s := range segs {
			if name, ok := s.(string); ok {
				covered[rb.ChainID+"/"+name] = true
			}
		}
	}
	objs, err := r.List(ctx, "stream/")
	if err != nil {
		return 0, err
	}
	n := 0
	for _, o := range objs {
		parts := strings.Split(strings.TrimPrefix(o.Rel, "stream/"), "/")
		if len(parts) != 4 {
			continue
		}
		if !covered[parts[0]+"/"+parts[1]] {
			continue
		}
		if err := r.Remove(ctx, o.Rel); err != nil {
			return n, err
		}
		n++
	}
	return n, nil
}

// chunkRange reads a chunk's offset and plaintext length from its name
// (<offset>-<length>, 16 hex digits each, ".age" when encrypted).
func chunkRange(rel string) (int64, int64, error) {
	name := strings.TrimSuffix(path.Base(rel), crypt.Suffix)
	a, b, ok := strings.Cut(name, "-")
	if !ok {
		return 0, 0, fmt.Errorf("not a change-set chunk: %s", rel)
	}
	o, err1 := strconv.ParseInt(a, 16, 64)
	n, err2 := strconv.ParseInt(b, 16, 64)
	if err1 != nil || err2 != nil {
		return 0, 0, fmt.Errorf("not a change-set chunk: %s", rel)
	}
	return o, n, nil
}

// encrypt returns b encrypted to the current recipients (age).
func encrypt(b []byte) ([]byte, error) {
	rec, err := crypt.LoadRecipients()
	if err != nil {
		return nil, err
	}
	var out bytes.Buffer
	w, err := rec.Encrypt(&out)
	if err != nil {
		return nil, err
	}
	if _, err := w.Write(b); err != nil {
		return nil, err
	}
	if err := w.Close(); err != nil {
		return nil, err
	}
	return out.Bytes(), nil
}

package incremental

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/pme2go/pme2go-backup/engine/archive"
	"github.com/pme2go/pme2go-backup/engine/backupdir"
	"github.com/pme2go/pme2go-backup/engine/capture"
	"github.com/pme2go/pme2go-backup/engine/chain"
	"github.com/pme2go/pme2go-backup/engine/changeset"
	"github.com/pme2go/pme2go-backup/engine/config"
	"github.com/pme2go/pme2go-backup/engine/crypt"
	"github.com/pme2go/pme2go-backup/engine/version"
)

// segInfo is what one sealed segment contributes to the manifest.
type segInfo struct {
	path string
	hdr  changeset.Header
	seal *changeset.Seal
	seq  *changeset.Sequences
}

func readSealed(path string) (*segInfo, error) {
	r, err := changeset.Open(path)
	if err != nil {
		return nil, err
	}
	defer r.Close()
	si := &segInfo{path: path, hdr: r.Header()}
	for {
		rec, err := r.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("read sealed segment %s: %w", path, err)
		}
		if s, ok := rec.(*changeset.Sequences); ok {
			si.seq = s
		}
	}
	si.seal, _ = r.Sealed()
	return si, nil
}

// archiveSealed packs the chain's sealed segments into one incremental
// archive, then records it in chain.json and removes the segments. It
// returns nil when no segment is sealed.
func archiveSealed(ctx context.Context, cfg *config.Config, st *chain.State, opts Options) (*Result, error) {
	paths, err := capture.Segments(st)
	if err != nil {
		return nil, err
	}
	var segs []*segInfo
	for _, p := range paths {
		si, err := readSealed(p)
		if err != nil {
			if seal, serr := capture.SealOf(p); serr == nil && seal == nil {
				break // the open segment (maybe with a torn tail)
			}
			return nil, err
		}
		if si.seal == nil {
			break
		}
		segs = append(segs, si)
	}
	if len(segs) == 0 {
		return nil, nil
	}
	if err := st.Reload(); err != nil {
		return nil, err
	}
	m := manifestFor(cfg, st, segs, opts)
	path, done := alreadyArchived(cfg, st, m.StartLSN)
	if !done {
		if path, err = write(ctx, cfg, m, segs); err != nil {
			return nil, err
		}
	}
	st.LastArchive = filepath.Base(path)
	if next := segs[len(segs)-1].seal.NextLSN; next > st.NextSegment() {
		st.NextSegmentLSN = chain.FormatLSN(next)
	}
	if err := st.Save(); err != nil {
		return nil, err
	}
	for _, s := range segs {
		if err := os.Remove(s.path); err != nil {
			return nil, fmt.Errorf("remove archived segment %s: %w", s.path, err)
		}
		os.RemoveAll(capture.LargeObjectsDir(s.path))
	}
	opts.Log.Info("incremental backup completed", "database", st.Database, "chain", st.ID, "backup", filepath.Base(path), "transactions", m.TxCount, "start", m.StartLSN, "end", m.EndLSN)
	return &Result{Database: st.Database, Chain: st.ID, Path: path, TxCount: m.TxCount, StartLSN: m.StartLSN, EndLSN: m.EndLSN}, nil
}

func manifestFor(cfg *config.Config, st *chain.State, segs []*segInfo, opts Options) *archive.Manifest {
	trigger := opts.Trigger
	if trigger == "" {
		trigger = archive.TriggerManual
	}
	var names []string
	for _, s := range segs {
		names = append(names, filepath.Base(s.path))
	}
	m := &archive.Manifest{
		Type: archive.KindIncremental, Timestamp: time.Now().UTC(), Version: version.Version, FormatVersion: archive.FormatVersion,
		Files: map[string]string{"changes": "changes/", "sequences": "sequences.json"},
		Metadata: map[string]any{"trigger": trigger, "database": st.Database, "segments": names,
			"chainStatus": string(st.Status), "publication": st.Publication},
		SystemIdentifier: st.SystemIdentifier, Timeline: st.Timeline, Databases: []string{st.Database},
		ChainID: st.ID, SlotName: st.Slot, Previous: st.LastArchive,
		StartLSN: chain.FormatLSN(segs[0].hdr.StartLSN), EndLSN: chain.FormatLSN(segs[len(segs)-1].seal.NextLSN),
	}
	for _, s := range segs {
		if s.seal.TxCount == 0 {
			continue
		}
		if m.TxCount == 0 {
			t := s.seal.FirstCommitTime
			m.FirstCommitLSN, m.FirstCommitTime = chain.FormatLSN(s.seal.FirstCommitLSN), &t
		}
		t := s.seal.LastCommitTime
		m.LastCommitLSN, m.LastCommitTime = chain.FormatLSN(s.seal.LastCommitLSN), &t
		m.TxCount += s.seal.TxCount
	}
	if st.Status != chain.StatusOpen && st.Reason != "" {
		m.Warnings = append(m.Warnings, "last archive of chain "+st.ID+": "+st.Reason)
	}
	last := segs[len(segs)-1].seal
	if !last.CompleteTime.IsZero() {
		// The recovery window: time targets up to it are exact.
		m.Metadata[MetaCompleteTime] = last.CompleteTime.UTC().Format(time.RFC3339Nano)
	}
	if st.Status == chain.StatusBroken && st.EndLSN != "" {
		m.Metadata[MetaChainEndLSN] = st.EndLSN
		if !st.EndTime.IsZero() {
			m.Metadata[MetaChainEndTime] = st.EndTime.UTC().Format(time.RFC3339Nano)
		}
		m.Metadata[MetaChainEndReason] = st.Reason
	}
	for _, s := range segs {
		if idx, err := capture.ReadLargeObjectIndex(capture.LargeObjectsDir(s.path)); err == nil && idx != nil {
			m.Files["largeObjects"] = "largeobjects/"
			m.Metadata[MetaLargeObjects] = len(idx.Objects)
			m.Metadata[MetaLargeObjectsTime] = idx.Taken.UTC().Format(time.RFC3339Nano)
		}
	}
	return m
}

// alreadyArchived finds an incremental of the chain starting at start: the
// previous run wrote it but crashed before its bookkeeping.
func alreadyArchived(cfg *config.Config, st *chain.State, start string) (string, bool) {
	sides, _ := filepath.Glob(filepath.Join(cfg.IncrementalDir(), "*"+archive.SidecarSuffix))
	for _, side := range sides {
		p := strings.TrimSuffix(side, archive.SidecarSuffix)
		if m, err := archive.ReadSidecar(p); err == nil && m.ChainID == st.ID && m.StartLSN == start {
			return p, true
		}
	}
	return "", false
}

func write(ctx context.Context, cfg *config.Config, m *archive.Manifest, segs []*segInfo) (string, error) {
	w, path, err := backupdir.CreateIncremental(cfg, m)
	if err != nil {
		return "", err
	}
	defer w.Abort()
	for _, s := range segs {
		if err := addSegment(w, s.path); err != nil {
			return "", err
		}
		if err := addLargeObjects(w, s.path); err != nil {
			return "", err
		}
	}
	seq := segs[len(segs)-1].seq
	if seq == nil {
		seq = &changeset.Sequences{Values: map[string]changeset.SequenceValue{}}
	}
	body, _ := json.MarshalIndent(seq, "", "  ")
	if err := w.AddBytes("sequences.json", append(body, '\n')); err != nil {
		return "", err
	}
	if err := addLogs(ctx, cfg, w, m); err != nil {
		return "", err
	}
	if err := w.Commit(m); err != nil {
		return "", err
	}
	return path, nil
}

// addSegment adds the segment at path as changes/<name>, in the segment
// format whether it is kept plain or as encrypted chunks in the state
// directory (the archive as a whole is encrypted when that is configured).
func addSegment(w *archive.Writer, path string) error {
	rc, size, err := changeset.OpenPlain(path)
	if err != nil {
		return err
	}
	defer rc.Close()
	return w.AddReader("changes/"+filepath.Base(path), size, rc)
}

// addLogs adds the BACKUP_LOG_PATHS files modified since the previous
// archive of the chain.
func addLogs(ctx context.Context, cfg *config.Config, w *archive.Writer, m *archive.Manifest) error {
	since := time.Time{}
	for _, dir := range []string{cfg.IncrementalDir(), cfg.FullDir()} {
		if pm, err := archive.ReadSidecar(filepath.Join(dir, m.Previous)); err == nil {
			since = pm.Timestamp
			break
		}
	}
	added := 0
	for _, root := range cfg.LogPaths {
		err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
			if err != nil || !d.Type().IsRegular() || ctx.Err() != nil {
				return err
			}
			info, err := d.Info()
			if err != nil || !info.ModTime().After(since) {
				return nil
			}
			added++
			return w.AddFile("logs/"+strings.TrimPrefix(filepath.ToSlash(p), "/"), p)
		})
		if err != nil {
			m.Warnings = append(m.Warnings, fmt.Sprintf("logs path %s not archived: %v", root, err))
		}
	}
	if added > 0 {
		m.Files["logs"] = "logs/"
	}
	return ctx.Err()
}

// Manifest metadata keys of incremental archives.
const (
	// MetaCompleteTime: server time (RFC 3339) up to which the change sets
	// of the archive's chain are complete at its EndLSN.
	MetaCompleteTime = "completeTime"
	// MetaChainEndLSN, MetaChainEndTime, MetaChainEndReason: in the last
	// archive of a chain that ended (broken), the point up to which its
	// change sets are exact, and why it ended.
	MetaChainEndLSN    = "chainEndLsn"
	MetaChainEndTime   = "chainEndTime"
	MetaChainEndReason = "chainEndReason"
	// MetaLargeObjects and MetaLargeObjectsTime: how many large objects the
	// archive's last state lists, and when that state was taken.
	MetaLargeObjects     = "largeObjects"
	MetaLargeObjectsTime = "largeObjectsTime"
)

// addLargeObjects adds the large objects captured with the segment at
// path, as largeobjects/<segment>/index.json and largeobjects/<segment>/<oid>
// (at the seal) and largeobjects/<segment>/s<ns>/… (while streaming).
func addLargeObjects(w *archive.Writer, path string) error {
	dir := capture.LargeObjectsDir(path)
	if _, err := os.Stat(dir); os.IsNotExist(err) {
		return nil
	}
	return filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return fmt.Errorf("large objects of %s: %w", filepath.Base(path), err)
		}
		if !d.Type().IsRegular() || strings.HasPrefix(d.Name(), ".") {
			return nil
		}
		rel, err := filepath.Rel(dir, p)
		if err != nil {
			return err
		}
		// Large-object data is kept encrypted in the state directory when
		// encryption is configured; the archive holds it in clear (and is
		// itself encrypted).
		data, err := crypt.ReadFile(p)
		if err != nil {
			return fmt.Errorf("large objects of %s: %w", filepath.Base(path), err)
		}
		return w.AddBytes("largeobjects/"+filepath.Base(path)+"/"+filepath.ToSlash(rel), data)
	})
}

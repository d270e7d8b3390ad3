package changeset

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"time"
)

// Recovery reports what OpenAppend found in an existing segment.
type Recovery struct {
	Header         Header
	TxCount        int64     // whole transactions kept
	FirstCommitLSN uint64    // commit LSN of the first whole transaction, or 0
	LastCommitLSN  uint64    // commit LSN of the last whole transaction, or 0
	LastEndLSN     uint64    // end LSN of the last whole transaction, or 0
	LastCommitTime time.Time // commit time of the last whole transaction
	OriginalSize   int64     // file size before recovery
	Size           int64     // file size after recovery
	// Cut describes the torn tail that was removed, or is nil when the
	// file ended cleanly after a whole transaction.
	Cut *FormatError
}

// WriteSequences writes sequence states; call it just before Seal.
func (w *Writer) WriteSequences(s Sequences) error {
	if err := w.usable("write sequences", false); err != nil {
		return err
	}
	j, err := json.Marshal(s)
	if err != nil {
		return fmt.Errorf("changeset: encode sequences: %w", err)
	}
	return w.frame(TypeSequences, j)
}

// Seal ends the segment: it writes a Seal record naming nextLSN, the exact
// LSN where the next segment begins, and syncs. No record can follow.
func (w *Writer) Seal(nextLSN uint64) error { return w.SealComplete(nextLSN, time.Time{}) }

// SealComplete is Seal recording complete, the server time up to which the
// stream is known complete at nextLSN (Seal.CompleteTime).
func (w *Writer) SealComplete(nextLSN uint64, complete time.Time) error {
	if err := w.usable("seal segment", false); err != nil {
		return err
	}
	if floor := max(w.hdr.StartLSN, w.last.EndLSN); nextLSN < floor {
		return fmt.Errorf("changeset: seal segment: next LSN %s is before %s, the end of what this segment holds; pass the LSN the next segment starts streaming from",
			FormatLSN(nextLSN), FormatLSN(floor))
	}
	s := Seal{NextLSN: nextLSN, TxCount: w.txCount,
		FirstCommitLSN: w.first.CommitLSN, FirstCommitTime: w.first.CommitTime,
		LastCommitLSN: w.last.CommitLSN, LastCommitTime: w.last.CommitTime, CompleteTime: complete.UTC()}
	if complete.IsZero() {
		s.CompleteTime = time.Time{}
	}
	j, err := json.Marshal(s)
	if err != nil {
		return fmt.Errorf("changeset: encode seal: %w", err)
	}
	if err := w.frame(TypeSeal, j); err != nil {
		return err
	}
	if err := w.Sync(); err != nil {
		return err
	}
	w.sealed = true
	return nil
}

// Sync flushes buffered records and fsyncs the file. Acknowledge a commit
// to the server only after Sync returns nil.
func (w *Writer) Sync() error {
	if w.err != nil {
		return fmt.Errorf("changeset: sync: writer failed earlier; close it and reopen the segment with OpenAppend: %w", w.err)
	}
	if err := w.w.Flush(); err != nil {
		w.err = fmt.Errorf("changeset: flush %s (check free space): %w", w.path, err)
		return w.err
	}
	if err := w.f.Sync(); err != nil {
		w.err = fmt.Errorf("changeset: fsync %s: %w", w.path, err)
		return w.err
	}
	return nil
}

// Close syncs and closes the segment. An open transaction stays incomplete
// on disk and is cut by the next OpenAppend.
func (w *Writer) Close() error {
	serr := w.Sync()
	if errors.Is(serr, os.ErrClosed) {
		serr = nil
	}
	if err := w.f.Close(); err != nil && serr == nil && !errors.Is(err, os.ErrClosed) {
		serr = fmt.Errorf("changeset: close %s: %w", w.path, err)
	}
	return serr
}

// OpenAppend reopens an unsealed segment for appending. It scans the file,
// cuts a torn tail back to the end of the last whole transaction
// (truncating and fsyncing the file), and reports what it kept. It refuses
// sealed segments (ErrSealed) and segments damaged in the middle
// (ErrCorrupt).
func OpenAppend(path string) (*Writer, *Recovery, error) {
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return nil, nil, fmt.Errorf("changeset: open segment for append: %w", err)
	}
	if isEncrypted(f) {
		defer f.Close()
		return openAppendEncrypted(f, path)
	}
	w, rec, err := openAppend(f, path)
	if err != nil {
		f.Close()
		return nil, nil, err
	}
	return w, rec, nil
}

func openAppend(f *os.File, path string) (*Writer, *Recovery, error) {
	st, err := f.Stat()
	if err != nil {
		return nil, nil, fmt.Errorf("changeset: stat %s: %w", path, err)
	}
	r, err := NewReader(f)
	if err != nil {
		return nil, nil, fmt.Errorf("changeset: %s cannot be appended to (if it was never fully created, delete it and create it again): %w", path, err)
	}
	rec := &Recovery{Header: r.Header(), OriginalSize: st.Size()}
	w := &Writer{f: f, path: path, hdr: r.Header()}
	if err := scanForAppend(r, w, rec, path); err != nil {
		return nil, nil, err
	}
	if rec.Size != rec.OriginalSize {
		if err := f.Truncate(rec.Size); err != nil {
			return nil, nil, fmt.Errorf("changeset: cut torn tail of %s at offset %d: %w", path, rec.Size, err)
		}
		if err := f.Sync(); err != nil {
			return nil, nil, fmt.Errorf("changeset: fsync %s after cutting its torn tail: %w", path, err)
		}
	}
	if _, err := f.Seek(rec.Size, io.SeekStart); err != nil {
		return nil, nil, fmt.Errorf("changeset: seek to end of %s: %w", path, err)
	}
	w.w, w.off = bufio.NewWriterSize(f, writeBuffer), rec.Size
	return w, rec, nil
}

// scanForAppend reads a segment opened for appending up to its last whole
// transaction: w learns its commits, rec gets the counts, the last commit and
// the safe end (rec.Cut names a torn tail). It returns ErrSealed for a sealed
// segment and any other format error, wrapped with the path.
func scanForAppend(r *Reader, w *Writer, rec *Recovery, path string) error {
	for {
		x, err := r.Next()
		if err == io.EOF {
			break
		}
		if fe, ok := isFormatError(err, ErrTornTail); ok {
			rec.Cut = fe
			break
		}
		if err != nil {
			return fmt.Errorf("changeset: refusing to append to %s: %w", path, err)
		}
		switch v := x.(type) {
		case *Commit:
			w.noteCommit(*v)
		case *Seal:
			return fmt.Errorf("changeset: %s is sealed (next segment starts at %s); create a new segment instead: %w",
				path, FormatLSN(v.NextLSN), ErrSealed)
		}
	}
	rec.TxCount, rec.LastCommitLSN, rec.LastEndLSN = w.txCount, w.last.CommitLSN, w.last.EndLSN
	rec.FirstCommitLSN, rec.LastCommitTime = w.first.CommitLSN, w.last.CommitTime
	rec.Size = r.safeEnd
	return nil
}

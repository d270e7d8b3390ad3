package ops

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/pme2go/pme2go-backup/engine/archive"
	"github.com/pme2go/pme2go-backup/engine/catalog"
	"github.com/pme2go/pme2go-backup/engine/changeset"
	"github.com/pme2go/pme2go-backup/engine/config"
	"github.com/pme2go/pme2go-backup/engine/errs"
	"github.com/pme2go/pme2go-backup/engine/offsite"
	"github.com/pme2go/pme2go-backup/engine/progress"
)

// VerifyOptions name the archives to verify.
type VerifyOptions struct {
	// Backups are archive paths or names as List shows them; empty: every backup.
	Backups []string `json:"backups,omitempty"`
	// Offsite also checks the copies in the off-site repository (see
	// verifyOffsite): every one, or those of the named backups.
	Offsite bool `json:"offsite,omitempty"`
}

// VerifyResult has one entry per archive.
type VerifyResult struct {
	Archives []VerifiedArchive `json:"archives"`
	Failed   int               `json:"failed"`
}

// VerifiedArchive is the verification of one archive.
type VerifiedArchive struct {
	Name     string          `json:"name"`
	Path     string          `json:"path"`
	OK       bool            `json:"ok"`
	Members  int             `json:"members"`
	Bytes    int64           `json:"bytes"` // uncompressed member bytes
	Problems []VerifyProblem `json:"problems"`
	// Location is "offsite" for the check of an off-site copy (Path is
	// then offsite:<key>), else empty (the local archive).
	Location string `json:"location,omitempty"`
}

// VerifyProblem is one defect; Member is empty for the archive as a whole.
type VerifyProblem struct {
	Member  string `json:"member,omitempty"`
	Message string `json:"message"`
}

// Verify re-reads archives and checks every checksum: the sidecar's
// whole-file checksum, full decompression, the tar structure, member names
// and types, every member against the embedded manifest. Progress: phase
// "verify", Done/Total archives, Object = archive name. A defective archive
// does not stop the others; when any fails, the result is returned with an
// error of code VERIFY_FAILED. NOT_FOUND names an unknown backup. With
// Offsite, the off-site copies are checked after the local archives (one
// more entry per copy, Location "offsite").
func Verify(ctx context.Context, cfg *config.Config, opts VerifyOptions, p Progress) (*VerifyResult, error) {
	if err := fetchMissing(ctx, cfg, offsite.Need{Backups: opts.Backups}, nil); err != nil {
		return nil, err
	}
	var paths []string
	for _, ref := range opts.Backups {
		b, err := catalog.Find(cfg.BackupDir, ref)
		if err != nil {
			return nil, err
		}
		paths = append(paths, b.Path)
	}
	if len(opts.Backups) == 0 {
		all, err := catalog.List(cfg.BackupDir)
		if err != nil {
			return nil, err
		}
		for _, b := range all {
			paths = append(paths, b.Path)
		}
	}
	res := &VerifyResult{Archives: []VerifiedArchive{}}
	for i, path := range paths {
		p.Report(progress.Event{Phase: "verify", Object: filepath.Base(path), Done: int64(i), Total: int64(len(paths)), Unit: progress.Archives})
		rep, err := archive.Verify(ctx, path)
		if err != nil {
			return res, err
		}
		v := VerifiedArchive{Name: filepath.Base(path), Path: path, OK: rep.OK(), Members: rep.Members, Bytes: rep.Bytes, Problems: []VerifyProblem{}}
		for _, pr := range rep.Problems {
			v.Problems = append(v.Problems, VerifyProblem{Member: pr.Member, Message: pr.Message})
		}
		if !v.OK {
			res.Failed++
		}
		res.Archives = append(res.Archives, v)
	}
	if opts.Offsite {
		if err := verifyOffsite(ctx, cfg, opts.Backups, res, p); err != nil {
			return res, err
		}
	}
	p.Report(progress.Event{Phase: "done", Done: int64(len(paths)), Total: int64(len(paths)), Unit: progress.Archives})
	if res.Failed > 0 {
		return res, errs.New(errs.VerifyFailed, fmt.Sprintf("%d of %d archives failed verification", res.Failed, len(res.Archives))).
			WithFix("", "do not rely on the failed archives: take a new full backup; restore from an older sound archive if needed")
	}
	return res, nil
}

// ShowChangesOptions name the change set to render.
type ShowChangesOptions struct {
	// Source is an incremental archive (path or name) or one segment file.
	Source string `json:"source"`
	// Out receives the SQL text.
	Out io.Writer `json:"-"`
}

// ShowChangesResult lists the segments rendered.
type ShowChangesResult struct {
	Segments []string `json:"segments"`
}

// ShowChanges renders the change set of an incremental archive (or of one
// segment file) as SQL to opts.Out, like mysqlbinlog: each transaction with
// its commit LSN, time and xid as comments. Errors: NOT_FOUND when the
// source does not exist, USAGE when it holds no change set.
func ShowChanges(ctx context.Context, cfg *config.Config, opts ShowChangesOptions, _ Progress) (*ShowChangesResult, error) {
	if opts.Source == "" {
		return nil, errs.New(errs.Usage, "show-changes needs an incremental archive or a segment file")
	}
	if opts.Out == nil {
		opts.Out = io.Discard
	}
	src := opts.Source
	if _, err := os.Stat(src); err != nil && cfg != nil {
		if b, ferr := catalog.Find(cfg.BackupDir, src); ferr == nil {
			src = b.Path
		} else {
			return nil, ferr
		}
	}
	segs := []string{src}
	if _, isArchive := archive.CodecFromName(src); isArchive && !strings.HasSuffix(src, ".changes") {
		tmp, err := os.MkdirTemp("", "pme2go-show-")
		if err != nil {
			return nil, err
		}
		defer os.RemoveAll(tmp)
		if _, err := archive.Extract(ctx, src, tmp); err != nil {
			return nil, fmt.Errorf("extract %s: %w", src, err)
		}
		segs, _ = filepath.Glob(filepath.Join(tmp, "changes", "*"))
		sort.Strings(segs)
		if len(segs) == 0 {
			return nil, errs.New(errs.Usage, fmt.Sprintf("%s holds no change set (changes/); is it an incremental archive?", src))
		}
	}
	res := &ShowChangesResult{Segments: []string{}}
	for _, path := range segs {
		r, err := changeset.Open(path)
		if err != nil {
			return res, err
		}
		err = changeset.RenderSQL(opts.Out, r)
		r.Close()
		if err != nil {
			return res, fmt.Errorf("render %s: %w", filepath.Base(path), err)
		}
		res.Segments = append(res.Segments, filepath.Base(path))
	}
	return res, nil
}

package backup

import (
	"context"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/pme2go/pme2go-backup/engine/archive"
	"github.com/pme2go/pme2go-backup/engine/config"
	"github.com/pme2go/pme2go-backup/engine/progress"
)

// member is one file to archive: its name in the archive and its source.
type member struct {
	name, path string
	size       int64
	staged     bool // in the staging directory: removed once archived
}

// collect lists the regular files below root as members named prefix + their
// path relative to root. A root that is a file is one member.
func collect(root, prefix string) ([]member, error) {
	var out []member
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !d.Type().IsRegular() {
			return nil
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		name := prefix + filepath.ToSlash(rel)
		if rel == "." {
			name = strings.TrimSuffix(prefix, "/")
		}
		out = append(out, member{name: name, path: p, size: info.Size()})
		return nil
	})
	return out, err
}

// archiveOrder sorts the members of a full backup into the order a
// streaming restore reads best (docs/archive-format.md): the metadata
// (application_data.json first: a restore creates the database from it),
// then each database's dump with its table of contents first (toc.dat,
// blobs.toc: pg_restore can start with them alone), then its data files
// stored uncompressed for LZMA, then its gzip-compressed table data largest
// first (the order in which pg_restore -j loads tables), then logs and
// extra files. Databases come in the order of dbs. Grouping the LZMA-compressed and the stored members also
// keeps the xz stream from switching modes at every member.
func archiveOrder(files []member, dbs []string) {
	rank := func(m member) (int, int) {
		switch {
		case m.name == "application_data.json":
			return 0, 0
		case !strings.Contains(m.name, "/"):
			return 0, 1
		case strings.HasPrefix(m.name, "database/"):
			base := m.name[strings.LastIndexByte(m.name, '/')+1:]
			switch {
			case base == "toc.dat":
				return 1, 0
			case base == "blobs.toc":
				return 1, 1
			case !strings.HasSuffix(base, ".gz"):
				return 1, 2
			}
			return 1, 3
		}
		return 2, 0
	}
	type key struct {
		group, db, sub int
		size           int64
		name           string
	}
	dbIndex := map[string]int{}
	for i, db := range dbs {
		dbIndex["database/"+db] = i
	}
	keys := make(map[string]key, len(files))
	for _, f := range files {
		g, sub := rank(f)
		k := key{group: g, sub: sub, name: f.name}
		if g == 1 {
			d := path.Dir(f.name)
			if _, ok := dbIndex[d]; !ok {
				dbIndex[d] = len(dbIndex)
			}
			k.db = dbIndex[d]
			if sub == 3 {
				k.size = -f.size // largest first
			}
		}
		keys[f.name] = k
	}
	sort.SliceStable(files, func(i, j int) bool {
		a, b := keys[files[i].name], keys[files[j].name]
		switch {
		case a.group != b.group:
			return a.group < b.group
		case a.db != b.db:
			return a.db < b.db
		case a.sub != b.sub:
			return a.sub < b.sub
		case a.size != b.size:
			return a.size < b.size
		}
		return a.name < b.name
	})
}

// pathMembers lists configured log or extra paths under top ("logs" or
// "files"), keeping each file's absolute path below it so that a restore knows
// where it came from. Unreadable paths become warnings, not failures.
func pathMembers(paths []string, top string, m *archive.Manifest) []member {
	var out []member
	for _, p := range paths {
		ms, err := collect(p, top+"/"+strings.TrimPrefix(filepath.ToSlash(filepath.Clean(p)), "/")+"/")
		if err != nil {
			m.Warnings = append(m.Warnings, fmt.Sprintf("%s path %s not archived: %v", top, p, err))
			continue
		}
		out = append(out, ms...)
	}
	if len(out) > 0 {
		m.Files[top] = top + "/"
	}
	return out
}

// pack streams the members into the archive at path, manifest last,
// reporting progress by uncompressed bytes. On error the partial archive is
// removed.
func pack(ctx context.Context, cfg *config.Config, log *slog.Logger, path string, files []member, m *archive.Manifest, report progress.Func) (*Result, error) {
	var total int64
	for _, f := range files {
		total += f.size
	}
	w, err := archive.Create(path, archive.WriterOptions{
		Codec: archive.Codec(cfg.Compression), Level: cfg.CompressionLevel, Workers: cfg.Jobs,
	})
	if err != nil {
		return nil, err
	}
	defer w.Abort()
	var done int64
	for _, f := range files {
		if err := ctx.Err(); err != nil {
			return nil, fmt.Errorf("backup cancelled: %w", err)
		}
		if err := w.AddFile(f.name, f.path); err != nil {
			return nil, err
		}
		if f.staged {
			// The dump's plaintext leaves the disk as soon as it is in the
			// (possibly encrypted) archive, not when the backup ends.
			os.Remove(f.path)
		}
		done += f.size
		report.Report(progress.Event{Phase: "archive", Done: done, Total: total, Unit: progress.Bytes})
	}
	written := time.Now()
	if err := w.Commit(m); err != nil {
		return nil, err
	}
	if log != nil {
		log.Debug("archive members written, then committed", "members", len(files), "committed", time.Since(written).Round(time.Millisecond))
	}
	st, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("stat written archive: %w", err)
	}
	return &Result{Path: path, Manifest: m, Size: st.Size()}, nil
}

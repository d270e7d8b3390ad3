package offsite

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/pme2go/pme2go-backup/engine/archive"
	"github.com/pme2go/pme2go-backup/engine/backupdir"
	"github.com/pme2go/pme2go-backup/engine/catalog"
	"github.com/pme2go/pme2go-backup/engine/chain"
	"github.com/pme2go/pme2go-backup/engine/changeset"
	"github.com/pme2go/pme2go-backup/engine/config"
	"github.com/pme2go/pme2go-backup/engine/crypt"
	"github.com/pme2go/pme2go-backup/engine/errs"
	"github.com/pme2go/pme2go-backup/engine/fsutil"
	"github.com/pme2go/pme2go-backup/engine/version"
)

// Need says what an operation is about to read from BACKUP_DIR.
type Need struct {
	// Backups are names or paths the operator named (restore of one
	// backup, verify, drill).
	Backups []string
	// Databases, with PointInTime, are the databases whose chains a
	// point-in-time restore may replay (every backup of them is needed
	// locally, and the change sets streamed off-site of chains this
	// BACKUP_DIR no longer holds).
	Databases   []string
	PointInTime bool
	// Latest narrows a point-in-time restore to the newest state: only the
	// newest full backup of each database, the newest one that started a
	// chain and that chain's incrementals are needed (drills, --latest).
	Latest bool
}

// Fetched says what Prepare brought back.
type Fetched struct {
	// Fetched are the archives downloaded and checked.
	Fetched []string `json:"fetched"`
	// Rebuilt are incremental archives rebuilt from change sets streamed
	// off-site (trigger "offsite-stream").
	Rebuilt []string `json:"rebuilt"`
	// Warnings say what could not be looked at.
	Warnings []string `json:"warnings"`
}

// Prepare makes what need names present in BACKUP_DIR: backups missing
// locally are downloaded from the off-site repository (streaming, checked
// against the SHA-256 their manifest records), and for a point-in-time
// restore the change sets streamed off-site of chains this BACKUP_DIR does
// not hold are rebuilt into incremental archives. Without a repository it
// does nothing. An unreachable repository is a warning when everything
// named is local, and an error naming the backup otherwise.
func Prepare(ctx context.Context, cfg *config.Config, need Need, log *slog.Logger) (*Fetched, error) {
	out := &Fetched{Fetched: []string{}, Rebuilt: []string{}, Warnings: []string{}}
	if !Configured(cfg) {
		return out, nil
	}
	var missing []string
	for _, ref := range need.Backups {
		if _, err := catalog.Find(cfg.BackupDir, ref); err != nil {
			missing = append(missing, ref)
		}
	}
	if len(missing) == 0 && !need.PointInTime {
		return out, nil
	}
	r, err := Open(cfg)
	if err == nil {
		err = r.Check(ctx)
	}
	var remotes []Remote
	if err == nil {
		remotes, err = r.Remotes(ctx, cfg)
	}
	if err != nil {
		if len(missing) > 0 {
			return out, fmt.Errorf("backup %s is not in %s and the off-site repository cannot be read: %w", missing[0], cfg.BackupDir, err)
		}
		out.Warnings = append(out.Warnings, "off-site repository not consulted: "+err.Error())
		return out, nil
	}
	local, err := catalog.List(cfg.BackupDir)
	if err != nil {
		return out, err
	}
	have := map[string]bool{}
	for _, b := range local {
		have[b.Name] = true
	}
	want := map[string]bool{}
	for _, ref := range missing {
		found := false
		for _, rb := range remotes {
			if rb.Name == ref || archive.TrimExt(rb.Name) == ref || filepath.Base(ref) == rb.Name {
				want[rb.Key], found = true, true
			}
		}
		if !found {
			return out, errs.New(errs.NotFound, fmt.Sprintf("backup %q is neither in %s nor in the off-site repository %s", ref, cfg.BackupDir, r.S)).
				WithFix("", "name a backup as the list of backups shows it")
		}
	}
	if need.PointInTime {
		implicit, warn, err := implicitRemotes(cfg, remotes, need.Databases)
		if err != nil {
			return out, err
		}
		out.Warnings = append(out.Warnings, warn...)
		for _, rb := range implicit {
			if have[rb.Name] || rb.Manifest == nil {
				continue
			}
			for _, db := range rb.Manifest.Databases {
				if (len(need.Databases) == 0 || slices.Contains(need.Databases, db)) && (!need.Latest || newestChain(local, implicit, db)[rb.Name]) {
					want[rb.Key] = true
				}
			}
		}
	}
	for _, rb := range remotes {
		if !want[rb.Key] || have[rb.Name] {
			continue
		}
		if _, err := r.Fetch(ctx, cfg, rb.Key); err != nil {
			return out, fmt.Errorf("fetch %s from the off-site repository: %w", rb.Name, err)
		}
		out.Fetched = append(out.Fetched, rb.Name)
		if log != nil {
			log.Info("backup fetched from the off-site repository", "backup", rb.Name, "repository", r.S.String())
		}
	}
	if need.PointInTime {
		rebuilt, err := r.rebuildStreams(ctx, cfg, need.Databases, log)
		out.Rebuilt = append(out.Rebuilt, rebuilt...)
		if err != nil {
			return out, err
		}
	}
	return out, nil
}

// rebuildStreams turns the change sets streamed off-site of chains that
// BACKUP_DIR/state does not hold into incremental archives that continue
// the chain's archived incrementals, so that a point-in-time restore
// reaches the last synced transaction. Each streamed segment is cut back
// to its last whole transaction, given the sequence values streamed with
// it and sealed at the end of that transaction; time targets are exact up
// to its last commit time.
func (r *Repo) rebuildStreams(ctx context.Context, cfg *config.Config, dbs []string, log *slog.Logger) ([]string, error) {
	streams, meta, err := r.streamed(ctx)
	if err != nil {
		return nil, err
	}
	var out []string
	for chainID, segs := range streams {
		if _, err := os.Stat(filepath.Join(chain.ChainsDir(cfg), chainID)); err == nil {
			continue // this BACKUP_DIR holds the chain: its own segments are newer
		}
		var st chain.State
		var seq *changeset.Sequences
		for _, o := range meta[chainID] {
			b, err := r.ReadAll(ctx, o.Rel)
			if err != nil {
				return out, err
			}
			switch filepath.Base(o.Rel) {
			case "chain.json":
				if err := json.Unmarshal(b, &st); err != nil {
					return out, fmt.Errorf("streamed chain state of %s: %w", chainID, err)
				}
			case "sequences.json":
				seq = &changeset.Sequences{}
				if err := json.Unmarshal(b, seq); err != nil {
					return out, fmt.Errorf("streamed sequences of %s: %w", chainID, err)
				}
			}
		}
		if st.ID == "" || (len(dbs) > 0 && !slices.Contains(dbs, st.Database)) {
			continue
		}
		names, err := r.rebuildChain(ctx, cfg, &st, segs, seq, log)
		out = append(out, names...)
		if err != nil {
			return out, err
		}
	}
	return out, nil
}

// rebuildChain rebuilds the streamed segments of one chain that follow its
// newest local incremental archive.
func (r *Repo) rebuildChain(ctx context.Context, cfg *config.Config, st *chain.State, segs []streamedSegment, seq *changeset.Sequences, log *slog.Logger) ([]string, error) {
	local, err := catalog.List(cfg.BackupDir)
	if err != nil {
		return nil, err
	}
	end, prev := st.Start(), st.FullBackup
	for _, b := range local {
		m := b.Manifest
		if m == nil || m.Type != archive.KindIncremental || m.ChainID != st.ID {
			continue
		}
		if isStreamArchive(m) {
			// Derived from an older look at the stream: rebuilt again.
			if err := catalog.Remove(b); err != nil {
				return nil, err
			}
			continue
		}
		if e, err := chain.ParseLSN(m.EndLSN); err == nil && e >= end {
			end, prev = e, b.Name
		}
	}
	work := filepath.Join(cfg.StateDir(), "offsite-rebuild")
	if err := fsutil.EnsurePrivateDir(work); err != nil {
		return nil, err
	}
	defer os.RemoveAll(work)
	var out []string
	for _, s := range segs {
		if s.start < end {
			continue // an archive holds it
		}
		if s.start > end {
			return out, fmt.Errorf("the change set streamed off-site for chain %s starts at %s, but its archives end at %s: the change sets in between are missing; restore to a target before %s",
				st.ID, chain.FormatLSN(s.start), chain.FormatLSN(end), chain.FormatLSN(end))
		}
		seg := filepath.Join(work, s.name)
		if err := r.download(ctx, s.chunks, seg); err != nil {
			return out, err
		}
		seal, err := sealStreamed(seg, seq)
		if err != nil {
			return out, fmt.Errorf("change set streamed off-site for chain %s (%s): %w", st.ID, s.name, err)
		}
		if seal == nil {
			break // no whole transaction in it
		}
		path, err := writeStreamArchive(cfg, st, seg, seal, seq, prev)
		if err != nil {
			return out, err
		}
		out = append(out, filepath.Base(path))
		if log != nil {
			log.Info("incremental rebuilt from the change set streamed off-site", "backup", filepath.Base(path), "chain", st.ID,
				"transactions", seal.TxCount, "lastCommit", chain.FormatLSN(seal.LastCommitLSN))
		}
		end, prev = seal.NextLSN, filepath.Base(path)
	}
	return out, nil
}

// download concatenates the chunks into the file at dst.
func (r *Repo) download(ctx context.Context, chunks []Object, dst string) error {
	f, err := os.OpenFile(dst, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o600)
	if err != nil {
		return err
	}
	defer f.Close()
	var ids *crypt.Identities
	for _, c := range chunks {
		_, want, err := chunkRange(c.Rel)
		if err != nil {
			return err
		}
		body, _, err := r.Get(ctx, c.Rel)
		if err != nil {
			return err
		}
		var src io.Reader = body
		if crypt.IsEncryptedName(c.Rel) {
			if ids == nil {
				if ids, err = crypt.LoadIdentities(); err != nil {
					body.Close()
					return err
				}
			}
			if src, err = ids.Decrypt(body, c.Rel); err != nil {
				body.Close()
				return err
			}
		}
		n, err := io.Copy(f, src)
		body.Close()
		if err != nil || n != want {
			return r.objectErr("download "+c.Rel, errors.Join(err, fmt.Errorf("%d of %d bytes", n, want)))
		}
	}
	return f.Close()
}

// sealStreamed cuts the segment at path back to its last whole
// transaction and seals it there with seq; a segment the capture had
// sealed is taken as it is. It returns nil when the segment holds no
// transaction.
func sealStreamed(path string, seq *changeset.Sequences) (*changeset.Seal, error) {
	if rd, err := changeset.Open(path); err == nil {
		for {
			if _, err := rd.Next(); err != nil {
				break
			}
		}
		seal, sealed := rd.Sealed()
		rd.Close()
		if sealed {
			return seal, nil
		}
	}
	w, rec, err := changeset.OpenAppend(path)
	if err != nil {
		return nil, err
	}
	defer w.Close()
	if rec.TxCount == 0 {
		return nil, nil
	}
	if seq != nil {
		if err := w.WriteSequences(*seq); err != nil {
			return nil, err
		}
	}
	if err := w.SealComplete(rec.LastEndLSN, rec.LastCommitTime); err != nil {
		return nil, err
	}
	if err := w.Close(); err != nil {
		return nil, err
	}
	rd, err := changeset.Open(path)
	if err != nil {
		return nil, err
	}
	defer rd.Close()
	for {
		if _, err := rd.Next(); err != nil {
			break
		}
	}
	seal, _ := rd.Sealed()
	if seal == nil {
		return nil, fmt.Errorf("sealing failed")
	}
	return seal, nil
}

// writeStreamArchive packs the sealed segment into an incremental archive
// of the chain, following prev.
func writeStreamArchive(cfg *config.Config, st *chain.State, seg string, seal *changeset.Seal, seq *changeset.Sequences, prev string) (string, error) {
	rd, err := changeset.Open(seg)
	if err != nil {
		return "", err
	}
	hdr := rd.Header()
	rd.Close()
	now := time.Now().UTC()
	m := &archive.Manifest{
		Type: archive.KindIncremental, Timestamp: now, Version: version.Version, FormatVersion: archive.FormatVersion,
		Files: map[string]string{"changes": "changes/", "sequences": "sequences.json"},
		Metadata: map[string]any{"trigger": TriggerStream, "database": st.Database, "segments": []string{filepath.Base(seg)},
			"chainStatus": string(chain.StatusOpen), "publication": st.Publication, "completeTime": seal.LastCommitTime.UTC().Format(time.RFC3339Nano)},
		SystemIdentifier: st.SystemIdentifier, Timeline: st.Timeline, Databases: []string{st.Database},
		ChainID: st.ID, SlotName: st.Slot, Previous: prev,
		StartLSN: chain.FormatLSN(hdr.StartLSN), EndLSN: chain.FormatLSN(seal.NextLSN), TxCount: seal.TxCount,
		Warnings: []string{"rebuilt from the change set streamed off-site: exact up to its last commit"},
	}
	if seal.TxCount > 0 {
		ft, lt := seal.FirstCommitTime, seal.LastCommitTime
		m.FirstCommitLSN, m.FirstCommitTime = chain.FormatLSN(seal.FirstCommitLSN), &ft
		m.LastCommitLSN, m.LastCommitTime = chain.FormatLSN(seal.LastCommitLSN), &lt
	}
	if err := fsutil.EnsurePrivateDir(cfg.IncrementalDir()); err != nil {
		return "", err
	}
	w, path, err := backupdir.CreateIncremental(cfg, m)
	if err != nil {
		return "", err
	}
	defer w.Abort()
	if err := w.AddFile("changes/"+filepath.Base(seg), seg); err != nil {
		return "", err
	}
	if seq == nil {
		seq = &changeset.Sequences{Values: map[string]changeset.SequenceValue{}}
	}
	body, _ := json.MarshalIndent(seq, "", "  ")
	if err := w.AddBytes("sequences.json", append(body, '\n')); err != nil {
		return "", err
	}
	if err := w.Commit(m); err != nil {
		return "", err
	}
	return path, nil
}

// chainOf returns the chain a backup's manifest records for db.
func chainOf(m *archive.Manifest, db string) string {
	if m == nil {
		return ""
	}
	if id, ok := m.Metadata["chain:"+db].(string); ok && id != "" {
		return id
	}
	if len(m.Databases) == 1 && !strings.Contains(m.ChainID, ",") {
		return m.ChainID
	}
	return ""
}

// newestChain names the backups a restore of db to its newest state may
// read, local and off-site together: the newest full backup, the newest
// full backup that started a chain, and that chain's incrementals.
func newestChain(local []catalog.Backup, remotes []Remote, db string) map[string]bool {
	all := append([]catalog.Backup{}, local...)
	for _, rb := range remotes {
		all = append(all, rb.Backup)
	}
	var newest, chained *catalog.Backup
	for i, b := range all {
		if b.Type != archive.KindFull || b.Manifest == nil || !slices.Contains(b.Manifest.Databases, db) {
			continue
		}
		if newest == nil || b.Timestamp.After(newest.Timestamp) {
			newest = &all[i]
		}
		if chainOf(b.Manifest, db) != "" && (chained == nil || b.Timestamp.After(chained.Timestamp)) {
			chained = &all[i]
		}
	}
	out := map[string]bool{}
	if newest != nil {
		out[newest.Name] = true
	}
	if chained != nil {
		out[chained.Name] = true
		id := chainOf(chained.Manifest, db)
		for _, b := range all {
			if b.Type == archive.KindIncremental && b.Manifest != nil && b.Manifest.ChainID == id {
				out[b.Name] = true
			}
		}
	}
	return out
}

// ownerOf tells which installation (short id, config.ShortID) made a
// backup found in the repository: this one when the state file records
// the copy as ours, else the id the manifest records (Metadata
// "installation", written since full backups carry it) or the one in the
// name of its slot (chain.OwnerOf); "" when it cannot be told (uploads of
// older versions without a chain).
func ownerOf(rb Remote, st *State, id8 string) string {
	if c := st.Copies[rb.Name]; c != nil && c.Ours {
		return id8
	}
	m := rb.Manifest
	if m == nil {
		return ""
	}
	if s, _ := m.Metadata["installation"].(string); s != "" {
		return s
	}
	for _, slot := range strings.Split(m.SlotName, ",") {
		if o, _ := chain.OwnerOf(strings.TrimSpace(slot)); o != "" {
			return o
		}
	}
	return ""
}

// implicitRemotes returns the backups of the repository that a
// point-in-time restore of dbs (all when empty) may choose by itself:
// when the repository holds backups of this installation, only those and
// the ones whose installation cannot be told (each named in a warning);
// never another installation's. When it holds none of ours (a new
// BACKUP_DIR restoring after a loss), the others' are used, with a
// warning naming their installations.
func implicitRemotes(cfg *config.Config, remotes []Remote, dbs []string) ([]Remote, []string, error) {
	st, err := LoadState(cfg)
	if err != nil {
		return nil, nil, err
	}
	id8, err := config.InstallationShortID(cfg)
	if err != nil {
		return nil, nil, err
	}
	relevant := func(rb Remote) bool {
		if rb.Manifest == nil {
			return false
		}
		for _, db := range rb.Manifest.Databases {
			if len(dbs) == 0 || slices.Contains(dbs, db) {
				return true
			}
		}
		return false
	}
	ours := false
	for _, rb := range remotes {
		if relevant(rb) && ownerOf(rb, st, id8) == id8 {
			ours = true
		}
	}
	var out []Remote
	var warn []string
	others := map[string]bool{}
	for _, rb := range remotes {
		if !relevant(rb) {
			out = append(out, rb)
			continue
		}
		switch o := ownerOf(rb, st, id8); {
		case o == id8:
			out = append(out, rb)
		case o == "":
			out = append(out, rb)
			warn = append(warn, fmt.Sprintf("off-site backup %s: the installation that made it cannot be told (made by an older version); it may be chosen for this restore", rb.Name))
		case ours:
			others[o] = true
		default:
			out = append(out, rb)
			others[o] = true
		}
	}
	ids := make([]string, 0, len(others))
	for o := range others {
		ids = append(ids, o)
	}
	slices.Sort(ids)
	if len(ids) > 0 && ours {
		warn = append(warn, fmt.Sprintf("off-site backups of other installations (%s) share the repository; they are not chosen for this restore (name one to restore it)", strings.Join(ids, ", ")))
	} else if len(ids) > 0 {
		warn = append(warn, fmt.Sprintf("the off-site repository holds no backup of this installation (%s); backups of installation(s) %s may be chosen for this restore", id8, strings.Join(ids, ", ")))
	}
	return out, warn, nil
}

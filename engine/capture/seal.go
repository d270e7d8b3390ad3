package capture

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pme2go/pme2go-backup/engine/chain"
	"github.com/pme2go/pme2go-backup/engine/changeset"
	"github.com/pme2go/pme2go-backup/engine/config"
	"github.com/pme2go/pme2go-backup/engine/fsutil"
	"github.com/pme2go/pme2go-backup/engine/lock"
	"github.com/pme2go/pme2go-backup/engine/pgclient"
)

// SealWait bounds how long SealChain waits for a running stream to seal.
var SealWait = 60 * time.Second

func sealRequestPath(st *chain.State) string { return filepath.Join(st.Dir(), "seal.request") }

// Sequences reads the state of every sequence of the connected database
// with the WAL positions around the read (chain.ReadSequences).
func Sequences(ctx context.Context, conn *pgx.Conn) (changeset.Sequences, error) {
	return chain.ReadSequences(ctx, conn)
}

// sealRequest is the content of seal.request: the requester, and the
// position the streamer must have received before sealing (the LSN of a
// drain message carrying Token, emitted just before the request), so that
// the sealed segment holds every transaction committed before the request.
type sealRequest struct {
	PID   int       `json:"pid"`
	LSN   string    `json:"lsn"`
	Token string    `json:"token"`
	Time  time.Time `json:"time,omitzero"` // server clock read just before the drain message
}

func newSealRequest(ctx context.Context, cfg *config.Config, st *chain.State) ([]byte, error) {
	conn, err := pgclient.FromConfig(cfg).Connect(ctx, st.Database)
	if err != nil {
		return nil, err
	}
	defer conn.Close(context.Background())
	var version int
	if err := conn.QueryRow(ctx, `SELECT current_setting('server_version_num')::int`).Scan(&version); err != nil {
		return nil, fmt.Errorf("server version: %w", err)
	}
	s := &session{conn: conn, version: version}
	lsn, token, t, err := s.drainTarget(ctx)
	if err != nil {
		return nil, err
	}
	return json.Marshal(sealRequest{PID: os.Getpid(), LSN: chain.FormatLSN(lsn), Token: token, Time: t})
}

// seal seals the open segment at the confirmed position and starts the
// next one there. It returns the sealed segment's path.
func (s *session) seal(ctx context.Context) (string, error) {
	return s.sealSegment(ctx, true)
}

func (s *session) sealSegment(ctx context.Context, next bool) (string, error) {
	if s.inTx {
		return "", errors.New("seal inside a transaction")
	}
	s.dirty = true
	if err := s.sync(); err != nil {
		return "", err
	}
	if err := s.proveCatalog(ctx, "seal"); err != nil {
		return "", err
	}
	path := filepath.Join(s.st.SegmentsDir(), SegmentName(s.segStart))
	los, err := s.captureLargeObjects(ctx, path)
	if err != nil {
		return "", err
	}
	seq, err := Sequences(ctx, s.conn)
	if err != nil {
		return "", err
	}
	if err := s.w.WriteSequences(seq); err != nil {
		return "", err
	}
	at := max(s.pos, s.segStart, s.w.LastEndLSN())
	complete := s.completeAt(at)
	if err := s.w.SealComplete(at, complete); err != nil {
		return "", err
	}
	s.w.Close()
	s.w = nil
	if err := s.st.Reload(); err != nil {
		return "", err
	}
	s.st.NextSegmentLSN = chain.FormatLSN(at)
	if !complete.IsZero() {
		s.st.CompleteLSN, s.st.CompleteTime = chain.FormatLSN(s.completeLSN), complete
	}
	if err := s.st.Save(); err != nil {
		return "", err
	}
	if los != nil {
		if err := s.st.SaveLargeObjects(los); err != nil {
			return "", err
		}
	}
	s.pos = at
	if next {
		if err := s.newSegment(at); err != nil {
			return "", err
		}
	}
	return path, nil
}

// SealChain seals the chain's open segment at a transaction boundary so that
// an incremental archive can take it. Without a running capture it drains
// the slot up to the server's current WAL position itself and seals. While a
// `stream` process holds the chain's capture lock, it asks that process to
// seal (a seal.request file in the chain directory) and waits until the
// request is served; if the streamer exits meanwhile, it drains itself.
func SealChain(ctx context.Context, cfg *config.Config, st *chain.State, opts Options) (*Result, error) {
	opts.defaults()
	deadline := time.Now().Add(SealWait)
	requested := false
	for {
		l, err := Lock(st)
		if err == nil {
			os.Remove(sealRequestPath(st))
			res, err := drain(ctx, cfg, st, opts, true)
			l.Release()
			return res, err
		}
		if !errors.Is(err, lock.ErrBusy) {
			return nil, err
		}
		if !requested {
			req, rerr := newSealRequest(ctx, cfg, st)
			if rerr != nil {
				return nil, rerr
			}
			if err := fsutil.WriteFileAtomic(sealRequestPath(st), req, 0o600); err != nil {
				return nil, fmt.Errorf("ask the running capture to seal: %w", err)
			}
			requested = true
			opts.Log.Info("capture running: asked it to seal its segment", "chain", st.ID, "lock", err)
		} else if _, serr := os.Stat(sealRequestPath(st)); errors.Is(serr, os.ErrNotExist) {
			return &Result{}, st.Reload()
		}
		if time.Now().After(deadline) {
			os.Remove(sealRequestPath(st))
			return nil, fmt.Errorf("the running capture of chain %s did not seal its segment within %s (%v); check the `stream` process and retry", st.ID, SealWait, err)
		}
		select {
		case <-ctx.Done():
			os.Remove(sealRequestPath(st))
			return nil, ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}

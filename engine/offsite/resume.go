package offsite

import (
	"bytes"
	"context"
	"crypto/md5"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/minio/minio-go/v7"

	"github.com/pme2go/pme2go-backup/engine/config"
)

// PendingUpload records a multipart upload of an archive in progress, so
// that an interrupted run resumes it: the next upload of the same bytes
// (same SHA-256 and size, from the sidecar) lists the parts the server
// holds and sends only the others.
type PendingUpload struct {
	UploadID string    `json:"uploadId"`
	SHA256   string    `json:"sha256"` // the archive's, from its sidecar
	Size     int64     `json:"size"`
	PartSize int64     `json:"partSize"`
	Started  time.Time `json:"started"`
}

// putResumable uploads size bytes of f to rel as a multipart upload of
// PartSize parts, resuming the upload recorded in the state file for the
// same bytes (want: the SHA-256 the sidecar records). Each part is sent with
// its Content-MD5, so the server refuses a part damaged on the way; a part
// the server already holds is kept when its size matches and its ETag is
// the MD5 of the local part (or is not an MD5, for stores whose ETags are
// opaque: the read-back of the whole object by SHA-256 that Upload does
// next is the proof). It returns the SHA-256 of the local bytes and how
// many bytes were kept from an earlier run.
func (r *Repo) putResumable(ctx context.Context, cfg *config.Config, rel string, f *os.File, size int64, want string) (string, int64, error) {
	core := minio.Core{Client: r.client}
	key := r.S.key(rel)
	st, err := LoadState(cfg)
	if err != nil {
		return "", 0, err
	}
	have := map[int]minio.ObjectPart{}
	pu := st.Uploads[rel]
	if pu != nil && (pu.SHA256 != want || pu.Size != size || pu.PartSize != PartSize) {
		// Another archive's bytes under this name: start again.
		_ = core.AbortMultipartUpload(ctx, r.S.Bucket, key, pu.UploadID)
		pu = nil
	}
	if pu != nil {
		marker := 0
		for {
			res, err := core.ListObjectParts(ctx, r.S.Bucket, key, pu.UploadID, marker, 1000)
			if err != nil {
				pu = nil // expired or aborted: start again
				have = map[int]minio.ObjectPart{}
				break
			}
			for _, p := range res.ObjectParts {
				have[p.PartNumber] = p
			}
			if !res.IsTruncated {
				break
			}
			marker = res.NextPartNumberMarker
		}
	}
	if pu == nil {
		id, err := core.NewMultipartUpload(ctx, r.S.Bucket, key, minio.PutObjectOptions{ContentType: "application/octet-stream"})
		if err != nil {
			return "", 0, r.objectErr("upload "+rel, err)
		}
		pu = &PendingUpload{UploadID: id, SHA256: want, Size: size, PartSize: PartSize, Started: time.Now().UTC()}
		if err := update(cfg, func(st *State) error {
			st.Uploads[rel] = pu
			return nil
		}); err != nil {
			return "", 0, err
		}
	}
	whole := sha256.New()
	buf := make([]byte, PartSize)
	var parts []minio.CompletePart
	var kept int64
	for n, off := 1, int64(0); off < size; n, off = n+1, off+PartSize {
		psize := min(PartSize, size-off)
		b := buf[:psize]
		if _, err := f.ReadAt(b, off); err != nil && err != io.EOF {
			return "", kept, fmt.Errorf("upload %s: read part %d: %w", rel, n, err)
		}
		whole.Write(b)
		sum := md5.Sum(b)
		if p, ok := have[n]; ok && p.Size == psize && etagMatches(p.ETag, sum[:]) {
			parts = append(parts, minio.CompletePart{PartNumber: n, ETag: p.ETag})
			kept += psize
			continue
		}
		p, err := core.PutObjectPart(ctx, r.S.Bucket, key, pu.UploadID, n, bytes.NewReader(b), psize,
			minio.PutObjectPartOptions{Md5Base64: base64.StdEncoding.EncodeToString(sum[:]), DisableContentSha256: true})
		if err != nil {
			return "", kept, r.objectErr(fmt.Sprintf("upload %s part %d (the next run resumes it)", rel, n), err)
		}
		parts = append(parts, minio.CompletePart{PartNumber: n, ETag: p.ETag})
		killAfterPart(n)
	}
	sort.Slice(parts, func(i, j int) bool { return parts[i].PartNumber < parts[j].PartNumber })
	if _, err := core.CompleteMultipartUpload(ctx, r.S.Bucket, key, pu.UploadID, parts, minio.PutObjectOptions{}); err != nil {
		return "", kept, r.objectErr("complete the upload of "+rel, err)
	}
	_ = update(cfg, func(st *State) error {
		delete(st.Uploads, rel)
		return nil
	})
	return "sha256:" + hex.EncodeToString(whole.Sum(nil)), kept, nil
}

// killAfterPart makes the process kill itself once part n is sent when a
// test asks for it (PME2GO_TEST_UPLOAD_KILL_AFTER_PART=n), to prove that
// the next run resumes.
func killAfterPart(n int) {
	if v := os.Getenv("PME2GO_TEST_UPLOAD_KILL_AFTER_PART"); v != "" && v == strconv.Itoa(n) {
		_ = syscall.Kill(os.Getpid(), syscall.SIGKILL)
		time.Sleep(time.Minute)
	}
}

// etagMatches reports whether a part's ETag is the MD5 sum, or is no MD5
// at all (an opaque ETag: the final SHA-256 check decides).
func etagMatches(etag string, sum []byte) bool {
	e := strings.Trim(etag, `"`)
	if len(e) != 32 {
		return true
	}
	if _, err := hex.DecodeString(e); err != nil {
		return true
	}
	return strings.EqualFold(e, hex.EncodeToString(sum))
}

// resumable reports whether the incomplete upload (key below the bucket,
// uploadID) is one Upload will resume: recorded in the state file and its
// local archive still there.
func (r *Repo) resumable(cfg *config.Config, st *State, key, uploadID string) bool {
	rel := r.S.rel(key)
	pu := st.Uploads[rel]
	if pu == nil || pu.UploadID != uploadID {
		return false
	}
	_, err := os.Stat(filepath.Join(cfg.BackupDir, filepath.FromSlash(rel)))
	return err == nil
}

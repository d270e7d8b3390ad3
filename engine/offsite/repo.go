package offsite

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"

	"github.com/pme2go/pme2go-backup/engine/config"
	"github.com/pme2go/pme2go-backup/engine/errs"
)

// PartSize is the multipart part size used for every upload (objects of
// unknown length included): 16 MiB, so a part is buffered at most once in
// memory and an object may reach 160 GiB within S3's 10,000 parts.
const PartSize = 16 << 20

// Repo is an open off-site repository.
type Repo struct {
	S      *Settings
	client *minio.Client
}

// Open connects to the repository of cfg (no request is made yet).
// Errors: ErrNotConfigured, a bad setting, unreadable credentials.
func Open(cfg *config.Config) (*Repo, error) {
	s, err := Parse(cfg)
	if err != nil {
		return nil, err
	}
	return OpenSettings(s)
}

// OpenSettings connects to the repository s describes.
func OpenSettings(s *Settings) (*Repo, error) {
	endpoint, secure := "s3.amazonaws.com", true
	if s.Endpoint != "" {
		u, err := url.Parse(s.Endpoint)
		if err != nil || u.Host == "" {
			return nil, fmt.Errorf("OFFSITE_ENDPOINT %q is not a URL", config.RedactURL(s.Endpoint))
		}
		endpoint, secure = u.Host, u.Scheme == "https"
	}
	creds, err := s.credentials()
	if err != nil {
		return nil, err
	}
	opts := &minio.Options{Creds: creds, Secure: secure, Region: s.Region, BucketLookup: minio.BucketLookupPath,
		MaxRetries: 3, Transport: transport(secure)}
	if s.Endpoint == "" {
		opts.BucketLookup = minio.BucketLookupAuto
	}
	switch s.Checksum {
	case "auto", "crc32", "crc32c", "sha256":
		// Flexible checksums (x-amz-checksum-*) need trailing headers.
		opts.TrailingHeaders = true
	}
	c, err := minio.New(endpoint, opts)
	if err != nil {
		return nil, fmt.Errorf("off-site repository %s: %w", s, err)
	}
	return &Repo{S: s, client: c}, nil
}

// transport bounds connection and header waits so that an unreachable
// server is an error within seconds, not a hang.
func transport(secure bool) http.RoundTripper {
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.DialContext = (&net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}).DialContext
	t.ResponseHeaderTimeout = 2 * time.Minute
	t.MaxIdleConnsPerHost = 16
	if !secure {
		t.TLSClientConfig = nil
	}
	return t
}

// credentials picks the access key: OFFSITE_CREDENTIALS_FILE or the
// systemd credential offsite-credentials (AWS credentials-file format,
// profile AWS_PROFILE or "default"), else the AWS environment
// (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN), else a
// key pair in OFFSITE_URL, else ~/.aws/credentials.
func (s *Settings) credentials() (*credentials.Credentials, error) {
	file, err := s.credentialFile()
	if err != nil {
		return nil, err
	}
	if file != "" {
		c := credentials.NewFileAWSCredentials(file, os.Getenv("AWS_PROFILE"))
		v, err := c.GetWithContext(nil)
		if err != nil || v.AccessKeyID == "" {
			return nil, &errs.Error{Code: errs.Usage, Message: fmt.Sprintf("no access key in off-site credentials file %s (%v)", file, err),
				Fix: &errs.Fix{Text: "write an AWS credentials file: a [default] section with aws_access_key_id and aws_secret_access_key"}}
		}
		return c, nil
	}
	if os.Getenv("AWS_ACCESS_KEY_ID") != "" || os.Getenv("AWS_ACCESS_KEY") != "" {
		return credentials.NewEnvAWS(), nil
	}
	if s.urlUser != "" {
		return credentials.NewStaticV4(s.urlUser, s.urlSecret, ""), nil
	}
	return credentials.NewFileAWSCredentials("", os.Getenv("AWS_PROFILE")), nil
}

// objectErr turns a client error into an *errs.Error naming the
// repository and what to check.
func (r *Repo) objectErr(what string, err error) error {
	if err == nil {
		return nil
	}
	if errors.Is(err, context.Canceled) {
		return err
	}
	resp := minio.ToErrorResponse(err)
	fix := "check OFFSITE_URL, OFFSITE_ENDPOINT, the credentials and that the server is reachable, then run `pme2go-backup offsite sync`"
	code := errs.Failed
	switch resp.Code {
	case "AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch":
		fix = "check the off-site credentials (OFFSITE_CREDENTIALS_FILE, the offsite-credentials credential or AWS_ACCESS_KEY_ID) and the bucket policy"
		code = errs.Code("EACCES")
	case "NoSuchBucket":
		fix = "create the bucket " + r.S.Bucket + " or correct OFFSITE_URL"
	}
	return &errs.Error{Code: code, Message: fmt.Sprintf("off-site repository %s: %s", r.S, what), Err: err, Fix: &errs.Fix{Text: fix}}
}

// putOptions are the upload options of OFFSITE_CHECKSUM.
func (r *Repo) putOptions() minio.PutObjectOptions {
	o := minio.PutObjectOptions{PartSize: PartSize, ContentType: "application/octet-stream", NumThreads: 4, DisableContentSha256: true}
	switch r.S.Checksum {
	case "md5":
		o.SendContentMd5 = true
	case "crc32":
		o.AutoChecksum = minio.ChecksumCRC32
	case "crc32c":
		o.AutoChecksum = minio.ChecksumCRC32C
	case "sha256":
		o.AutoChecksum = minio.ChecksumSHA256
	}
	return o
}

// Put uploads size bytes of body (size -1: unknown length, sent in parts
// of PartSize) to the object at rel. It returns the SHA-256 of the bytes
// sent.
func (r *Repo) Put(ctx context.Context, rel string, body io.Reader, size int64) (string, error) {
	h := sha256.New()
	_, err := r.client.PutObject(ctx, r.S.Bucket, r.S.key(rel), io.TeeReader(body, h), size, r.putOptions())
	if err != nil {
		return "", r.objectErr("upload "+rel, err)
	}
	return "sha256:" + hex.EncodeToString(h.Sum(nil)), nil
}

// Get opens the object at rel for streaming. The caller closes it.
func (r *Repo) Get(ctx context.Context, rel string) (io.ReadCloser, int64, error) {
	o, err := r.client.GetObject(ctx, r.S.Bucket, r.S.key(rel), minio.GetObjectOptions{})
	if err != nil {
		return nil, 0, r.objectErr("download "+rel, err)
	}
	st, err := o.Stat()
	if err != nil {
		o.Close()
		return nil, 0, r.objectErr("download "+rel, err)
	}
	return o, st.Size, nil
}

// MaxSmallObject bounds what ReadAll reads (sidecar manifests, streamed
// chain state and sequences): 64 MiB, as an archive's embedded manifest.
// Anyone who can write to the bucket must not make a sync or restore read
// an arbitrarily large object into memory.
const MaxSmallObject = 64 << 20

// ReadAll returns the content of a small object; one larger than
// MaxSmallObject is refused without being read.
func (r *Repo) ReadAll(ctx context.Context, rel string) ([]byte, error) {
	o, size, err := r.Get(ctx, rel)
	if err != nil {
		return nil, err
	}
	defer o.Close()
	if size > MaxSmallObject {
		return nil, &errs.Error{Code: errs.VerifyFailed, Message: fmt.Sprintf("off-site object %s has %d bytes, more than a manifest or chain state can (%d); refused", rel, size, MaxSmallObject),
			Fix: &errs.Fix{Text: "remove the object from the repository"}}
	}
	b, err := io.ReadAll(io.LimitReader(o, MaxSmallObject+1))
	if err != nil {
		return nil, r.objectErr("download "+rel, err)
	}
	if len(b) > MaxSmallObject {
		return nil, &errs.Error{Code: errs.VerifyFailed, Message: fmt.Sprintf("off-site object %s is larger than a manifest or chain state can be (%d bytes); refused", rel, MaxSmallObject)}
	}
	return b, nil
}

// Hash reads the object at rel back and returns its SHA-256 and size.
func (r *Repo) Hash(ctx context.Context, rel string) (string, int64, error) {
	o, _, err := r.Get(ctx, rel)
	if err != nil {
		return "", 0, err
	}
	defer o.Close()
	h := sha256.New()
	n, err := io.Copy(h, o)
	if err != nil {
		return "", n, r.objectErr("read back "+rel, err)
	}
	return "sha256:" + hex.EncodeToString(h.Sum(nil)), n, nil
}

// Object is a listed object.
type Object struct {
	Rel      string // path below the repository root
	Size     int64
	Modified time.Time
}

// List returns the objects whose path starts with prefix (relative to the
// repository root), recursively.
func (r *Repo) List(ctx context.Context, prefix string) ([]Object, error) {
	var out []Object
	for o := range r.client.ListObjects(ctx, r.S.Bucket, minio.ListObjectsOptions{Prefix: r.S.key(prefix), Recursive: true}) {
		if o.Err != nil {
			return nil, r.objectErr("list "+prefix, o.Err)
		}
		out = append(out, Object{Rel: r.S.rel(o.Key), Size: o.Size, Modified: o.LastModified})
	}
	return out, nil
}

// Exists reports whether the object at rel exists, with its size.
func (r *Repo) Exists(ctx context.Context, rel string) (bool, int64, error) {
	st, err := r.client.StatObject(ctx, r.S.Bucket, r.S.key(rel), minio.StatObjectOptions{})
	if err != nil {
		if minio.ToErrorResponse(err).Code == "NoSuchKey" || minio.ToErrorResponse(err).StatusCode == http.StatusNotFound {
			return false, 0, nil
		}
		return false, 0, r.objectErr("look up "+rel, err)
	}
	return true, st.Size, nil
}

// Remove deletes the object at rel (a missing object is not an error).
func (r *Repo) Remove(ctx context.Context, rel string) error {
	err := r.client.RemoveObject(ctx, r.S.Bucket, r.S.key(rel), minio.RemoveObjectOptions{})
	if err != nil && minio.ToErrorResponse(err).Code != "NoSuchKey" {
		return r.objectErr("remove "+rel, err)
	}
	return nil
}

// AbortIncomplete aborts the multipart uploads below the repository that
// an interrupted run left (they hold no visible object, only space),
// except those of archives recorded for resumption whose local file is
// still there (the upload that follows resumes them). It returns how many
// it aborted.
func (r *Repo) AbortIncomplete(ctx context.Context, cfg *config.Config) (int, error) {
	n := 0
	prefix := r.S.key("")
	st, err := LoadState(cfg)
	if err != nil {
		return 0, err
	}
	for u := range r.client.ListIncompleteUploads(ctx, r.S.Bucket, prefix, true) {
		if u.Err != nil {
			return n, r.objectErr("list incomplete uploads", u.Err)
		}
		if r.resumable(cfg, st, u.Key, u.UploadID) {
			continue
		}
		if err := r.client.RemoveIncompleteUpload(ctx, r.S.Bucket, u.Key); err != nil {
			return n, r.objectErr("abort incomplete upload of "+r.S.rel(u.Key), err)
		}
		n++
	}
	return n, nil
}

// Check makes one request to learn whether the repository is usable.
func (r *Repo) Check(ctx context.Context) error {
	ok, err := r.client.BucketExists(ctx, r.S.Bucket)
	if err != nil {
		return r.objectErr("check bucket", err)
	}
	if !ok {
		return &errs.Error{Code: errs.NotFound, Message: fmt.Sprintf("off-site repository %s: bucket %s does not exist", r.S, r.S.Bucket),
			Fix: &errs.Fix{Text: "create the bucket or correct OFFSITE_URL"}}
	}
	return nil
}

// isTransient tells an error a later run may not meet (network, server).
func isTransient(err error) bool {
	return err != nil && !strings.Contains(err.Error(), "AccessDenied")
}

// Package offsite keeps copies of the backups of BACKUP_DIR in an
// S3-compatible repository (OFFSITE_URL=s3://bucket/prefix): every sealed
// archive and its sidecar manifest is uploaded, read back and checked
// against its SHA-256 (of the bytes as stored: encrypted .age archives are
// copied byte for byte, never decrypted), and recorded in
// BACKUP_DIR/state/offsite.json; local copies older than
// LOCAL_RETENTION_DAYS are pruned once verified; restores fetch what is
// missing locally; retention applies OFFSITE_RETENTION_DAYS to the
// repository; while streaming, the open change-set segments are sent every
// OFFSITE_SYNC_INTERVAL so that a point-in-time restore from the
// repository alone reaches the last synced transaction.
//
// Layout of the repository below the prefix (docs/offsite.md):
//
//	full/<archive>, full/<archive>.manifest.json
//	incremental/<archive>, incremental/<archive>.manifest.json
//	stream/<chain>/chain.json
//	stream/<chain>/<segment>/<generation>/<offset, 16 hex digits>
//
// The sidecar manifest is uploaded only after its archive was verified, so
// an archive without its sidecar is an unfinished upload and is never
// listed; multipart uploads are completed only when every part is sent, so
// an interrupted one leaves no object (Sync aborts its leftovers).
//
// The S3 client is github.com/minio/minio-go/v7: it streams objects of
// unknown length with an explicit part size, lets each checksum behaviour
// be chosen (OFFSITE_CHECKSUM), and lists and aborts incomplete multipart
// uploads.
package offsite

import (
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/pme2go/pme2go-backup/engine/config"
)

// Settings are the off-site keys of the configuration, parsed.
type Settings struct {
	// Bucket and Prefix come from OFFSITE_URL (Prefix without slashes at
	// either end; may be empty).
	Bucket, Prefix string
	// Endpoint is OFFSITE_ENDPOINT (empty: AWS S3).
	Endpoint string
	Region   string
	// CredentialsFile is OFFSITE_CREDENTIALS_FILE.
	CredentialsFile string
	// Checksum is OFFSITE_CHECKSUM.
	Checksum string
	// SyncInterval is OFFSITE_SYNC_INTERVAL.
	SyncInterval time.Duration
	// RetentionDays is OFFSITE_RETENTION_DAYS (BACKUP_RETENTION_DAYS when
	// unset); 0 keeps everything.
	RetentionDays int
	// LocalRetentionDays is LOCAL_RETENTION_DAYS; -1 (unset) never prunes
	// local copies.
	LocalRetentionDays int
	// Warnings are what the operator should know about these settings
	// (credentials readable by others or written in the configuration).
	Warnings []string
	// urlUser and urlSecret are an access key pair given in OFFSITE_URL
	// (discouraged: config warns about it).
	urlUser, urlSecret string
}

// ErrNotConfigured is returned when OFFSITE_URL is empty.
var ErrNotConfigured = errors.New("no off-site repository configured (OFFSITE_URL is empty)")

// Configured reports whether cfg names an off-site repository.
func Configured(cfg *config.Config) bool { return cfg != nil && cfg.Value("OFFSITE_URL") != "" }

// Parse reads the off-site settings of cfg. It returns ErrNotConfigured
// when OFFSITE_URL is empty.
func Parse(cfg *config.Config) (*Settings, error) {
	raw := cfg.Value("OFFSITE_URL")
	if raw == "" {
		return nil, ErrNotConfigured
	}
	u, err := url.Parse(raw)
	if err != nil || u.Scheme != "s3" || u.Host == "" {
		return nil, fmt.Errorf("OFFSITE_URL %q is not s3://bucket/prefix", config.RedactURL(raw))
	}
	s := &Settings{Bucket: u.Host, Prefix: strings.Trim(u.Path, "/"), Endpoint: cfg.Value("OFFSITE_ENDPOINT"),
		Region: cfg.Value("OFFSITE_REGION"), CredentialsFile: cfg.Value("OFFSITE_CREDENTIALS_FILE"),
		Checksum: cfg.Value("OFFSITE_CHECKSUM"), RetentionDays: cfg.RetentionDays, LocalRetentionDays: -1}
	if u.User != nil {
		s.urlUser = u.User.Username()
		s.urlSecret, _ = u.User.Password()
	}
	if s.Checksum == "" {
		s.Checksum = "auto"
	}
	if s.SyncInterval, err = config.ParseInterval(cfg.Value("OFFSITE_SYNC_INTERVAL")); err != nil || s.SyncInterval <= 0 {
		s.SyncInterval = 10 * time.Second
	}
	if v := strings.TrimSpace(cfg.Value("OFFSITE_RETENTION_DAYS")); v != "" {
		s.RetentionDays, _ = strconv.Atoi(v)
	}
	if v := strings.TrimSpace(cfg.Value("LOCAL_RETENTION_DAYS")); v != "" {
		s.LocalRetentionDays, _ = strconv.Atoi(v)
	}
	return s, nil
}

// String names the repository for messages (never with credentials).
func (s *Settings) String() string {
	out := "s3://" + s.Bucket
	if s.Prefix != "" {
		out += "/" + s.Prefix
	}
	if s.Endpoint != "" {
		out += " at " + config.RedactURL(s.Endpoint)
	}
	return out
}

// key returns the object key of a path relative to the repository root.
func (s *Settings) key(rel string) string {
	if s.Prefix == "" {
		return rel
	}
	return s.Prefix + "/" + rel
}

// rel returns the path of key relative to the repository root.
func (s *Settings) rel(key string) string {
	if s.Prefix == "" {
		return key
	}
	return strings.TrimPrefix(key, s.Prefix+"/")
}

// credentialFile returns the credentials file to read, if any: the
// configured OFFSITE_CREDENTIALS_FILE, else a systemd credential named
// offsite-credentials ($CREDENTIALS_DIRECTORY).
func (s *Settings) credentialFile() (string, error) {
	if s.CredentialsFile != "" {
		st, err := os.Stat(s.CredentialsFile)
		if err != nil {
			return "", fmt.Errorf("OFFSITE_CREDENTIALS_FILE: %w", err)
		}
		if st.Mode().Perm()&0o077 != 0 {
			s.Warnings = append(s.Warnings, fmt.Sprintf("OFFSITE_CREDENTIALS_FILE %s is readable by others (mode %v); make it 0600", s.CredentialsFile, st.Mode().Perm()))
		}
		return s.CredentialsFile, nil
	}
	if dir := os.Getenv("CREDENTIALS_DIRECTORY"); dir != "" {
		p := filepath.Join(dir, "offsite-credentials")
		if _, err := os.Stat(p); err == nil {
			return p, nil
		}
	}
	return "", nil
}

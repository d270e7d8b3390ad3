package archive

import (
	"encoding/json"
	"fmt"
	"os"
	"time"
)

// FormatVersion is the archive format version written by this package.
const FormatVersion = 1

// ManifestName is the name of the manifest member, always the last member
// of an archive.
const ManifestName = "manifest.json"

// SidecarSuffix is appended to an archive path to form its sidecar path.
const SidecarSuffix = ".manifest.json"

// Kind is a backup's kind as manifests record it (Manifest.Type). The text
// values are the archive format's and never change.
type Kind string

// The backup kinds.
const (
	KindFull        Kind = "full"
	KindIncremental Kind = "incremental"
)

// Triggers recorded in a manifest's Metadata["trigger"]: why a backup was
// taken. Other values ("scheduled", "chain sealed by a new full backup", …)
// are recorded as given.
const (
	TriggerManual = "manual"
	// TriggerSafety marks the full backup a restore takes of a database
	// before replacing it; it starts no chain and a point-in-time restore
	// never starts from it.
	TriggerSafety = "safety"
)

// Trigger returns Metadata["trigger"] ("" when absent).
func (m *Manifest) Trigger() string {
	t, _ := m.Metadata["trigger"].(string)
	return t
}

// IsSafety reports whether the backup is a restore's safety backup.
func (m *Manifest) IsSafety() bool { return m != nil && m.Trigger() == TriggerSafety }

// ChainStatus returns Metadata["chainStatus"] of an incremental: the status
// its chain had when it was written ("" when absent); engine/chain's Status
// values.
func (m *Manifest) ChainStatus() string {
	s, _ := m.Metadata["chainStatus"].(string)
	return s
}

// Manifest describes the content of a backup archive. It is stored as the
// last tar member (manifest.json) and, with Archive filled in, as the
// sidecar file next to the archive.
type Manifest struct {
	// FormatVersion is the archive format version (FormatVersion).
	FormatVersion int `json:"formatVersion"`
	// Type is the backup kind: KindFull or KindIncremental.
	Type Kind `json:"type"`
	// Timestamp is when the backup was taken.
	Timestamp time.Time `json:"timestamp"`
	// Version is the pme2go-backup version that wrote the archive.
	Version string `json:"version"`
	// Files maps a role (e.g. "database:app", "globals") to a member path
	// (e.g. "database/app/", "globals.sql").
	Files map[string]string `json:"files"`
	// Metadata holds free-form additional information.
	Metadata map[string]any `json:"metadata"`
	// Checksums maps each regular-file member to "sha256:<hex>".
	Checksums map[string]string `json:"checksums"`
	// Sizes maps each regular-file member to its size in bytes.
	Sizes map[string]int64 `json:"sizes"`

	// SystemIdentifier is the PostgreSQL system identifier.
	SystemIdentifier string `json:"systemIdentifier,omitempty"`
	// Timeline is the PostgreSQL timeline at backup time.
	Timeline int `json:"timeline,omitempty"`
	// ServerVersion is the PostgreSQL server version.
	ServerVersion string `json:"serverVersion,omitempty"`
	// PgDumpVersion is the version of pg_dump used.
	PgDumpVersion string `json:"pgDumpVersion,omitempty"`
	// Databases lists the databases contained in the backup.
	Databases []string `json:"databases,omitempty"`
	// HasGlobals reports whether globals (roles, tablespaces) are included.
	HasGlobals bool `json:"hasGlobals"`
	// Warnings collects non-fatal problems met while taking the backup.
	Warnings []string `json:"warnings,omitempty"`

	// ChainID identifies the chain of a full backup and its incrementals.
	ChainID string `json:"chainId,omitempty"`
	// SlotName is the logical replication slot used for incrementals.
	SlotName string `json:"slotName,omitempty"`
	// StartLSN is the LSN the backup starts at.
	StartLSN string `json:"startLsn,omitempty"`
	// EndLSN is the LSN the backup ends at.
	EndLSN string `json:"endLsn,omitempty"`
	// FirstCommitLSN is the LSN of the first transaction commit included.
	FirstCommitLSN string `json:"firstCommitLsn,omitempty"`
	// LastCommitLSN is the LSN of the last transaction commit included.
	LastCommitLSN string `json:"lastCommitLsn,omitempty"`
	// FirstCommitTime is the time of the first transaction commit included.
	FirstCommitTime *time.Time `json:"firstCommitTime,omitempty"`
	// LastCommitTime is the time of the last transaction commit included.
	LastCommitTime *time.Time `json:"lastCommitTime,omitempty"`
	// TxCount is the number of transactions included.
	TxCount int64 `json:"txCount,omitempty"`
	// Previous names the archive this incremental backup follows.
	Previous string `json:"previous,omitempty"`

	// Archive describes the compressed archive file; set in the sidecar
	// only.
	Archive *ArchiveInfo `json:"archive,omitempty"`
}

// ArchiveInfo describes a compressed archive file as recorded in its
// sidecar manifest.
type ArchiveInfo struct {
	// Name is the base name of the archive file.
	Name string `json:"name"`
	// Size is the size of the compressed file in bytes.
	Size int64 `json:"size"`
	// SHA256 is "sha256:<hex>" of the whole compressed file.
	SHA256 string `json:"sha256"`
	// Codec is the compression applied to the tar stream.
	Codec Codec `json:"codec"`
	// Encryption is set when the file is encrypted (name ends in ".age");
	// Size and SHA256 are then those of the encrypted file as stored.
	Encryption *Encryption `json:"encryption,omitempty"`
}

// SidecarPath returns the path of the sidecar manifest of archivePath.
func SidecarPath(archivePath string) string {
	return archivePath + SidecarSuffix
}

// ReadSidecar reads and parses the sidecar manifest of archivePath.
func ReadSidecar(archivePath string) (*Manifest, error) {
	p := SidecarPath(archivePath)
	b, err := os.ReadFile(p)
	if err != nil {
		return nil, fmt.Errorf("read sidecar manifest: %w", err)
	}
	m, err := parseManifest(b)
	if err != nil {
		return nil, fmt.Errorf("sidecar manifest %s: %w", p, err)
	}
	return m, nil
}

// parseManifest decodes a manifest and checks its format version.
func parseManifest(b []byte) (*Manifest, error) {
	var m Manifest
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, fmt.Errorf("invalid manifest JSON: %w", err)
	}
	if m.FormatVersion > FormatVersion {
		return nil, fmt.Errorf("manifest format version %d is newer than supported version %d: upgrade pme2go-backup", m.FormatVersion, FormatVersion)
	}
	return &m, nil
}

// marshalManifest encodes m as indented JSON with a trailing newline.
func marshalManifest(m *Manifest) ([]byte, error) {
	b, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return nil, fmt.Errorf("encode manifest: %w", err)
	}
	return append(b, '\n'), nil
}

// Package archive writes, verifies and safely extracts pme2go-backup
// archives.
//
// An archive is a plain tar stream compressed as a whole (xz, zstd, gzip or
// none), so standard tools such as "tar -xJf" open it without pme2go-backup.
// The last tar member is manifest.json, which records the SHA-256 checksum
// and size of every other member. Next to each archive a sidecar file
// "<archive>.manifest.json" holds the same manifest plus the checksum of the
// compressed file itself.
package archive

import (
	"bytes"
	"fmt"
	"strings"
)

// Codec names the compression applied to the whole tar stream.
type Codec string

// Supported codecs.
const (
	CodecXZ   Codec = "xz"
	CodecZstd Codec = "zstd"
	CodecGzip Codec = "gzip"
	CodecNone Codec = "none"
)

// Codecs lists every supported codec, preferred first.
var Codecs = []Codec{CodecXZ, CodecZstd, CodecGzip, CodecNone}

// ParseCodec parses a codec name as given in configuration. It accepts the
// canonical names plus the aliases "zst", "gz" and "tar" (for none), case
// insensitively.
func ParseCodec(s string) (Codec, error) {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "xz":
		return CodecXZ, nil
	case "zstd", "zst":
		return CodecZstd, nil
	case "gzip", "gz":
		return CodecGzip, nil
	case "none", "tar":
		return CodecNone, nil
	}
	return "", fmt.Errorf("unknown compression %q: use one of xz, zstd, gzip or none", s)
}

// String returns the codec name.
func (c Codec) String() string { return string(c) }

// Ext returns the file name extension for archives using c, including the
// ".tar" part, e.g. ".tar.xz". It returns "" for an unknown codec.
func (c Codec) Ext() string {
	switch c {
	case CodecXZ:
		return ".tar.xz"
	case CodecZstd:
		return ".tar.zst"
	case CodecGzip:
		return ".tar.gz"
	case CodecNone:
		return ".tar"
	}
	return ""
}

// Valid reports whether c is one of the supported codecs.
func (c Codec) Valid() bool { return c.Ext() != "" }

// CodecFromName derives the codec from an archive file name extension,
// with or without the ".age" of an encrypted archive. It reports false if
// the name has no known archive extension.
func CodecFromName(filename string) (Codec, bool) {
	filename = strings.TrimSuffix(filename, ".age")
	for _, c := range Codecs {
		if strings.HasSuffix(filename, c.Ext()) {
			return c, true
		}
	}
	if strings.HasSuffix(filename, ".tgz") {
		return CodecGzip, true
	}
	return "", false
}

// Magic byte sequences identifying the compressed formats.
var (
	magicXZ   = []byte{0xFD, '7', 'z', 'X', 'Z', 0x00}
	magicZstd = []byte{0x28, 0xB5, 0x2F, 0xFD}
	magicGzip = []byte{0x1F, 0x8B}
)

// DetectHeaderSize is the number of leading bytes DetectCodec needs to
// recognise every format (the tar magic ends at offset 262).
const DetectHeaderSize = 512

// DetectCodec identifies the codec of a file from its first bytes (at least
// DetectHeaderSize bytes should be passed when available). It reports false
// if the bytes match neither a supported compressed format nor a tar header.
func DetectCodec(head []byte) (Codec, bool) {
	switch {
	case bytes.HasPrefix(head, magicXZ):
		return CodecXZ, true
	case bytes.HasPrefix(head, magicZstd):
		return CodecZstd, true
	case bytes.HasPrefix(head, magicGzip):
		return CodecGzip, true
	case len(head) >= 262 && string(head[257:262]) == "ustar":
		return CodecNone, true
	}
	return "", false
}

package archive

import (
	"archive/tar"
	"bytes"
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"
)

// ErrVerification marks (with errors.Is) the errors of a
// VerifiedExtraction that mean the archive is not sound: damaged,
// truncated, tampered with, or not matching its sidecar manifest. Other
// errors are about the reader's side (cancellation, a full disk).
var ErrVerification = errors.New("archive failed verification")

// verificationError is an error that means the archive is not sound; it
// matches ErrVerification without repeating its text.
type verificationError struct{ err error }

func (e *verificationError) Error() string        { return e.err.Error() }
func (e *verificationError) Unwrap() error        { return e.err }
func (e *verificationError) Is(target error) bool { return target == ErrVerification }

// notSound marks err as a verification failure.
func notSound(err error) error { return &verificationError{err} }

// VerifiedExtraction verifies and extracts an archive in one pass, in the
// background, so that a caller can use members as soon as each is proven
// (Wait) while the rest is still being read (Done). It checks what Verify
// checks: the whole file's size and SHA-256 against the sidecar manifest,
// full decompression including the compressed format's own checksums, the
// tar structure (names, types, duplicates, nothing after manifest.json),
// every member's SHA-256 and size against the sidecar manifest as soon as
// the member is written, that every listed member is present, and that
// the embedded manifest equals the sidecar (less its archive section).
// Because the sidecar is read first, each member is proven the moment it
// is on disk; the whole file is proven only at Done.
//
// Extraction writes below destDir as Extract does (os.Root, mode 0600 and
// 0700, no links, devices or names escaping it). On failure destDir may
// hold a partial extraction that the caller removes.
type VerifiedExtraction struct {
	archive string
	side    *Manifest
	cancel  context.CancelFunc
	ready   map[string]chan struct{} // closed when the member is proven
	done    chan struct{}            // closed when the run ended
	err     error                    // set before done is closed
	inner   *Manifest
}

// StartVerifiedExtract starts verifying and extracting archivePath into
// the existing directory destDir. It fails at once when the sidecar
// manifest is missing, unreadable or has no archive section (wrapped
// ErrVerification), since members could not be proven one by one; call
// Abort or Done to end the background work.
func StartVerifiedExtract(ctx context.Context, archivePath, destDir string) (*VerifiedExtraction, error) {
	side, err := ReadSidecar(archivePath)
	switch {
	case errors.Is(err, os.ErrNotExist):
		return nil, notSound(fmt.Errorf("missing sidecar manifest %s: recreate the backup or restore the sidecar", SidecarPath(archivePath)))
	case err != nil:
		return nil, notSound(fmt.Errorf("unreadable sidecar manifest: %w", err))
	case side.Archive == nil:
		return nil, notSound(fmt.Errorf("sidecar manifest %s has no archive section", SidecarPath(archivePath)))
	}
	root, err := os.OpenRoot(destDir)
	if err != nil {
		return nil, fmt.Errorf("open extraction directory: %w; create it first", err)
	}
	ctx, cancel := context.WithCancel(ctx)
	v := &VerifiedExtraction{archive: archivePath, side: side, cancel: cancel,
		ready: make(map[string]chan struct{}, len(side.Checksums)), done: make(chan struct{})}
	for name := range side.Checksums {
		v.ready[name] = make(chan struct{})
	}
	go func() {
		defer close(v.done)
		defer root.Close()
		v.inner, v.err = v.run(ctx, root, destDir)
	}()
	return v, nil
}

// Sidecar returns the sidecar manifest the members are checked against.
func (v *VerifiedExtraction) Sidecar() *Manifest { return v.side }

// Wait blocks until member name is extracted and its checksum proven, and
// returns nil then. It returns the extraction's error if it failed first,
// an error wrapping ErrVerification if the archive ended without the
// member, and ctx's error if ctx is done first.
func (v *VerifiedExtraction) Wait(ctx context.Context, name string) error {
	ch, ok := v.ready[name]
	if !ok {
		select {
		case <-v.done:
		case <-ctx.Done():
			return ctx.Err()
		}
		if v.err != nil {
			return v.err
		}
		return notSound(fmt.Errorf("%s has no member %s", v.archive, name))
	}
	select {
	case <-ch:
		return nil
	case <-v.done:
		select {
		case <-ch:
			return nil
		default:
		}
		if v.err != nil {
			return v.err
		}
		return notSound(fmt.Errorf("member %q listed in the manifest is missing from %s: the archive is incomplete; use another backup", name, v.archive))
	case <-ctx.Done():
		return ctx.Err()
	}
}

// WaitPrefix waits (as Wait) for every member listed in the sidecar
// manifest whose name starts with prefix, e.g. "database/app/".
func (v *VerifiedExtraction) WaitPrefix(ctx context.Context, prefix string) error {
	names := make([]string, 0)
	for name := range v.ready {
		if strings.HasPrefix(name, prefix) {
			names = append(names, name)
		}
	}
	sort.Strings(names)
	for _, name := range names {
		if err := v.Wait(ctx, name); err != nil {
			return err
		}
	}
	return nil
}

// Proven reports, without waiting, whether every member listed in the
// sidecar manifest whose name starts with prefix is already extracted and
// proven (as WaitPrefix would return nil at once).
func (v *VerifiedExtraction) Proven(prefix string) bool {
	for name, ch := range v.ready {
		if strings.HasPrefix(name, prefix) {
			select {
			case <-ch:
			default:
				return false
			}
		}
	}
	return true
}

// Failed reports the extraction's error if it has already failed, without
// waiting.
func (v *VerifiedExtraction) Failed() error {
	select {
	case <-v.done:
		return v.err
	default:
		return nil
	}
}

// Done waits until the whole archive is verified and extracted and
// returns the embedded manifest, or the first problem found (wrapping
// ErrVerification when the archive is not sound).
func (v *VerifiedExtraction) Done(ctx context.Context) (*Manifest, error) {
	select {
	case <-v.done:
		return v.inner, v.err
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// Abort stops the background work and waits for it to end. It is safe to
// call after Done and several times.
func (v *VerifiedExtraction) Abort() {
	v.cancel()
	<-v.done
}

// run reads the archive once; see VerifiedExtraction.
func (v *VerifiedExtraction) run(ctx context.Context, root *os.Root, dest string) (*Manifest, error) {
	defer v.cancel()
	s, err := openRaw(ctx, v.archive)
	if err != nil {
		return nil, fmt.Errorf("extract %s: %w", v.archive, err)
	}
	defer s.Close()
	bad := func(format string, args ...any) error {
		return notSound(fmt.Errorf("%s: %s", v.archive, fmt.Sprintf(format, args...)))
	}
	// fail completes a stream failure with what the whole-file checksum
	// says, which names the cause best (a truncated or modified file).
	fail := func(err error) error {
		if ctx.Err() != nil {
			return fmt.Errorf("extract %s: %w", v.archive, ctx.Err())
		}
		var wf *destError
		if errors.As(err, &wf) {
			return err // our side: a full disk, permissions
		}
		if whole := v.wholeFile(s); whole != "" {
			return notSound(fmt.Errorf("%w; %s", err, whole))
		}
		return notSound(err)
	}
	if !s.known {
		return nil, fail(errors.New(s.unknownFormat()))
	}
	if a := v.side.Archive; a.Codec != s.codec {
		return nil, bad("archive is %s-compressed but the sidecar says %s", s.codec, a.Codec)
	}
	dec, err := NewDecompressor(s.br, s.codec)
	if err != nil {
		return nil, fail(fmt.Errorf("extract %s: truncated or corrupt compressed stream at member %s: %w", v.archive, memberLabel(""), err))
	}
	defer dec.Close()
	x := &extractor{ctx: ctx, root: root, archive: v.archive, dest: dest, sums: map[string]fileSum{}}
	x.onFile = func(name string, got fileSum) error {
		want, ok := v.side.Checksums[name]
		switch {
		case !ok:
			return fmt.Errorf("extract %s: member %q is not listed in the manifest: the archive was tampered with; do not use it", v.archive, name)
		case got.sum != want:
			return fmt.Errorf("extract %s: member %q has checksum %s but the manifest says %s: the archive is corrupt; use another backup", v.archive, name, got.sum, want)
		case v.side.Sizes != nil && v.side.Sizes[name] != got.size:
			return fmt.Errorf("extract %s: member %q has %d bytes but the manifest says %d: the archive is corrupt; use another backup", v.archive, name, got.size, v.side.Sizes[name])
		}
		close(v.ready[name])
		return nil
	}
	inner, err := x.run(tar.NewReader(dec))
	if err != nil {
		return nil, fail(err)
	}
	// Past the end of the tar stream: the compressed format's trailing
	// checksums, then the rest of the file for the whole-file checksum.
	if _, err := io.Copy(io.Discard, dec); err != nil {
		return nil, fail(x.streamErr(x.last, err))
	}
	if whole := v.wholeFile(s); whole != "" {
		return nil, bad("%s", whole)
	}
	for name, ch := range v.ready {
		select {
		case <-ch:
		default:
			return nil, bad("member %q listed in the manifest is missing: the archive is incomplete; use another backup", name)
		}
	}
	sideCopy := *v.side
	sideCopy.Archive = nil
	a, errA := marshalManifest(inner)
	b, errB := marshalManifest(&sideCopy)
	if errA != nil || errB != nil || !bytes.Equal(a, b) {
		return nil, bad("the sidecar manifest differs from the manifest inside the archive: the sidecar was modified or belongs to another archive")
	}
	return inner, nil
}

// wholeFile reads the rest of the file and returns what is wrong with its
// size and SHA-256 against the sidecar, or "" if both match.
func (v *VerifiedExtraction) wholeFile(s *rawStream) string {
	if err := s.drain(); err != nil {
		if s.encrypted {
			return fmt.Sprintf("encrypted archive is truncated or corrupt: %v", err)
		}
		return fmt.Sprintf("read archive: %v", err)
	}
	a := v.side.Archive
	if a.Size != s.raw.n {
		return fmt.Sprintf("archive size %d bytes differs from %d recorded in the sidecar: the file was truncated or modified", s.raw.n, a.Size)
	}
	if got := "sha256:" + hex.EncodeToString(s.raw.h.Sum(nil)); got != a.SHA256 {
		return fmt.Sprintf("archive checksum %s differs from %s recorded in the sidecar: the file is corrupt", got, a.SHA256)
	}
	return ""
}

// destError marks a failure writing the extraction, not reading the
// archive.
type destError struct{ err error }

func (e *destError) Error() string { return e.err.Error() }
func (e *destError) Unwrap() error { return e.err }

// Package s3harness starts a throwaway S3-compatible server for tests:
// Versity S3 Gateway (versitygw) with its posix backend on 127.0.0.1 and a
// free port, a root access key pair written to an AWS credentials file,
// and a bucket. The gateway runs with metadata (not --nometa, which breaks
// multipart uploads), kept in a sidecar directory so that the file system
// needs no extended attributes.
//
// The binary is found in $PME2GO_VERSITYGW, bin/tools/versitygw-<version>
// of the repository (installed by tests/install-deps.sh, as `make test`
// does) or PATH; when it is missing, pgharness.Require skips the test, or
// fails it under PME2GO_TEST_REQUIRE=all.
package s3harness

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"syscall"
	"testing"
	"time"

	"github.com/pme2go/pme2go-backup/tests/pgharness"
)

// Version is the versitygw release the tests use.
const Version = "v1.8.0"

// Server is a running gateway.
type Server struct {
	// Endpoint is http://127.0.0.1:<port>.
	Endpoint string
	// Bucket exists and is empty at start.
	Bucket string
	// Access and Secret are the root key pair; CredentialsFile holds them
	// in the AWS credentials-file format (mode 0600).
	Access, Secret, CredentialsFile string
	// Root is the posix backend's directory (bucket directories below it).
	Root string
	addr string
	dir  string
	bin  string
	cmd  *exec.Cmd
	log  *bytes.Buffer
	t    testing.TB
}

// Binary returns the versitygw executable, or "" when none is installed.
func Binary() string {
	if p := os.Getenv("PME2GO_VERSITYGW"); p != "" {
		return p
	}
	_, file, _, _ := runtime.Caller(0)
	repo := filepath.Dir(filepath.Dir(filepath.Dir(file)))
	p := filepath.Join(repo, "bin", "tools", "versitygw-"+Version)
	if st, err := os.Stat(p); err == nil && st.Mode().IsRegular() {
		return p
	}
	if p, err := exec.LookPath("versitygw"); err == nil {
		return p
	}
	return ""
}

// Start starts a gateway with one bucket; it is stopped when the test ends.
func Start(t testing.TB) *Server {
	t.Helper()
	bin := Binary()
	if bin == "" {
		pgharness.Require(t, "versitygw", "Versity S3 Gateway not installed: run tests/install-deps.sh (installs bin/tools/versitygw-"+Version+") or set PME2GO_VERSITYGW")
		return nil
	}
	dir := t.TempDir()
	s := &Server{Bucket: "pme2go-test", Access: "pme2goaccess", Secret: "pme2go-secret-key-for-tests", dir: dir, bin: bin, t: t,
		Root: filepath.Join(dir, "root")}
	for _, d := range []string{s.Root, filepath.Join(dir, "meta"), filepath.Join(s.Root, s.Bucket)} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			t.Fatal(err)
		}
	}
	s.CredentialsFile = filepath.Join(dir, "credentials")
	cred := fmt.Sprintf("[default]\naws_access_key_id = %s\naws_secret_access_key = %s\n", s.Access, s.Secret)
	if err := os.WriteFile(s.CredentialsFile, []byte(cred), 0o600); err != nil {
		t.Fatal(err)
	}
	s.addr = freeAddr(t)
	s.Endpoint = "http://" + s.addr
	s.Restart()
	t.Cleanup(s.Stop)
	return s
}

func freeAddr(t testing.TB) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// Restart starts the gateway again (after Stop or Kill) on the same port
// and backend directory.
func (s *Server) Restart() {
	s.t.Helper()
	s.log = &bytes.Buffer{}
	cmd := exec.Command(s.bin, "--port", s.addr, "--access", s.Access, "--secret", s.Secret,
		"posix", "--sidecar", filepath.Join(s.dir, "meta"), s.Root)
	cmd.Stdout, cmd.Stderr = s.log, s.log
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		s.t.Fatalf("start versitygw: %v", err)
	}
	s.cmd = cmd
	deadline := time.Now().Add(20 * time.Second)
	for {
		resp, err := http.Get(s.Endpoint + "/")
		if err == nil {
			resp.Body.Close()
			return
		}
		if time.Now().After(deadline) {
			s.Stop()
			s.t.Fatalf("versitygw did not listen on %s: %v\n%s", s.addr, err, s.log.String())
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// Stop stops the gateway (no-op when stopped).
func (s *Server) Stop() {
	if s.cmd == nil {
		return
	}
	s.cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan struct{})
	go func() { s.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		s.cmd.Process.Kill()
		<-done
	}
	s.cmd = nil
}

// Log returns what the gateway printed.
func (s *Server) Log() string { return s.log.String() }

// Env returns the configuration keys that point pme2go-backup at the
// bucket below prefix.
func (s *Server) Env(prefix string) map[string]string {
	return map[string]string{
		"OFFSITE_URL":              "s3://" + s.Bucket + "/" + prefix,
		"OFFSITE_ENDPOINT":         s.Endpoint,
		"OFFSITE_REGION":           "us-east-1",
		"OFFSITE_CREDENTIALS_FILE": s.CredentialsFile,
	}
}

// Objects returns the files of the bucket below prefix as the posix
// backend stores them (object key → size): what any client would see,
// read without going through S3.
func (s *Server) Objects(prefix string) map[string]int64 {
	out := map[string]int64{}
	root := filepath.Join(s.Root, s.Bucket)
	filepath.Walk(filepath.Join(root, prefix), func(p string, fi os.FileInfo, err error) error {
		if err == nil && fi.Mode().IsRegular() {
			rel, _ := filepath.Rel(root, p)
			out[filepath.ToSlash(rel)] = fi.Size()
		}
		return nil
	})
	return out
}

// Ctx is a helper for tests: a context ending with the test.
func Ctx(t testing.TB) context.Context {
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	return ctx
}

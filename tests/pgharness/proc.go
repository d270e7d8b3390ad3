package pgharness

import (
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"syscall"
)

// owner describes the account that owns cluster files and runs the server.
// A nil *owner means "the current user".
type owner struct {
	uid, gid int
}

// serverOwner returns the postgres account when running as root, nil
// otherwise (the current user runs the server).
func serverOwner() (*owner, error) {
	if os.Geteuid() != 0 {
		return nil, nil
	}
	u, err := user.Lookup("postgres")
	if err != nil {
		return nil, fmt.Errorf("running as root needs a postgres user: %w", err)
	}
	uid, err := strconv.Atoi(u.Uid)
	if err != nil {
		return nil, fmt.Errorf("parse uid of postgres: %w", err)
	}
	gid, err := strconv.Atoi(u.Gid)
	if err != nil {
		return nil, fmt.Errorf("parse gid of postgres: %w", err)
	}
	return &owner{uid: uid, gid: gid}, nil
}

// command builds an exec.Cmd that runs as o (when non-nil) in dir.
func (o *owner) command(dir, name string, args ...string) *exec.Cmd {
	cmd := exec.Command(name, args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "LC_ALL=C")
	if o != nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{
			Uid: uint32(o.uid), Gid: uint32(o.gid), Groups: []uint32{},
		}}
	}
	return cmd
}

// run executes name as o and returns its combined output in the error.
func (o *owner) run(dir, name string, args ...string) error {
	out, err := o.command(dir, name, args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s %v: %w\n%s", filepath.Base(name), args, err, out)
	}
	return nil
}

// chownAll hands path (recursively) to o; a no-op when o is nil.
func (o *owner) chownAll(path string) error {
	if o == nil {
		return nil
	}
	return filepath.WalkDir(path, func(p string, _ fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if err := os.Lchown(p, o.uid, o.gid); err != nil {
			return fmt.Errorf("chown %s: %w", p, err)
		}
		return nil
	})
}

// writeFile writes data to path with mode 0600 and hands it to o.
func (o *owner) writeFile(path string, data []byte) error {
	if err := os.WriteFile(path, data, 0o600); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return o.chownAll(path)
}

// appendFile appends data to path (which must exist) and keeps ownership.
func (o *owner) appendFile(path string, data []byte) error {
	f, err := os.OpenFile(path, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		return fmt.Errorf("open %s: %w", path, err)
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return fmt.Errorf("append %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("close %s: %w", path, err)
	}
	return nil
}

// ownerDir creates a fresh, short-named directory under os.TempDir() owned
// by o with the given mode. Short paths keep unix socket names below the
// 107-byte limit.
func (o *owner) ownerDir(pattern string, mode os.FileMode) (string, error) {
	dir, err := os.MkdirTemp("", pattern)
	if err != nil {
		return "", fmt.Errorf("create temp dir: %w", err)
	}
	if err := os.Chmod(dir, mode); err != nil {
		return "", fmt.Errorf("chmod %s: %w", dir, err)
	}
	if err := o.chownAll(dir); err != nil {
		return "", err
	}
	return dir, nil
}

package rest

import (
	"context"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/pme2go/pme2go-backup/dbusapi"
)

type connKey struct{}

// connInfo is what the kernel says about a connection's peer, read once
// when it is accepted.
type connInfo struct {
	unix bool
	proc dbusapi.Process
	err  error
}

// connContext records the peer credentials of Unix-socket connections.
func connContext(ctx context.Context, c net.Conn) context.Context {
	ci := &connInfo{}
	if uc, ok := c.(*net.UnixConn); ok {
		ci.unix = true
		ci.proc, ci.err = peerProcess(uc)
	}
	return context.WithValue(ctx, connKey{}, ci)
}

// peerProcess reads SO_PEERCRED (pid, uid, gid as of connect(2)),
// SO_PEERGROUPS (supplementary groups, Linux 4.13) and the process's start
// time from /proc/PID/stat (polkit's unix-process subject needs it to tell
// the process from a later one with the same pid).
func peerProcess(uc *net.UnixConn) (dbusapi.Process, error) {
	var p dbusapi.Process
	raw, err := uc.SyscallConn()
	if err != nil {
		return p, err
	}
	var credErr error
	err = raw.Control(func(fd uintptr) {
		var cred *unix.Ucred
		cred, credErr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
		if credErr != nil {
			return
		}
		p.PID, p.UID, p.GID = cred.Pid, cred.Uid, cred.Gid
		p.Groups = peerGroups(int(fd))
	})
	if err == nil {
		err = credErr
	}
	if err != nil {
		return p, fmt.Errorf("SO_PEERCRED: %w", err)
	}
	p.StartTime = startTime(p.PID)
	return p, nil
}

// peerGroups returns the peer's supplementary groups, nil when the kernel
// cannot tell (the user database is asked then).
func peerGroups(fd int) []uint32 {
	buf := make([]uint32, 64)
	for range 3 {
		size := uint32(len(buf) * 4)
		_, _, errno := syscall.Syscall6(syscall.SYS_GETSOCKOPT, uintptr(fd), uintptr(unix.SOL_SOCKET), uintptr(unix.SO_PEERGROUPS),
			uintptr(unsafe.Pointer(&buf[0])), uintptr(unsafe.Pointer(&size)), 0)
		switch errno {
		case 0:
			return append([]uint32{}, buf[:size/4]...)
		case syscall.ERANGE:
			buf = make([]uint32, size/4+1)
		default:
			return nil
		}
	}
	return nil
}

// startTime is field 22 of /proc/PID/stat, 0 when unreadable.
func startTime(pid int32) uint64 {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	s := string(data)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0
	}
	f := strings.Fields(s[i+1:])
	// f[0] is field 3 (state), so field 22 is f[19].
	if len(f) < 20 {
		return 0
	}
	n, _ := strconv.ParseUint(f[19], 10, 64)
	return n
}

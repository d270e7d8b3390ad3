package dbusapi

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/user"
	"slices"
	"strconv"
	"sync"

	"github.com/godbus/dbus/v5"
)

// polkit actions (systemd/org.pme2go.backup1.policy).
const (
	ActionRead    = "org.pme2go.backup1.read"    // ListBackups, GetStatus
	ActionBackup  = "org.pme2go.backup1.backup"  // StartBackup, Verify, Mark, Drill
	ActionManage  = "org.pme2go.backup1.manage"  // Cleanup, OffsiteSync, Rekey, cancelling another user's job
	ActionRestore = "org.pme2go.backup1.restore" // Restore
)

// DefaultGroup is the group whose members may call the daemon when polkit is
// not running.
const DefaultGroup = "pme2go-backup"

const (
	polkitName  = "org.freedesktop.PolicyKit1"
	polkitPath  = "/org/freedesktop/PolicyKit1/Authority"
	polkitCheck = "org.freedesktop.PolicyKit1.Authority.CheckAuthorization"
)

// Authorizer decides whether a bus caller may perform an action. With polkit
// on the bus it asks polkit (CheckAuthorization with the caller's unique bus
// name as subject, over the daemon's own connection); without polkit it
// allows uid 0, the daemon's own uid and members of Group, taking the uid and
// groups from the bus daemon (GetConnectionUnixUser,
// GetConnectionCredentials), never from anything the caller says.
type Authorizer struct {
	Conn  *dbus.Conn
	Group string // DefaultGroup when empty
	// Polkit: "auto" (ask polkit when its name has an owner or is
	// activatable), "on", or "off".
	Polkit string
	Log    *slog.Logger

	once   sync.Once
	gid    uint32
	hasGID bool
}

func (a *Authorizer) groupID() (uint32, bool) {
	a.once.Do(func() {
		name := a.Group
		if name == "" {
			name = DefaultGroup
		}
		g, err := user.LookupGroup(name)
		if err != nil {
			if n, err2 := strconv.ParseUint(name, 10, 32); err2 == nil {
				a.gid, a.hasGID = uint32(n), true
			}
			return
		}
		n, err := strconv.ParseUint(g.Gid, 10, 32)
		if err == nil {
			a.gid, a.hasGID = uint32(n), true
		}
	})
	return a.gid, a.hasGID
}

// Authorize checks sender for action. interactive is true when the caller
// allowed interactive authorization (message flag 0x4), in which case polkit
// may ask for a password. A denial is an *Error with CodeNotAuthorized,
// logged with the caller's uid.
func (a *Authorizer) Authorize(ctx context.Context, sender, action string, interactive bool) (Caller, error) {
	c := Caller{Sender: sender}
	bus := a.Conn.BusObject()
	if err := bus.CallWithContext(ctx, "org.freedesktop.DBus.GetConnectionUnixUser", 0, sender).Store(&c.UID); err != nil {
		return c, Errorf(CodeNotAuthorized, "", fmt.Sprintf("cannot identify the caller %s: %v", sender, err))
	}
	allowed, how, err := a.decide(ctx, c, action, interactive)
	if err != nil {
		a.log().Warn("authorization check failed", "caller_uid", c.UID, "sender", sender, "action", action, "error", err)
		return c, Errorf(CodeNotAuthorized, "", fmt.Sprintf("authorization check for %s failed: %v", action, err))
	}
	if !allowed {
		a.log().Warn("call refused", "caller_uid", c.UID, "sender", sender, "action", action, "by", how)
		fix := "run as root or as a member of the " + a.groupName() + " group"
		if how == "polkit" {
			fix = "ask an administrator to grant " + action + " (polkit rules), or run as root"
		}
		return c, Errorf(CodeNotAuthorized, fix, fmt.Sprintf("uid %d is not authorized for %s", c.UID, action))
	}
	return c, nil
}

func (a *Authorizer) groupName() string {
	if a.Group == "" {
		return DefaultGroup
	}
	return a.Group
}

func (a *Authorizer) log() *slog.Logger {
	if a.Log == nil {
		return slog.Default()
	}
	return a.Log
}

func (a *Authorizer) decide(ctx context.Context, c Caller, action string, interactive bool) (bool, string, error) {
	if a.usePolkit(ctx) {
		subject := polkitSubject{Kind: "system-bus-name", Details: map[string]dbus.Variant{"name": dbus.MakeVariant(c.Sender)}}
		ok, err := a.polkit(ctx, subject, action, interactive)
		return ok, "polkit", err
	}
	if c.UID == 0 || c.UID == uint32(os.Getuid()) {
		return true, "uid", nil
	}
	gid, ok := a.groupID()
	if !ok {
		return false, "group", nil
	}
	gids, err := a.callerGroups(ctx, c)
	if err != nil {
		return false, "group", err
	}
	return slices.Contains(gids, gid), "group", nil
}

// Process is a caller identified by the kernel rather than by the bus: the
// peer credentials of a Unix socket (SO_PEERCRED, SO_PEERGROUPS).
type Process struct {
	PID       int32
	UID       uint32
	GID       uint32
	Groups    []uint32 // supplementary groups; nil when unknown
	StartTime uint64   // field 22 of /proc/PID/stat (clock ticks since boot); 0 when unknown
}

// AuthorizeProcess checks a process (a REST caller on the Unix socket) for
// action with the same rules as Authorize: polkit with a unix-process
// subject (pid, start-time, uid) where polkit runs, else uid 0, the
// daemon's own uid, or membership of Group (primary or supplementary group
// from the peer credentials, else from the user database). A denial is an
// *Error with CodeNotAuthorized. Conn may be nil (no system bus): polkit is
// then not asked unless Polkit is "on", which fails.
func (a *Authorizer) AuthorizeProcess(ctx context.Context, p Process, action string) (Caller, error) {
	c := Caller{UID: p.UID, Sender: fmt.Sprintf("pid %d", p.PID)}
	allowed, how, err := a.decideProcess(ctx, p, action)
	if err != nil {
		a.log().Warn("authorization check failed", "caller_uid", p.UID, "caller_pid", p.PID, "action", action, "error", err)
		return c, Errorf(CodeNotAuthorized, "", fmt.Sprintf("authorization check for %s failed: %v", action, err))
	}
	if !allowed {
		a.log().Warn("call refused", "caller_uid", p.UID, "caller_pid", p.PID, "action", action, "by", how)
		fix := "run as root or as a member of the " + a.groupName() + " group"
		if how == "polkit" {
			fix = "ask an administrator to grant " + action + " (polkit rules), or run as root"
		}
		return c, Errorf(CodeNotAuthorized, fix, fmt.Sprintf("uid %d is not authorized for %s", p.UID, action))
	}
	return c, nil
}

func (a *Authorizer) decideProcess(ctx context.Context, p Process, action string) (bool, string, error) {
	if a.usePolkit(ctx) {
		if a.Conn == nil {
			return false, "polkit", fmt.Errorf("polkit is required (--polkit=on) but there is no system bus")
		}
		subject := polkitSubject{Kind: "unix-process", Details: map[string]dbus.Variant{
			"pid": dbus.MakeVariant(uint32(p.PID)), "start-time": dbus.MakeVariant(p.StartTime),
			"uid": dbus.MakeVariant(int32(p.UID))}}
		ok, err := a.polkit(ctx, subject, action, false)
		return ok, "polkit", err
	}
	if p.UID == 0 || p.UID == uint32(os.Getuid()) {
		return true, "uid", nil
	}
	gid, ok := a.groupID()
	if !ok {
		return false, "group", nil
	}
	if p.GID == gid || slices.Contains(p.Groups, gid) {
		return true, "group", nil
	}
	if p.Groups != nil {
		return false, "group", nil
	}
	gids, err := a.userGroups(p.UID)
	return slices.Contains(gids, gid), "group", err
}

func (a *Authorizer) usePolkit(ctx context.Context) bool {
	switch a.Polkit {
	case "on":
		return true
	case "off":
		return false
	}
	if a.Conn == nil {
		return false
	}
	bus := a.Conn.BusObject()
	var has bool
	if err := bus.CallWithContext(ctx, "org.freedesktop.DBus.NameHasOwner", 0, polkitName).Store(&has); err == nil && has {
		return true
	}
	var names []string
	if err := bus.CallWithContext(ctx, "org.freedesktop.DBus.ListActivatableNames", 0).Store(&names); err == nil {
		return slices.Contains(names, polkitName)
	}
	return false
}

// polkitSubject is polkit's (sa{sv}) subject structure.
type polkitSubject struct {
	Kind    string
	Details map[string]dbus.Variant
}

func (a *Authorizer) polkit(ctx context.Context, subject polkitSubject, action string, interactive bool) (bool, error) {
	var flags uint32
	if interactive {
		flags = 1 // AllowUserInteraction
	}
	var result struct {
		Authorized bool
		Challenge  bool
		Details    map[string]string
	}
	obj := a.Conn.Object(polkitName, polkitPath)
	call := obj.CallWithContext(ctx, polkitCheck, 0, subject, action, map[string]string{}, flags, "")
	if call.Err != nil {
		return false, call.Err
	}
	if err := call.Store(&result); err != nil {
		return false, err
	}
	return result.Authorized, nil
}

// callerGroups returns the caller's group ids as the bus daemon recorded
// them at connection time (UnixGroupIDs), else from the user database.
func (a *Authorizer) callerGroups(ctx context.Context, c Caller) ([]uint32, error) {
	var creds map[string]dbus.Variant
	err := a.Conn.BusObject().CallWithContext(ctx, "org.freedesktop.DBus.GetConnectionCredentials", 0, c.Sender).Store(&creds)
	if err == nil {
		if v, ok := creds["UnixGroupIDs"]; ok {
			if gids, ok := v.Value().([]uint32); ok {
				return gids, nil
			}
		}
	}
	return a.userGroups(c.UID)
}

// userGroups returns uid's groups from the user database (none when the
// user is unknown).
func (a *Authorizer) userGroups(uid uint32) ([]uint32, error) {
	u, err := user.LookupId(strconv.FormatUint(uint64(uid), 10))
	if err != nil {
		return nil, nil
	}
	ids, err := u.GroupIds()
	if err != nil {
		return nil, nil
	}
	var out []uint32
	for _, s := range ids {
		if n, err := strconv.ParseUint(s, 10, 32); err == nil {
			out = append(out, uint32(n))
		}
	}
	if n, err := strconv.ParseUint(u.Gid, 10, 32); err == nil {
		out = append(out, uint32(n))
	}
	return out, nil
}

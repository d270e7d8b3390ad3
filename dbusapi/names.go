// Package dbusapi is the D-Bus adapter of pme2go-backup: the names of the
// org.pme2go.Backup1 API, its introspection XML (org.pme2go.Backup1.xml,
// served verbatim), the exported Manager and Job objects (server side), the
// authorization of callers (polkit, or uid and group from the bus
// credentials), the mapping of error codes to D-Bus error names, and the
// typed client used by the CLI.
//
// The D-Bus specification (https://dbus.freedesktop.org/doc/dbus-specification.html)
// and polkit's org.freedesktop.PolicyKit1.Authority interface are the
// references relied on. org.pme2go.Backup1(5) documents the API.
package dbusapi

import (
	_ "embed" // the introspection XML
	"fmt"
	"strings"

	"github.com/godbus/dbus/v5"
)

// Names of the API.
const (
	BusName       = "org.pme2go.Backup1"
	ManagerPath   = dbus.ObjectPath("/org/pme2go/Backup1")
	ManagerIface  = "org.pme2go.Backup1.Manager"
	JobIface      = "org.pme2go.Backup1.Job"
	JobPathPrefix = "/org/pme2go/Backup1/job/"
	ErrorPrefix   = "org.pme2go.Backup1.Error."
	propsIface    = "org.freedesktop.DBus.Properties"
	introIface    = "org.freedesktop.DBus.Introspectable"
)

// Job kinds.
const (
	KindFull        = "full"
	KindIncremental = "incremental"
	KindRestore     = "restore"
	KindVerify      = "verify"
	KindCleanup     = "cleanup"
	KindDrill       = "drill"
	KindOffsiteSync = "offsite-sync"
	KindRekey       = "rekey"
)

// Job states.
const (
	JobRunning    = "running"
	JobCancelling = "cancelling"
	JobSucceeded  = "succeeded"
	JobFailed     = "failed"
	JobCancelled  = "cancelled"
)

// Finished reports whether a job in state s has ended.
func Finished(s string) bool {
	return s == JobSucceeded || s == JobFailed || s == JobCancelled
}

// IntrospectionXML is the content of org.pme2go.Backup1.xml: both interfaces
// with their documentation comments.
//
//go:embed org.pme2go.Backup1.xml
var IntrospectionXML string

// JobPath is the object path of job id.
func JobPath(id uint64) dbus.ObjectPath {
	return dbus.ObjectPath(fmt.Sprintf("%s%d", JobPathPrefix, id))
}

// JobID parses a job object path; ok is false for any other path.
func JobID(p dbus.ObjectPath) (id uint64, ok bool) {
	s, found := strings.CutPrefix(string(p), JobPathPrefix)
	if !found || s == "" {
		return 0, false
	}
	for _, c := range s {
		if c < '0' || c > '9' {
			return 0, false
		}
		id = id*10 + uint64(c-'0')
	}
	return id, id > 0
}

// interfaceXML returns the <interface> element named iface exactly as it is
// written in org.pme2go.Backup1.xml.
func interfaceXML(iface string) string {
	start := strings.Index(IntrospectionXML, `<interface name="`+iface+`">`)
	if start < 0 {
		panic("dbusapi: interface " + iface + " missing from org.pme2go.Backup1.xml")
	}
	end := strings.Index(IntrospectionXML[start:], "</interface>")
	return IntrospectionXML[start : start+end+len("</interface>")]
}

const standardInterfacesXML = `  <interface name="org.freedesktop.DBus.Peer">
    <method name="Ping"/>
    <method name="GetMachineId">
      <arg name="machine_uuid" type="s" direction="out"/>
    </method>
  </interface>
  <interface name="org.freedesktop.DBus.Introspectable">
    <method name="Introspect">
      <arg name="xml_data" type="s" direction="out"/>
    </method>
  </interface>
  <interface name="org.freedesktop.DBus.Properties">
    <method name="Get">
      <arg name="interface_name" type="s" direction="in"/>
      <arg name="property_name" type="s" direction="in"/>
      <arg name="value" type="v" direction="out"/>
    </method>
    <method name="GetAll">
      <arg name="interface_name" type="s" direction="in"/>
      <arg name="props" type="a{sv}" direction="out"/>
    </method>
    <method name="Set">
      <arg name="interface_name" type="s" direction="in"/>
      <arg name="property_name" type="s" direction="in"/>
      <arg name="value" type="v" direction="in"/>
    </method>
    <signal name="PropertiesChanged">
      <arg name="interface_name" type="s"/>
      <arg name="changed_properties" type="a{sv}"/>
      <arg name="invalidated_properties" type="as"/>
    </signal>
  </interface>
`

// objectXML is the introspection document of an object implementing iface,
// with child nodes.
func objectXML(iface string, children []string) string {
	var b strings.Builder
	b.WriteString("<!DOCTYPE node PUBLIC \"-//freedesktop//DTD D-BUS Object Introspection 1.0//EN\"\n \"http://www.freedesktop.org/standards/dbus/1.0/introspect.dtd\">\n<node>\n")
	b.WriteString(standardInterfacesXML)
	b.WriteString("  ")
	b.WriteString(interfaceXML(iface))
	b.WriteString("\n")
	for _, c := range children {
		fmt.Fprintf(&b, "  <node name=%q/>\n", c)
	}
	b.WriteString("</node>\n")
	return b.String()
}

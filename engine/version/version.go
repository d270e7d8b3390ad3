// Package version holds the program version, set at link time with
// -ldflags "-X github.com/pme2go/pme2go-backup/engine/version.Version=…".
package version

// Version is the program version.
var Version = "0.1.0-dev"

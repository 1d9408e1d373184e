// Package version holds the version both binaries report, set at build
// time with -ldflags "-X github.com/tetherhq/tether/internal/version.Version=…".
package version

// Version is the release version, or "dev" for a plain go build.
var Version = "dev"

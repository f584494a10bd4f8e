// Package version holds the build's version, stamped by the Makefile:
//
//	go build -ldflags "-X palisade.dev/palisade/cmd/internal/version.Version=$(git describe --always --dirty)"
package version

import "runtime/debug"

// Version is the release or `git describe` of the build; "dev" when not stamped.
var Version = "dev"

// Info describes the running binary.
type Info struct {
	Version   string `json:"version"`
	GoVersion string `json:"goVersion"`
	Revision  string `json:"revision,omitempty"`
}

// Get returns the binary's version information.
func Get() Info {
	i := Info{Version: Version}
	if bi, ok := debug.ReadBuildInfo(); ok {
		i.GoVersion = bi.GoVersion
		for _, s := range bi.Settings {
			if s.Key == "vcs.revision" {
				i.Revision = s.Value
			}
		}
	}
	return i
}

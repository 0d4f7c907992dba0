// Package buildinfo knows which berth this is. Version and Commit are set at
// link time (-ldflags "-X ...") by the Makefile; a plain `go build` reports
// "dev" and whatever the Go toolchain recorded.
package buildinfo

import (
	"runtime"
	"runtime/debug"
)

// Set with -ldflags "-X github.com/berth-ci/berth/internal/buildinfo.Version=...".
var (
	Version   = "dev"
	Commit    = ""
	BuildTime = ""
)

// Info describes the running binary.
type Info struct {
	Version       string `json:"version"`
	Commit        string `json:"commit"`
	BuildTime     string `json:"buildTime,omitempty"`
	GoVersion     string `json:"goVersion"`
	SchemaVersion int    `json:"schemaVersion,omitempty"`
}

// Get returns the build's Info.
func Get() Info {
	i := Info{Version: Version, Commit: Commit, BuildTime: BuildTime, GoVersion: runtime.Version()}
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, s := range bi.Settings {
			switch s.Key {
			case "vcs.revision":
				if i.Commit == "" {
					i.Commit = s.Value
				}
			case "vcs.time":
				if i.BuildTime == "" {
					i.BuildTime = s.Value
				}
			}
		}
		if i.Version == "dev" && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
			i.Version = bi.Main.Version
		}
	}
	if i.Commit == "" {
		i.Commit = "unknown"
	}
	return i
}

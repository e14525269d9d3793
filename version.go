package main

import (
	"cmp"
	"runtime/debug"
)

// version and revision are set when building a release, with
// -ldflags "-X main.version=1.2.0 -X main.revision=$(git rev-parse HEAD)"
// (scripts/release and the Dockerfile do). The linker is the only writer:
// they are the one exception to "no package state", as -X sets only
// variables. Empty, the build information Go records is used.
var (
	version  string
	revision string
)

// baseVersion is the version of a build that says nothing else: a build
// from a source tree without the linker flags or a module version.
const baseVersion = "0.1.0"

// buildInfo is what -version prints, build_info exposes and GET / shows.
type buildInfo struct {
	Version   string `json:"version"`
	Revision  string `json:"revision"`
	GoVersion string `json:"go_version"`
}

// readBuildInfo resolves the build's version, revision and Go version: the
// linker flags first, then what the Go toolchain recorded (a module
// version from go install, the VCS revision of a build in a git checkout).
func readBuildInfo() buildInfo {
	b := buildInfo{Version: version, Revision: revision}
	bi, ok := debug.ReadBuildInfo()
	if ok {
		b.GoVersion = bi.GoVersion
		if b.Version == "" && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
			b.Version = bi.Main.Version
		}
		for _, s := range bi.Settings {
			if s.Key == "vcs.revision" && b.Revision == "" {
				b.Revision = s.Value
			}
		}
	}
	b.Version = cmp.Or(b.Version, baseVersion)
	b.Revision = cmp.Or(b.Revision, "unknown")
	b.GoVersion = cmp.Or(b.GoVersion, "unknown")
	return b
}

// String is the line -version prints.
func (b buildInfo) String() string {
	return "incidents " + b.Version + " (revision " + b.Revision + ", " + b.GoVersion + ")"
}

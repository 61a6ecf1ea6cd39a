package main

import (
	_ "embed"
	"runtime"
	"runtime/debug"
	"strings"

	"fwproxy/metrics"
)

// version and commit are set by `make build`:
//
//	-ldflags "-X main.version=$(git describe --tags --always --dirty) -X main.commit=$(git rev-parse HEAD)"
//
// Empty when built otherwise; buildInfo then falls back.
var (
	version string
	commit  string
)

// archiveVersion is "$Format:…$" in a git checkout; `git archive` replaces
// it with "DESCRIBE HASH" (export-subst in .gitattributes), so a build from
// a release tarball names its version too.
//
//go:embed archive-version.txt
var archiveVersion string

// buildInfo says what this binary is, from the best source there is: the
// link-time variables, then a source archive's substituted file, then the
// VCS stamp the go command records (`go build` in a checkout), then the
// module version (`go install fwproxy@v…`); else "devel".
func buildInfo() metrics.BuildInfo {
	b := metrics.BuildInfo{Version: version, Commit: commit, GoVersion: runtime.Version()}
	if b.Version == "" {
		if f := strings.Fields(archiveVersion); len(f) == 2 && !strings.HasPrefix(f[0], "$Format") {
			b.Version, b.Commit = f[0], f[1]
		}
	}
	if bi, ok := debug.ReadBuildInfo(); ok && b.Version == "" {
		var modified bool
		for _, s := range bi.Settings {
			switch s.Key {
			case "vcs.revision":
				b.Commit = s.Value
			case "vcs.modified":
				modified = s.Value == "true"
			}
		}
		switch {
		case bi.Main.Version != "" && bi.Main.Version != "(devel)":
			b.Version = bi.Main.Version
		case b.Commit != "":
			b.Version = "devel-" + b.Commit[:min(12, len(b.Commit))]
			if modified {
				b.Version += "-dirty"
			}
		}
	}
	if b.Version == "" {
		b.Version = "devel"
	}
	if b.Commit == "" {
		b.Commit = "unknown"
	}
	return b
}

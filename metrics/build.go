package metrics

import (
	"runtime"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
)

// BuildInfo names the running binary, as `fwproxy -version` prints it.
type BuildInfo struct {
	Version string // "v1.2.0-3-gabcdef0", or "devel"
	Commit  string // full or abbreviated hash, or "unknown"
	// GoVersion defaults to the running binary's runtime.Version().
	GoVersion string
}

// registerBuildInfo exports fwproxy_build_info: always 1, the labels say
// what is running, so a dashboard can show a rollout.
func registerBuildInfo(reg prometheus.Registerer, b BuildInfo) {
	if b.Version == "" {
		b.Version = "devel"
	}
	if b.Commit == "" {
		b.Commit = "unknown"
	}
	if b.GoVersion == "" {
		b.GoVersion = runtime.Version()
	}
	promauto.With(reg).NewGaugeVec(prometheus.GaugeOpts{
		Namespace: Namespace,
		Name:      "build_info",
		Help:      "Always 1; labels name the fwproxy version, its commit and the Go version it was built with.",
	}, []string{"version", "commit", "goversion"}).WithLabelValues(b.Version, b.Commit, b.GoVersion).Set(1)
}

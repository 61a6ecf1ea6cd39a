// Package metrics owns fwproxy's Prometheus registry: it creates every
// series on an injected registerer, implements the observer interfaces the
// other packages declare, and serves /metrics, /healthz and /readyz (with
// optional basic authentication); rules/ and dashboard.json describe the
// series for Prometheus and Grafana.
//
// It holds no globals and registers nothing on the default registry, so a
// test can build as many independent sets as it likes.
package metrics

import (
	"runtime"
	"runtime/debug"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promauto"
)

// Namespace prefixes every fwproxy series.
const Namespace = "fwproxy"

// LatencyBuckets are the one bucket set for latencies, in seconds: from
// 100 µs (a loopback dial) to 10 s (the default time limits).
var LatencyBuckets = []float64{.0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10}

// NewRegistry returns a registry with the Go runtime and process collectors
// and fwproxy_build_info.
func NewRegistry(version string) *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	)
	if version == "" {
		version = moduleVersion()
	}
	promauto.With(reg).NewGaugeVec(prometheus.GaugeOpts{
		Namespace: Namespace,
		Name:      "build_info",
		Help:      "Always 1; labels name the fwproxy version and the Go version it was built with.",
	}, []string{"version", "goversion"}).WithLabelValues(version, runtime.Version()).Set(1)
	return reg
}

func moduleVersion() string {
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, s := range bi.Settings {
			if s.Key == "vcs.revision" && len(s.Value) >= 12 {
				return s.Value[:12]
			}
		}
		if bi.Main.Version != "" {
			return bi.Main.Version
		}
	}
	return "unknown"
}

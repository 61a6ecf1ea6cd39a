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
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

// Namespace prefixes every fwproxy series.
const Namespace = "fwproxy"

// LatencyBuckets are the one bucket set for latencies, in seconds: from
// 100 µs (a loopback dial) to 10 s (the default time limits).
var LatencyBuckets = []float64{.0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10}

// NewRegistry returns a registry with the Go runtime and process collectors
// and fwproxy_build_info (build.go).
func NewRegistry(build BuildInfo) *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	)
	registerBuildInfo(reg, build)
	return reg
}

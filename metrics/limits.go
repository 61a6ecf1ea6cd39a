package metrics

import (
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
)

// Limits are the configured caps, exported as gauges so that alerting rules
// compare usage with the cap of the very process they scrape instead of a
// number copied into the rules. 0 means no cap, as in the configuration.
type Limits struct {
	// MaxSessions caps concurrent client connections.
	MaxSessions int
	// MaxLeases caps the lease table; MaxLeasesPerClient one client IP's
	// share of it.
	MaxLeases, MaxLeasesPerClient int
	// MaxBufferedDatagrams and MaxBufferedBytes cap one lease's linger
	// buffer; MaxBufferedBytesTotal caps all of them together.
	MaxBufferedDatagrams  int
	MaxBufferedBytes      int
	MaxBufferedBytesTotal int64
	// PortRangeSize is the number of external UDP ports leases may use.
	PortRangeSize int
}

// NewLimits exports l on reg as fwproxy_limit_* gauges; the returned func
// sets them again, for a reload that changes the limits.
func NewLimits(reg prometheus.Registerer, l Limits) func(Limits) {
	f := promauto.With(reg)
	gauge := func(name, help string) prometheus.Gauge {
		return f.NewGauge(prometheus.GaugeOpts{Namespace: Namespace, Subsystem: "limit", Name: name, Help: help})
	}
	sessions := gauge("sessions", "Configured cap on concurrent client connections (max_sessions).")
	leases := gauge("leases", "Configured cap on leases in the table (leases.max_leases); 0: no cap.")
	perClient := gauge("leases_per_client", "Configured cap on leases per client IP (leases.max_leases_per_client); 0: no cap.")
	datagrams := gauge("lease_buffered_datagrams", "Configured cap on datagrams one lingering lease buffers (leases.max_buffered_datagrams).")
	bytes := gauge("lease_buffered_bytes", "Configured cap on bytes one lingering lease buffers (leases.max_buffered_bytes).")
	total := gauge("buffered_bytes", "Configured cap on bytes all leases buffer together (leases.max_buffered_bytes_total).")
	ports := gauge("udp_ports", "Number of external UDP ports in udp_ports, the range leases take their ports from.")
	set := func(l Limits) {
		sessions.Set(float64(l.MaxSessions))
		leases.Set(float64(l.MaxLeases))
		perClient.Set(float64(l.MaxLeasesPerClient))
		datagrams.Set(float64(l.MaxBufferedDatagrams))
		bytes.Set(float64(l.MaxBufferedBytes))
		total.Set(float64(l.MaxBufferedBytesTotal))
		ports.Set(float64(l.PortRangeSize))
	}
	set(l)
	return set
}

package metrics

import (
	"encoding/json"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"

	"fwproxy/leases"
)

// maxEnum bounds the lease enums' values; each enum is far smaller.
const maxEnum = 32

// Leases holds the lease manager's counters; it implements leases.Observer
// with series resolved at construction, so reporting never looks up a label.
type Leases struct {
	events        [maxEnum]prometheus.Counter
	datagrams     [maxEnum][maxEnum]prometheus.Counter
	bytes         [maxEnum][maxEnum]prometheus.Counter
	acquireFailed [maxEnum]prometheus.Counter
}

var _ leases.Observer = (*Leases)(nil)

// NewLeases creates the lease counters on reg, and a collector that reads
// the table's gauges from stats at every scrape, so they cannot drift from
// the table.
func NewLeases(reg prometheus.Registerer, stats func() leases.Stats) *Leases {
	f := promauto.With(reg)
	const sub = "leases"
	events := f.NewCounterVec(prometheus.CounterOpts{
		Namespace: Namespace, Subsystem: sub, Name: "events_total",
		Help: "Lease transitions by kind (acquire, reclaim, handover, join, release, expire, close, evict).",
	}, []string{"event"})
	datagrams := f.NewCounterVec(prometheus.CounterOpts{
		Namespace: Namespace, Subsystem: sub, Name: "datagrams_total",
		Help: "Datagrams received on external lease sockets by outcome (delivered, buffered, flushed, dropped) and drop reason; reason own_socket also counts datagrams refused because they were addressed to one of the proxy's own sockets.",
	}, []string{"outcome", "reason"})
	bytes := f.NewCounterVec(prometheus.CounterOpts{
		Namespace: Namespace, Subsystem: sub, Name: "payload_bytes_total",
		Help: "Payload bytes of the datagrams in fwproxy_leases_datagrams_total.",
	}, []string{"outcome", "reason"})
	failed := f.NewCounterVec(prometheus.CounterOpts{
		Namespace: Namespace, Subsystem: sub, Name: "acquire_failures_total",
		Help: "Lease acquisitions refused, by reason.",
	}, []string{"reason"})

	m := &Leases{}
	for e := leases.Event(1); e < maxEnum && e.String() != "unknown"; e++ {
		m.events[e] = events.WithLabelValues(e.String())
	}
	for o := leases.Outcome(1); o < maxEnum && o.String() != "unknown"; o++ {
		for r := leases.DropReason(0); r < maxEnum && r.String() != "unknown"; r++ {
			if (o == leases.OutcomeDropped) != (r != leases.ReasonNone) {
				continue // only drops have a reason
			}
			m.datagrams[o][r] = datagrams.WithLabelValues(o.String(), r.String())
			m.bytes[o][r] = bytes.WithLabelValues(o.String(), r.String())
		}
	}
	for r := leases.FailReason(1); r < maxEnum && r.String() != "unknown"; r++ {
		m.acquireFailed[r] = failed.WithLabelValues(r.String())
	}
	if stats != nil {
		reg.MustRegister(newLeaseTable(stats))
	}
	return m
}

// LeaseTable is the scrape-time collector of the table's gauges (leases by
// state, buffered datagrams and bytes), for when the observer had to exist
// before the table: register it once the manager is built.
func LeaseTable(stats func() leases.Stats) prometheus.Collector {
	return newLeaseTable(stats)
}

// LeaseEvent implements leases.Observer.
func (m *Leases) LeaseEvent(e leases.Event) {
	if int(e) < maxEnum && m.events[e] != nil {
		m.events[e].Inc()
	}
}

// Datagrams implements leases.Observer.
func (m *Leases) Datagrams(o leases.Outcome, r leases.DropReason, n, bytes int) {
	if int(o) >= maxEnum || int(r) >= maxEnum || m.datagrams[o][r] == nil {
		return
	}
	m.datagrams[o][r].Add(float64(n))
	m.bytes[o][r].Add(float64(bytes))
}

// AcquireFailed implements leases.Observer.
func (m *Leases) AcquireFailed(r leases.FailReason) {
	if int(r) < maxEnum && m.acquireFailed[r] != nil {
		m.acquireFailed[r].Inc()
	}
}

// leaseTable is the scrape-time collector of the lease table's gauges.
type leaseTable struct {
	stats                               func() leases.Stats
	leases, bufferedDatagrams, buffered *prometheus.Desc
}

func newLeaseTable(stats func() leases.Stats) *leaseTable {
	return &leaseTable{
		stats: stats,
		leases: prometheus.NewDesc(prometheus.BuildFQName(Namespace, "leases", "current"),
			"Leases in the table by state (active: held; lingering: released, buffering; closing).", []string{"state"}, nil),
		bufferedDatagrams: prometheus.NewDesc(prometheus.BuildFQName(Namespace, "leases", "buffered_datagrams"),
			"Datagrams held in linger buffers.", nil, nil),
		buffered: prometheus.NewDesc(prometheus.BuildFQName(Namespace, "leases", "buffered_bytes"),
			"Bytes charged for linger buffers: payload plus a fixed per-datagram overhead, as the buffer byte caps count them.", nil, nil),
	}
}

func (c *leaseTable) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.leases
	ch <- c.bufferedDatagrams
	ch <- c.buffered
}

func (c *leaseTable) Collect(ch chan<- prometheus.Metric) {
	s := c.stats()
	ch <- prometheus.MustNewConstMetric(c.leases, prometheus.GaugeValue, float64(s.Active), "active")
	ch <- prometheus.MustNewConstMetric(c.leases, prometheus.GaugeValue, float64(s.Lingering), "lingering")
	ch <- prometheus.MustNewConstMetric(c.leases, prometheus.GaugeValue, float64(s.Closing), "closing")
	ch <- prometheus.MustNewConstMetric(c.bufferedDatagrams, prometheus.GaugeValue, float64(s.BufferedDatagrams))
	ch <- prometheus.MustNewConstMetric(c.buffered, prometheus.GaugeValue, float64(s.BufferedBytes))
}

// leaseJSON is one row of /debug/leases.
type leaseJSON struct {
	Client            string    `json:"client"`
	User              string    `json:"user,omitempty"`
	ClientPort        uint16    `json:"client_port"`
	External          string    `json:"external"`
	State             string    `json:"state"`
	Associations      int       `json:"associations"`
	Announced         int       `json:"announced"`
	BufferedDatagrams int       `json:"buffered_datagrams"`
	BufferedBytes     int       `json:"buffered_bytes"`
	Peers             int       `json:"peers"`
	AgeSeconds        float64   `json:"age_seconds"`
	LingerDeadline    time.Time `json:"linger_deadline,omitzero"`
}

// LeasesHandler serves the lease table as JSON, for /debug/leases. It shows
// client addresses, so it belongs on the metrics listener only.
func LeasesHandler(snapshot func() []leases.LeaseInfo) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		rows := []leaseJSON{}
		for _, l := range snapshot() {
			rows = append(rows, leaseJSON{
				Client: l.Key.Client.String(), User: l.Key.User, ClientPort: l.Key.Port,
				External: l.LocalAddr.String(), State: l.State.String(),
				Associations: l.Associations, Announced: l.Announced,
				BufferedDatagrams: l.BufferedDatagrams, BufferedBytes: l.BufferedBytes,
				Peers: l.Peers, AgeSeconds: l.Age.Seconds(), LingerDeadline: l.LingerDeadline,
			})
		}
		w.Header().Set("Content-Type", "application/json")
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		enc.Encode(rows)
	})
}

package metrics

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"

	"fwproxy/proxy"
)

// Socks holds the SOCKS server's series; it implements proxy.Observer.
// Every failure series exists from construction, at 0.
type Socks struct {
	rejected          *prometheus.CounterVec
	refused           *prometheus.CounterVec
	sessionsActive    prometheus.Gauge
	handshakeFailures *prometheus.CounterVec
	auth              *prometheus.CounterVec
	authRateLimited   prometheus.Counter
	requests          *prometheus.CounterVec
	handshakeSeconds  prometheus.Histogram
	dialSeconds       prometheus.Histogram
	bytesUp           prometheus.Counter
	bytesDown         prometheus.Counter
	associations      prometheus.Gauge
	binds             prometheus.Gauge
	udpDatagrams      *prometheus.CounterVec
	udpBytes          *prometheus.CounterVec
	connectExpects    *prometheus.CounterVec
}

var _ proxy.Observer = (*Socks)(nil)

// NewSocks creates the SOCKS series on reg.
func NewSocks(reg prometheus.Registerer) *Socks {
	f := promauto.With(reg)
	const sub = "socks"
	relayed := f.NewCounterVec(prometheus.CounterOpts{
		Namespace: Namespace, Subsystem: "tcp", Name: "relayed_bytes_total",
		Help: "Bytes relayed on CONNECT and BIND sessions, by direction.",
	}, []string{"direction"})
	auth := f.NewCounterVec(prometheus.CounterOpts{
		Namespace: Namespace, Subsystem: sub, Name: "authentications_total",
		Help: "Authentications by method and result (success, failure, rate_limited: refused without a password check).",
	}, []string{"method", "result"})
	// Username/password outcomes exist from the start, so that increase()
	// sees the first failure.
	for _, result := range []string{"success", "failure"} {
		auth.WithLabelValues("username_password", result)
	}
	handshakeFailures := f.NewCounterVec(prometheus.CounterOpts{
		Namespace: Namespace, Subsystem: sub, Name: "handshake_failures_total",
		Help: "Sessions that ended before their request was answered normally, by reason.",
	}, []string{"reason"})
	handshakeFailures.WithLabelValues("auth_busy")
	m := &Socks{
		rejected: f.NewCounterVec(prometheus.CounterOpts{
			Namespace: Namespace, Subsystem: sub, Name: "connections_rejected_total",
			Help: "Client connections closed before the handshake, by reason (client_not_allowed, session_limit, client_session_limit, proxy_header_missing, proxy_header_invalid, proxy_header_untrusted).",
		}, []string{"reason"}),
		refused: f.NewCounterVec(prometheus.CounterOpts{
			Namespace: Namespace, Subsystem: sub, Name: "destinations_refused_total",
			Help: "CONNECT and BIND destinations, addresses of requested names and BIND peers refused, by reason.",
		}, []string{"reason"}),
		sessionsActive: f.NewGauge(prometheus.GaugeOpts{
			Namespace: Namespace, Subsystem: sub, Name: "sessions_active",
			Help: "Client connections being served.",
		}),
		handshakeFailures: handshakeFailures,
		auth:              auth,
		authRateLimited:   auth.WithLabelValues("username_password", "rate_limited"),
		requests: f.NewCounterVec(prometheus.CounterOpts{
			Namespace: Namespace, Subsystem: sub, Name: "requests_total",
			Help: "Answered SOCKS requests by command and reply code.",
		}, []string{"command", "reply"}),
		handshakeSeconds: f.NewHistogram(prometheus.HistogramOpts{
			Namespace: Namespace, Subsystem: sub, Name: "handshake_duration_seconds",
			Help:    "Time from accept until the request was read.",
			Buckets: LatencyBuckets,
		}),
		dialSeconds: f.NewHistogram(prometheus.HistogramOpts{
			Namespace: Namespace, Subsystem: sub, Name: "dial_duration_seconds",
			Help:    "Time to resolve and connect to a CONNECT destination.",
			Buckets: LatencyBuckets,
		}),
		bytesUp:   relayed.WithLabelValues("client_to_target"),
		bytesDown: relayed.WithLabelValues("target_to_client"),
		associations: f.NewGauge(prometheus.GaugeOpts{
			Namespace: Namespace, Subsystem: "udp", Name: "associations_active",
			Help: "Live UDP associations (firewall clients' remote binds).",
		}),
		binds: f.NewGauge(prometheus.GaugeOpts{
			Namespace: Namespace, Subsystem: sub, Name: "binds_active",
			Help: "BIND sessions waiting for or relaying their incoming connection.",
		}),
		udpDatagrams: f.NewCounterVec(prometheus.CounterOpts{
			Namespace: Namespace, Subsystem: "udp", Name: "datagrams_total",
			Help: "Datagrams at UDP associations by direction and outcome (relayed or a drop reason).",
		}, []string{"direction", "outcome"}),
		udpBytes: f.NewCounterVec(prometheus.CounterOpts{
			Namespace: Namespace, Subsystem: "udp", Name: "payload_bytes_total",
			Help: "Payload bytes of the datagrams in fwproxy_udp_datagrams_total.",
		}, []string{"direction", "outcome"}),
	}
	m.connectExpects = f.NewCounterVec(prometheus.CounterOpts{
		Namespace: Namespace, Subsystem: sub, Name: "connect_expectations_total",
		Help: "CONNECTs a filter expected (a protocol redirect), by outcome: expected, used, expired, or refused (refused_client_limit, refused_table_full, refused_not_allowed).",
	}, []string{"outcome"})
	for _, o := range proxy.ConnectExpectOutcomes() {
		m.connectExpects.WithLabelValues(o)
	}
	m.initSeries()
	for _, r := range proxy.RefusalReasons() {
		m.refused.WithLabelValues(r)
	}
	return m
}

// initSeries creates every failure series at 0, so that increase() sees
// the first event too (a series that appears at 1 has no earlier sample).
// The datagram series need nothing here: the server asks for every pair
// through UDPCounters when it is built.
func (m *Socks) initSeries() {
	for _, r := range proxy.RejectReasons() {
		m.rejected.WithLabelValues(r)
	}
	for _, r := range proxy.HandshakeFailureReasons() {
		m.handshakeFailures.WithLabelValues(r)
	}
	for _, method := range proxy.AuthMethods() {
		m.auth.WithLabelValues(method, "success")
		m.auth.WithLabelValues(method, "failure")
	}
	for _, c := range proxy.Commands() {
		for _, r := range proxy.Replies() {
			m.requests.WithLabelValues(c, r)
		}
	}
}

var _ proxy.Observer = (*Socks)(nil)

// ConnectExpectation implements proxy.Observer.
func (m *Socks) ConnectExpectation(outcome string) { m.connectExpects.WithLabelValues(outcome).Inc() }

// DestinationRefused implements proxy.Observer.
func (m *Socks) DestinationRefused(reason string) { m.refused.WithLabelValues(reason).Inc() }

// ActiveChanged implements proxy.Observer.
func (m *Socks) ActiveChanged(command string, delta int) {
	switch command {
	case "udp_associate":
		m.associations.Add(float64(delta))
	case "bind":
		m.binds.Add(float64(delta))
	}
}

// UDPCounters implements proxy.Observer: the series are created here, once,
// and the datagram path only adds to them.
func (m *Socks) UDPCounters(direction, outcome string) (datagrams, bytes interface{ Add(float64) }) {
	return m.udpDatagrams.WithLabelValues(direction, outcome), m.udpBytes.WithLabelValues(direction, outcome)
}

// ConnectionRejected implements proxy.Observer.
func (m *Socks) ConnectionRejected(reason string) { m.rejected.WithLabelValues(reason).Inc() }

// SessionsChanged implements proxy.Observer.
func (m *Socks) SessionsChanged(delta int) { m.sessionsActive.Add(float64(delta)) }

// HandshakeFailed implements proxy.Observer.
func (m *Socks) HandshakeFailed(reason string) { m.handshakeFailures.WithLabelValues(reason).Inc() }

// Authenticated implements proxy.Observer.
func (m *Socks) Authenticated(method string, ok bool) {
	result := "failure"
	if ok {
		result = "success"
	}
	m.auth.WithLabelValues(method, result).Inc()
}

// LoginRateLimited implements proxy.Observer.
func (m *Socks) LoginRateLimited() { m.authRateLimited.Inc() }

// Request implements proxy.Observer.
func (m *Socks) Request(command, reply string, handshake, dial time.Duration) {
	m.requests.WithLabelValues(command, reply).Inc()
	m.handshakeSeconds.Observe(handshake.Seconds())
	if dial > 0 {
		m.dialSeconds.Observe(dial.Seconds())
	}
}

// Relayed implements proxy.Observer.
func (m *Socks) Relayed(direction string, n int) {
	if direction == "client_to_target" {
		m.bytesUp.Add(float64(n))
	} else {
		m.bytesDown.Add(float64(n))
	}
}

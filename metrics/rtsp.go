package metrics

import (
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"

	"fwproxy/rtspfilter"
)

// RTSP holds the RTSP filter's series; it implements rtspfilter.Observer
// with every series resolved at construction.
type RTSP struct {
	requests     [rtspfilter.NumDirections][rtspfilter.NumMethods]prometheus.Counter
	responses    [rtspfilter.NumDirections][rtspfilter.NumStatusClasses]prometheus.Counter
	interleaved  [rtspfilter.NumDirections]prometheus.Counter
	setups       [rtspfilter.NumSetupModes][rtspfilter.NumSetupOutcomes]prometheus.Counter
	transports   [rtspfilter.NumTransportActions]prometheus.Counter
	destinations prometheus.Counter
	problems     [rtspfilter.NumDirections][rtspfilter.NumProblems]prometheus.Counter
	connections  prometheus.Gauge
}

var _ rtspfilter.Observer = (*RTSP)(nil)

// NewRTSP creates the RTSP filter's series on reg.
func NewRTSP(reg prometheus.Registerer) *RTSP {
	f := promauto.With(reg)
	const sub = "rtsp"
	requests := f.NewCounterVec(prometheus.CounterOpts{
		Namespace: Namespace, Subsystem: sub, Name: "requests_total",
		Help: "RTSP requests seen, by direction and method (other: a method RTSP 1.0 and 2.0 do not define).",
	}, []string{"direction", "method"})
	responses := f.NewCounterVec(prometheus.CounterOpts{
		Namespace: Namespace, Subsystem: sub, Name: "responses_total",
		Help: "RTSP responses seen, by direction and status class.",
	}, []string{"direction", "class"})
	interleaved := f.NewCounterVec(prometheus.CounterOpts{
		Namespace: Namespace, Subsystem: sub, Name: "interleaved_frames_total",
		Help: "Interleaved binary frames ($) relayed on RTSP control connections, by direction.",
	}, []string{"direction"})
	setups := f.NewCounterVec(prometheus.CounterOpts{
		Namespace: Namespace, Subsystem: sub, Name: "setups_total",
		Help: "RTSP SETUPs by how their UDP reaches the client (association, announced, unfiltered: TCP or multicast, none: refused) and outcome (accepted, server_refused, proxy_refused: answered 461 by the proxy, unanswered).",
	}, []string{"mode", "outcome"})
	transports := f.NewCounterVec(prometheus.CounterOpts{
		Namespace: Namespace, Subsystem: sub, Name: "transports_total",
		Help: "Transport specs of SETUP requests: rewritten (UDP leased), passed (TCP interleaved, multicast), dropped (not leasable; see problems).",
	}, []string{"action"})
	problems := f.NewCounterVec(prometheus.CounterOpts{
		Namespace: Namespace, Subsystem: sub, Name: "problems_total",
		Help: "What the RTSP filter could not handle or refused, by direction and problem.",
	}, []string{"direction", "problem"})
	m := &RTSP{
		destinations: f.NewCounter(prometheus.CounterOpts{
			Namespace: Namespace, Subsystem: sub, Name: "destination_rewrites_total",
			Help: "SETUP destination parameters (and RTSP 2.0 dest_addr naming another host than the client) rewritten to the proxy's external address, so that a server never sends to a third party.",
		}),
		connections: f.NewGauge(prometheus.GaugeOpts{
			Namespace: Namespace, Subsystem: sub, Name: "connections_active",
			Help: "Control connections running through the RTSP filter.",
		}),
	}
	for d := range rtspfilter.NumDirections {
		for k := range rtspfilter.NumMethods {
			m.requests[d][k] = requests.WithLabelValues(d.String(), k.String())
		}
		for k := range rtspfilter.NumStatusClasses {
			m.responses[d][k] = responses.WithLabelValues(d.String(), k.String())
		}
		for p := range rtspfilter.NumProblems {
			m.problems[d][p] = problems.WithLabelValues(d.String(), p.String())
		}
		m.interleaved[d] = interleaved.WithLabelValues(d.String())
	}
	for mode := range rtspfilter.NumSetupModes {
		for o := range rtspfilter.NumSetupOutcomes {
			m.setups[mode][o] = setups.WithLabelValues(mode.String(), o.String())
		}
	}
	for a := range rtspfilter.NumTransportActions {
		m.transports[a] = transports.WithLabelValues(a.String())
	}
	return m
}

// Request implements rtspfilter.Observer.
func (m *RTSP) Request(d rtspfilter.Direction, k rtspfilter.Method) {
	if d < rtspfilter.NumDirections && k < rtspfilter.NumMethods {
		m.requests[d][k].Inc()
	}
}

// Response implements rtspfilter.Observer.
func (m *RTSP) Response(d rtspfilter.Direction, c rtspfilter.StatusClass) {
	if d < rtspfilter.NumDirections && c < rtspfilter.NumStatusClasses {
		m.responses[d][c].Inc()
	}
}

// Interleaved implements rtspfilter.Observer.
func (m *RTSP) Interleaved(d rtspfilter.Direction, n int) {
	if d < rtspfilter.NumDirections {
		m.interleaved[d].Add(float64(n))
	}
}

// Setup implements rtspfilter.Observer.
func (m *RTSP) Setup(mode rtspfilter.SetupMode, o rtspfilter.SetupOutcome) {
	if mode < rtspfilter.NumSetupModes && o < rtspfilter.NumSetupOutcomes {
		m.setups[mode][o].Inc()
	}
}

// Transport implements rtspfilter.Observer.
func (m *RTSP) Transport(a rtspfilter.TransportAction) {
	if a < rtspfilter.NumTransportActions {
		m.transports[a].Inc()
	}
}

// DestinationRewritten implements rtspfilter.Observer.
func (m *RTSP) DestinationRewritten() { m.destinations.Inc() }

// Problem implements rtspfilter.Observer.
func (m *RTSP) Problem(d rtspfilter.Direction, p rtspfilter.Problem, _ error) {
	if d < rtspfilter.NumDirections && p < rtspfilter.NumProblems {
		m.problems[d][p].Inc()
	}
}

// ConnectionsChanged implements rtspfilter.Observer.
func (m *RTSP) ConnectionsChanged(delta int) { m.connections.Add(float64(delta)) }

package metrics

import (
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"

	"fwproxy/mmsfilter"
)

// MMS holds the MMS filter's series; it implements mmsfilter.FilterObserver
// with every series resolved at construction, so the per-message path only
// adds to counters it holds.
type MMS struct {
	messages    [mmsfilter.NumDirections][mmsfilter.NumMessageKinds]prometheus.Counter
	transitions [mmsfilter.NumTransitions]prometheus.Counter
	problems    [mmsfilter.NumDirections][mmsfilter.NumProblems]prometheus.Counter
	funnels     [mmsfilter.NumLeaseModes]prometheus.Counter
	logging     [mmsfilter.NumLoggingFields]prometheus.Counter
	sessions    prometheus.Gauge
}

var _ mmsfilter.FilterObserver = (*MMS)(nil)

// NewMMS creates the MMS filter's series on reg.
func NewMMS(reg prometheus.Registerer) *MMS {
	f := promauto.With(reg)
	const sub = "mms"
	messages := f.NewCounterVec(prometheus.CounterOpts{
		Namespace: Namespace, Subsystem: sub, Name: "messages_total",
		Help: "MMS control messages seen, by direction and message name.",
	}, []string{"direction", "message"})
	transitions := f.NewCounterVec(prometheus.CounterOpts{
		Namespace: Namespace, Subsystem: sub, Name: "transitions_total",
		Help: "MMS session transitions (entry_end and stream_change are playlist transitions).",
	}, []string{"transition"})
	problems := f.NewCounterVec(prometheus.CounterOpts{
		Namespace: Namespace, Subsystem: sub, Name: "problems_total",
		Help: "Bytes the filter did not understand (passed through untouched) and funnels it could not rewrite, by direction and problem.",
	}, []string{"direction", "problem"})
	funnels := f.NewCounterVec(prometheus.CounterOpts{
		Namespace: Namespace, Subsystem: sub, Name: "funnel_rewrites_total",
		Help: "UDP funnels by how their external port was leased (association, announced), counted once rewritten; failed: left unchanged, holding no lease.",
	}, []string{"mode"})
	logging := f.NewCounterVec(prometheus.CounterOpts{
		Namespace: Namespace, Subsystem: sub, Name: "logging_rewrites_total",
		Help: "Fields of client Logging messages that named the inside host and were overwritten: address (its IPv4 address, now the external one), computer_name (its host name, now \"-\").",
	}, []string{"field"})
	m := &MMS{
		sessions: f.NewGauge(prometheus.GaugeOpts{
			Namespace: Namespace, Subsystem: sub, Name: "connections_active",
			Help: "Control connections running through the MMS filter.",
		}),
	}
	for d := range mmsfilter.NumDirections {
		for k := range mmsfilter.NumMessageKinds {
			m.messages[d][k] = messages.WithLabelValues(d.String(), k.String())
		}
		for p := range mmsfilter.NumProblems {
			m.problems[d][p] = problems.WithLabelValues(d.String(), p.String())
		}
	}
	for t := range mmsfilter.NumTransitions {
		m.transitions[t] = transitions.WithLabelValues(t.String())
	}
	for mode := range mmsfilter.NumLeaseModes {
		m.funnels[mode] = funnels.WithLabelValues(mode.String())
	}
	for field := range mmsfilter.NumLoggingFields {
		m.logging[field] = logging.WithLabelValues(field.String())
	}
	return m
}

// Message implements mmsfilter.Observer.
func (m *MMS) Message(d mmsfilter.Direction, mid mmsfilter.MID) {
	if d < mmsfilter.NumDirections {
		m.messages[d][mid.Kind()].Inc()
	}
}

// Transition implements mmsfilter.Observer.
func (m *MMS) Transition(t mmsfilter.Transition) {
	if t < mmsfilter.NumTransitions {
		m.transitions[t].Inc()
	}
}

// Problem implements mmsfilter.Observer.
func (m *MMS) Problem(d mmsfilter.Direction, p mmsfilter.Problem, _ error) {
	if d < mmsfilter.NumDirections && p < mmsfilter.NumProblems {
		m.problems[d][p].Inc()
	}
}

// SessionsChanged implements mmsfilter.FilterObserver.
func (m *MMS) SessionsChanged(delta int) { m.sessions.Add(float64(delta)) }

// FunnelLeased implements mmsfilter.FilterObserver.
func (m *MMS) FunnelLeased(mode mmsfilter.LeaseMode) {
	if mode < mmsfilter.NumLeaseModes {
		m.funnels[mode].Inc()
	}
}

// LoggingRewritten implements mmsfilter.FilterObserver.
func (m *MMS) LoggingRewritten(field mmsfilter.LoggingField) {
	if field < mmsfilter.NumLoggingFields {
		m.logging[field].Inc()
	}
}

package main

import (
	"fmt"
	"io"
	"strings"
)

// goal is one of issue 7's and issue 15's targets, checked against a run's figures.
type goal struct {
	text string
	key  string
	// check returns what was measured (for the table) and whether it
	// meets the goal; ok is false when the run lacks what it needs.
	check func(f *figure) (measured string, met, ok bool)
}

// atLeastTimes: fwproxy ≥ k × other.
func atLeastTimes(other system, k float64) func(f *figure) (string, bool, bool) {
	return func(f *figure) (string, bool, bool) {
		q, ok := f.ratio(other)
		return fmt.Sprintf("%.2f× %s", q, other), q >= k, ok
	}
}

// atMostTimes: fwproxy ≤ k × other (latencies).
func atMostTimes(other system, k float64) func(f *figure) (string, bool, bool) {
	return func(f *figure) (string, bool, bool) {
		q, ok := f.ratio(other)
		return fmt.Sprintf("%.2f× %s", q, other), q <= k, ok
	}
}

// fwproxyValue: fwproxy's own value passes test.
func fwproxyValue(unit string, test func(v float64) bool) func(f *figure) (string, bool, bool) {
	return func(f *figure) (string, bool, bool) {
		v := f.value[sysFwproxy]
		return formatValue(v) + " " + unit, test(v), f.has[sysFwproxy]
	}
}

// withFloors adds to check's measured text each floor's own ratio to
// other, when the run has it: how far the floor alone gets against the
// same peer, beside fwproxy (the minimal CONNECT servers: the Go runtime;
// direct and the minimal relay: the machine and one bare UDP hop). A
// target beyond a floor's own ratio is out of reach of its kind.
func withFloors(check func(f *figure) (string, bool, bool), other system, floors ...system) func(f *figure) (string, bool, bool) {
	return func(f *figure) (string, bool, bool) {
		measured, met, ok := check(f)
		var parts []string
		for _, s := range floors {
			if f.has[s] && f.has[other] && f.value[other] != 0 {
				parts = append(parts, fmt.Sprintf("%s %.2f×", s, f.value[s]/f.value[other]))
			}
		}
		if len(parts) > 0 {
			measured += " (" + strings.Join(parts, ", ") + ")"
		}
		return measured, met, ok
	}
}

// aheadOf: fwproxy > other.
func aheadOf(other system) func(f *figure) (string, bool, bool) {
	return func(f *figure) (string, bool, bool) {
		q, ok := f.ratio(other)
		return fmt.Sprintf("%.2f× %s", q, other), q > 1, ok
	}
}

func goals(churnPlayers []int) []goal {
	var g []goal
	for _, c := range []int{1, 16} {
		g = append(g, goal{fmt.Sprintf("CONNECT rate ≥ 3× danted, %d client(s)", c), fmt.Sprintf("connect/%d/rate", c), atLeastTimes(sysDanted, 3)})
	}
	for _, c := range []int{1, 16} {
		// The minimal CONNECT servers' own ratios to microsocks go beside
		// fwproxy's: the part of the gap that is the Go runtime's.
		g = append(g, goal{fmt.Sprintf("CONNECT rate ahead of microsocks, %d client(s)", c), fmt.Sprintf("connect/%d/rate", c),
			withFloors(aheadOf(sysMicrosocks), sysMicrosocks, sysConnectMin, sysConnectMinThreads)})
	}
	g = append(g,
		goal{"streaming, associations: largest zero-loss N ≥ 3× danted", "stream/assoc/maxN",
			withFloors(atLeastTimes(sysDanted, 3), sysDanted, sysDirect, sysRelay, sysRelayPerPlayer)},
		goal{"streaming, associations: CPU per datagram ≤ ⅓ danted", "stream/assoc/cpu",
			withFloors(atMostTimes(sysDanted, 1.0/3), sysDanted, sysRelay, sysRelayPerPlayer)},
		goal{"streaming, associations: CPU per datagram ≤ 2× minimal relay", "stream/assoc/cpu", atMostTimes(sysRelay, 2)},
		goal{"streaming, announced leases: CPU per datagram ≤ 2× minimal relay", "stream/announced/cpu", atMostTimes(sysRelay, 2)},
	)
	for _, s := range []int{1, 4} {
		for _, d := range []byte{'d', 'u'} {
			key := fmt.Sprintf("bulk/%c/%d", d, s)
			g = append(g,
				goal{fmt.Sprintf("bulk %c×%d ≥ 1.5× danted", d, s), key, atLeastTimes(sysDanted, 1.5)},
				goal{fmt.Sprintf("bulk %c×%d ≥ 60%% of direct", d, s), key, atLeastTimes(sysDirect, 0.6)})
		}
	}
	for _, size := range []int{100, 1200} {
		g = append(g,
			goal{fmt.Sprintf("UDP rt/s ≥ 5× danted, 1 association, %d B", size), fmt.Sprintf("udp/1/%d/rate", size), atLeastTimes(sysDanted, 5)},
			goal{fmt.Sprintf("UDP rt/s ≥ 1.5× danted, 16 associations, %d B", size), fmt.Sprintf("udp/16/%d/rate", size), atLeastTimes(sysDanted, 1.5)})
		for _, a := range []int{1, 16} {
			g = append(g, goal{fmt.Sprintf("UDP p99 ≤ ½ danted, %d association(s), %d B", a, size), fmt.Sprintf("udp/%d/%d/p99", a, size), atMostTimes(sysDanted, 0.5)})
		}
	}
	for _, n := range churnPlayers {
		key := fmt.Sprintf("churn/%d", n)
		g = append(g,
			goal{fmt.Sprintf("churn, %d players: 0 datagrams lost", n), key + "/lost", fwproxyValue("lost", func(v float64) bool { return v == 0 })},
			goal{fmt.Sprintf("churn, %d players: ≥ 1,000 rebinds/s", n), key + "/rate", fwproxyValue("rebinds/s", func(v float64) bool { return v >= 1000 })},
			goal{fmt.Sprintf("churn, %d players: p99 rebind < 1 ms", n), key + "/p99", fwproxyValue("µs", func(v float64) bool { return v < 1000 })})
	}
	return append(g,
		goal{"≤ 16 KiB RSS per idle lease at 10,000 leases (lingering)", "rss/10000/per", fwproxyValue("KiB", func(v float64) bool { return v <= 16 })},
		goal{"≤ 16 KiB RSS per lease held by an idle association (at the most measured)", "rss/held/most/per", fwproxyValue("KiB", func(v float64) bool { return v <= 16 })},
	)
}

// writeGoals prints each target with what was measured and whether it is
// met; "not measured" when the run lacks a figure (danted absent, a
// scenario skipped).
func (r *results) writeGoals(w io.Writer, churnPlayers []int) {
	fmt.Fprintln(w, "| target | measured | met |")
	fmt.Fprintln(w, "| --- | --- | --- |")
	for _, g := range goals(churnPlayers) {
		measured, verdict := "—", "not measured"
		if f := r.get(g.key); f != nil {
			if m, met, ok := g.check(f); ok {
				measured, verdict = m, "yes"
				if !met {
					verdict = "**no**"
				}
			}
		}
		fmt.Fprintf(w, "| %s | %s | %s |\n", g.text, measured, verdict)
	}
}

package main

import (
	"fmt"
	"io"
	"math"
	"slices"
	"strings"
)

// system is one thing measured side by side.
type system int

const (
	sysDirect     system = iota // no proxy: the loopback limit
	sysFwproxy                  // fwproxy
	sysDanted                   // Dante's danted
	sysBaseline                 // another fwproxy binary (-baseline), for before/after
	sysMicrosocks               // microsocks: CONNECT and bulk only (it has no UDP)
	sysRelay                    // udprelay-min: one UDP hop and nothing else (streaming only)
	// udprelay-min -per-player: one hop with a socket in and one out per
	// player, as a proxy has them (streaming only).
	sysRelayPerPlayer
	// connect-min -mode netpoll: the net package, a goroutine per
	// connection; CONNECT and bulk only. With sysConnectMinThreads, the
	// Go runtime's floor for a CONNECT proxy.
	sysConnectMin
	sysConnectMinThreads // connect-min -mode threads: blocking system calls, a thread per session
	numSystems
)

var systemNames = [numSystems]string{"direct", "fwproxy", "danted", "baseline", "microsocks", "minimal relay", "minimal relay, per player",
	"minimal CONNECT (netpoll)", "minimal CONNECT (threads)"}

// optionalSystems get columns only when some figure has them; direct,
// fwproxy and danted always do.
var optionalSystems = []system{sysMicrosocks, sysConnectMin, sysConnectMinThreads, sysRelay, sysRelayPerPlayer, sysBaseline}

func (s system) String() string { return systemNames[s] }

// better says which way a figure improves, for the reader of the table.
type better int

const (
	higherIsBetter better = iota
	lowerIsBetter
)

// figure is one row of the result table: one quantity measured on up to
// three systems.
type figure struct {
	key    string // stable identifier, used by the target checks
	name   string // what the row shows
	unit   string
	better better
	value  [numSystems]float64 // the median of runs
	has    [numSystems]bool
	runs   [numSystems][]float64
	// total makes the figure the sum of its runs instead of their median
	// (counts that must be 0 in every run: datagrams lost).
	total bool
}

// set records one run's value for s; the figure shows the median of the
// runs, which a neighbour's burst of load in one run does not move.
func (f *figure) set(s system, v float64) {
	f.runs[s] = append(f.runs[s], v)
	if f.total {
		f.value[s] += v
	} else {
		f.value[s] = median(f.runs[s])
	}
	f.has[s] = true
}

// median of v (the lower middle for an even count); v is not reordered.
func median(v []float64) float64 {
	s := slices.Clone(v)
	slices.Sort(s)
	return s[(len(s)-1)/2]
}

// ratio is fwproxy's value divided by other's; ok is false when either is
// missing or other is 0.
func (f *figure) ratio(other system) (float64, bool) {
	if !f.has[sysFwproxy] || !f.has[other] || f.value[other] == 0 {
		return 0, false
	}
	return f.value[sysFwproxy] / f.value[other], true
}

// results is every figure of a run, in the order measured.
type results struct {
	figs  []*figure
	index map[string]*figure
}

func newResults() *results { return &results{index: make(map[string]*figure)} }

// fig returns the figure for key, creating it with name, unit and better
// on first use.
func (r *results) fig(key, name, unit string, b better) *figure {
	if f, ok := r.index[key]; ok {
		return f
	}
	f := &figure{key: key, name: name, unit: unit, better: b}
	r.figs = append(r.figs, f)
	r.index[key] = f
	return f
}

func (r *results) get(key string) *figure { return r.index[key] }

// writeTable prints the results as a Markdown table: each figure, its value
// per system, and fwproxy's ratio to direct and to danted (fwproxy divided
// by the other, whichever way the figure improves; the arrow says which).
// microsocks, the two minimal CONNECT servers, the two minimal relays and a
// baseline binary, when measured, get their own columns.
func (r *results) writeTable(w io.Writer) {
	var extra []system
	for _, s := range optionalSystems {
		for _, f := range r.figs {
			if f.has[s] {
				extra = append(extra, s)
				break
			}
		}
	}
	shown := append([]system{sysDirect, sysFwproxy, sysDanted}, extra...)
	against := append([]system{sysDirect, sysDanted}, extra...)
	head := "| figure | unit |"
	rule := "| --- | --- |"
	for _, s := range shown {
		head += " " + s.String() + " |"
		rule += " ---: |"
	}
	for _, s := range against {
		head += " fwproxy ÷ " + s.String() + " |"
		rule += " ---: |"
	}
	fmt.Fprintln(w, head)
	fmt.Fprintln(w, rule)
	for _, f := range r.figs {
		arrow := "↑"
		if f.better == lowerIsBetter {
			arrow = "↓"
		}
		cells := []string{f.name, f.unit + " " + arrow}
		for _, s := range shown {
			cells = append(cells, valueCell(f, s))
		}
		for _, s := range against {
			cells = append(cells, ratioCell(f, s))
		}
		fmt.Fprintf(w, "| %s |\n", strings.Join(cells, " | "))
	}
}

func valueCell(f *figure, s system) string {
	if !f.has[s] {
		return "—"
	}
	return formatValue(f.value[s])
}

func ratioCell(f *figure, other system) string {
	q, ok := f.ratio(other)
	if !ok {
		return "—"
	}
	return fmt.Sprintf("%.2f×", q)
}

// formatValue prints about three significant digits without exponents.
func formatValue(v float64) string {
	a := math.Abs(v)
	switch {
	case a == 0:
		return "0"
	case a >= 100:
		return fmt.Sprintf("%.0f", v)
	case a >= 10:
		return fmt.Sprintf("%.1f", v)
	default:
		return fmt.Sprintf("%.2f", v)
	}
}

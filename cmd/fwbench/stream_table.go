package main

import (
	"fmt"
	"io"
	"strings"
	"time"
)

// streamMode is how a system carries the players' streams.
type streamMode int

const (
	modeDirect         streamMode = iota // sender straight to the players: the machine's own limit
	modeRelay                            // through udprelay-min: the cost of one hop
	modeRelayPerPlayer                   // through udprelay-min -per-player: one hop with a proxy's sockets
	modeAssociation                      // SOCKS UDP associations (firewall-client mode)
	modeAnnounced                        // announced-mode leases (MMS control connection)
)

// streamResult is one system at one player count.
type streamResult struct {
	players  int
	sent     int // datagrams sent in the step, warm-up and window
	lost     int // sent but never received
	dups     int
	errors   int // datagrams the sender's kernel refused
	inWindow int // distinct datagrams sent in the window and received
	p50, p99 time.Duration
	// The sender behind its schedule: p50 says whether it kept the rate,
	// p99 how bursty its pacing was.
	lateP50, lateP99 time.Duration
	// firstTry is why the first try of this step failed, when this is the
	// second; "" for a first try.
	firstTry string
	cpu      time.Duration // the server's CPU over the window; hasCPU says whether measured
	hasCPU   bool
	rssKiB   int
}

// verdict says whether the step passed: nothing lost and the added
// latency within bound. A sender that could not keep its own schedule
// (half of its datagrams later than bound) ends the step-up too: what
// follows would measure the sender. A late p99 alone does not: the time
// stamps are taken at the send, so the sender's pacing jitter is not in
// the added latency; it only makes the offered load burstier, as a real
// server's does.
func (r streamResult) verdict(bound time.Duration) (ok bool, why string) {
	switch {
	case r.lost > 0 || r.dups > 0 || r.errors > 0:
		return false, fmt.Sprintf("lost %d, duplicated %d, unsent %d", r.lost, r.dups, r.errors)
	case r.lateP50 > bound:
		return false, fmt.Sprintf("sender behind its schedule (p50 %s late)", r.lateP50.Round(10*time.Microsecond))
	case r.p99 > bound:
		return false, fmt.Sprintf("added p99 %s > %s", r.p99.Round(10*time.Microsecond), bound)
	}
	return true, "ok"
}

// zeroLoss: nothing lost or duplicated.
func (r streamResult) zeroLoss() bool { return r.lost == 0 && r.dups == 0 && r.errors == 0 }

// cpuPerMillion is the server's CPU seconds per million datagrams relayed
// in the window.
func (r streamResult) cpuPerMillion() (float64, bool) {
	if !r.hasCPU || r.inWindow == 0 {
		return 0, false
	}
	return r.cpu.Seconds() / float64(r.inWindow) * 1e6, true
}

// stepsWithin keeps the player counts whose descriptors fit limit: each
// player costs fdsPerPlayer in the driver and in the proxy (which inherit
// the same limit), and reserve stays free for everything else. It
// returns the counts kept and the first one dropped (0: none).
func stepsWithin(steps []int, limit, fdsPerPlayer, reserve int) (kept []int, dropped int) {
	most := (limit - reserve) / fdsPerPlayer
	for _, n := range steps {
		if n > most {
			return kept, n
		}
		kept = append(kept, n)
	}
	return kept, 0
}

// largestN is the largest player count among rs that pass keep; 0 when
// none does.
func largestN(rs []streamResult, keep func(streamResult) bool) int {
	n := 0
	for _, r := range rs {
		if keep(r) {
			n = max(n, r.players)
		}
	}
	return n
}

// at returns the result for n players.
func at(rs []streamResult, n int) (streamResult, bool) {
	for _, r := range rs {
		if r.players == n {
			return r, true
		}
	}
	return streamResult{}, false
}

// streamRun is one system's step-up.
type streamRun struct {
	label   string
	sys     system
	mode    streamMode
	results []streamResult
	stopped string // why the step-up ended before the last count; "" if it did not
}

// writeStreamTable prints every step of every system.
func writeStreamTable(w io.Writer, runs []*streamRun, bound time.Duration) {
	fmt.Fprintln(w, "| system | players | datagrams sent | lost | added latency p50 | p99 | sender late p99 | CPU s per 10⁶ datagrams | RSS MiB | step |")
	fmt.Fprintln(w, "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |")
	for _, run := range runs {
		for _, r := range run.results {
			cpu := "—"
			if v, ok := r.cpuPerMillion(); ok {
				cpu = formatValue(v)
			}
			rss := "—"
			if r.rssKiB > 0 {
				rss = formatValue(float64(r.rssKiB) / 1024)
			}
			ok, why := r.verdict(bound)
			if !ok {
				why = "**" + why + "**"
			}
			if r.firstTry != "" {
				why += " (second try; the first: " + r.firstTry + ")"
			}
			fmt.Fprintf(w, "| %s | %d | %d | %d | %s µs | %s µs | %s µs | %s | %s | %s |\n",
				run.label, r.players, r.sent, r.lost+r.dups+r.errors,
				formatValue(micros(r.p50)), formatValue(micros(r.p99)), formatValue(micros(r.lateP99)), cpu, rss, why)
		}
	}
	var notes, unbeaten []string
	for _, run := range runs {
		switch {
		case run.stopped != "":
			notes = append(notes, fmt.Sprintf("%s: %s", run.label, run.stopped))
		case len(run.results) > 0:
			unbeaten = append(unbeaten, run.label)
		}
	}
	if len(notes) > 0 {
		fmt.Fprintf(w, "\nStep-up ended: %s.\n", strings.Join(notes, "; "))
	}
	if len(unbeaten) > 0 {
		fmt.Fprintf(w, "\nNo failure up to the last count (their largest N is a lower bound): %s.\n", strings.Join(unbeaten, ", "))
	}
}

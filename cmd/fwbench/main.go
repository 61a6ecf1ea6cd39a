// Command fwbench measures fwproxy side by side with direct loopback (no
// proxy: the physical limit) and, when they are installed, Dante's danted
// and microsocks (CONNECT and bulk: it has no UDP), in one run on one
// machine, and prints each figure with fwproxy's ratio to the others.
// Beside microsocks, the minimal CONNECT server connect-min in both its
// modes (the net package; blocking system calls) is the Go runtime's
// floor for CONNECT and bulk: fwproxy ÷ connect-min is fwproxy's own
// code's share of a gap, connect-min ÷ microsocks the runtime's.
// Absolute numbers on a shared machine mean little; the ratios are the
// result.
//
// The streaming scenario steps the number of players up until a datagram
// is lost or the added latency grows too large, through fwproxy's
// associations and announced leases, danted's associations, and the
// minimal relay udprelay-min (the cost of the hop itself; again with
// -per-player, a socket in and one out per player as a proxy has them).
// Each server runs on a core of its own and the driver on the others
// (-stream-pin), so a server's largest N is what one core carries; the
// driver's players are swept by epoll and dated by the kernel's receive
// stamp, cheap enough to outlast the servers on their core.
//
// It starts and stops everything itself: the loopback peers, fwproxy
// (further instances for the memory and streaming scenarios), danted with
// a configuration it writes, microsocks, connect-min and the relay. Every
// load loop is bounded in time and count, and everything stops on error
// and on SIGINT/SIGTERM.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// options are the command line.
type options struct {
	fwproxy    string
	danted     string
	microsocks string
	connectMin string
	relay      string
	baseline   string
	dur        time.Duration
	rounds     int
	only       map[string]bool
	churn      churnConfig
	// churnPlayers are the churn scenario's player counts, one run each.
	churnPlayers []int
	leases       []int
	markdown     string
	stream       streamConfig
}

var scenarios = []string{"connect", "bulk", "udp", "stream", "churn", "memory"}

func parseFlags(args []string, stderr io.Writer) (options, error) {
	fs := flag.NewFlagSet("fwbench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var o options
	fs.StringVar(&o.fwproxy, "fwproxy", "bin/fwproxy", "fwproxy binary `path`")
	fs.StringVar(&o.danted, "danted", "/usr/sbin/danted", "danted binary `path`; skipped when absent or empty")
	fs.StringVar(&o.microsocks, "microsocks", "/usr/bin/microsocks", "microsocks binary `path` (CONNECT and bulk); skipped when absent or empty")
	fs.StringVar(&o.connectMin, "connect-min", "", "connect-min binary `path`, measured in both modes (CONNECT and bulk); skipped when absent or empty")
	fs.StringVar(&o.relay, "relay", "bin/udprelay-min", "udprelay-min binary `path` for the streaming scenario; skipped when absent or empty")
	fs.StringVar(&o.baseline, "baseline", "", "another fwproxy binary `path` to measure beside -fwproxy (before/after a change)")
	fs.DurationVar(&o.dur, "duration", time.Second, "measuring time of each run of a figure on each system")
	fs.IntVar(&o.rounds, "rounds", 3, "runs of each figure per system, interleaved; the table shows the median")
	only := fs.String("only", strings.Join(scenarios, ","), "comma-separated scenarios to run")
	players := fs.String("churn-players", "2,8", "comma-separated player counts of the churn scenario, one run each")
	fs.DurationVar(&o.churn.interval, "churn-interval", time.Millisecond, "sender's gap between datagrams to one player")
	fs.DurationVar(&o.churn.dwell, "churn-dwell", time.Millisecond, "how long a player reads between rebinds")
	leases := fs.String("leases", "1000,10000", "comma-separated idle lease counts for the memory scenario")
	fs.StringVar(&o.markdown, "markdown", "", "also write the report to this `file`")
	streamSteps := fs.String("stream-players", "50,100,200,500,1000,2000,5000,10000,20000", "comma-separated player counts of the streaming scenario, stepped up in order (the open-file limit cuts them)")
	fs.IntVar(&o.stream.bitrate, "stream-bitrate", 1_000_000, "bits per second of each player's stream")
	fs.IntVar(&o.stream.size, "stream-size", 1200, "bytes of each streamed datagram")
	fs.DurationVar(&o.stream.warmup, "stream-warmup", 500*time.Millisecond, "streaming before each step's window")
	fs.DurationVar(&o.stream.window, "stream-window", 2*time.Second, "measuring window of each streaming step")
	fs.DurationVar(&o.stream.bound, "stream-max-p99", 5*time.Millisecond, "added latency p99 that ends the step-up")
	fs.BoolVar(&o.stream.pin, "stream-pin", true, "streaming: run each server on one CPU and the driver on the others, so that a server's largest N is what one core carries (false: all share every CPU)")
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	o.only = make(map[string]bool)
	for s := range strings.SplitSeq(*only, ",") {
		if s = strings.TrimSpace(s); s == "" {
			continue
		}
		if !contains(scenarios, s) {
			return o, fmt.Errorf("unknown scenario %q (want %s)", s, strings.Join(scenarios, ", "))
		}
		o.only[s] = true
	}
	var err error
	if o.leases, err = parseCounts("-leases", *leases, 40000); err != nil {
		return o, err
	}
	if o.churnPlayers, err = parseCounts("-churn-players", *players, 256); err != nil {
		return o, err
	}
	if o.stream.steps, err = parseCounts("-stream-players", *streamSteps, 1<<20); err != nil {
		return o, err
	}
	if o.stream.bitrate <= 0 || o.stream.size < streamHeaderLen || o.stream.size > 65507 ||
		o.stream.window <= 0 || o.stream.warmup < 0 || o.stream.bound <= 0 || o.stream.interval() <= 0 {
		return o, fmt.Errorf("-stream-bitrate, -stream-window and -stream-max-p99 must be positive, -stream-size %d to 65507 bytes", streamHeaderLen)
	}
	if o.dur <= 0 || o.rounds <= 0 || o.churn.interval <= 0 || o.churn.dwell < 0 {
		return o, errors.New("-duration, -rounds and -churn-interval must be positive")
	}
	return o, nil
}

// parseCounts parses "1000,10000": positive counts up to most.
func parseCounts(flagName, list string, most int) ([]int, error) {
	var out []int
	for s := range strings.SplitSeq(list, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(s))
		if err != nil || n <= 0 || n > most {
			return nil, fmt.Errorf("%s: %q: want counts of 1 to %d", flagName, s, most)
		}
		out = append(out, n)
	}
	return out, nil
}

// bitrateText is bits per second as a reader writes them.
func bitrateText(bps int) string {
	switch {
	case bps >= 1_000_000 && bps%1_000 == 0:
		return fmt.Sprintf("%s Mbit/s", formatValue(float64(bps)/1e6))
	case bps >= 1_000:
		return fmt.Sprintf("%s kbit/s", formatValue(float64(bps)/1e3))
	}
	return fmt.Sprintf("%d bit/s", bps)
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// bench is one run: the peers, the systems measured and the results.
type bench struct {
	res     *results
	peers   *peers
	targets []target
	dur     time.Duration
	rounds  int
	log     *slog.Logger
	bin     string // fwproxy binary
	// baselineBin is the -baseline binary ("" none), which the memory
	// scenario measures beside bin.
	baselineBin string
	dir         string // scratch directory for configurations and logs

	// The streaming scenario's step-ups, its latency bound and a note on
	// what cut it short.
	streamRuns  []*streamRun
	streamBound time.Duration
	streamNote  string
	// streamCPUs says where the streaming scenario's servers and driver
	// ran (-stream-pin).
	streamCPUs string
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	o, err := parseFlags(args, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		fmt.Fprintln(stderr, "fwbench:", err)
		return 2
	}
	log := slog.New(slog.NewTextHandler(stderr, nil))
	if err := runBench(ctx, o, log, stdout); err != nil {
		log.Error("fwbench failed", "err", err)
		return 1
	}
	return 0
}

// runBench starts the systems, measures every scenario o selects and
// writes the report. A scenario that fails does not stop the others; the
// error joins every failure.
func runBench(ctx context.Context, o options, log *slog.Logger, stdout io.Writer) error {
	raiseFileLimit(log)
	becomeSubreaper()
	dir, err := os.MkdirTemp("", "fwbench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	pe, err := startPeers()
	if err != nil {
		return fmt.Errorf("start peers: %w", err)
	}
	defer pe.Close()
	b := &bench{res: newResults(), peers: pe, dur: o.dur, rounds: o.rounds, log: log, bin: o.fwproxy, baselineBin: o.baseline, dir: dir}

	sys := &systems{}
	defer sys.stop()
	if err := sys.start(ctx, b, o); err != nil {
		return err
	}
	log.Info("measuring", "fwproxy", sys.fw.addr, "systems", len(b.targets), "duration", o.dur)
	failed := b.runScenarios(ctx, o, steps(ctx, b, o, sys))

	notes := sys.notes
	if sys.dantedNote != "" {
		notes = append([]string{sys.dantedNote}, notes...)
	}
	for _, n := range notes {
		log.Warn(n)
	}
	report := b.report(sys.dantedBin, notes, o)
	io.WriteString(stdout, report)
	if o.markdown != "" {
		if err := os.WriteFile(o.markdown, []byte(report), 0o644); err != nil {
			failed = append(failed, err)
		}
	}
	if ctx.Err() != nil {
		failed = append(failed, ctx.Err())
	}
	return errors.Join(failed...)
}

// systems are the proxies measured against each other, as started.
type systems struct {
	fw        *proc
	danted    *proc // nil when not measured
	dantedBin string
	relayBin  string // "" when not found
	// dantedNote says why danted is not measured; notes, what else is
	// missing.
	dantedNote string
	notes      []string
	stops      []func() // in start order
}

// start runs fwproxy and, where found, danted, microsocks, connect-min
// (both modes) and the baseline fwproxy, and adds each to b's targets.
func (s *systems) start(ctx context.Context, b *bench, o options) error {
	fw, err := startFwproxy(ctx, o.fwproxy, b.dir, fwproxyOptions{})
	if err != nil {
		return err
	}
	s.fw, s.stops = fw, append(s.stops, fw.stop)
	b.targets = []target{{sys: sysDirect}, {sys: sysFwproxy, proxy: fw.addr, server: fw}}
	s.dantedBin = findDanted(o.danted)
	switch {
	case o.danted == "":
		s.dantedNote = "danted not measured (-danted is empty): no ratios to danted"
		b.log.Warn(s.dantedNote)
	case s.dantedBin == "":
		s.dantedNote = fmt.Sprintf("danted not found at %s (make bench-deps installs dante-server): no ratios to danted", o.danted)
		b.log.Warn(s.dantedNote)
	default:
		dt, err := startDanted(ctx, s.dantedBin, b.dir)
		if err != nil {
			return err
		}
		s.danted, s.stops = dt, append(s.stops, dt.stop)
		b.targets = append(b.targets, target{sys: sysDanted, proxy: dt.addr, server: dt})
	}
	switch msBin := findBinary(o.microsocks); {
	case o.microsocks == "":
		s.notes = append(s.notes, "microsocks not measured (-microsocks is empty)")
	case msBin == "":
		s.notes = append(s.notes, fmt.Sprintf("microsocks not found at %s (make bench-deps installs it)", o.microsocks))
	default:
		ms, err := startMicrosocks(ctx, msBin)
		if err != nil {
			return err
		}
		s.stops = append(s.stops, ms.stop)
		b.targets = append(b.targets, target{sys: sysMicrosocks, proxy: ms.addr, tcpOnly: true, server: ms})
	}
	switch cmBin := findBinary(o.connectMin); {
	case o.connectMin == "":
		s.notes = append(s.notes, "minimal CONNECT not measured (-connect-min is empty)")
	case cmBin == "":
		s.notes = append(s.notes, fmt.Sprintf("minimal CONNECT not found at %q (make bench builds bin/connect-min): no ratios to it", o.connectMin))
	default:
		for _, m := range []struct {
			sys  system
			mode string
		}{{sysConnectMin, "netpoll"}, {sysConnectMinThreads, "threads"}} {
			cm, err := startConnectMin(ctx, cmBin, m.mode)
			if err != nil {
				return err
			}
			s.stops = append(s.stops, cm.stop)
			b.targets = append(b.targets, target{sys: m.sys, proxy: cm.addr, tcpOnly: true, server: cm})
		}
	}
	s.relayBin = findBinary(o.relay)
	if s.relayBin == "" {
		s.notes = append(s.notes, fmt.Sprintf("minimal relay not found at %q (make bench builds bin/udprelay-min): no ratios to it", o.relay))
	}
	if o.baseline != "" {
		bl, err := startFwproxy(ctx, o.baseline, b.dir, fwproxyOptions{})
		if err != nil {
			return fmt.Errorf("baseline: %w", err)
		}
		s.stops = append(s.stops, bl.stop)
		b.targets = append(b.targets, target{sys: sysBaseline, proxy: bl.addr, server: bl})
	}
	return nil
}

// stop stops what start started, the last first.
func (s *systems) stop() {
	for i := len(s.stops) - 1; i >= 0; i-- {
		s.stops[i]()
	}
}

// scenario is one measurement; scenario names what -only selects.
type scenario struct {
	scenario string
	name     string
	run      func() error
}

// steps lists every measurement in the order they run; churn goes
// before memory, which is last.
func steps(ctx context.Context, b *bench, o options, sys *systems) []scenario {
	steps := []scenario{
		{"connect", "CONNECT, 1 client", func() error { return b.benchConnect(ctx, 1) }},
		{"connect", "CONNECT, 16 clients", func() error { return b.benchConnect(ctx, 16) }},
		{"bulk", "bulk download, 1 stream", func() error { return b.benchBulk(ctx, 1, 'd') }},
		{"bulk", "bulk upload, 1 stream", func() error { return b.benchBulk(ctx, 1, 'u') }},
		{"bulk", "bulk download, 4 streams", func() error { return b.benchBulk(ctx, 4, 'd') }},
		{"bulk", "bulk upload, 4 streams", func() error { return b.benchBulk(ctx, 4, 'u') }},
		{"udp", "UDP, 1 association, 100 B", func() error { return b.benchUDP(ctx, 1, 100) }},
		{"udp", "UDP, 1 association, 1200 B", func() error { return b.benchUDP(ctx, 1, 1200) }},
		{"udp", "UDP, 16 associations, 100 B", func() error { return b.benchUDP(ctx, 16, 100) }},
		{"udp", "UDP, 16 associations, 1200 B", func() error { return b.benchUDP(ctx, 16, 1200) }},
		{"stream", "streaming", func() error {
			return b.benchStream(ctx, o.stream, streamPeers{danted: sys.danted, relay: sys.relayBin, baseline: o.baseline})
		}},
		{"memory", "idle lease memory", func() error { return b.benchMemory(ctx, o.leases) }},
	}
	// The churn runs on fwproxy and, right after it, on the baseline.
	churned := []target{{sys: sysFwproxy, proxy: sys.fw.addr}}
	for _, t := range b.targets {
		if t.sys == sysBaseline {
			churned = append(churned, t)
		}
	}
	for _, n := range o.churnPlayers {
		cc := o.churn
		cc.clients = n
		steps = append(steps[:len(steps)-1],
			scenario{"churn", fmt.Sprintf("playlist churn, %d players", n), func() error {
				for _, t := range churned {
					if err := b.benchChurn(ctx, t.sys, t.proxy, cc); err != nil {
						return fmt.Errorf("%s: %w", systemNames[t.sys], err)
					}
				}
				return nil
			}},
			steps[len(steps)-1])
	}
	return steps
}

// runScenarios runs the scenarios o selects, each for o.rounds rounds, and
// returns their failures.
func (b *bench) runScenarios(ctx context.Context, o options, steps []scenario) []error {
	var failed []error
	for _, s := range steps {
		if !o.only[s.scenario] {
			continue
		}
		// Each round measures every system once, so the systems see the
		// machine's other load alike; memory is measured once.
		// The streaming step-up takes its turns within each count.
		rounds := o.rounds
		if s.scenario == "memory" || s.scenario == "stream" {
			rounds = 1
		}
		for round := range rounds {
			if ctx.Err() != nil {
				break
			}
			b.log.Info("scenario", "name", s.name, "round", round+1)
			if err := s.run(); err != nil {
				// One broken scenario must not hide the others' figures.
				b.log.Error("scenario failed", "name", s.name, "err", err)
				failed = append(failed, fmt.Errorf("%s: %w", s.name, err))
				break
			}
		}
	}
	return failed
}

// report is the machine's description, the table, the streaming table
// and the targets.
func (b *bench) report(dantedBin string, notes []string, o options) string {
	var w strings.Builder
	fmt.Fprintf(&w, "\n## fwbench %s\n\n", time.Now().UTC().Format("2006-01-02 15:04 MST"))
	for _, line := range describeMachine(dantedBin) {
		fmt.Fprintf(&w, "- %s\n", line)
	}
	fmt.Fprintf(&w, "- each figure: the median of %d runs of %v per system, the systems taking turns\n", b.rounds, b.dur)
	if len(b.streamRuns) > 0 {
		fmt.Fprintf(&w, "- streaming: one step-up, the systems taking turns at each player count; %v warm-up and %v window per step; %s\n", o.stream.warmup, o.stream.window, b.streamCPUs)
	}
	for _, n := range notes {
		fmt.Fprintf(&w, "- %s\n", n)
	}
	fmt.Fprintln(&w)
	b.res.writeTable(&w)
	if len(b.streamRuns) > 0 {
		fmt.Fprintf(&w, "\n### Streaming: %s per player as %d-byte datagrams, %v window per step\n\n", bitrateText(o.stream.bitrate), o.stream.size, o.stream.window)
		writeStreamTable(&w, b.streamRuns, b.streamBound)
		if b.streamNote != "" {
			fmt.Fprintf(&w, "\nThe %s.\n", b.streamNote)
		}
	}
	fmt.Fprintln(&w)
	b.res.writeGoals(&w, o.churnPlayers)
	return w.String()
}

// noteLost logs operations that failed during a measurement.
func (b *bench) noteLost(s system, what string, smp sample) {
	if smp.lost > 0 {
		b.log.Warn("operations failed", "system", s, "what", what, "failed", smp.lost, "completed", smp.ok)
	}
}

// raiseFileLimit lifts the open-file limit (inherited by fwproxy) so that
// 10,000 idle associations fit: three descriptors each in fwproxy.
func raiseFileLimit(log *slog.Logger) {
	const want = 1 << 16
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil || lim.Cur >= want {
		return
	}
	raised := syscall.Rlimit{Cur: want, Max: max(lim.Max, want)}
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &raised); err != nil {
		// Not root: take what the hard limit allows.
		raised = syscall.Rlimit{Cur: lim.Max, Max: lim.Max}
		syscall.Setrlimit(syscall.RLIMIT_NOFILE, &raised)
		log.Warn("open-file limit not raised; the memory scenario may fail", "limit", lim.Max, "err", err)
	}
}

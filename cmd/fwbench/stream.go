package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"sync/atomic"
	"time"
)

// streamConfig shapes the streaming scenario: N players, each receiving
// one paced one-way stream from a sender outside the proxy.
type streamConfig struct {
	steps   []int         // player counts, stepped up in order
	bitrate int           // bits per second of each stream
	size    int           // bytes of each datagram as the sender sends it
	warmup  time.Duration // streaming before the window
	window  time.Duration // the measuring window of each step
	bound   time.Duration // added latency p99 above this ends the step-up
	pin     bool          // servers on one CPU, the driver on the others
}

// interval is one stream's gap between datagrams.
func (c streamConfig) interval() time.Duration {
	return time.Duration(int64(c.size) * 8 * int64(time.Second) / int64(c.bitrate))
}

// streamFdsPerPlayer is the descriptors one player costs, in the driver
// (its UDP socket, its association or control connection, the server's
// end of that) and in fwproxy (three per association or announced lease).
const streamFdsPerPlayer = 3

// streamSystem is one system of the streaming scenario and what it needs.
type streamSystem struct {
	run               *streamRun
	proc              *proc  // the server measured; nil for direct
	socks             string // SOCKS address (association and announced modes)
	stub              *mmsStub
	relayIn, relayOut netip.AddrPort
}

// streamPeers are the other servers the scenario compares fwproxy with.
type streamPeers struct {
	danted   *proc  // nil: not measured
	relay    string // udprelay-min binary; "" not measured
	baseline string // another fwproxy binary; "" none
}

// benchStream runs the streaming scenario: for each player count in turn,
// every system still in the race carries that many streams for the
// window; a system leaves the race at its first step with a datagram lost
// or an added latency p99 above the bound. The systems take turns within
// a count, so they share the machine's other load alike.
func (b *bench) benchStream(ctx context.Context, cfg streamConfig, peers streamPeers) error {
	steps, dropped := stepsWithin(cfg.steps, fileLimit(), streamFdsPerPlayer, 512)
	if dropped > 0 {
		b.log.Warn("streaming: the open-file limit ends the step-up", "limit", fileLimit(), "first count left out", dropped)
		b.streamNote = fmt.Sprintf("open-file limit (%d) ends the step-up before %d players", fileLimit(), dropped)
	}
	if len(steps) == 0 {
		return errors.New("streaming: no player count fits the open-file limit")
	}
	most := steps[len(steps)-1]
	stub, err := startMMSStub()
	if err != nil {
		return err
	}
	defer stub.Close()
	systems, stop, err := b.streamSystems(ctx, most, stub, peers)
	defer stop()
	if err != nil {
		return err
	}
	pin, err := b.pinStream(cfg, systems)
	if err != nil {
		return err
	}
	defer func() {
		if err := pin.unpin(); err != nil {
			b.log.Warn("streaming: servers not unpinned; the scenarios after it share fewer CPUs", "err", err)
		}
	}()
	// The sender is on the MMS server's IP: announced leases take
	// datagrams from that IP only.
	sender, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.AddrPortFrom(stub.addr().Addr(), 0)))
	if err != nil {
		return err
	}
	defer sender.Close()
	rx, err := newReceivers(most)
	if err != nil {
		return err
	}
	defer rx.close()
	var players []*streamPlayer
	defer func() {
		for _, p := range players {
			p.close()
		}
	}()
	gen := uint32(1)
	for _, n := range steps {
		for len(players) < n {
			p, err := newStreamPlayer(len(players))
			if err != nil {
				return err
			}
			players = append(players, p)
			if err := rx.add(p); err != nil {
				return err
			}
		}
		for _, s := range systems {
			if s.run.stopped != "" || ctx.Err() != nil {
				continue
			}
			// A failed step is measured once more before the system leaves
			// the race: one burst of a neighbour's load is not a limit.
			var first string
			for try := range 2 {
				b.log.Info("streaming", "system", s.run.label, "players", n, "try", try+1)
				if err := pin.again(); err != nil {
					return err
				}
				r, err := b.streamStep(ctx, s, players[:n], rx, sender, cfg, gen)
				gen++
				if err != nil {
					s.run.stopped = fmt.Sprintf("at %d players: %v", n, err)
					b.log.Error("streaming step failed", "system", s.run.label, "players", n, "err", err)
					break
				}
				r.firstTry = first
				ok, why := r.verdict(cfg.bound)
				if ok || try == 1 || ctx.Err() != nil {
					s.run.results = append(s.run.results, r)
					if !ok {
						s.run.stopped = fmt.Sprintf("at %d players: %s", n, why)
					}
					break
				}
				first = why
			}
		}
	}
	for _, s := range systems {
		b.streamRuns = append(b.streamRuns, s.run)
	}
	b.streamBound = cfg.bound
	b.streamFigures(cfg)
	return ctx.Err()
}

// streamPinning keeps the streaming scenario's servers on their CPU and
// the driver on its own.
type streamPinning struct {
	split *cpuSplit // nil: not pinned
	pgids []int
}

// pinStream pins the servers of systems and the driver when cfg says so
// and the machine can, and records in the report where they ran.
func (b *bench) pinStream(cfg streamConfig, systems []*streamSystem) (*streamPinning, error) {
	p := &streamPinning{}
	if !cfg.pin {
		b.streamCPUs = "servers and driver on every CPU (-stream-pin=false)"
		return p, nil
	}
	split, err := splitCPUs()
	if err != nil {
		b.log.Warn("streaming: servers not pinned", "err", err)
		b.streamCPUs = fmt.Sprintf("servers and driver on every CPU (not pinned: %v)", err)
		return p, nil
	}
	for _, s := range systems {
		if s.proc != nil && !slices.Contains(p.pgids, s.proc.cmd.Process.Pid) {
			p.pgids = append(p.pgids, s.proc.cmd.Process.Pid)
		}
	}
	p.split = &split
	b.streamCPUs = split.String()
	return p, p.again()
}

// again pins what started since the last pinning (threads, danted's
// workers).
func (p *streamPinning) again() error {
	if p.split == nil {
		return nil
	}
	return p.split.pin(p.pgids)
}

// unpin gives everything every CPU again; danted goes on to the other
// scenarios.
func (p *streamPinning) unpin() error {
	if p.split == nil {
		return nil
	}
	return p.split.unpin(p.pgids)
}

// streamSystems starts the servers of the scenario: fwproxy for
// associations and, filtering the stub's port, for announced leases (each
// with its lease and session caps raised to the largest count), the
// relay in both its modes, and the same two fwproxy instances of the baseline binary. stop
// ends them; it is to be called also on error.
func (b *bench) streamSystems(ctx context.Context, most int, stub *mmsStub, peers streamPeers) ([]*streamSystem, func(), error) {
	var procs []*proc
	stop := func() {
		for _, p := range procs {
			p.stop()
		}
	}
	systems := []*streamSystem{{run: &streamRun{label: "direct (no hop)", sys: sysDirect, mode: modeDirect}}}
	if peers.relay != "" {
		relays, err := startRelays(ctx, peers.relay)
		for _, r := range relays {
			procs = append(procs, r.proc)
		}
		if err != nil {
			return nil, stop, err
		}
		systems = append(systems, relays...)
	}
	fwproxies := []struct {
		bin string
		sys system
	}{{b.bin, sysFwproxy}}
	if peers.baseline != "" {
		fwproxies = append(fwproxies, struct {
			bin string
			sys system
		}{peers.baseline, sysBaseline})
	}
	for _, fw := range fwproxies {
		for _, mode := range []streamMode{modeAssociation, modeAnnounced} {
			opt := fwproxyOptions{maxLeases: most + 64}
			label := fmt.Sprintf("%s, associations", fw.sys)
			if mode == modeAnnounced {
				opt.mmsPort = stub.addr().Port()
				label = fmt.Sprintf("%s, announced leases", fw.sys)
			}
			p, err := startFwproxy(ctx, fw.bin, b.dir, opt)
			if err != nil {
				return nil, stop, fmt.Errorf("%s: %w", label, err)
			}
			procs = append(procs, p)
			systems = append(systems, &streamSystem{run: &streamRun{label: label, sys: fw.sys, mode: mode}, proc: p, socks: p.addr, stub: stub})
		}
		if fw.sys == sysFwproxy && peers.danted != nil {
			systems = append(systems, &streamSystem{run: &streamRun{label: "danted, associations", sys: sysDanted, mode: modeAssociation}, proc: peers.danted, socks: peers.danted.addr})
		}
	}
	return systems, stop, nil
}

// startRelays starts the minimal relay twice: one socket in and one out
// for every player, and a pair of sockets per player (-per-player), whose
// in sockets are on the IP of relayIn; registering tells each player its
// port. It returns the systems it started, also on error.
func startRelays(ctx context.Context, bin string) ([]*streamSystem, error) {
	var systems []*streamSystem
	for _, r := range []struct {
		label string
		sys   system
		mode  streamMode
		args  []string
	}{
		{"minimal relay", sysRelay, modeRelay, nil},
		{"minimal relay, per player", sysRelayPerPlayer, modeRelayPerPlayer, []string{"-per-player"}},
	} {
		in, err1 := freeUDPPort("127.0.0.1")
		out, err2 := freeUDPPort("127.0.0.1")
		if err := errors.Join(err1, err2); err != nil {
			return systems, err
		}
		if r.mode == modeRelayPerPlayer {
			in = netip.AddrPortFrom(in.Addr(), 0)
		}
		p, err := startProc(ctx, "udprelay-min", bin, "", append(r.args, "-in", in.String(), "-out", out.String())...)
		if err != nil {
			return systems, err
		}
		systems = append(systems, &streamSystem{run: &streamRun{label: r.label, sys: r.sys, mode: r.mode}, proc: p, relayIn: in, relayOut: out})
	}
	return systems, nil
}

// streamStep measures system s carrying one stream to each of ps.
func (b *bench) streamStep(ctx context.Context, s *streamSystem, ps []*streamPlayer, rx *receivers, sender *net.UDPConn, cfg streamConfig, gen uint32) (streamResult, error) {
	defer func() {
		for _, p := range ps {
			p.closeControl()
		}
	}()
	var err error
	switch s.run.mode {
	case modeDirect:
		setupDirect(ps)
	case modeRelay:
		err = setupRelay(ctx, ps, s.relayIn, s.relayOut)
	case modeRelayPerPlayer:
		err = setupRelayPerPlayer(ctx, ps, s.relayIn.Addr(), s.relayOut)
	case modeAssociation:
		err = setupAssociations(ctx, ps, s.socks, sender)
	case modeAnnounced:
		err = setupAnnounced(ctx, ps, s.socks, s.stub)
	}
	if err != nil {
		return streamResult{}, err
	}
	dests := make([]netip.AddrPort, len(ps))
	for i, p := range ps {
		dests[i] = p.dest
	}

	// Everyone starts together a moment from now.
	start := sinceEpoch() + 20*time.Millisecond
	sch := newSchedule(start, cfg.warmup+cfg.window, cfg.interval(), len(ps))
	winStart, winEnd := start+cfg.warmup, start+cfg.warmup+cfg.window
	var received atomic.Int64
	w := stepWindow{gen: gen, perPlayer: sch.perPlayer(), received: &received}
	for _, p := range ps {
		p.reset(w)
	}
	stopReceiving := rx.start(w)
	samples := make(chan serverSample, 1)
	go sampleServer(ctx, s.proc, winStart, winEnd, samples)
	st := sendStreams(ctx, sender, dests, sch, gen, cfg.size, winStart, winEnd)
	smp := <-samples
	total := 0
	for _, n := range st.sent {
		total += n
	}
	drain(ctx, &received, int64(total))
	if err := stopReceiving(); err != nil {
		return streamResult{}, fmt.Errorf("receiving: %w", err)
	}

	r := streamResult{players: len(ps), sent: total, errors: st.errors, hasCPU: smp.ok, rssKiB: smp.rssKiB}
	var lat []time.Duration
	for i, p := range ps {
		r.lost += max(st.sent[i]-p.rx.received, 0)
		r.dups += p.rx.dups
		for k, at := range p.rx.sent {
			if at >= winStart && at < winEnd {
				lat = append(lat, p.rx.lat[k])
			}
			if smp.ok && at >= smp.from && at < smp.to {
				r.inWindow++
			}
		}
	}
	r.p50, r.p99 = percentile(lat, 0.50), percentile(lat, 0.99)
	r.lateP50, r.lateP99 = percentile(st.late, 0.50), percentile(st.late, 0.99)
	if smp.ok {
		r.cpu = smp.cpu
	} else if s.proc == nil {
		// Direct: no server, nothing to count.
		for _, p := range ps {
			for _, at := range p.rx.sent {
				if at >= winStart && at < winEnd {
					r.inWindow++
				}
			}
		}
	}
	b.log.Info("streaming step", "system", s.run.label, "players", len(ps), "sent", r.sent, "lost", r.lost, "dups", r.dups,
		"p99", r.p99, "sender_late_p99", r.lateP99, "cpu", r.cpu)
	return r, nil
}

// serverSample is the server's CPU used between two moments (since
// epoch) and its RSS at the second.
type serverSample struct {
	from, to time.Duration
	cpu      time.Duration
	rssKiB   int
	ok       bool
}

// sampleServer reads p's CPU time at from and at to (as near as the
// timers allow; the moments actually read are reported, and the
// datagrams are counted between those) and its RSS at to. Without a
// server it reports at once.
func sampleServer(ctx context.Context, p *proc, from, to time.Duration, out chan<- serverSample) {
	var s serverSample
	defer func() { out <- s }()
	if p == nil {
		return
	}
	pgid := p.cmd.Process.Pid
	waitUntil(ctx, from)
	s.from = sinceEpoch()
	c0, err := groupCPU(pgid)
	if err != nil {
		return
	}
	waitUntil(ctx, to)
	s.to = sinceEpoch()
	c1, err := groupCPU(pgid)
	if err != nil {
		return
	}
	s.rssKiB, _ = groupRSSKiB(pgid)
	s.cpu, s.ok = c1-c0, ctx.Err() == nil
}

func waitUntil(ctx context.Context, at time.Duration) {
	t := time.NewTimer(at - sinceEpoch())
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
	}
}

// drain waits for the datagrams still on their way: until all total have
// arrived, or none has for 300 ms (the rest is lost), at most 5 s.
func drain(ctx context.Context, received *atomic.Int64, total int64) {
	const quiet, most = 300 * time.Millisecond, 5 * time.Second
	deadline := time.Now().Add(most)
	last, lastChange := received.Load(), time.Now()
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for last < total && time.Now().Before(deadline) && time.Since(lastChange) < quiet {
		select {
		case <-tick.C:
		case <-ctx.Done():
			return
		}
		if n := received.Load(); n != last {
			last, lastChange = n, time.Now()
		}
	}
}

// freeUDPPort returns a loopback UDP address that was free a moment ago,
// for a server that binds the address it is given.
func freeUDPPort(ip string) (netip.AddrPort, error) {
	c, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.AddrPortFrom(netip.MustParseAddr(ip), 0)))
	if err != nil {
		return netip.AddrPort{}, err
	}
	defer c.Close()
	return addrPort(c.LocalAddr()), nil
}

// streamFigures turns the runs into the result table's figures, per mode:
// the largest count with nothing lost, the largest that passed, and the
// CPU per datagram and latency at the largest count fwproxy and danted
// (associations) both carried with nothing lost.
func (b *bench) streamFigures(cfg streamConfig) {
	for _, m := range []struct {
		key, label string
		mode       streamMode
	}{{"assoc", "associations", modeAssociation}, {"announced", "announced leases", modeAnnounced}} {
		var runs []*streamRun
		var fw *streamRun
		for _, run := range b.streamRuns {
			if run.mode == m.mode || run.mode == modeDirect || run.mode == modeRelay || run.mode == modeRelayPerPlayer {
				runs = append(runs, run)
			}
			if run.mode == m.mode && run.sys == sysFwproxy {
				fw = run
			}
		}
		if fw == nil {
			continue
		}
		pre := "stream/" + m.key
		name := "streaming through " + m.label
		maxN := b.res.fig(pre+"/maxN", name+": largest N with 0 lost", "players", higherIsBetter)
		passN := b.res.fig(pre+"/passN", fmt.Sprintf("%s: largest N with 0 lost and added p99 ≤ %v", name, cfg.bound), "players", higherIsBetter)
		for _, run := range runs {
			maxN.set(run.sys, float64(largestN(run.results, streamResult.zeroLoss)))
			passN.set(run.sys, float64(largestN(run.results, func(r streamResult) bool { ok, _ := r.verdict(cfg.bound); return ok })))
		}
		n := commonN(fw, runs)
		if n == 0 {
			continue
		}
		cpu := b.res.fig(pre+"/cpu", fmt.Sprintf("%s: CPU per 10⁶ datagrams at N = %d", name, n), "s", lowerIsBetter)
		p99 := b.res.fig(pre+"/p99", fmt.Sprintf("%s: added latency p99 at N = %d", name, n), "µs", lowerIsBetter)
		rss := b.res.fig(pre+"/rss", fmt.Sprintf("%s: RSS at N = %d", name, n), "MiB", lowerIsBetter)
		for _, run := range runs {
			r, ok := at(run.results, n)
			if !ok {
				continue
			}
			if v, ok := r.cpuPerMillion(); ok {
				cpu.set(run.sys, v)
			}
			if r.rssKiB > 0 {
				rss.set(run.sys, float64(r.rssKiB)/1024)
			}
			p99.set(run.sys, micros(r.p99))
		}
	}
}

// commonN is the largest count fwproxy carried with nothing lost that
// danted, when in the runs, also carried with nothing lost: the count at
// which their costs compare.
func commonN(fw *streamRun, runs []*streamRun) int {
	n := 0
	for _, r := range fw.results {
		if !r.zeroLoss() {
			continue
		}
		ok := true
		for _, other := range runs {
			if other.sys != sysDanted {
				continue
			}
			o, found := at(other.results, r.players)
			ok = ok && found && o.zeroLoss()
		}
		if ok {
			n = max(n, r.players)
		}
	}
	return n
}

package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"fwproxy/mmsfilter"
)

func TestStreamInterval(t *testing.T) {
	tests := []struct {
		bitrate, size int
		want          time.Duration
	}{
		{1_000_000, 1200, 9600 * time.Microsecond}, // 104 datagrams/s
		{8_000_000, 1000, time.Millisecond},
		{64_000, 200, 25 * time.Millisecond},
	}
	for _, tt := range tests {
		assert.Equal(t, tt.want, streamConfig{bitrate: tt.bitrate, size: tt.size}.interval(), "%d bit/s, %d B", tt.bitrate, tt.size)
	}
}

func TestScheduleSpreadsPlayersOverTheInterval(t *testing.T) {
	tests := []struct {
		name          string
		length        time.Duration
		interval      time.Duration
		players       int
		slots         int
		perPlayer     int
		dueOfSlot     map[int]time.Duration
		playerOfSlots map[int]int
	}{
		{"one player, one slot per interval", 100 * time.Millisecond, 10 * time.Millisecond, 1, 10, 10,
			map[int]time.Duration{0: 0, 1: 10 * time.Millisecond, 9: 90 * time.Millisecond}, map[int]int{0: 0, 9: 0}},
		{"four players a quarter interval apart", 20 * time.Millisecond, 10 * time.Millisecond, 4, 8, 2,
			map[int]time.Duration{0: 0, 1: 2500 * time.Microsecond, 3: 7500 * time.Microsecond, 4: 10 * time.Millisecond},
			map[int]int{0: 0, 1: 1, 3: 3, 4: 0, 7: 3}},
		{"a length that is not whole intervals rounds up", 15 * time.Millisecond, 10 * time.Millisecond, 2, 3, 2,
			map[int]time.Duration{2: 10 * time.Millisecond}, map[int]int{2: 0}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			start := time.Second
			s := newSchedule(start, tt.length, tt.interval, tt.players)
			assert.Equal(t, tt.slots, s.slots)
			assert.Equal(t, tt.perPlayer, s.perPlayer())
			for j, d := range tt.dueOfSlot {
				assert.Equal(t, start+d, s.due(j), "slot %d", j)
			}
			for j, p := range tt.playerOfSlots {
				assert.Equal(t, p, s.player(j), "slot %d", j)
			}
			for j := 1; j < s.slots; j++ {
				require.GreaterOrEqual(t, s.due(j), s.due(j-1), "slots in time order")
			}
			assert.Less(t, s.due(s.slots-1), start+tt.length, "no slot after the end")
		})
	}
}

func TestStreamHeaderRoundTrip(t *testing.T) {
	b := make([]byte, 1200)
	d := streamDatagram{idx: 4999, gen: 7, seq: 1 << 40, sent: 3 * time.Second}
	putStreamHeader(b, d)
	got, ok := parseStreamHeader(b)
	require.True(t, ok)
	assert.Equal(t, d, got)
	_, ok = parseStreamHeader(b[:streamHeaderLen-1])
	assert.False(t, ok, "short")
}

func TestStreamVerdict(t *testing.T) {
	bound := 5 * time.Millisecond
	tests := []struct {
		name string
		r    streamResult
		ok   bool
		why  string
	}{
		{"clean", streamResult{p99: 4 * time.Millisecond, lateP99: 20 * time.Millisecond}, true, "ok"},
		{"one lost", streamResult{lost: 1}, false, "lost 1"},
		{"a duplicate is a failure too", streamResult{dups: 1}, false, "duplicated 1"},
		{"unsent", streamResult{errors: 2}, false, "unsent 2"},
		{"added latency", streamResult{p99: 6 * time.Millisecond}, false, "added p99 6ms > 5ms"},
		{"the sender could not keep its rate", streamResult{lateP50: 7 * time.Millisecond}, false, "sender behind its schedule"},
		{"at the bound passes", streamResult{p99: bound, lateP50: bound}, true, "ok"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ok, why := tt.r.verdict(bound)
			assert.Equal(t, tt.ok, ok)
			assert.Contains(t, why, tt.why)
			assert.Equal(t, tt.r.lost == 0 && tt.r.dups == 0 && tt.r.errors == 0, tt.r.zeroLoss())
		})
	}
}

func TestCPUPerMillion(t *testing.T) {
	v, ok := streamResult{cpu: 2 * time.Second, hasCPU: true, inWindow: 100_000}.cpuPerMillion()
	require.True(t, ok)
	assert.InDelta(t, 20.0, v, 1e-9)
	_, ok = streamResult{cpu: time.Second, inWindow: 10}.cpuPerMillion()
	assert.False(t, ok, "not measured")
	_, ok = streamResult{cpu: time.Second, hasCPU: true}.cpuPerMillion()
	assert.False(t, ok, "nothing relayed")
}

func TestStepsWithin(t *testing.T) {
	steps := []int{50, 100, 200, 500, 1000, 2000, 5000}
	tests := []struct {
		name    string
		limit   int
		kept    []int
		dropped int
	}{
		{"a high limit keeps every count", 1 << 20, steps, 0},
		{"20,000 descriptors fit 6,496 players", 20000, steps, 0},
		{"4,096 stop before 2,000", 4096, []int{50, 100, 200, 500, 1000}, 2000},
		{"1,024 stop before 200", 1024, []int{50, 100}, 200},
		{"too few for any", 600, nil, 50},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			kept, dropped := stepsWithin(steps, tt.limit, streamFdsPerPlayer, 512)
			assert.Equal(t, tt.kept, kept)
			assert.Equal(t, tt.dropped, dropped)
		})
	}
}

func stepResults(spec ...string) []streamResult {
	var rs []streamResult
	for _, s := range spec {
		var r streamResult
		var lost int
		fmt.Sscanf(s, "%d/%d", &r.players, &lost)
		r.lost = lost
		rs = append(rs, r)
	}
	return rs
}

func TestLargestNAndCommonN(t *testing.T) {
	tests := []struct {
		name      string
		fw        []streamResult
		danted    []streamResult
		maxFw     int
		maxDanted int
		common    int
	}{
		{"fwproxy goes further", stepResults("50/0", "100/0", "200/0", "500/3"), stepResults("50/0", "100/2"), 200, 50, 50},
		{"danted not measured", stepResults("50/0", "100/0"), nil, 100, 0, 100},
		{"both fail at once", stepResults("50/1"), stepResults("50/1"), 0, 0, 0},
		{"danted stopped early: common is what both carried", stepResults("50/0", "100/0", "200/0"), stepResults("50/0", "100/0"), 200, 100, 100},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			assert.Equal(t, tt.maxFw, largestN(tt.fw, streamResult.zeroLoss))
			assert.Equal(t, tt.maxDanted, largestN(tt.danted, streamResult.zeroLoss))
			fw := &streamRun{sys: sysFwproxy, results: tt.fw}
			runs := []*streamRun{fw, {sys: sysRelay, results: stepResults("50/0")}}
			if tt.danted != nil {
				runs = append(runs, &streamRun{sys: sysDanted, results: tt.danted})
			}
			assert.Equal(t, tt.common, commonN(fw, runs))
		})
	}
}

func TestStreamFiguresAndTable(t *testing.T) {
	ms := time.Millisecond
	b := &bench{res: newResults(), streamBound: 5 * ms}
	b.streamRuns = []*streamRun{
		{label: "direct (no hop)", sys: sysDirect, mode: modeDirect, results: []streamResult{
			{players: 50, sent: 1000, p50: ms / 10, p99: ms},
			{players: 100, sent: 2000, p50: ms / 10, p99: ms}}},
		{label: "minimal relay", sys: sysRelay, mode: modeRelay, results: []streamResult{
			{players: 50, sent: 1000, p99: 2 * ms, cpu: 10 * ms, hasCPU: true, inWindow: 1000, rssKiB: 4096},
			{players: 100, sent: 2000, p99: 2 * ms, cpu: 20 * ms, hasCPU: true, inWindow: 2000, rssKiB: 4096}}},
		{label: "minimal relay, per player", sys: sysRelayPerPlayer, mode: modeRelayPerPlayer, results: []streamResult{
			{players: 50, sent: 1000, p99: 2 * ms, cpu: 12 * ms, hasCPU: true, inWindow: 1000, rssKiB: 4096},
			{players: 100, sent: 2000, lost: 1, p99: 2 * ms, cpu: 24 * ms, hasCPU: true, inWindow: 1999, rssKiB: 4096}},
			stopped: "at 100 players: lost 1, duplicated 0, unsent 0"},
		{label: "fwproxy, associations", sys: sysFwproxy, mode: modeAssociation, results: []streamResult{
			{players: 50, sent: 1000, p99: 3 * ms, cpu: 15 * ms, hasCPU: true, inWindow: 1000, rssKiB: 10240},
			{players: 100, sent: 2000, lost: 4, p99: 3 * ms, cpu: 30 * ms, hasCPU: true, inWindow: 1996, rssKiB: 12288, firstTry: "lost 2"}},
			stopped: "at 100 players: lost 4, duplicated 0, unsent 0"},
		{label: "danted, associations", sys: sysDanted, mode: modeAssociation, results: []streamResult{
			{players: 50, sent: 1000, p99: 4 * ms, cpu: 45 * ms, hasCPU: true, inWindow: 1000, rssKiB: 65536}},
			stopped: "at 100 players: lost 1"},
	}
	b.streamFigures(streamConfig{bound: 5 * ms})

	maxN := b.res.get("stream/assoc/maxN")
	require.NotNil(t, maxN)
	assert.Equal(t, 50.0, maxN.value[sysFwproxy])
	assert.Equal(t, 100.0, maxN.value[sysRelay])
	assert.Equal(t, 50.0, maxN.value[sysRelayPerPlayer])
	cpu := b.res.get("stream/assoc/cpu")
	require.NotNil(t, cpu)
	assert.Contains(t, cpu.name, "N = 50")
	q, ok := cpu.ratio(sysDanted)
	require.True(t, ok)
	assert.InDelta(t, 1.0/3, q, 1e-9, "15 ms against 45 ms for the same 1000 datagrams")
	q, ok = cpu.ratio(sysRelay)
	require.True(t, ok)
	assert.InDelta(t, 1.5, q, 1e-9)
	q, ok = cpu.ratio(sysRelayPerPlayer)
	require.True(t, ok)
	assert.InDelta(t, 1.25, q, 1e-9)
	assert.False(t, cpu.has[sysDirect], "direct has no server to measure")
	assert.Nil(t, b.res.get("stream/announced/maxN"), "no announced run, no announced figures")

	var w strings.Builder
	writeStreamTable(&w, b.streamRuns, b.streamBound)
	out := w.String()
	assert.Contains(t, out, "| fwproxy, associations | 50 | 1000 | 0 | 0 µs | 3000 µs | 0 µs | 15.0 | 10.0 | ok |")
	assert.Contains(t, out, "| fwproxy, associations | 100 | 2000 | 4 | 0 µs | 3000 µs | 0 µs | 15.0 | 12.0 | **lost 4, duplicated 0, unsent 0** (second try; the first: lost 2) |")
	assert.Contains(t, out, "| direct (no hop) | 50 | 1000 | 0 | 100 µs | 1000 µs | 0 µs | — | — | ok |")
	assert.Contains(t, out, "Step-up ended: minimal relay, per player: at 100 players")
	assert.Contains(t, out, "fwproxy, associations: at 100 players")
	assert.Contains(t, out, "| minimal relay, per player | 50 | 1000 | 0 | 0 µs | 2000 µs | 0 µs | 12.0 | 4.00 | ok |")
	assert.Contains(t, out, "No failure up to the last count (their largest N is a lower bound): direct (no hop), minimal relay.")

	var goals strings.Builder
	b.res.writeGoals(&goals, nil)
	assert.Contains(t, goals.String(), "| streaming, associations: largest zero-loss N ≥ 3× danted | 1.00× danted (direct 2.00×, minimal relay 2.00×, minimal relay, per player 1.00×) | **no** |")
	assert.Contains(t, goals.String(), "| streaming, associations: CPU per datagram ≤ ⅓ danted | 0.33× danted (minimal relay 0.22×, minimal relay, per player 0.27×) | **no** |")
	assert.Contains(t, goals.String(), "| streaming, associations: CPU per datagram ≤ 2× minimal relay | 1.50× minimal relay | yes |")
}

func TestFunnelIndexSurvivesTheRewrite(t *testing.T) {
	tests := []struct {
		name string
		to   netip.AddrPort
	}{
		{"same length", netip.MustParseAddrPort("127.0.0.2:40000")},
		{"shorter", netip.MustParseAddrPort("10.0.0.2:5")},
		{"longer", netip.MustParseAddrPort("[2001:db8::1234:5678]:65000")},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			in := funnelMessage(mmsfilter.Funnel{Addr: playerIP, Transport: mmsfilter.TransportUDP, Port: 40001}, 1234)
			f, idx, err := parseFunnelCommand(in)
			require.NoError(t, err)
			assert.Equal(t, uint32(1234), idx)
			assert.Equal(t, netip.AddrPortFrom(playerIP, 40001), netip.AddrPortFrom(f.Addr, f.Port))

			// The filter as the proxy runs it, on the client's side.
			var out bytes.Buffer
			to := func(context.Context, mmsfilter.Funnel, func(netip.AddrPort) bool) (netip.AddrPort, error) {
				return tt.to, nil
			}
			require.NoError(t, mmsfilter.NewStreams(to, nil).ClientToServer(context.Background(), &out, bytes.NewReader(in)))
			require.NotEqual(t, in, out.Bytes(), "the funnel was rewritten")
			f, idx, err = parseFunnelCommand(out.Bytes())
			require.NoError(t, err)
			assert.Equal(t, uint32(1234), idx, "the bytes after the name pass the filter")
			assert.Equal(t, tt.to, netip.AddrPortFrom(f.Addr, f.Port))
		})
	}
	_, _, err := parseFunnelCommand([]byte("not mms"))
	assert.Error(t, err)
}

func TestParseStat(t *testing.T) {
	tests := []struct {
		name    string
		line    string
		want    procStat
		wantErr bool
	}{
		{"plain", "4242 (fwproxy) S 1 4242 4242 0 -1 4194560 100 0 0 0 250 75 0 0 20 0 9 0 1234 0 0", procStat{pgrp: 4242, utime: 250, stime: 75}, false},
		{"a parent that reaped workers", "4300 (danted) S 1 4300 4300 0 -1 4194560 100 0 0 0 12 8 340 95 20 0 1 0 99 0 0", procStat{pgrp: 4300, utime: 12, stime: 8, cutime: 340, cstime: 95}, false},
		{"cut before the children's times", "77 (x) R 1 70 70 0 -1 0 0 0 0 0 3 4", procStat{}, true},
		{"a name with spaces and parentheses", "77 (a) b (c)) R 1 70 70 0 -1 0 0 0 0 0 3 4 0 0", procStat{pgrp: 70, utime: 3, stime: 4}, false},
		{"no name", "77 a R 1 70", procStat{}, true},
		{"cut short", "77 (x) R 1 70 70", procStat{}, true},
		{"not a number", "77 (x) R 1 x 70 0 -1 0 0 0 0 0 3 4 0 0", procStat{}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseStat([]byte(tt.line))
			if tt.wantErr {
				assert.Error(t, err)
				return
			}
			require.NoError(t, err)
			assert.Equal(t, tt.want, got)
		})
	}
	assert.Equal(t, 3250*time.Millisecond, procStat{utime: 250, stime: 75}.cpu())
	assert.Equal(t, 4350*time.Millisecond, procStat{cutime: 340, cstime: 95}.reaped())
}

func TestParseSchedstat(t *testing.T) {
	d, err := parseSchedstat([]byte("123456789 5000 42\n"))
	require.NoError(t, err)
	assert.Equal(t, 123456789*time.Nanosecond, d)
	_, err = parseSchedstat(nil)
	assert.Error(t, err)
	_, err = parseSchedstat([]byte("x 1 2"))
	assert.Error(t, err)
}

// TestGroupCPUOfThisProcess reads this test's own CPU time, which grows
// with work, and its process group's, which includes it. The group is
// shared with whatever started the test (make, go test, sibling test
// binaries that come and go), so only "at least this process" holds for it.
func TestGroupCPUOfThisProcess(t *testing.T) {
	pid := os.Getpid()
	pgid, err := syscall.Getpgid(0)
	require.NoError(t, err)
	before, err := threadsCPU(pid)
	require.NoError(t, err)
	spin := time.Now()
	for time.Since(spin) < 20*time.Millisecond {
	}
	after, err := threadsCPU(pid)
	require.NoError(t, err)
	assert.Greater(t, after, before)
	group, err := groupCPU(pgid)
	require.NoError(t, err)
	assert.GreaterOrEqual(t, group, after, "the group's CPU includes this process's")
	rss, err := groupRSSKiB(pgid)
	require.NoError(t, err)
	assert.Positive(t, rss)
}

// streamPlayers opens n players and their receivers, closed when the
// test ends.
func streamPlayers(t *testing.T, n int) ([]*streamPlayer, *receivers) {
	rx, err := newReceivers(n)
	require.NoError(t, err)
	t.Cleanup(rx.close)
	var ps []*streamPlayer
	for i := range n {
		p, err := newStreamPlayer(i)
		require.NoError(t, err)
		t.Cleanup(p.close)
		ps = append(ps, p)
		require.NoError(t, rx.add(p))
	}
	return ps, rx
}

// TestStreamSmoke runs the scenario's whole step, direct, with two players
// for a fraction of a second: every datagram arrives once, and the figures
// come out.
func TestStreamSmoke(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	b := &bench{res: newResults(), log: slog.New(slog.NewTextHandler(io.Discard, nil))}
	sender, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	require.NoError(t, err)
	defer sender.Close()
	ps, rx := streamPlayers(t, 2)
	cfg := streamConfig{bitrate: 1_000_000, size: 1200, warmup: 50 * time.Millisecond, window: 200 * time.Millisecond, bound: time.Second}
	s := &streamSystem{run: &streamRun{label: "direct", sys: sysDirect, mode: modeDirect}}
	r, err := b.streamStep(ctx, s, ps, rx, sender, cfg, 1)
	require.NoError(t, err)
	// 2 players × 250 ms / 9.6 ms, rounded up.
	assert.Equal(t, 53, r.sent)
	assert.Zero(t, r.lost)
	assert.Zero(t, r.dups)
	assert.Positive(t, r.inWindow)
	assert.LessOrEqual(t, r.inWindow, r.sent)
	assert.Positive(t, r.p99)
	assert.False(t, r.hasCPU, "direct: no server")

	// The same players again, for another step, with a late datagram of
	// the first step still queued: it is not counted in the second.
	late := make([]byte, 1200)
	putStreamHeader(late, streamDatagram{idx: 0, gen: 1, seq: 0, sent: sinceEpoch()})
	_, err = sender.WriteToUDPAddrPort(late, ps[0].addr())
	require.NoError(t, err)
	r, err = b.streamStep(ctx, s, ps, rx, sender, cfg, 2)
	require.NoError(t, err)
	assert.Equal(t, 53, r.sent)
	assert.Zero(t, r.lost+r.dups)
}

// TestCollectorDatesByTheKernel: a datagram that waited in its socket
// before the collector swept it is dated when it arrived, not when it was
// read, so a slow driver does not add to the latency it measures.
func TestCollectorDatesByTheKernel(t *testing.T) {
	rx, err := newReceivers(1)
	require.NoError(t, err)
	defer rx.close()
	p, err := newStreamPlayer(0)
	require.NoError(t, err)
	defer p.close()
	require.NoError(t, rx.add(p))
	sender, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	require.NoError(t, err)
	defer sender.Close()

	waitStampedOnArrival(t, p, sender)

	var received atomic.Int64
	w := stepWindow{gen: 7, perPlayer: 4, received: &received}
	p.reset(w)
	for seq := range uint64(2) {
		d := make([]byte, 100)
		putStreamHeader(d, streamDatagram{idx: 0, gen: 7, seq: seq, sent: sinceEpoch()})
		_, err = sender.WriteToUDPAddrPort(d, p.addr())
		require.NoError(t, err)
	}
	// The datagrams wait in the socket while nothing reads it: this pause
	// is what the test measures, not a wait for something to happen.
	const queued = 300 * time.Millisecond
	time.Sleep(queued)
	stop := rx.start(w)
	require.Eventually(t, func() bool { return received.Load() == 2 }, 10*time.Second, time.Millisecond)
	require.NoError(t, stop())
	require.Len(t, p.rx.lat, 2)
	for _, lat := range p.rx.lat {
		assert.Less(t, lat, queued, "dated when read, not when it arrived")
		assert.GreaterOrEqual(t, lat, time.Duration(0))
	}
}

// waitStampedOnArrival returns once the kernel stamps p's datagrams as they
// arrive. It switches receive stamping on for the first stamped socket in
// deferred work (and off again some time after the last one closes), and
// until then a datagram is stamped when it is read: a probe that waited in
// the socket must show the wait.
func waitStampedOnArrival(t *testing.T, p *streamPlayer, sender *net.UDPConn) {
	t.Helper()
	c, err := newCollector()
	require.NoError(t, err)
	defer c.close()
	require.NoError(t, c.add(p))
	const wait = 20 * time.Millisecond
	epochWall := epoch.UnixNano()
	require.Eventually(t, func() bool {
		_, err := sender.WriteToUDPAddrPort([]byte("probe"), p.addr())
		require.NoError(t, err)
		time.Sleep(wait) // the wait the probe's stamp must show
		n, err := c.read(p.sock.fd)
		require.NoError(t, err)
		if n == 0 {
			return false
		}
		ts, ok := c.stamp(n - 1)
		return ok && sinceEpoch()-time.Duration(ts-epochWall) >= wait/2
	}, 10*time.Second, time.Millisecond, "the kernel stamps datagrams on arrival")
}

package e2e

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"fwproxy/e2e/asf"
	"fwproxy/e2e/mmsplayer"
	"fwproxy/e2e/mmsserver"
)

// The playlist tests: the emulated media server, fwproxy as a process with
// the MMS filter on the server's port, and emulated players, all on
// loopback. The lease sockets and rewritten funnels use 127.0.0.2 so that
// the proxy can keep a firewall client's port (the client holds it on
// playerIP).
//
// How the zero-loss result is made deterministic, and the loss of the old
// behaviour certain:
//   - the server numbers every packet of an entry and the entry's header
//     says how many there are, so a player names every packet it missed;
//   - a player never loses a packet by its own doing (see package
//     mmsplayer): it closes a socket only when nothing more can be on its
//     way to it, after reading what the kernel queued;
//   - the server holds each entry's last packets back until the player
//     speaks after StreamChange (mmsserver.Config.TailPackets), and a
//     close-first player speaks (Logging) only once the proxy has closed
//     its association, i.e. released the lease. So the tail reaches the
//     proxy inside the release→rebind gap at every close-first transition:
//     a lingering lease buffers it and hands it over at the rebind (zero
//     loss, whatever the timing), a proxy without lingering drops it;
//   - the player's gap after Logging is long against the proxy's reaction
//     time, so the proxy has handled the tail before the rebind.

// externalIP is where fwproxy's lease sockets bind in these tests.
const externalIP = "127.0.0.2"

// playerIP is the players' own address (UDP sockets and TCP connections):
// a loopback address picked at random for this test process, so that the
// port a player has given up for its close→bind gap is not taken meanwhile
// by another test (or another run of this one) on this shared machine.
var playerIP = randomLoopback()

// randomLoopback picks an address in 127.64.0.0/10, away from 127.0.0.x.
func randomLoopback() netip.Addr {
	return netip.AddrFrom4([4]byte{127, byte(64 + rand.IntN(64)), byte(rand.IntN(256)), byte(1 + rand.IntN(254))})
}

// testPorts hands the players of this test process their UDP ports, from
// below the ephemeral range.
var testPorts = mmsplayer.NewPorts(20000, 32767)

func loadAsset(t testing.TB) *asf.File {
	t.Helper()
	f, err := asf.ReadFile("testdata/sine440.asf")
	require.NoError(t, err)
	return f
}

// playlistSetup describes one run: the server's playlist and pacing, and
// how many players of which kind.
type playlistSetup struct {
	entries, packets int
	interval         time.Duration
	tail             int
	ping             time.Duration
}

// startMMSServer runs the emulated server with a playlist "playlist" of
// s.entries entries of s.packets packets; Close is a cleanup.
func startMMSServer(t *testing.T, n *testNet, s playlistSetup) (*mmsserver.Server, *asf.File) {
	t.Helper()
	entry, err := loadAsset(t).Truncate(s.packets)
	require.NoError(t, err)
	cfg := mmsserver.DefaultConfig()
	cfg.Playlists = map[string]mmsserver.Playlist{"playlist": mmsserver.Repeat("playlist", entry, s.entries)}
	cfg.PacketInterval = s.interval
	cfg.TailPackets = s.tail
	// The tail waits for the player's Logging; this only bounds the wait
	// for a player that never speaks.
	cfg.TailDelay = 5 * time.Second
	cfg.PingInterval = s.ping
	srv := listenMMS(t, n, cfg)
	return srv, entry
}

// listenMMS runs the emulated server on n's server side; Close is a
// cleanup.
func listenMMS(t *testing.T, n *testNet, cfg mmsserver.Config) *mmsserver.Server {
	t.Helper()
	var srv *mmsserver.Server
	require.NoError(t, n.inServer(func() (err error) {
		srv, err = mmsserver.Listen(netip.AddrPortFrom(n.serverIP(), 0).String(), cfg, nil)
		return err
	}))
	t.Cleanup(func() { srv.Close() })
	return srv
}

// startMMSProxy runs fwproxy on n with the MMS filter on srv's port.
func startMMSProxy(t *testing.T, n *testNet, srv *mmsserver.Server, args ...string) *proxyProc {
	t.Helper()
	// 50 players at once from one address hold more sessions than one
	// client's default share.
	return startProxyIn(t, n, append([]string{"-mms-ports", strconv.Itoa(int(srv.Addr().Port())), "-external-ip", n.externalIP(),
		"-max-sessions-per-client", "0"}, args...)...)
}

// playerConfig is a player of mode through proxy p that checks every
// payload against the asset entry.
func playerConfig(n *testNet, srv *mmsserver.Server, p *proxyProc, mode mmsplayer.Mode, entry *asf.File, plan mmsplayer.Plan) mmsplayer.Config {
	cfg := mmsplayer.DefaultConfig()
	cfg.Server = srv.Addr()
	cfg.Path = "playlist"
	cfg.Proxy = p.socks
	cfg.Mode = mode
	cfg.LocalIP = n.playerIP()
	cfg.Sockets = n.sockets()
	cfg.Ports = testPorts
	cfg.Plan = plan
	cfg.LossWait = time.Second
	cfg.Verify = func(_ int, loc uint32, payload []byte) error {
		if !bytes.Equal(payload, entry.Packets[loc]) {
			return fmt.Errorf("packet %d differs from the asset", loc)
		}
		return nil
	}
	return cfg
}

// playAll runs one player per config at once and returns their reports.
func playAll(t *testing.T, cfgs []mmsplayer.Config) []*mmsplayer.Report {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	reports := make([]*mmsplayer.Report, len(cfgs))
	var wg sync.WaitGroup
	for i, c := range cfgs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			reports[i] = mmsplayer.Play(ctx, c)
		}()
	}
	wg.Wait()
	return reports
}

// metricSet is one /metrics scrape: series (name{labels}) to value.
type metricSet map[string]float64

func parseMetrics(t *testing.T, text string) metricSet {
	t.Helper()
	m := metricSet{}
	sc := bufio.NewScanner(strings.NewReader(text))
	for sc.Scan() {
		line := sc.Text()
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		require.Positive(t, i, "metric line %q", line)
		v, err := strconv.ParseFloat(line[i+1:], 64)
		require.NoError(t, err, "metric line %q", line)
		m[line[:i]] = v
	}
	return m
}

// sum adds the series whose name is name and whose labels contain every
// one of labels (`key="value"`).
func (m metricSet) sum(name string, labels ...string) float64 {
	total := 0.0
next:
	for series, v := range m {
		n, rest, _ := strings.Cut(series, "{")
		if n != name {
			continue
		}
		for _, l := range labels {
			if !strings.Contains(rest, l) {
				continue next
			}
		}
		total += v
	}
	return total
}

// settledMetrics scrapes until two scrapes in a row agree on the lease
// and UDP counters: the lease readers add their counts just after the
// datagrams they count, so the last ones may lag the players a moment.
func settledMetrics(t *testing.T, p *proxyProc) metricSet {
	t.Helper()
	key := func(m metricSet) string {
		return fmt.Sprint(m.sum("fwproxy_leases_datagrams_total"), m.sum("fwproxy_udp_datagrams_total"), m.sum("fwproxy_leases_events_total"))
	}
	deadline := time.Now().Add(testTimeout)
	prev := parseMetrics(t, p.scrape(t))
	for {
		time.Sleep(50 * time.Millisecond)
		cur := parseMetrics(t, p.scrape(t))
		if key(cur) == key(prev) || time.Now().After(deadline) {
			return cur
		}
		prev = cur
	}
}

// requireClean asserts that a player played every entry and got every
// packet, and says what went wrong otherwise.
func requireClean(t *testing.T, name string, r *mmsplayer.Report, entries int) {
	t.Helper()
	require.NoError(t, r.Err, "%s: failures %v", name, r.Failures)
	assert.Empty(t, r.Failures, name)
	require.Len(t, r.Entries, entries, name)
	for _, e := range r.Entries {
		assert.Positive(t, e.Expected, "%s entry %d", name, e.Index)
		assert.Equal(t, e.Expected, e.Received, "%s entry %d (entered %v): lost %v", name, e.Index, e.Step, e.Lost)
		assert.Zero(t, e.Duplicates, "%s entry %d duplicates", name, e.Index)
		assert.Zero(t, e.Corrupt, "%s entry %d corrupt", name, e.Index)
	}
	assert.Zero(t, r.Stray, "%s stray packets", name)
}

// TestPlaylistOnePlayer: one player, five entries, every packet of every
// entry received, in each of the three ways a player gets its data.
func TestPlaylistOnePlayer(t *testing.T) {
	setup := playlistSetup{entries: 5, packets: 8, interval: 4 * time.Millisecond, tail: 3, ping: 30 * time.Millisecond}
	closeFirst := mmsplayer.Always(mmsplayer.Step{Order: mmsplayer.OrderCloseFirst, Gap: 30 * time.Millisecond})
	tests := []struct {
		name string
		mode mmsplayer.Mode
		plan mmsplayer.Plan
		// rewrite is the funnel_rewrites_total mode ("" for MMST).
		rewrite string
		// tailInGap: the tail lands while the player has no socket, so
		// the proxy buffers it (and hands it over at the rebind).
		tailInGap bool
	}{
		{"firewall client MMSU, close then bind", mmsplayer.ModeFirewall, closeFirst, "association", true},
		{"firewall client MMSU, new association first", mmsplayer.ModeFirewall,
			mmsplayer.Always(mmsplayer.Step{Order: mmsplayer.OrderNewFirst, Gap: 10 * time.Millisecond}), "association", false},
		{"announced MMSU (UDP direct)", mmsplayer.ModeAnnounced, closeFirst, "announced", true},
		{"MMST", mmsplayer.ModeTCP, nil, "", false},
	}
	forEachNet(t, true, func(t *testing.T, n *testNet) {
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				srv, entry := startMMSServer(t, n, setup)
				p := startMMSProxy(t, n, srv)
				r := playAll(t, []mmsplayer.Config{playerConfig(n, srv, p, tt.mode, entry, tt.plan)})[0]
				requireClean(t, tt.name, r, setup.entries)
				assert.Positive(t, r.Pongs, "the server pinged and the player answered")

				st := srv.Stats()
				assert.EqualValues(t, setup.entries*setup.packets, st.DataPackets)
				assert.EqualValues(t, setup.entries-1, st.StreamChanges)
				if tt.mode != mmsplayer.ModeTCP {
					assert.EqualValues(t, (setup.entries-1)*setup.tail, st.TailPackets, "every tail was in flight at a transition")
				}

				m := settledMetrics(t, p)
				transitions := float64(setup.entries - 1)
				assert.Equal(t, transitions, m.sum("fwproxy_mms_transitions_total", `transition="stream_change"`))
				assert.Equal(t, transitions, m.sum("fwproxy_mms_transitions_total", `transition="entry_end"`))
				assert.Equal(t, 1.0, m.sum("fwproxy_mms_transitions_total", `transition="playlist_end"`))
				assert.Zero(t, m.sum("fwproxy_leases_datagrams_total", `outcome="dropped"`), "no datagram dropped")
				assert.Equal(t, m.sum("fwproxy_leases_datagrams_total", `outcome="buffered"`), m.sum("fwproxy_leases_datagrams_total", `outcome="flushed"`), "everything buffered was handed over")
				if tt.rewrite != "" {
					assert.Equal(t, 1.0, m.sum("fwproxy_mms_funnel_rewrites_total", `mode="`+tt.rewrite+`"`))
				}
				if tt.tailInGap {
					assert.Positive(t, m.sum("fwproxy_leases_datagrams_total", `outcome="buffered"`), "the tail landed in the rebind gap")
				}
				if tt.mode == mmsplayer.ModeFirewall {
					assert.Zero(t, m.sum("fwproxy_udp_datagrams_total", `direction="remote_to_client"`)-m.sum("fwproxy_udp_datagrams_total", `direction="remote_to_client"`, `outcome="relayed"`), "every datagram reached the association")
				}
				// Playlist transitions are DEBUG lines, each with its session's id.
				lines := p.logRecords(t, "mms playlist transition")
				assert.Len(t, lines, setup.entries-1)
				for _, rec := range lines {
					assert.Equal(t, "DEBUG", rec["level"])
					assert.NotNil(t, rec["sid"])
				}
			})
		}
	})
}

// manySetup is the playlist of the many-players tests: 20 short entries
// of small packets, so that 50 players finish in seconds even under the
// race detector on two cores.
var manySetup = playlistSetup{entries: 20, packets: 8, interval: 5 * time.Millisecond, tail: 3, ping: 100 * time.Millisecond}

const (
	manyFirewall  = 40
	manyAnnounced = 10
)

// manyPlan is a player's random plan: half the transitions close first
// (with a gap long against the proxy's reaction time, so that the tail
// lands in it), a quarter race the new association ahead of the old one's
// close, a quarter send both at once. Plans are recorded per entry in the
// report.
func manyPlan(seed uint64) mmsplayer.Plan {
	rng := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	return func(int) mmsplayer.Step {
		switch n := rng.IntN(4); {
		case n < 2:
			return mmsplayer.Step{Order: mmsplayer.OrderCloseFirst, Gap: time.Duration(15+rng.IntN(26)) * time.Millisecond}
		case n == 2:
			return mmsplayer.Step{Order: mmsplayer.OrderNewFirst, Gap: time.Duration(rng.IntN(16)) * time.Millisecond}
		default:
			return mmsplayer.Step{Order: mmsplayer.OrderConcurrent, Gap: time.Duration(rng.IntN(16)) * time.Millisecond}
		}
	}
}

// testSeed is the plans' seed: E2E_SEED replays a run, otherwise random
// and logged.
func testSeed(t *testing.T) uint64 {
	t.Helper()
	if s := os.Getenv("E2E_SEED"); s != "" {
		v, err := strconv.ParseUint(s, 10, 64)
		require.NoError(t, err, "E2E_SEED")
		return v
	}
	v := rand.Uint64()
	t.Logf("plans seeded with E2E_SEED=%d", v)
	return v
}

// manyPlayers runs manyFirewall firewall clients and manyAnnounced
// announced-mode players at once through a proxy started with args.
func manyPlayers(t *testing.T, n *testNet, args ...string) ([]*mmsplayer.Report, *mmsserver.Server, metricSet) {
	t.Helper()
	srv, entry := startMMSServer(t, n, manySetup)
	p := startMMSProxy(t, n, srv, args...)
	seed := testSeed(t)
	var cfgs []mmsplayer.Config
	for i := range manyFirewall + manyAnnounced {
		mode := mmsplayer.ModeFirewall
		if i >= manyFirewall {
			mode = mmsplayer.ModeAnnounced
		}
		cfgs = append(cfgs, playerConfig(n, srv, p, mode, entry, manyPlan(seed+uint64(i))))
	}
	start := time.Now()
	reports := playAll(t, cfgs)
	t.Logf("%d players, %d entries each: %v", len(cfgs), manySetup.entries, time.Since(start).Round(time.Millisecond))
	return reports, srv, settledMetrics(t, p)
}

// transitionsBy counts, over firewall-client reports, the entries entered
// with each order.
func transitionsBy(reports []*mmsplayer.Report) map[mmsplayer.Order]int {
	n := map[mmsplayer.Order]int{}
	for _, r := range reports {
		if r.Mode != mmsplayer.ModeFirewall {
			continue
		}
		for _, e := range r.Entries[1:] {
			n[e.Step.Order]++
		}
	}
	return n
}

// TestPlaylistManyPlayers: 50 players at once, 20 entries each, random
// gaps and orders (close first, new association first, both at once):
// zero lost packets, zero bind or association failures, and the proxy's
// metrics agree.
func TestPlaylistManyPlayers(t *testing.T) {
	forEachNet(t, true, testPlaylistManyPlayers)
}

func testPlaylistManyPlayers(t *testing.T, n *testNet) {
	reports, srv, m := manyPlayers(t, n)
	players := len(reports)
	for i, r := range reports {
		requireClean(t, fmt.Sprintf("player %d (%v)", i, r.Mode), r, manySetup.entries)
		assert.Zero(t, r.Count(mmsplayer.FailBind), "player %d bind failures", i)
		assert.Zero(t, r.Count(mmsplayer.FailAssociate), "player %d association failures", i)
	}
	by := transitionsBy(reports)
	t.Logf("firewall-client transitions by order: %v", by)
	require.Positive(t, by[mmsplayer.OrderCloseFirst])
	require.Positive(t, by[mmsplayer.OrderNewFirst])
	require.Positive(t, by[mmsplayer.OrderConcurrent])

	st := srv.Stats()
	changes := players * (manySetup.entries - 1)
	assert.EqualValues(t, players*manySetup.entries*manySetup.packets, st.DataPackets)
	assert.EqualValues(t, changes*manySetup.tail, st.TailPackets)
	assert.Zero(t, st.TailsDropped)

	// Transitions: every playlist change went through the filter.
	assert.Equal(t, float64(changes), m.sum("fwproxy_mms_transitions_total", `transition="stream_change"`))
	assert.Equal(t, float64(changes), m.sum("fwproxy_mms_transitions_total", `transition="entry_end"`))
	assert.Equal(t, float64(players), m.sum("fwproxy_mms_transitions_total", `transition="playlist_end"`))
	assert.Equal(t, float64(manyFirewall), m.sum("fwproxy_mms_funnel_rewrites_total", `mode="association"`))
	assert.Equal(t, float64(manyAnnounced), m.sum("fwproxy_mms_funnel_rewrites_total", `mode="announced"`))
	assert.Zero(t, m.sum("fwproxy_mms_funnel_rewrites_total", `mode="failed"`))

	// Leases: one per player; every firewall client's rebind met its
	// lease (held by the filter meanwhile) and joined it, or took it over
	// from its own old association; the racing ones were handovers.
	ev := func(e string) float64 { return m.sum("fwproxy_leases_events_total", `event="`+e+`"`) }
	assert.Equal(t, float64(players), ev("acquire"))
	assert.Equal(t, float64(manyFirewall*manySetup.entries), ev("join")+ev("handover")+ev("reclaim"),
		"each firewall client's funnel and each of its rebinds met the existing lease")
	assert.GreaterOrEqual(t, ev("handover"), float64(by[mmsplayer.OrderNewFirst]), "a new association ahead of the old close is a handover")
	assert.LessOrEqual(t, ev("handover"), float64(by[mmsplayer.OrderNewFirst]+by[mmsplayer.OrderConcurrent]))

	// Datagrams: none dropped; the tails that landed in a gap were
	// buffered and every one handed over.
	assert.Zero(t, m.sum("fwproxy_leases_datagrams_total", `outcome="dropped"`), "no datagram dropped")
	buffered := m.sum("fwproxy_leases_datagrams_total", `outcome="buffered"`)
	assert.Positive(t, buffered, "tails landed in rebind gaps")
	assert.Equal(t, buffered, m.sum("fwproxy_leases_datagrams_total", `outcome="flushed"`))
	relayed := m.sum("fwproxy_udp_datagrams_total", `direction="remote_to_client"`, `outcome="relayed"`)
	assert.Equal(t, relayed, m.sum("fwproxy_udp_datagrams_total", `direction="remote_to_client"`), "every datagram reached its association")
}

// TestPlaylistWithoutLinger is the proof that the playlist test can fail:
// the same run against fwproxy with -lease-linger 0 (no buffering, no
// linger: the old behaviour) must lose packets, and the proxy must count
// each one as dropped. What is lost is what reached the proxy while a
// player was between close and bind: the tails, held until the player
// spoke in its gap, and whatever else of the entry's end was still in
// flight when the end-of-entry messages overtook it. That is one burst
// per transition that had a gap, never a packet anywhere else.
func TestPlaylistWithoutLinger(t *testing.T) {
	forEachNet(t, false, testPlaylistWithoutLinger)
}

func testPlaylistWithoutLinger(t *testing.T, n *testNet) {
	reports, _, m := manyPlayers(t, n, "-lease-linger", "0")
	lost, firewallLost, possible := 0, 0, 0
	for i, r := range reports {
		name := fmt.Sprintf("player %d (%v)", i, r.Mode)
		require.NoError(t, r.Err, "%s: failures %v", name, r.Failures)
		assert.Zero(t, r.Count(mmsplayer.FailBind), name)
		assert.Zero(t, r.Count(mmsplayer.FailAssociate), name)
		require.Len(t, r.Entries, manySetup.entries, name)
		for k, e := range r.Entries {
			// The proxy has a release→rebind gap when the player closed
			// first (an announced player always does), and when the old
			// association's close won the race against the new one. A
			// new association sent ahead of the old close is a handover:
			// no gap, nothing lost even without lingering.
			var next mmsplayer.Order
			if k+1 < len(r.Entries) {
				next = r.Entries[k+1].Step.Order
			}
			if next == mmsplayer.OrderCloseFirst {
				possible += manySetup.tail
			}
			if len(e.Lost) > 0 {
				gap := next == mmsplayer.OrderCloseFirst || next == mmsplayer.OrderConcurrent
				assert.True(t, gap, "%s entry %d lost %v, but the next transition (%v) leaves no gap", name, k, e.Lost, next)
				// Packets go out in LocationId order and the proxy
				// handles them in order: one gap loses one run.
				first := e.Lost[0]
				for j, loc := range e.Lost {
					assert.Equal(t, first+uint32(j), loc, "%s entry %d lost %v: not one burst", name, k, e.Lost)
				}
			}
			lost += len(e.Lost)
			if r.Mode == mmsplayer.ModeFirewall {
				firewallLost += len(e.Lost)
			}
			assert.Zero(t, e.Duplicates+e.Corrupt, name)
		}
	}
	t.Logf("lost %d packets (%d by firewall clients); %d tail packets were held for a close-first gap", lost, firewallLost, possible)
	assert.Positive(t, firewallLost, "without lingering, firewall clients must lose the tails that land in their rebind gap")
	assert.Positive(t, lost-firewallLost, "without lingering, announced players must lose the tails held while they rebind")
	assert.Equal(t, float64(lost), m.sum("fwproxy_leases_datagrams_total", `outcome="dropped"`), "the proxy counted every lost packet as dropped")
	assert.Zero(t, m.sum("fwproxy_leases_datagrams_total", `outcome="buffered"`), "linger 0 buffers nothing")
}

// TestMMSDemo: `make demo` works: mmsdemo starts the server, fwproxy and
// its players, prints its tables, exits 0 (nothing lost with lingering
// leases), and its run against -lease-linger 0 shows the loss.
func TestMMSDemo(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, filepath.Join(binDir, "mmsdemo"),
		"-fwproxy", filepath.Join(binDir, "fwproxy"), "-asset", "testdata/sine440.asf", "-entries", "3", "-interval", "5ms")
	// mmsdemo stops its fwproxy itself; should it hang, the timeout kills
	// its whole process group, fwproxy included.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = 5 * time.Second
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	require.NoError(t, cmd.Run(), "mmsdemo:\n%s\n%s", out.String(), errOut.String())
	t.Logf("mmsdemo:\n%s", out.String())

	text := out.String()
	lingering, old, found := strings.Cut(text, "fwproxy -lease-linger 0")
	require.True(t, found, "the comparison with -lease-linger 0 is printed")
	lost := func(table, row string) int {
		for _, line := range strings.Split(table, "\n") {
			if strings.HasPrefix(line, row) {
				f := strings.Fields(strings.TrimPrefix(line, row))
				require.GreaterOrEqual(t, len(f), 4, line)
				n, err := strconv.Atoi(f[3])
				require.NoError(t, err, line)
				return n
			}
		}
		t.Fatalf("no row %q in\n%s", row, table)
		return 0
	}
	for _, row := range []string{"firewall client, close then bind", "firewall client, new association first",
		"firewall client, both at once", "SOCKS player, UDP announced", "MMST player"} {
		assert.Zero(t, lost(lingering, row), "%s with lingering leases", row)
	}
	assert.Positive(t, lost(old, "firewall client, close then bind"), "without lingering the close-first firewall client loses its tails")
	assert.Positive(t, lost(old, "SOCKS player, UDP announced"), "without lingering the announced player loses its tails")
	assert.Zero(t, lost(old, "MMST player"), "MMST has no UDP to lose")
	for _, row := range []string{"RTSP firewall client", "RTSP SOCKS player, UDP announced"} {
		assert.Zero(t, lost(lingering, row), "%s with lingering leases", row)
		assert.Zero(t, lost(old, row), "%s: each item's data comes after its own PLAY", row)
	}
	assert.Equal(t, 2, strings.Count(text, "rtsp: setups association 3, announced 3;"), "every RTSP SETUP went through the filter, in both rounds")
}

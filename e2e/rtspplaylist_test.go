package e2e

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"fwproxy/e2e/rtspplayer"
	"fwproxy/e2e/rtspserver"
)

// The RTSP playlist tests: gortsplib's server plays each item its own known
// sequence, and emulated players (e2e/rtspplayer) play 20 items each, all on
// the same client ports, tearing down, closing and binding again between
// items, many at once, through fwproxy's RTSP filter. What the server saw
// (its SETUPs, per item) is judged beside what the players got.

// rtspSetup is one playlist run.
type rtspSetup struct {
	firewall, announced int // players of each mode
	items, packets      int
	// busy holds every player's own port numbers on the proxy's external
	// address, so that the lease cannot keep them: a missing rewrite then
	// sends the server's data where no player is.
	busy bool
	// lossWait is the players' wait for an item's sequence (0: the step
	// timeout).
	lossWait time.Duration
}

// rtspPortPairs picks count (even, odd) port pairs free for the players on
// n and on the proxy's external address, below the ephemeral range and
// apart from the MMS players'; with hold, it keeps the pairs bound on the
// external address until the test ends.
func rtspPortPairs(t *testing.T, n *testNet, count int, hold bool) []uint16 {
	t.Helper()
	external := netip.MustParseAddr(n.externalIP())
	onProxy := func(f func() error) error {
		if n.fw == nil {
			return f()
		}
		return n.fw.Proxy().Do(f)
	}
	onPlayer := func(f func() error) error {
		if n.fw == nil {
			return f()
		}
		return n.fw.Inside.Do(f)
	}
	bindPair := func(open func(func() error) error, ip netip.Addr, port uint16) ([]*net.UDPConn, error) {
		var cs []*net.UDPConn
		err := open(func() error {
			for _, p := range []uint16{port, port + 1} {
				c, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.AddrPortFrom(ip, p)))
				if err != nil {
					return err
				}
				cs = append(cs, c)
			}
			return nil
		})
		if err != nil {
			for _, c := range cs {
				c.Close()
			}
			return nil, err
		}
		return cs, nil
	}
	var ports []uint16
	for port := uint16(10000 + 2*rand.IntN(4000)); len(ports) < count; port += 2 {
		if port >= 19998 {
			port = 10000
		}
		mine, err := bindPair(onPlayer, n.playerIP(), port)
		if err != nil {
			continue
		}
		for _, c := range mine {
			c.Close()
		}
		ext, err := bindPair(onProxy, external, port)
		if err != nil {
			continue
		}
		if hold {
			t.Cleanup(func() {
				for _, c := range ext {
					c.Close()
				}
			})
		} else {
			for _, c := range ext {
				c.Close()
			}
		}
		ports = append(ports, port)
	}
	return ports
}

// rtspPlayers runs s's players through proxy (proxy "" plays directly)
// against srv, all at once, and returns their reports.
func rtspPlayers(t *testing.T, n *testNet, srv *rtspserver.Server, proxy string, s rtspSetup) []*rtspplayer.Report {
	t.Helper()
	ports := rtspPortPairs(t, n, s.firewall+s.announced, s.busy)
	var cfgs []rtspplayer.Config
	for i := range s.firewall + s.announced {
		mode := rtspplayer.ModeFirewall
		if i >= s.firewall {
			mode = rtspplayer.ModeAnnounced
		}
		cfgs = append(cfgs, rtspplayer.Config{
			Server: srv.Addr(), Tag: fmt.Sprintf("p%d", i), Proxy: proxy, Mode: mode,
			LocalIP: n.playerIP(), Port: ports[i], Items: s.items, Packets: s.packets,
			StepTimeout: 10 * time.Second, LossWait: s.lossWait, Sockets: n.sockets(),
			// Every other player plays its odd items on the previous
			// item's control connection: the next item's SETUP comes after
			// a TEARDOWN on the same connection, not after its close.
			KeepConnection: i%2 == 1,
		})
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	reports := make([]*rtspplayer.Report, len(cfgs))
	var wg sync.WaitGroup
	start := time.Now()
	for i, c := range cfgs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			reports[i] = rtspplayer.Play(ctx, c)
		}()
	}
	wg.Wait()
	t.Logf("%d RTSP players, %d items each: %v", len(cfgs), s.items, time.Since(start).Round(time.Millisecond))
	return reports
}

// requireRTSPClean asserts that a player played every item whole, with no
// bind, association or SETUP failure, and saw its own ports in every SETUP
// reply.
func requireRTSPClean(t *testing.T, name string, r *rtspplayer.Report, s rtspSetup) {
	t.Helper()
	require.NoError(t, r.Err, "%s: failures %v", name, r.Failures)
	assert.Zero(t, r.Count(rtspplayer.FailBind), "%s bind failures", name)
	assert.Zero(t, r.Count(rtspplayer.FailAssociate), "%s association failures", name)
	assert.Zero(t, r.Count(rtspplayer.FailSetup), "%s SETUP failures", name)
	require.Len(t, r.Items, s.items, name)
	own := [2]int{int(r.Port), int(r.Port) + 1}
	for _, it := range r.Items {
		assert.Equal(t, s.packets, it.Received, "%s item %d lost %v", name, it.Index, it.Lost)
		assert.Zero(t, it.Duplicates+it.Corrupt+it.Stray, "%s item %d: duplicates %d, corrupt %d, stray %d", name, it.Index, it.Duplicates, it.Corrupt, it.Stray)
		assert.Equal(t, own, it.ReplyPorts, "%s item %d: the SETUP reply names the player's own ports", name, it.Index)
	}
}

// setupsByPlayer groups the server's SETUPs of seq paths by player tag,
// in order.
func setupsByPlayer(srv *rtspserver.Server) map[string][]rtspserver.Setup {
	out := map[string][]rtspserver.Setup{}
	for _, s := range srv.Setups() {
		var tag string
		var item int
		if _, err := fmt.Sscanf(s.Path, rtspserver.SeqPath+"/%s", &tag); err != nil {
			continue
		}
		// tag is "p<i>-<item>/trackID=0".
		var player int
		if _, err := fmt.Sscanf(tag, "p%d-%d", &player, &item); err != nil {
			continue
		}
		key := fmt.Sprintf("p%d", player)
		out[key] = append(out[key], s)
	}
	return out
}

// externalPorts is what the server was asked to send to for each item of
// player i: the ports of the proxy's lease group.
func externalPorts(t *testing.T, n *testNet, srv *rtspserver.Server, i, items int) [][2]int {
	t.Helper()
	setups := setupsByPlayer(srv)[fmt.Sprintf("p%d", i)]
	require.Len(t, setups, items, "player %d: one SETUP per item", i)
	var out [][2]int
	for k, s := range setups {
		assert.Equal(t, n.externalIP(), s.Remote.Addr().String(), "player %d item %d: the server saw the proxy's external address", i, k)
		out = append(out, s.ClientPorts)
	}
	return out
}

// requireSequencesSent asserts the server sent every item's whole sequence
// and, with rtcp, got a receiver report on each.
func requireSequencesSent(t *testing.T, srv *rtspserver.Server, s rtspSetup) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	require.NoError(t, srv.WaitSequences(ctx))
	plays := srv.Plays()
	require.Len(t, plays, (s.firewall+s.announced)*s.items, "one PLAY per item")
	for _, p := range plays {
		assert.Equal(t, s.packets, p.Sent, "%s: the whole sequence went out", p.Path)
		assert.Zero(t, p.Failed, "%s: no packet refused by the session", p.Path)
	}
}

// rtspManySetup is the playlist of the many-players test: 20 short items,
// so that a dozen players finish in seconds under the race detector.
var rtspManySetup = rtspSetup{items: 20, packets: 30}

// TestRTSPPlaylist: many players at once, 20 items each on the same client
// ports, in both modes, with their ports free on the proxy's external
// address and with them held there: zero packets lost, zero bind or SETUP
// failures, each player's own ports in every SETUP reply, the server asked
// to send to the same external ports at every item (the lease group
// survives the gap), and with the ports held, to ports other than the
// player's (the rewrite, not port preservation, delivers).
func TestRTSPPlaylist(t *testing.T) {
	tests := []struct {
		name                string
		firewall, announced int
		busy                bool
	}{
		{"both modes, players' ports free on the external address", 8, 4, false},
		{"announced, players' ports held on the external address", 0, 8, true},
		{"firewall clients, players' ports held on the external address", 8, 0, true},
	}
	forEachNet(t, true, func(t *testing.T, n *testNet) {
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				s := rtspManySetup
				s.firewall, s.announced, s.busy = tt.firewall, tt.announced, tt.busy
				cfg := rtspserver.DefaultConfig()
				cfg.Packets = s.packets
				srv := startRTSPServer(t, n, cfg)
				p := startRTSPProxy(t, n, srv.Addr().Port())
				reports := rtspPlayers(t, n, srv, p.socks, s)
				for i, r := range reports {
					requireRTSPClean(t, fmt.Sprintf("player %d (%v)", i, r.Mode), r, s)
				}
				requireSequencesSent(t, srv, s)
				same := 0
				for _, r := range reports {
					for _, it := range r.Items {
						if it.SameConnection {
							same++
						}
					}
				}
				assert.Equal(t, len(reports)/2*s.items/2, same, "half the players played half their items on the previous item's connection")
				for i, r := range reports {
					ext := externalPorts(t, n, srv, i, s.items)
					own := [2]int{int(r.Port), int(r.Port) + 1}
					for k, e := range ext {
						assert.Equal(t, ext[0], e, "player %d (%v) item %d: the same external ports as item 0", i, r.Mode, k)
					}
					// The filter leases an announced player's group itself;
					// a firewall client's ports are its associations'
					// leases, which keep the pair too (leases pairPort).
					assert.Equal(t, ext[0][0]+1, ext[0][1], "player %d (%v): an RTP/RTCP pair", i, r.Mode)
					assert.Zero(t, ext[0][0]%2, "player %d (%v): RTP on an even port", i, r.Mode)
					if s.busy {
						assert.NotEqual(t, own, ext[0], "player %d: its ports are held on the external address, so the lease has others", i)
					} else {
						assert.Equal(t, own, ext[0], "player %d: its ports were free on the external address and kept", i)
					}
				}
				requireRTSPMetrics(t, p, s)
				if s.firewall > 0 {
					// Each firewall client sends one receiver report per
					// item through its RTCP association, right after PLAY;
					// the proxy relays every one. The server counts those
					// that arrive before the item's TEARDOWN closes the
					// session: nearly all, but the UDP report and the TCP
					// TEARDOWN race, so only the path is asserted there.
					m := settledMetrics(t, p)
					assert.Equal(t, float64(s.firewall*s.items), m.sum("fwproxy_udp_datagrams_total", `direction="client_to_remote"`, `outcome="relayed"`),
						"every receiver report went out through the proxy")
					rtcp := 0
					for _, pl := range srv.Plays() {
						rtcp += pl.RTCP
					}
					t.Logf("the server got %d of %d receiver reports", rtcp, s.firewall*s.items)
					assert.Positive(t, rtcp, "receiver reports reached the server from the RTCP lease it was told about")
				}
			})
		}
	})
}

// TestRTSPPlaylistDirect is the players' and server's baseline without the
// proxy: announced-mode players straight to the server.
func TestRTSPPlaylistDirect(t *testing.T) {
	s := rtspSetup{announced: 3, items: 4, packets: 30}
	cfg := rtspserver.DefaultConfig()
	cfg.Packets = s.packets
	srv := startRTSPServer(t, onLoopback, cfg)
	reports := rtspPlayers(t, onLoopback, srv, "", s)
	for i, r := range reports {
		requireRTSPClean(t, fmt.Sprintf("player %d", i), r, s)
	}
	requireSequencesSent(t, srv, s)
}

// requireRTSPMetrics asserts the filter counted what the players did:
// every request and its 2xx reply, each SETUP by mode, every transport
// rewritten, no problem, no control connection left.
func requireRTSPMetrics(t *testing.T, p *proxyProc, s rtspSetup) {
	t.Helper()
	// The proxy ends a session a moment after the player closes its end.
	p.waitMetric(t, "fwproxy_rtsp_connections_active 0")
	m := settledMetrics(t, p)
	items := float64((s.firewall + s.announced) * s.items)
	for _, method := range []string{"DESCRIBE", "SETUP", "PLAY", "TEARDOWN"} {
		assert.Equal(t, items, m.sum("fwproxy_rtsp_requests_total", `direction="client_to_server"`, `method="`+method+`"`), method)
	}
	assert.Equal(t, 4*items, m.sum("fwproxy_rtsp_responses_total", `direction="server_to_client"`, `class="2xx"`), "every request answered 2xx")
	assert.Equal(t, 4*items, m.sum("fwproxy_rtsp_responses_total"), "and nothing else")
	assert.Equal(t, float64(s.firewall*s.items), m.sum("fwproxy_rtsp_setups_total", `mode="association"`, `outcome="accepted"`), "firewall clients' SETUPs joined their associations")
	assert.Equal(t, float64(s.announced*s.items), m.sum("fwproxy_rtsp_setups_total", `mode="announced"`, `outcome="accepted"`), "announced players' SETUPs")
	assert.Equal(t, items, m.sum("fwproxy_rtsp_setups_total"), "no other SETUP outcome")
	assert.Equal(t, items, m.sum("fwproxy_rtsp_transports_total", `action="rewritten"`), "every transport rewritten")
	assert.Equal(t, items, m.sum("fwproxy_rtsp_transports_total"), "none passed or dropped")
	assert.Zero(t, m.sum("fwproxy_rtsp_problems_total"), "no problem")
	assert.Zero(t, m.sum("fwproxy_rtsp_destination_rewrites_total"), "no destination= to rewrite")
	assert.Zero(t, m.sum("fwproxy_leases_datagrams_total", `outcome="dropped"`), "no datagram dropped")
}

// TestRTSPWithoutLinger: with -lease-linger 0 nothing is lost in this
// scenario either (each item's data starts after its own SETUP and PLAY),
// but the ports do not survive the gap: with the players' own ports held
// on the external address, the next item gets other external ports.
func TestRTSPWithoutLinger(t *testing.T) {
	tests := []struct {
		name                string
		firewall, announced int
	}{
		{"announced", 0, 3},
		{"firewall clients", 3, 0},
	}
	forEachNet(t, false, func(t *testing.T, n *testNet) {
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				s := rtspSetup{firewall: tt.firewall, announced: tt.announced, items: 5, packets: 30, busy: true}
				cfg := rtspserver.DefaultConfig()
				cfg.Packets = s.packets
				srv := startRTSPServer(t, n, cfg)
				p := startRTSPProxy(t, n, srv.Addr().Port(), "-lease-linger", "0")
				reports := rtspPlayers(t, n, srv, p.socks, s)
				for i, r := range reports {
					requireRTSPClean(t, fmt.Sprintf("player %d (%v)", i, r.Mode), r, s)
				}
				requireSequencesSent(t, srv, s)
				for i, r := range reports {
					ext := externalPorts(t, n, srv, i, s.items)
					changed := 0
					for k := 1; k < len(ext); k++ {
						if ext[k] != ext[k-1] {
							changed++
						}
					}
					t.Logf("player %d (%v): external ports by item %v", i, r.Mode, ext)
					assert.Positive(t, changed, "player %d (%v): without lingering the group is gone at TEARDOWN, and the next item's SETUP gets other ports", i, r.Mode)
				}
				m := settledMetrics(t, p)
				assert.Zero(t, m.sum("fwproxy_leases_datagrams_total", `outcome="buffered"`), "linger 0 buffers nothing")
			})
		}
	})
}

// TestRTSPWithoutFilter is the proof that the playlist test's rewrite
// assertions can fail: against fwproxy with -rtsp-ports ” the SETUP
// passes unchanged, the server sends to the players' own port numbers at
// the proxy's external address, where the test holds them, and the
// players get nothing.
func TestRTSPWithoutFilter(t *testing.T) {
	forEachNet(t, false, func(t *testing.T, n *testNet) {
		s := rtspSetup{firewall: 1, announced: 1, items: 2, packets: 10, busy: true, lossWait: 2 * time.Second}
		cfg := rtspserver.DefaultConfig()
		cfg.Packets = s.packets
		srv := startRTSPServer(t, n, cfg)
		p := startRTSPProxy(t, n, srv.Addr().Port(), "-rtsp-ports", "")
		reports := rtspPlayers(t, n, srv, p.socks, s)
		for i, r := range reports {
			require.NoError(t, r.Err, "player %d: failures %v", i, r.Failures)
			require.Len(t, r.Items, s.items)
			own := [2]int{int(r.Port), int(r.Port) + 1}
			for k, e := range externalPorts(t, n, srv, i, s.items) {
				assert.Equal(t, own, e, "player %d item %d: unfiltered, the server was asked for the player's own ports", i, k)
			}
			assert.Zero(t, r.Received(), "player %d (%v): the data went to the held ports, none to the player", i, r.Mode)
		}
		assert.Zero(t, parseMetrics(t, p.scrape(t)).sum("fwproxy_rtsp_setups_total"), "no SETUP went through the filter")
	})
}

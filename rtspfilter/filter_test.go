package rtspfilter

import (
	"context"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/netip"
	"sync/atomic"
	"testing"
	"time"

	"github.com/bluenviron/gortsplib/v4/pkg/base"
	"github.com/pion/rtcp"
	"github.com/pion/rtp"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"fwproxy/internal/socksclient"
	"fwproxy/leases"
	"fwproxy/proxy"
)

// These tests run the filter where it lives: inside a real SOCKS proxy on
// loopback, between a player built on gortsplib's message packages and
// gortsplib's RTSP server.

const testTimeout = 10 * time.Second

var (
	// external is the proxy's outside address, apart from the client's
	// 127.0.0.1 as across two hosts.
	external = netip.MustParseAddr("127.0.0.2")
	clientIP = netip.MustParseAddr("127.0.0.1")
)

// testLeaseRange keeps the leases away from the server's UDP pair.
const testLeasePortMin, testLeasePortMax = 40000, 49999

type filterEnv struct {
	proxyAddr string
	server    *realServer
	leases    *leases.Manager
	obs       *countingObserver
}

type envOptions struct {
	linger time.Duration
	tracks int // the server's stream; 0: one
	cfg    func(*Config)
	// leasePorts narrows the leases' range; zero: testLeasePortMin-Max.
	leasePorts [2]uint16
	// extraPorts also run through the filter (a scripted server's).
	extraPorts []uint16
	// logger is the filter's; nil discards.
	logger *slog.Logger
}

func newFilterEnv(t *testing.T, o envOptions) *filterEnv {
	t.Helper()
	lcfg := leases.DefaultConfig()
	lcfg.ListenIP = external
	lcfg.Linger = o.linger
	lcfg.PortMin, lcfg.PortMax = testLeasePortMin, testLeasePortMax
	if o.leasePorts[0] != 0 {
		lcfg.PortMin, lcfg.PortMax = o.leasePorts[0], o.leasePorts[1]
	}
	lm, err := leases.New(lcfg, leases.Deps{})
	require.NoError(t, err)
	t.Cleanup(func() { lm.Close() })

	srv := newRealServerWith(t, max(o.tracks, 1))
	cfg := DefaultConfig()
	cfg.ExternalIP = external
	cfg.AcquireTimeout = testTimeout
	if o.cfg != nil {
		o.cfg(&cfg)
	}
	obs := &countingObserver{}
	f, err := New(cfg, Deps{Leases: lm, Observer: obs, Logger: o.logger})
	require.NoError(t, err)
	pcfg := proxy.DefaultConfig()
	pcfg.ExternalIP = external
	pcfg.Rules.AllowDestinations = []proxy.DestRule{{Network: netip.MustParsePrefix("127.0.0.0/8")}}
	var filters proxy.Filters
	require.NoError(t, filters.Register(f, append([]uint16{srv.addr.Port()}, o.extraPorts...)...))
	p, err := proxy.New(pcfg, proxy.Deps{Leases: lm, Filters: &filters})
	require.NoError(t, err)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	go p.Serve(ln)
	t.Cleanup(func() { p.Close() })
	return &filterEnv{proxyAddr: ln.Addr().String(), server: srv, leases: lm, obs: obs}
}

// dial opens a control connection to the server through the proxy.
func (e *filterEnv) dial(t *testing.T) *rtspClient {
	t.Helper()
	d := socksclient.Dialer{Proxy: e.proxyAddr, Timeout: testTimeout}
	c, err := d.Connect(context.Background(), socksclient.AddrFromAddrPort(e.server.addr))
	require.NoError(t, err)
	t.Cleanup(func() { c.Close() })
	return newRTSPClient(t, c, e.server.addr)
}

// rtpPorts binds an even port and the next one on the client's IP, inside
// the leases' range so that a lease can keep them.
func rtpPorts(t *testing.T) (rtpConn, rtcpConn *net.UDPConn) {
	t.Helper()
	for range 100 {
		p := testLeasePortMin + 2*rand.IntN((testLeasePortMax-testLeasePortMin)/2)
		a, err := net.ListenUDP("udp", &net.UDPAddr{IP: clientIP.AsSlice(), Port: p})
		if err != nil {
			continue
		}
		b, err := net.ListenUDP("udp", &net.UDPAddr{IP: clientIP.AsSlice(), Port: p + 1})
		if err != nil {
			a.Close()
			continue
		}
		t.Cleanup(func() { a.Close(); b.Close() })
		a.SetDeadline(time.Now().Add(testTimeout))
		b.SetDeadline(time.Now().Add(testTimeout))
		return a, b
	}
	t.Fatal("no free port pair")
	return nil, nil
}

func portOf(u *net.UDPConn) uint16 { return u.LocalAddr().(*net.UDPAddr).AddrPort().Port() }

// holdBusy binds ports on the external address so that the leases cannot
// keep the client's own numbers: a rewrite that is missing then shows.
func holdBusy(t *testing.T, ports ...uint16) {
	t.Helper()
	for _, p := range ports {
		u, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.AddrPortFrom(external, p)))
		require.NoError(t, err)
		t.Cleanup(func() { u.Close() })
	}
}

// readRTP reads RTP from u until one packet arrives; through an
// association it strips the SOCKS UDP header first.
func readRTP(t *testing.T, u *net.UDPConn, assoc bool) *rtp.Packet {
	t.Helper()
	buf := make([]byte, 2048)
	for {
		n, _, err := u.ReadFromUDPAddrPort(buf)
		require.NoError(t, err, "no RTP reached the client's port")
		b := buf[:n]
		if assoc {
			_, hl, err := socksclient.ParseUDPHeader(b)
			require.NoError(t, err)
			b = b[hl:]
		}
		var pkt rtp.Packet
		if pkt.Unmarshal(b) == nil && pkt.SSRC == 0x0badcafe {
			return &pkt
		}
	}
}

// associate opens a UDP association for u's port, as a firewall client
// (a program under socksify) does before it announces the port, and
// returns the relay address to send through.
func (e *filterEnv) associate(t *testing.T, u *net.UDPConn) netip.AddrPort {
	t.Helper()
	d := socksclient.Dialer{Proxy: e.proxyAddr, Timeout: testTimeout}
	ctl, bnd, err := d.Request(context.Background(), socksclient.CmdUDPAssociate, socksclient.AddrFromAddrPort(netip.AddrPortFrom(netip.IPv4Unspecified(), portOf(u))))
	require.NoError(t, err)
	t.Cleanup(func() { ctl.Close() })
	relay, ok := socksclient.RelayAddr(bnd, e.proxyAddr)
	require.True(t, ok)
	return relay
}

// sendRTCPUntilHeard sends receiver reports from u through its
// association to the server's RTCP port until the server accepted one.
func (e *filterEnv) sendRTCPUntilHeard(t *testing.T, u *net.UDPConn, relay netip.AddrPort) {
	t.Helper()
	rr, err := (&rtcp.ReceiverReport{SSRC: 0x5eed}).Marshal()
	require.NoError(t, err)
	dst := socksclient.AddrFromAddrPort(netip.AddrPortFrom(clientIP, uint16(e.server.udp[1])))
	dgram, err := socksclient.AppendUDPHeader(nil, dst)
	require.NoError(t, err)
	dgram = append(dgram, rr...)
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	deadline := time.NewTimer(testTimeout)
	defer deadline.Stop()
	for {
		_, err := u.WriteToUDPAddrPort(dgram, relay)
		require.NoError(t, err)
		select {
		case <-e.server.rtcp:
			return
		case <-tick.C:
		case <-deadline.C:
			t.Fatal("the server accepted no RTCP from the client's RTCP port through its association")
		}
	}
}

func TestFilterSetupThroughProxy(t *testing.T) {
	tests := []struct {
		name  string
		assoc bool
		busy  bool // the client's numbers are taken on the external address
		late  bool // the associations come after the SETUP, before PLAY
	}{
		{"announced mode, own ports busy outside", false, true, false},
		{"announced mode, own ports kept", false, false, false},
		{"firewall-client mode", true, false, false},
		{"firewall client that associates after the SETUP", true, false, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			env := newFilterEnv(t, envOptions{linger: testTimeout})
			a, b := rtpPorts(t)
			pa, pb := portOf(a), portOf(b)
			if tt.busy {
				holdBusy(t, pa, pb)
			}
			var rtcpRelay netip.AddrPort
			associate := func() {
				env.associate(t, a)
				rtcpRelay = env.associate(t, b)
			}
			if tt.assoc && !tt.late {
				associate()
			}
			c := env.dial(t)
			u := c.describe()
			res, th, sess := c.setup(u, fmt.Sprintf("RTP/AVP;unicast;client_port=%d-%d", pa, pb), "")
			require.Equal(t, base.StatusOK, res.StatusCode)
			require.NotNil(t, th.ClientPorts)
			assert.Equal(t, [2]int{int(pa), int(pb)}, *th.ClientPorts, "the client sees its own ports in the reply")

			seen := env.server.lastSetup()
			assert.Equal(t, external, seen.peer.Addr().Unmap(), "the server sees the proxy's external address")
			ext := serverSaw(t, seen)
			assert.Equal(t, ext[0]+1, ext[1], "consecutive external ports")
			assert.Zero(t, ext[0]%2, "RTP on an even port")
			if tt.busy {
				assert.NotEqual(t, [2]int{int(pa), int(pb)}, ext, "the client's own numbers are busy outside: rewritten")
			}
			if !tt.busy && !tt.assoc {
				assert.Equal(t, [2]int{int(pa), int(pb)}, ext, "free: the client's ports are kept")
			}

			if tt.late {
				// They join the SETUP's leases: same keys, same ports.
				associate()
			}
			c.play(sess)
			env.server.pump(t)
			pkt := readRTP(t, a, tt.assoc)
			assert.Contains(t, string(pkt.Payload), "tone ", "the server's RTP reaches the client's RTP port")
			if tt.assoc {
				// The firewall client's RTCP goes out through its
				// association, from the port the server was told.
				env.sendRTCPUntilHeard(t, b, rtcpRelay)
			}
			want := SetupAnnounced
			if tt.assoc && !tt.late {
				want = SetupJoined
			}
			assert.Equal(t, int64(1), env.obs.setups[want][OutcomeAccepted].Load())
		})
	}
}

func TestFilterTeardownThenSetupReclaimsThePorts(t *testing.T) {
	for _, sameConn := range []bool{true, false} {
		t.Run(fmt.Sprintf("same connection %v", sameConn), func(t *testing.T) {
			env := newFilterEnv(t, envOptions{linger: testTimeout})
			a, b := rtpPorts(t)
			pa, pb := portOf(a), portOf(b)
			holdBusy(t, pa, pb)
			transport := fmt.Sprintf("RTP/AVP;unicast;client_port=%d-%d", pa, pb)

			c := env.dial(t)
			u := c.describe()
			_, _, sess := c.setup(u, transport, "")
			first := serverSaw(t, env.server.lastSetup())
			c.play(sess)
			c.teardown(sess)
			// The tail of the item, still in flight after the
			// TEARDOWN (the server's address, another port): it waits
			// in the lingering group for the next SETUP.
			tail := udpFrom(t, clientIP)
			for i := range 3 {
				pkt := rtp.Packet{Header: rtp.Header{Version: 2, SequenceNumber: uint16(900 + i), SSRC: 0x0badcafe}, Payload: []byte("tail")}
				b, err := pkt.Marshal()
				require.NoError(t, err)
				_, err = tail.WriteToUDPAddrPort(b, netip.AddrPortFrom(external, uint16(first[0])))
				require.NoError(t, err)
			}
			require.Eventually(t, func() bool { return env.leases.Stats().BufferedDatagrams == 3 }, testTimeout, time.Millisecond, "the lingering group buffers the tail")
			if !sameConn {
				c.conn.Close()
				c = env.dial(t)
				u = c.describe()
			}
			res, th, _ := c.setup(u, transport, "")
			require.Equal(t, base.StatusOK, res.StatusCode)
			assert.Equal(t, [2]int{int(pa), int(pb)}, *th.ClientPorts)
			assert.Equal(t, first, serverSaw(t, env.server.lastSetup()), "the next item gets the same external ports")
			for i := range 3 {
				assert.Equal(t, uint16(900+i), readRTP(t, a, false).SequenceNumber, "and what waited, in order")
			}
		})
	}
}

// udpFrom is a UDP socket on ip, closed with the test.
func udpFrom(t *testing.T, ip netip.Addr) *net.UDPConn {
	t.Helper()
	u, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.AddrPortFrom(ip, 0)))
	require.NoError(t, err)
	t.Cleanup(func() { u.Close() })
	return u
}

// TestFilterSessionTiesSetups: two tracks set up in one session (the
// second SETUP names the session) are released together by its TEARDOWN.
func TestFilterSessionTiesSetups(t *testing.T) {
	env := newFilterEnv(t, envOptions{linger: testTimeout, tracks: 2})
	c := env.dial(t)
	us := c.describeAll()
	require.Len(t, us, 2)
	a1, b1 := rtpPorts(t)
	a2, b2 := rtpPorts(t)
	res, _, sess := c.setup(us[0], fmt.Sprintf("RTP/AVP;unicast;client_port=%d-%d", portOf(a1), portOf(b1)), "")
	require.Equal(t, base.StatusOK, res.StatusCode)
	res, th, sess2 := c.setup(us[1], fmt.Sprintf("RTP/AVP;unicast;client_port=%d-%d", portOf(a2), portOf(b2)), sess)
	require.Equal(t, base.StatusOK, res.StatusCode)
	assert.Equal(t, sess, sess2)
	assert.Equal(t, [2]int{int(portOf(a2)), int(portOf(b2))}, *th.ClientPorts)
	assert.Equal(t, 4, env.leases.Stats().Active)
	c.play(sess)

	// A TEARDOWN of one track ends only that stream (RFC 2326 §10.7):
	// the other keeps its leases. (gortsplib's server ends the whole
	// session whatever the URI, so only the leases are checked.)
	res = c.do(base.Teardown, us[1], base.Header{"Session": base.HeaderValue{sess}})
	require.Equal(t, base.StatusOK, res.StatusCode)
	require.Eventually(t, func() bool {
		s := env.leases.Stats()
		return s.Active == 2 && s.Lingering == 2
	}, testTimeout, time.Millisecond, "the second track's group lingers, the first is held")

	// The aggregate TEARDOWN (answered 454 here: the server ended the
	// session already) releases the rest: the client is done with it.
	c.do(base.Teardown, c.base, base.Header{"Session": base.HeaderValue{sess}})
	require.Eventually(t, func() bool {
		s := env.leases.Stats()
		return s.Active == 0 && s.Lingering == 4
	}, testTimeout, time.Millisecond, "the session's TEARDOWN released the rest; everything lingers")
}

func TestFilterSessionLimit(t *testing.T) {
	env := newFilterEnv(t, envOptions{linger: testTimeout, cfg: func(c *Config) { c.MaxSessions = 1 }})
	c := env.dial(t)
	u := c.describe()
	res, _, _ := c.setup(u, "RTP/AVP;unicast;client_port=40100-40101", "")
	require.Equal(t, base.StatusOK, res.StatusCode)
	c2 := env.dial(t)
	// A second session on the same connection is refused; on another
	// connection it is not.
	res, _, _ = c.setup(u, "RTP/AVP;unicast;client_port=40102-40103", "")
	assert.Equal(t, base.StatusUnsupportedTransport, res.StatusCode)
	assert.Equal(t, int64(1), env.obs.problems[DirClientToServer][ProblemSessionLimit].Load())
	u2 := c2.describe()
	res, _, _ = c2.setup(u2, "RTP/AVP;unicast;client_port=40102-40103", "")
	assert.Equal(t, base.StatusOK, res.StatusCode)
}

// countingObserver counts what tests check.
type countingObserver struct {
	NopObserver
	setups     [NumSetupModes][NumSetupOutcomes]atomic.Int64
	problems   [NumDirections][NumProblems]atomic.Int64
	transports [NumTransportActions]atomic.Int64
	dests      atomic.Int64
	conns      atomic.Int64
}

func (o *countingObserver) Setup(m SetupMode, out SetupOutcome) { o.setups[m][out].Add(1) }
func (o *countingObserver) Problem(d Direction, p Problem, _ error) {
	o.problems[d][p].Add(1)
}
func (o *countingObserver) Transport(a TransportAction) { o.transports[a].Add(1) }
func (o *countingObserver) DestinationRewritten()       { o.dests.Add(1) }
func (o *countingObserver) ConnectionsChanged(d int)    { o.conns.Add(int64(d)) }

// TestFilterWithoutLingerPortsDoNotSurvive: with lease_linger 0 a
// TEARDOWN closes the group's sockets at once, so the next item's SETUP
// cannot count on the same external ports: anyone may take them meanwhile.
func TestFilterWithoutLingerPortsDoNotSurvive(t *testing.T) {
	env := newFilterEnv(t, envOptions{linger: 0})
	a, b := rtpPorts(t)
	holdBusy(t, portOf(a), portOf(b))
	c := env.dial(t)
	u := c.describe()
	_, _, sess := c.setup(u, fmt.Sprintf("RTP/AVP;unicast;client_port=%d-%d", portOf(a), portOf(b)), "")
	first := serverSaw(t, env.server.lastSetup())
	c.teardown(sess)
	require.Eventually(t, func() bool { return env.leases.Stats().Leases == 0 }, testTimeout, time.Millisecond, "closed, not lingering")
	holdBusy(t, uint16(first[0]), uint16(first[1])) // someone else takes them
	res, _, _ := c.setup(u, fmt.Sprintf("RTP/AVP;unicast;client_port=%d-%d", portOf(a), portOf(b)), "")
	require.Equal(t, base.StatusOK, res.StatusCode)
	assert.NotEqual(t, first, serverSaw(t, env.server.lastSetup()), "the next item gets other external ports")
}

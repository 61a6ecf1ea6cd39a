package mmsfilter

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/netip"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"fwproxy/internal/socksclient"
	"fwproxy/leases"
	"fwproxy/proxy"
)

// These tests run the filter where it lives: inside a real SOCKS proxy, on
// loopback, between a scripted player and a scripted media server.

const filterTestTimeout = 10 * time.Second

// external is the proxy's outside address: 127.0.0.2, so that it can keep
// the port a player holds on 127.0.0.1, as across two hosts.
var external = netip.MustParseAddr("127.0.0.2")

type filterEnv struct {
	proxyAddr string
	server    *scriptedServer
	leases    *leases.Manager
	held      *heldCounter
}

// heldCounter counts datagrams the leases buffered or dropped, so that a
// test can wait until the proxy has dealt with the ones sent into a gap. It
// also counts every datagram outcome and lease event, for tests that check
// what the proxy did with each.
type heldCounter struct {
	n       atomic.Int64
	changed chan struct{}

	datagrams [8][16]atomic.Int64 // by outcome, reason
	events    [16]atomic.Int64
}

var _ leases.Observer = (*heldCounter)(nil)

func (c *heldCounter) Datagrams(o leases.Outcome, r leases.DropReason, n, _ int) {
	c.datagrams[o][r].Add(int64(n))
	if o == leases.OutcomeBuffered || o == leases.OutcomeDropped {
		c.n.Add(int64(n))
	}
	c.poke()
}

func (c *heldCounter) LeaseEvent(e leases.Event) { c.events[e].Add(1); c.poke() }

func (c *heldCounter) AcquireFailed(leases.FailReason) {}

func (c *heldCounter) poke() {
	select {
	case c.changed <- struct{}{}:
	default:
	}
}

func (c *heldCounter) waitFor(t *testing.T, n int64) {
	t.Helper()
	c.waitUntil(t, func() bool { return c.n.Load() >= n },
		func() string {
			return fmt.Sprintf("the proxy held or dropped %d datagrams, want %d: it delivered them to a closed port", c.n.Load(), n)
		})
}

// waitUntil waits for cond, re-checked whenever the leases report.
func (c *heldCounter) waitUntil(t *testing.T, cond func() bool, what func() string) {
	t.Helper()
	deadline := time.NewTimer(filterTestTimeout)
	defer deadline.Stop()
	for !cond() {
		select {
		case <-c.changed:
		case <-deadline.C:
			t.Fatal(what())
		}
	}
}

// total is every inbound datagram the leases accounted for, whatever its
// outcome (flushed ones were counted buffered first).
func (c *heldCounter) total() int64 {
	var n int64
	for o := range c.datagrams {
		if leases.Outcome(o) == leases.OutcomeFlushed {
			continue
		}
		for r := range c.datagrams[o] {
			n += c.datagrams[o][r].Load()
		}
	}
	return n
}

func (c *heldCounter) outcome(o leases.Outcome) int64 {
	return c.datagrams[o][leases.ReasonNone].Load()
}

func (c *heldCounter) dropped(r leases.DropReason) int64 {
	return c.datagrams[leases.OutcomeDropped][r].Load()
}

// funnelCounter counts the filter's funnels by lease mode.
type funnelCounter struct {
	nopFilterObserver
	modes [NumLeaseModes]atomic.Int64
}

func (c *funnelCounter) FunnelLeased(m LeaseMode) { c.modes[m].Add(1) }

// envOptions vary newFilterEnvWith's proxy; the zero value is
// newFilterEnv's but for the linger.
type envOptions struct {
	// external is the lease sockets' IP and the filter's ExternalIP;
	// unset: external (127.0.0.2).
	external netip.Addr
	linger   time.Duration
	// leases adjusts the lease configuration.
	leases func(*leases.Config)
	mms    FilterObserver
}

func newFilterEnv(t *testing.T, linger time.Duration) *filterEnv {
	return newFilterEnvWith(t, envOptions{linger: linger})
}

func newFilterEnvWith(t *testing.T, o envOptions) *filterEnv {
	t.Helper()
	ext := o.external
	if !ext.IsValid() {
		ext = external
	}
	lcfg := leases.DefaultConfig()
	lcfg.ListenIP = ext
	lcfg.Linger = o.linger
	if o.leases != nil {
		o.leases(&lcfg)
	}
	held := &heldCounter{changed: make(chan struct{}, 1)}
	lm, err := leases.New(lcfg, leases.Deps{Observer: held})
	require.NoError(t, err)
	t.Cleanup(func() { lm.Close() })

	srv := newScriptedServer(t)
	f, err := New(Config{ExternalIP: ext, AcquireTimeout: filterTestTimeout}, Deps{Leases: lm, Observer: o.mms})
	require.NoError(t, err)
	pcfg := proxy.DefaultConfig()
	pcfg.ExternalIP = ext
	// The scripted server is on loopback, the proxy's host.
	pcfg.Rules.AllowDestinations = []proxy.DestRule{{Network: netip.MustParsePrefix("127.0.0.0/8")}}
	var filters proxy.Filters
	require.NoError(t, filters.Register(f, srv.addr.Port()))
	p, err := proxy.New(pcfg, proxy.Deps{Leases: lm, Filters: &filters})
	require.NoError(t, err)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	go p.Serve(ln)
	t.Cleanup(func() { p.Close() })
	return &filterEnv{proxyAddr: ln.Addr().String(), server: srv, leases: lm, held: held}
}

// scriptedServer is a media server that follows the test's script: it
// accepts one control connection and sends numbered UDP Data packets.
type scriptedServer struct {
	t    *testing.T
	ln   net.Listener
	udp  *net.UDPConn
	addr netip.AddrPort
	conn net.Conn
	br   *bufio.Reader
	seq  uint16
	dst  netip.AddrPort // TCP peer IP : funnel port
}

func newScriptedServer(t *testing.T) *scriptedServer {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	u, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	require.NoError(t, err)
	s := &scriptedServer{t: t, ln: ln, udp: u, addr: ln.Addr().(*net.TCPAddr).AddrPort()}
	t.Cleanup(func() {
		ln.Close()
		u.Close()
		if s.conn != nil {
			s.conn.Close()
		}
	})
	return s
}

func (s *scriptedServer) accept() {
	c, err := s.ln.Accept()
	require.NoError(s.t, err)
	c.SetDeadline(time.Now().Add(filterTestTimeout))
	s.conn, s.br = c, bufio.NewReader(c)
}

// expect reads one command packet and returns its first message.
func (s *scriptedServer) expect(mid MID) Message {
	return readCommand(s.t, s.br, mid)
}

func (s *scriptedServer) send(msgs ...Message) {
	_, err := s.conn.Write(AppendCommand(nil, s.seq, msgs...))
	require.NoError(s.t, err)
	s.seq++
}

// sendData sends Data packets first..last to the funnel's destination.
func (s *scriptedServer) sendData(first, last uint32) {
	for loc := first; loc <= last; loc++ {
		p := dataPacket(s.t, loc, 4, uint8(loc), 64)
		_, err := s.udp.WriteToUDPAddrPort(p, s.dst)
		require.NoError(s.t, err)
	}
}

func readCommand(t *testing.T, br *bufio.Reader, mid MID) Message {
	t.Helper()
	msgs := readPacket(t, br)
	require.NotEmpty(t, msgs)
	require.Equal(t, mid, msgs[0].MID, "message %v", msgs[0].MID)
	return msgs[0]
}

// player is the scripted client: control over SOCKS CONNECT, data on its
// own UDP port, either straight (announced mode) or through a UDP
// association (firewall-client mode).
type player struct {
	t      *testing.T
	env    *filterEnv
	assoc  bool
	port   uint16
	udp    *net.UDPConn
	ctl    net.Conn // association's TCP connection, firewall-client mode
	relay  netip.AddrPort
	conn   net.Conn
	br     *bufio.Reader
	seq    uint16
	reader chan uint32
}

// socksHandshake opens a SOCKS request through the proxy and returns the
// connection, a reader on it and the reply's BND; cleanup closes it.
func socksHandshake(t *testing.T, proxyAddr string, cmd socksclient.Command, dst netip.AddrPort) (net.Conn, *bufio.Reader, netip.AddrPort) {
	t.Helper()
	d := socksclient.Dialer{Proxy: proxyAddr, Timeout: filterTestTimeout}
	c, bnd, err := d.Request(context.Background(), cmd, socksclient.AddrFromAddrPort(dst))
	require.NoError(t, err)
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(filterTestTimeout))
	return c, bufio.NewReader(c), bnd.AddrPort()
}

func (p *player) bind(port uint16) {
	u, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), port)))
	require.NoError(p.t, err)
	u.SetDeadline(time.Now().Add(filterTestTimeout))
	p.udp = u
	p.port = u.LocalAddr().(*net.UDPAddr).AddrPort().Port()
	if p.assoc {
		p.ctl, _, p.relay = socksHandshake(p.t, p.env.proxyAddr, socksclient.CmdUDPAssociate, netip.AddrPortFrom(netip.IPv4Unspecified(), p.port))
	}
}

// recv reads one Data packet's LocationID from the UDP socket.
func (p *player) recv() uint32 {
	buf := make([]byte, 2048)
	n, from, err := p.udp.ReadFromUDPAddrPort(buf)
	require.NoError(p.t, err)
	b := buf[:n]
	if p.assoc {
		require.Equal(p.t, p.relay.Port(), from.Port(), "data comes through the association")
		_, hl, err := socksclient.ParseUDPHeader(b)
		require.NoError(p.t, err)
		b = b[hl:]
	}
	h, _, err := ParseDataHeader(b)
	require.NoError(p.t, err)
	return h.LocationID
}

// closePort is the player's closesocket() at a playlist transition.
func (p *player) closePort() {
	if p.assoc {
		// Half-close and wait for the proxy's close: from then on the
		// lease holds what arrives.
		p.ctl.(*net.TCPConn).CloseWrite()
		_, err := io.ReadAll(p.ctl)
		require.NoError(p.t, err)
	}
	p.udp.Close()
}

func (p *player) send(msgs ...Message) {
	_, err := p.conn.Write(AppendCommand(nil, p.seq, msgs...))
	require.NoError(p.t, err)
	p.seq++
}

func (p *player) expect(mid MID) Message { return readCommand(p.t, p.br, mid) }

func TestFilterPlaylistThroughProxy(t *testing.T) {
	tests := []struct {
		name   string
		assoc  bool
		linger time.Duration
		lossy  bool
	}{
		{"announced mode", false, 10 * time.Second, false},
		{"firewall-client mode", true, 10 * time.Second, false},
		{"firewall-client mode without linger loses the gap", true, 0, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			env := newFilterEnv(t, tt.linger)
			srv := env.server
			pl := &player{t: t, env: env, assoc: tt.assoc}
			pl.bind(0)
			pl.conn, pl.br, _ = socksHandshake(t, env.proxyAddr, socksclient.CmdConnect, srv.addr)
			srv.accept()

			pl.send(connectMsg())
			srv.expect(MIDConnect)
			srv.send(connectedEXMsg())
			pl.expect(MIDReportConnectedEX)

			pl.send(msg(MIDConnectFunnel, funnelBody(fmt.Sprintf(`\\127.0.0.1\UDP\%d`, pl.port), vlcTrailer)))
			fm := srv.expect(MIDConnectFunnel)
			funnel, err := ParseFunnel(fm)
			require.NoError(t, err)
			assert.Equal(t, external, funnel.Addr, "the funnel names the proxy's external address")
			assert.Equal(t, pl.port, funnel.Port, "and the lease kept the player's port")
			peer := srv.conn.RemoteAddr().(*net.TCPAddr).AddrPort()
			assert.Equal(t, external, peer.Addr().Unmap(), "the control connection comes from the external address")
			srv.dst = netip.AddrPortFrom(peer.Addr().Unmap(), funnel.Port)
			srv.send(connectedFunnelMsg())
			pl.expect(MIDReportConnectedFunnel)

			// Entry 1.
			srv.sendData(0, 9)
			for want := uint32(0); want <= 9; want++ {
				require.Equal(t, want, pl.recv())
			}

			// The playlist transition: the player closes its port when it
			// sees the stream change, the tail of entry 1 arrives while it
			// is closed, then it binds the same port again and asks for
			// the next header.
			srv.send(endOfStreamMsg(1, 4), streamChangeMsg())
			pl.expect(MIDReportEndOfStream)
			pl.closePort()
			srv.sendData(10, 14)
			// Only once the proxy has dealt with the tail does the player
			// bind again: a proxy that relays it to the closed port fails.
			env.held.waitFor(t, 5)
			pl.bind(pl.port)
			pl.send(readBlockMsg(2))
			srv.expect(MIDReadBlock)
			srv.sendData(100, 104) // entry 2

			var got []uint32
			for len(got) == 0 || got[len(got)-1] != 104 {
				got = append(got, pl.recv())
			}
			if tt.lossy {
				assert.Equal(t, []uint32{100, 101, 102, 103, 104}, got, "without linger the tail of entry 1 is lost")
				return
			}
			assert.Equal(t, []uint32{10, 11, 12, 13, 14, 100, 101, 102, 103, 104}, got, "every packet, in order")
		})
	}
}

// holders returns the announced holders of the lease for the client port.
func holders(env *filterEnv, port uint16) (announced int, found bool) {
	for _, l := range env.leases.Snapshot() {
		if l.Key.Port == port {
			return l.Announced, true
		}
	}
	return 0, false
}

func TestFilterLeaseFollowsTheFunnels(t *testing.T) {
	env := newFilterEnv(t, 10*time.Second)
	srv := env.server
	pl := &player{t: t, env: env}
	pl.conn, pl.br, _ = socksHandshake(t, env.proxyAddr, socksclient.CmdConnect, srv.addr)
	srv.accept()

	funnel := func(name string) Funnel {
		pl.send(msg(MIDConnectFunnel, funnelBody(name, vlcTrailer)))
		f, err := ParseFunnel(srv.expect(MIDConnectFunnel))
		require.NoError(t, err)
		return f
	}
	const first, second = 41001, 41002
	f := funnel(fmt.Sprintf(`\\10.9.9.9\UDP\%d`, first))
	assert.Equal(t, netip.AddrPortFrom(external, first), netip.AddrPortFrom(f.Addr, f.Port), "the announced IP is ignored; the port is kept")
	n, ok := holders(env, first)
	require.True(t, ok)
	assert.Equal(t, 1, n)

	// A second UDP funnel on the same connection moves the lease.
	f = funnel(fmt.Sprintf(`\\10.9.9.9\UDP\%d`, second))
	assert.Equal(t, uint16(second), f.Port)
	n, _ = holders(env, first)
	assert.Equal(t, 0, n, "the old lease was released")
	n, _ = holders(env, second)
	assert.Equal(t, 1, n)

	// A TCP funnel passes unchanged and releases the UDP lease.
	f = funnel(`\\192.168.0.1\TCP\1242`)
	assert.Equal(t, TransportTCP, f.Transport)
	assert.Equal(t, netip.MustParseAddr("192.168.0.1"), f.Addr)
	n, _ = holders(env, second)
	assert.Equal(t, 0, n, "data now flows on the control connection")

	// Back to UDP, then the connection ends: nothing is left held.
	funnel(fmt.Sprintf(`\\10.9.9.9\UDP\%d`, first))
	pl.conn.Close()
	srv.conn.Close()
	deadline := time.Now().Add(filterTestTimeout)
	for {
		if n, _ := holders(env, first); n == 0 {
			break
		}
		require.True(t, time.Now().Before(deadline), "the connection's lease was not released")
		time.Sleep(time.Millisecond)
	}
}

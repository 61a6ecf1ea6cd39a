package proxy

import (
	"fmt"
	"net"
	"net/netip"
	"testing"
	"time"

	socks5 "github.com/armon/go-socks5"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"fwproxy/leases"
)

// newLeases is a lease manager whose cleanup closes it. Its external
// address is 127.0.0.2, so that it can preserve the port a client holds on
// 127.0.0.1, as it does when client and proxy are different hosts.
func newLeases(t testing.TB, mutate func(*leases.Config)) *leases.Manager {
	t.Helper()
	cfg := leases.DefaultConfig()
	cfg.ListenIP = netip.MustParseAddr("127.0.0.2")
	if mutate != nil {
		mutate(&cfg)
	}
	m, err := leases.New(cfg, leases.Deps{})
	require.NoError(t, err)
	t.Cleanup(func() { m.Close() })
	return m
}

// udpPeer is a loopback UDP socket standing in for a media server.
type udpPeer struct {
	t    *testing.T
	conn *net.UDPConn
}

func newUDPPeer(t *testing.T, addr string) *udpPeer {
	t.Helper()
	c, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.MustParseAddrPort(addr)))
	require.NoError(t, err)
	c.SetDeadline(time.Now().Add(testTimeout))
	t.Cleanup(func() { c.Close() })
	return &udpPeer{t: t, conn: c}
}

func (p *udpPeer) addr() netip.AddrPort { return addrPortOf(p.conn.LocalAddr()) }

func (p *udpPeer) recv() ([]byte, netip.AddrPort) {
	p.t.Helper()
	buf := make([]byte, maxDatagram)
	n, from, err := p.conn.ReadFromUDPAddrPort(buf)
	require.NoError(p.t, err)
	return buf[:n], netip.AddrPortFrom(from.Addr().Unmap(), from.Port())
}

func (p *udpPeer) send(b []byte, to netip.AddrPort) {
	p.t.Helper()
	_, err := p.conn.WriteToUDPAddrPort(b, to)
	require.NoError(p.t, err)
}

// udpClient is a firewall client's side of one association: its own UDP
// socket (port P) and the association's TCP connection.
type udpClient struct {
	*client
	sock  *udpPeer
	relay netip.AddrPort
}

// associate opens an association for sock's port (or DST.PORT 0).
func associate(t *testing.T, ts *testServer, sock *udpPeer, announcePort bool) *udpClient {
	t.Helper()
	c := dialClient(t, ts.addr)
	c.greet(methodNoAuth)
	dst := &socks5.AddrSpec{IP: net.IPv4zero.To4()}
	if announcePort {
		dst.Port = int(sock.addr().Port())
	}
	rep, relay := c.request(CommandAssociate, dst)
	require.Equal(t, ReplySucceeded, rep)
	return &udpClient{client: c, sock: sock, relay: relay}
}

// sendVia sends payload to dst through the association.
func (u *udpClient) sendVia(payload []byte, dst netip.AddrPort) {
	u.t.Helper()
	u.sock.send(append(appendUDPHeader(nil, dst), payload...), u.relay)
}

// recvVia reads one datagram relayed by the association: its payload and
// the remote sender named in its header.
func (u *udpClient) recvVia() ([]byte, netip.AddrPort) {
	u.t.Helper()
	b, from := u.sock.recv()
	require.Equal(u.t, u.relay, from, "relayed datagrams come from the relay address")
	h, n, err := parseUDPHeader(b)
	require.NoError(u.t, err)
	return b[n:], netip.AddrPortFrom(h.Addr, h.Port)
}

// closeGracefully is the careful client's closesocket(): shut the TCP write
// side and wait for the proxy to close, which it does after the lease is
// released; only then close the UDP socket.
func (u *udpClient) closeGracefully() {
	u.t.Helper()
	require.NoError(u.t, u.conn.CloseWrite())
	u.expectClosed()
	u.sock.conn.Close()
}

func TestAssociateRoundTrip(t *testing.T) {
	ts := startServer(t, testConfig(), Deps{
		Leases:  newLeases(t, nil),
		Resolve: staticResolver(map[string][]netip.Addr{"media.test": {netip.MustParseAddr("127.0.0.1")}}),
	})
	echo := newUDPPeer(t, "127.0.0.1:0")
	tests := []struct {
		name     string
		announce bool // DST.PORT = P, else 0 and learnt from the first datagram
		dst      func() []byte
	}{
		{"ipv4 destination", true, func() []byte { return appendUDPHeader(nil, echo.addr()) }},
		{"domain destination", true, func() []byte {
			return append([]byte{0, 0, 0, atypDomain, 10}, append([]byte("media.test"), byte(echo.addr().Port()>>8), byte(echo.addr().Port()))...)
		}},
		{"port learnt from the first datagram", false, func() []byte { return appendUDPHeader(nil, echo.addr()) }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			sock := newUDPPeer(t, "127.0.0.1:0")
			u := associate(t, ts, sock, tt.announce)
			assert.True(t, u.relay.Addr().IsLoopback(), "BND.ADDR is where the control connection arrived, not 0.0.0.0")

			sock.send(append(tt.dst(), "ping"...), u.relay)
			got, ext := echo.recv()
			require.Equal(t, "ping", string(got))
			assert.Equal(t, sock.addr().Port(), ext.Port(), "the external port preserves the client's port")

			echo.send([]byte("pong"), ext)
			payload, from := u.recvVia()
			assert.Equal(t, "pong", string(payload))
			assert.Equal(t, echo.addr(), from)
			u.closeGracefully()
		})
	}
}

func TestAssociateIPv6(t *testing.T) {
	if ln, err := net.ListenUDP("udp6", &net.UDPAddr{IP: net.IPv6loopback}); err != nil {
		t.Skipf("no IPv6 loopback: %v", err)
	} else {
		ln.Close()
	}
	cfg := testConfig()
	srv, err := New(cfg, Deps{Leases: newLeases(t, func(c *leases.Config) { c.ListenIP = netip.IPv6Loopback() })})
	require.NoError(t, err)
	ln, err := net.Listen("tcp", "[::1]:0")
	require.NoError(t, err)
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	ts := &testServer{Server: srv, addr: ln.Addr().String()}

	echo := newUDPPeer(t, "[::1]:0")
	sock := newUDPPeer(t, "[::1]:0")
	u := associate(t, ts, sock, true)
	assert.True(t, u.relay.Addr().Is6())
	u.sendVia([]byte("six"), echo.addr())
	got, ext := echo.recv()
	require.Equal(t, "six", string(got))
	echo.send([]byte("xis"), ext)
	payload, from := u.recvVia()
	assert.Equal(t, "xis", string(payload))
	assert.Equal(t, echo.addr(), from)
}

func TestAssociateDrops(t *testing.T) {
	ts := startServer(t, testConfig(), Deps{Leases: newLeases(t, nil)})
	echo := newUDPPeer(t, "127.0.0.1:0")
	sock := newUDPPeer(t, "127.0.0.1:0")
	u := associate(t, ts, sock, true)
	u.sendVia([]byte("hello"), echo.addr())
	_, ext := echo.recv()

	tests := []struct {
		name    string
		send    func()
		counted string
	}{
		{"datagram from another IP", func() {
			stranger := newUDPPeer(t, "127.0.0.2:0")
			stranger.send(append(appendUDPHeader(nil, echo.addr()), "x"...), u.relay)
		}, "udp/client_to_remote/foreign_source"},
		{"datagram from another port of the client", func() {
			other := newUDPPeer(t, "127.0.0.1:0")
			other.send(append(appendUDPHeader(nil, echo.addr()), "x"...), u.relay)
		}, "udp/client_to_remote/foreign_source"},
		{"fragment", func() {
			d := appendUDPHeader(nil, echo.addr())
			d[2] = 1
			sock.send(append(d, "x"...), u.relay)
		}, "udp/client_to_remote/fragmented"},
		{"truncated header", func() { sock.send([]byte{0, 0, 0, 1, 127}, u.relay) }, "udp/client_to_remote/bad_header"},
		{"unknown address type", func() { sock.send([]byte{0, 0, 0, 9, 1, 2, 3, 4, 0, 1}, u.relay) }, "udp/client_to_remote/bad_header"},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := ts.rec.count(tt.counted)
			tt.send()
			// The association goes on: the next good datagram still
			// arrives, and the bad one never did.
			marker := fmt.Sprintf("after-%d", i)
			u.sendVia([]byte(marker), echo.addr())
			got, _ := echo.recv()
			require.Equal(t, marker, string(got))
			assert.Equal(t, before+1, ts.rec.count(tt.counted))
		})
	}

	t.Run("unsolicited inbound", func(t *testing.T) {
		// A host the client never sent to is not relayed; the media
		// server behind it still is.
		stranger := newUDPPeer(t, "127.0.0.3:0")
		stranger.send([]byte("scan"), ext)
		echo.send([]byte("media"), ext)
		payload, from := u.recvVia()
		assert.Equal(t, "media", string(payload))
		assert.Equal(t, echo.addr(), from)
	})
}

// TestAssociateRebind is the player's playlist transition: it closes its
// association and UDP socket and binds the same port again, while the
// media server keeps sending. With a linger every datagram sent in the gap
// arrives, in order, through the new association; with linger 0 (the old
// behaviour) they are lost, which shows the test can fail.
func TestAssociateRebind(t *testing.T) {
	tests := []struct {
		name     string
		linger   time.Duration
		wantsGap bool
	}{
		{"linger keeps the port and buffers", 10 * time.Second, true},
		{"linger 0 loses the gap", 0, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ts := startServer(t, testConfig(), Deps{Leases: newLeases(t, func(c *leases.Config) { c.Linger = tt.linger })})
			media := newUDPPeer(t, "127.0.0.1:0")
			sock := newUDPPeer(t, "127.0.0.1:0")
			port := sock.addr()
			first := associate(t, ts, sock, true)
			first.sendVia([]byte("hello"), media.addr())
			_, ext := media.recv()
			first.closeGracefully()

			const gap = 20
			for i := range gap {
				media.send(fmt.Appendf(nil, "gap-%02d", i), ext)
			}

			sock2 := newUDPPeer(t, port.String())
			second := associate(t, ts, sock2, true)
			// The client speaks first, as a player's resend request would;
			// that also re-opens the port where linger 0 closed it.
			second.sendVia([]byte("again"), media.addr())
			_, ext2 := media.recv()
			if tt.linger > 0 {
				assert.Equal(t, ext, ext2, "a reclaim keeps the external port")
			}
			media.send([]byte("marker"), ext2)

			var got []string
			for {
				p, _ := second.recvVia()
				if string(p) == "marker" {
					break
				}
				got = append(got, string(p))
			}
			if tt.wantsGap {
				want := make([]string, gap)
				for i := range want {
					want[i] = fmt.Sprintf("gap-%02d", i)
				}
				assert.Equal(t, want, got, "every datagram of the gap, in order")
			} else {
				assert.Empty(t, got, "without linger the gap is lost")
			}
		})
	}
}

// TestAssociateHandover: the new association for the same port arrives
// before the old one is closed; it takes over delivery at once, and the old
// one's late close changes nothing.
func TestAssociateHandover(t *testing.T) {
	ts := startServer(t, testConfig(), Deps{Leases: newLeases(t, nil)})
	media := newUDPPeer(t, "127.0.0.1:0")
	sock := newUDPPeer(t, "127.0.0.1:0")
	old := associate(t, ts, sock, true)
	old.sendVia([]byte("hello"), media.addr())
	_, ext := media.recv()

	newer := associate(t, ts, sock, true)
	media.send([]byte("one"), ext)
	p, _ := newer.recvVia()
	assert.Equal(t, "one", string(p))

	require.NoError(t, old.conn.CloseWrite())
	old.expectClosed()
	media.send([]byte("two"), ext)
	p, _ = newer.recvVia()
	assert.Equal(t, "two", string(p), "the stale close did not take the lease away")
	newer.sendVia([]byte("still out"), media.addr())
	got, from := media.recv()
	assert.Equal(t, "still out", string(got))
	assert.Equal(t, ext, from)
}

func TestAssociateIdleTimeout(t *testing.T) {
	cfg := testConfig()
	cfg.UDPIdleTimeout = 100 * time.Millisecond
	ts := startServer(t, cfg, Deps{Leases: newLeases(t, nil)})
	sock := newUDPPeer(t, "127.0.0.1:0")
	u := associate(t, ts, sock, true)
	u.expectClosed()
}

func TestAssociateWithoutLeasesIsNotSupported(t *testing.T) {
	ts := startServer(t, testConfig(), Deps{})
	c := dialClient(t, ts.addr)
	c.greet(methodNoAuth)
	rep, _ := c.request(CommandAssociate, &socks5.AddrSpec{IP: net.IPv4zero.To4(), Port: 7000})
	assert.Equal(t, ReplyCommandNotSupported, rep)
}

func TestAssociateDisabledByRules(t *testing.T) {
	cfg := testConfig()
	cfg.Rules.Associate = false
	ts := startServer(t, cfg, Deps{Leases: newLeases(t, nil)})
	c := dialClient(t, ts.addr)
	c.greet(methodNoAuth)
	rep, _ := c.request(CommandAssociate, &socks5.AddrSpec{IP: net.IPv4zero.To4(), Port: 7000})
	assert.Equal(t, ReplyNotAllowed, rep)
}

package proxy

import (
	"errors"
	"io"
	"net"
	"net/netip"
	"testing"
	"time"

	socks5 "github.com/armon/go-socks5"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// dialFrom connects to dst from the loopback address src.
func dialFrom(t *testing.T, src string, dst netip.AddrPort) net.Conn {
	t.Helper()
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}, Timeout: testTimeout}
	c, err := d.Dial("tcp", dst.String())
	require.NoError(t, err)
	c.SetDeadline(time.Now().Add(testTimeout))
	t.Cleanup(func() { c.Close() })
	return c
}

// requireClosedByProxy asserts the proxy closes c (rather than letting it
// wait for data until its deadline).
func requireClosedByProxy(t *testing.T, c net.Conn) {
	t.Helper()
	_, err := c.Read(make([]byte, 1))
	require.Error(t, err)
	var ne net.Error
	require.False(t, errors.As(err, &ne) && ne.Timeout(), "the proxy did not close the connection: %v", err)
}

func freeTCPPort(t *testing.T) uint16 {
	t.Helper()
	return closedPort(t).Port()
}

func TestBind(t *testing.T) {
	ts := startServer(t, testConfig(), Deps{})

	t.Run("two replies and the relayed connection", func(t *testing.T) {
		c := dialClient(t, ts.addr)
		c.greet(methodNoAuth)
		rep, listening := c.request(CommandBind, &socks5.AddrSpec{IP: net.IPv4(127, 0, 0, 1).To4()})
		require.Equal(t, ReplySucceeded, rep)
		assert.True(t, listening.Addr().IsLoopback())

		peer := dialFrom(t, "127.0.0.1", listening)
		rep, from := c.readReply()
		require.Equal(t, ReplySucceeded, rep)
		assert.Equal(t, addrPortOf(peer.LocalAddr()), from, "the second reply names the connecting peer")

		peer.Write([]byte("from peer"))
		assert.Equal(t, []byte("from peer"), c.read(9))
		c.write([]byte("from client"))
		got := make([]byte, 11)
		_, err := io.ReadFull(peer, got)
		require.NoError(t, err)
		assert.Equal(t, "from client", string(got))
	})

	t.Run("wanted port", func(t *testing.T) {
		want := freeTCPPort(t)
		c := dialClient(t, ts.addr)
		c.greet(methodNoAuth)
		rep, listening := c.request(CommandBind, &socks5.AddrSpec{IP: net.IPv4zero.To4(), Port: int(want)})
		require.Equal(t, ReplySucceeded, rep)
		assert.Equal(t, want, listening.Port())
	})

	t.Run("wanted port taken falls back", func(t *testing.T) {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		require.NoError(t, err)
		defer ln.Close()
		taken := addrPortOf(ln.Addr()).Port()
		c := dialClient(t, ts.addr)
		c.greet(methodNoAuth)
		rep, listening := c.request(CommandBind, &socks5.AddrSpec{IP: net.IPv4zero.To4(), Port: int(taken)})
		require.Equal(t, ReplySucceeded, rep)
		assert.NotEqual(t, taken, listening.Port())
	})

	t.Run("only the named peer is accepted", func(t *testing.T) {
		c := dialClient(t, ts.addr)
		c.greet(methodNoAuth)
		rep, listening := c.request(CommandBind, &socks5.AddrSpec{IP: net.IPv4(127, 0, 0, 5).To4()})
		require.Equal(t, ReplySucceeded, rep)

		stranger := dialFrom(t, "127.0.0.1", listening)
		_, err := stranger.Read(make([]byte, 1))
		require.Error(t, err, "a connection from another host is closed")

		peer := dialFrom(t, "127.0.0.5", listening)
		rep, from := c.readReply()
		require.Equal(t, ReplySucceeded, rep)
		assert.Equal(t, addrPortOf(peer.LocalAddr()), from)
		assert.Equal(t, 1, ts.rec.count("handshake/bind_foreign_peer"))
	})
}

func TestBindTimeout(t *testing.T) {
	cfg := testConfig()
	cfg.BindTimeout = 50 * time.Millisecond
	ts := startServer(t, cfg, Deps{})
	c := dialClient(t, ts.addr)
	c.greet(methodNoAuth)
	rep, _ := c.request(CommandBind, &socks5.AddrSpec{IP: net.IPv4zero.To4()})
	require.Equal(t, ReplySucceeded, rep)
	rep, _ = c.readReply()
	assert.Equal(t, ReplyTTLExpired, rep)
	c.expectClosed()
}

func TestBindClientGivesUp(t *testing.T) {
	ts := startServer(t, testConfig(), Deps{})
	c := dialClient(t, ts.addr)
	c.greet(methodNoAuth)
	rep, listening := c.request(CommandBind, &socks5.AddrSpec{IP: net.IPv4zero.To4()})
	require.Equal(t, ReplySucceeded, rep)
	c.conn.CloseWrite()
	rep, _ = c.readReply()
	assert.Equal(t, ReplyGeneralFailure, rep)
	c.expectClosed()
	// The listener is gone with the session.
	_, err := net.DialTimeout("tcp", listening.String(), testTimeout)
	require.Error(t, err)
}

// TestBindJudgesNamesAndPeers: with 127.0.0.1 denied, BIND neither
// accepts the name localhost nor relays a connection from 127.0.0.1 when
// any peer was asked for (0.0.0.0); an allowed peer still gets through.
func TestBindJudgesNamesAndPeers(t *testing.T) {
	cfg := testConfig()
	cfg.Rules.DenyDestinations = []DestRule{{Network: netip.MustParsePrefix("127.0.0.1/32")}}
	ts := startServer(t, cfg, Deps{Resolve: staticResolver(map[string][]netip.Addr{
		"localhost": {netip.MustParseAddr("127.0.0.1"), netip.MustParseAddr("::1")},
		"peer.test": {netip.MustParseAddr("127.0.0.5")},
	})})

	t.Run("localhost", func(t *testing.T) {
		c := dialClient(t, ts.addr)
		c.greet(methodNoAuth)
		rep, _ := c.request(CommandBind, &socks5.AddrSpec{FQDN: "localhost"})
		require.Equal(t, ReplyNotAllowed, rep)
		c.expectClosed()
		assert.Equal(t, 1, ts.rec.count("refused/rules"))
	})

	t.Run("0.0.0.0 accepts any peer the rules allow", func(t *testing.T) {
		c := dialClient(t, ts.addr)
		c.greet(methodNoAuth)
		rep, listening := c.request(CommandBind, &socks5.AddrSpec{IP: net.IPv4zero.To4()})
		require.Equal(t, ReplySucceeded, rep)

		denied := dialFrom(t, "127.0.0.1", listening)
		requireClosedByProxy(t, denied) // closed, not relayed
		assert.Equal(t, 1, ts.rec.count("handshake/bind_peer_refused"))

		peer := dialFrom(t, "127.0.0.2", listening)
		rep, from := c.readReply()
		require.Equal(t, ReplySucceeded, rep)
		assert.Equal(t, addrPortOf(peer.LocalAddr()), from)
		peer.Write([]byte("hi"))
		assert.Equal(t, []byte("hi"), c.read(2))
	})

	t.Run("a name names its peers", func(t *testing.T) {
		c := dialClient(t, ts.addr)
		c.greet(methodNoAuth)
		rep, listening := c.request(CommandBind, &socks5.AddrSpec{FQDN: "peer.test"})
		require.Equal(t, ReplySucceeded, rep)
		peer := dialFrom(t, "127.0.0.5", listening)
		rep, from := c.readReply()
		require.Equal(t, ReplySucceeded, rep)
		assert.Equal(t, addrPortOf(peer.LocalAddr()), from)
	})
}

// TestBindPeerIsTheProxyHostByDefault: with the default rules a peer on
// the proxy's host is refused like a CONNECT to it would be.
func TestBindPeerIsTheProxyHostByDefault(t *testing.T) {
	ts := startServer(t, DefaultConfig(), Deps{})
	c := dialClient(t, ts.addr)
	c.greet(methodNoAuth)
	rep, listening := c.request(CommandBind, &socks5.AddrSpec{IP: net.IPv4zero.To4()})
	require.Equal(t, ReplySucceeded, rep)
	local := dialFrom(t, "127.0.0.1", listening)
	requireClosedByProxy(t, local)
	assert.Equal(t, 1, ts.rec.count("refused/proxy_host"))
	assert.Equal(t, 1, ts.rec.count("handshake/bind_peer_refused"))
}

// TestBindPorts: BIND stays inside bind ports (by default off the
// privileged ports), and says so clearly when none is free.
func TestBindPorts(t *testing.T) {
	t.Run("a privileged port is not given", func(t *testing.T) {
		ts := startServer(t, testConfig(), Deps{})
		c := dialClient(t, ts.addr)
		c.greet(methodNoAuth)
		rep, listening := c.request(CommandBind, &socks5.AddrSpec{IP: net.IPv4zero.To4(), Port: 80})
		require.Equal(t, ReplySucceeded, rep)
		assert.GreaterOrEqual(t, listening.Port(), uint16(1024))
	})

	free := freeTCPPort(t)
	t.Run("a narrow range", func(t *testing.T) {
		cfg := testConfig()
		cfg.BindPortMin, cfg.BindPortMax = free, free
		ts := startServer(t, cfg, Deps{})
		c := dialClient(t, ts.addr)
		c.greet(methodNoAuth)
		rep, listening := c.request(CommandBind, &socks5.AddrSpec{IP: net.IPv4zero.To4(), Port: 80})
		require.Equal(t, ReplySucceeded, rep)
		assert.Equal(t, free, listening.Port())
	})

	t.Run("no free port in the range", func(t *testing.T) {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		require.NoError(t, err)
		defer ln.Close()
		taken := addrPortOf(ln.Addr()).Port()
		cfg := testConfig()
		cfg.BindPortMin, cfg.BindPortMax = taken, taken
		ts := startServer(t, cfg, Deps{})
		c := dialClient(t, ts.addr)
		c.greet(methodNoAuth)
		rep, _ := c.request(CommandBind, &socks5.AddrSpec{IP: net.IPv4zero.To4()})
		assert.Equal(t, ReplyGeneralFailure, rep)
		c.expectClosed()
	})
}

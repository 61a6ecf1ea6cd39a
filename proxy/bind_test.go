package proxy

import (
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
	t.Cleanup(func() { c.Close() })
	return c
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

package e2e

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// socksConn is a raw SOCKS5 client connection (no authentication).
type socksConn struct {
	t    *testing.T
	conn net.Conn
	br   *bufio.Reader
}

func dialSOCKS(t *testing.T, proxyAddr string) *socksConn {
	t.Helper()
	c, err := net.DialTimeout("tcp", proxyAddr, testTimeout)
	require.NoError(t, err)
	return greetSOCKS(t, c)
}

// greetSOCKS offers no authentication on c, which it closes when the test
// ends, and requires the proxy to take it.
func greetSOCKS(t *testing.T, c net.Conn) *socksConn {
	t.Helper()
	c.SetDeadline(time.Now().Add(testTimeout))
	t.Cleanup(func() { c.Close() })
	s := &socksConn{t: t, conn: c, br: bufio.NewReader(c)}
	_, err := c.Write([]byte{5, 1, 0})
	require.NoError(t, err)
	var sel [2]byte
	_, err = io.ReadFull(s.br, sel[:])
	require.NoError(t, err)
	require.Equal(t, [2]byte{5, 0}, sel, "method selection")
	return s
}

// request sends cmd for an address (ATYP 1 or 4) or, when name is set, a
// domain name, and returns the reply code and bound address.
func (s *socksConn) request(cmd byte, dst netip.AddrPort, name string) (byte, netip.AddrPort) {
	s.t.Helper()
	msg := []byte{5, cmd, 0}
	switch {
	case name != "":
		msg = append(append(msg, 3, byte(len(name))), name...)
	case dst.Addr().Is4():
		a := dst.Addr().As4()
		msg = append(append(msg, 1), a[:]...)
	default:
		a := dst.Addr().As16()
		msg = append(append(msg, 4), a[:]...)
	}
	msg = binary.BigEndian.AppendUint16(msg, dst.Port())
	_, err := s.conn.Write(msg)
	require.NoError(s.t, err)
	return s.reply()
}

func (s *socksConn) reply() (byte, netip.AddrPort) {
	s.t.Helper()
	head := make([]byte, 4)
	_, err := io.ReadFull(s.br, head)
	require.NoError(s.t, err)
	var addr []byte
	switch head[3] {
	case 1:
		addr = make([]byte, 4+2)
	case 4:
		addr = make([]byte, 16+2)
	default:
		s.t.Fatalf("reply address type %d", head[3])
	}
	_, err = io.ReadFull(s.br, addr)
	require.NoError(s.t, err)
	ip, _ := netip.AddrFromSlice(addr[:len(addr)-2])
	return head[1], netip.AddrPortFrom(ip.Unmap(), binary.BigEndian.Uint16(addr[len(addr)-2:]))
}

// requireClosed asserts the proxy closes c rather than leaving it open.
func requireClosed(t *testing.T, c net.Conn) {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(testTimeout))
	_, err := c.Read(make([]byte, 1))
	require.Error(t, err)
	var ne net.Error
	require.False(t, errors.As(err, &ne) && ne.Timeout(), "still open: %v", err)
}

const (
	cmdConnect   = 1
	cmdBind      = 2
	cmdAssociate = 3
	replyOK      = 0
	replyDenied  = 2
)

// TestProxyIsNotItsOwnDestination: with the defaults, a client cannot
// CONNECT to the proxy's SOCKS listener (so no chain of proxies inside the
// proxy can form) nor to its metrics listener (which serves
// /debug/leases), whatever spelling of the address it uses; and even with
// loopback allowed, the proxy's own listeners stay refused.
func TestProxyIsNotItsOwnDestination(t *testing.T) {
	for _, setup := range []struct {
		name  string
		start func(*testing.T, ...string) *proxyProc
	}{{"defaults", startProxyDefaults}, {"loopback allowed", startProxy}} {
		t.Run(setup.name, func(t *testing.T) {
			p := setup.start(t)
			socks, metrics := netip.MustParseAddrPort(p.socks), netip.MustParseAddrPort(p.metrics)
			targets := []struct {
				name string
				dst  netip.AddrPort
			}{
				{"socks listener", socks},
				{"metrics listener", metrics},
				{"socks listener, IPv4-mapped", netip.AddrPortFrom(netip.AddrFrom16(socks.Addr().As16()), socks.Port())},
				{"metrics listener through 0.0.0.0", netip.AddrPortFrom(netip.IPv4Unspecified(), metrics.Port())},
				{"socks listener through ::", netip.AddrPortFrom(netip.IPv6Unspecified(), socks.Port())},
			}
			for _, tt := range targets {
				t.Run(tt.name, func(t *testing.T) {
					c := dialSOCKS(t, p.socks)
					rep, _ := c.request(cmdConnect, tt.dst, "")
					assert.Equal(t, byte(replyDenied), rep)
					requireClosed(t, c.conn)
				})
			}
			m := p.scrape(t)
			assert.Contains(t, m, `fwproxy_socks_destinations_refused_total{reason="own_socket"} 3`)
			assert.Contains(t, m, `fwproxy_socks_destinations_refused_total{reason="unspecified"} 2`)
			assert.Contains(t, m, `fwproxy_socks_requests_total{command="connect",reply="not_allowed"} 5`)
			assert.Contains(t, m, `fwproxy_socks_requests_total{command="connect",reply="succeeded"} 0`, "no CONNECT got through")
		})
	}
}

// TestProxyHostIsNotADestinationByDefault: a service on the proxy's host is
// refused until a rule names it, and then only it.
func TestProxyHostIsNotADestinationByDefault(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Write([]byte("local secret"))
			c.Close()
		}
	}()
	local := netip.MustParseAddrPort(ln.Addr().String())

	p := startProxyDefaults(t)
	c := dialSOCKS(t, p.socks)
	rep, _ := c.request(cmdConnect, local, "")
	assert.Equal(t, byte(replyDenied), rep, "loopback with the defaults")
	c = dialSOCKS(t, p.socks)
	rep, _ = c.request(cmdConnect, local, "localhost")
	assert.Equal(t, byte(replyDenied), rep, "a name for loopback with the defaults")
	assert.Contains(t, p.scrape(t), `fwproxy_socks_destinations_refused_total{reason="proxy_host"} 2`)

	named := startProxyDefaults(t, "-allow", fmt.Sprintf("127.0.0.1,%d", local.Port()))
	c = dialSOCKS(t, named.socks)
	rep, _ = c.request(cmdConnect, local, "")
	require.Equal(t, byte(replyOK), rep, "allowed by a rule that names it")
	got, err := io.ReadAll(c.br)
	require.NoError(t, err)
	assert.Equal(t, "local secret", string(got))
}

// TestUDPToTheUnspecifiedAddressIsDropped: a datagram to 0.0.0.0 is
// dropped and counted, as one to a denied address is.
func TestUDPToTheUnspecifiedAddressIsDropped(t *testing.T) {
	echo := udpEcho(t)
	p := startProxy(t, "-external-ip", "127.0.0.2")
	sock, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	require.NoError(t, err)
	t.Cleanup(func() { sock.Close() })
	sock.SetDeadline(time.Now().Add(testTimeout))
	c := dialSOCKS(t, p.socks)
	rep, relay := c.request(cmdAssociate, netip.AddrPortFrom(netip.IPv4Unspecified(), uint16(sock.LocalAddr().(*net.UDPAddr).Port)), "")
	require.Equal(t, byte(replyOK), rep)
	send := func(dst netip.AddrPort, payload string) {
		a := dst.Addr().As4()
		msg := append([]byte{0, 0, 0, 1}, a[:]...)
		msg = binary.BigEndian.AppendUint16(msg, dst.Port())
		_, err := sock.WriteToUDPAddrPort(append(msg, payload...), relay)
		require.NoError(t, err)
	}
	send(netip.AddrPortFrom(netip.IPv4Unspecified(), uint16(echo.Port)), "to zero")
	p.waitMetric(t, `fwproxy_udp_datagrams_total{direction="client_to_remote",outcome="unspecified"} 1`)
	send(netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), uint16(echo.Port)), "to echo")
	buf := make([]byte, 1500)
	n, _, err := sock.ReadFromUDPAddrPort(buf)
	require.NoError(t, err)
	assert.Contains(t, string(buf[:n]), "to echo", "the first datagram back is the allowed one's")
}

// TestBindObeysTheRules: with 127.0.0.1 denied, BIND for localhost is
// refused, and a BIND for any peer (0.0.0.0) closes a connection from
// 127.0.0.1 instead of relaying it; a privileged port is never listened on.
func TestBindObeysTheRules(t *testing.T) {
	conf := filepath.Join(t.TempDir(), "fwproxy.yaml")
	require.NoError(t, os.WriteFile(conf, []byte("rules:\n  deny: [{network: 127.0.0.1/32}]\n"), 0o600))
	p := startProxy(t, "-config", conf, "-external-ip", "127.0.0.2")

	c := dialSOCKS(t, p.socks)
	rep, _ := c.request(cmdBind, netip.AddrPort{}, "localhost")
	assert.Equal(t, byte(replyDenied), rep, "BIND localhost")

	c = dialSOCKS(t, p.socks)
	rep, listening := c.request(cmdBind, netip.AddrPortFrom(netip.IPv4Unspecified(), 80), "")
	require.Equal(t, byte(replyOK), rep, "BIND 0.0.0.0")
	assert.GreaterOrEqual(t, listening.Port(), uint16(1024), "BIND wanting port 80 listens on an unprivileged port")

	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)}, Timeout: testTimeout}
	denied, err := d.Dial("tcp", listening.String())
	require.NoError(t, err)
	t.Cleanup(func() { denied.Close() })
	requireClosed(t, denied)
	p.waitMetric(t, `fwproxy_socks_handshake_failures_total{reason="bind_peer_refused"} 1`)

	d.LocalAddr = &net.TCPAddr{IP: net.IPv4(127, 0, 0, 3)}
	peer, err := d.Dial("tcp", listening.String())
	require.NoError(t, err)
	t.Cleanup(func() { peer.Close() })
	rep, from := c.reply()
	require.Equal(t, byte(replyOK), rep)
	assert.Equal(t, "127.0.0.3", from.Addr().String(), "the allowed peer is relayed")
}

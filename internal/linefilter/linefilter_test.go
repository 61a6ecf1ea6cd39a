package linefilter

import (
	"bufio"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"fwproxy/leases"
	"fwproxy/proxy"
)

const testTimeout = 10 * time.Second

// external is the proxy's outside address: 127.0.0.2, so that a lease can
// keep the port the client holds on 127.0.0.1, as across two hosts.
var external = netip.MustParseAddr("127.0.0.2")

// startProxy runs a real proxy with the line filter registered for port,
// the way any filter package is registered: no change to proxy, metrics or
// leases.
func startProxy(t *testing.T, port uint16) string {
	t.Helper()
	lcfg := leases.DefaultConfig()
	lcfg.ListenIP = external
	lm, err := leases.New(lcfg, leases.Deps{})
	require.NoError(t, err)
	t.Cleanup(func() { lm.Close() })
	var filters proxy.Filters
	require.NoError(t, filters.Register(New(lm), port))
	pcfg := proxy.DefaultConfig()
	pcfg.ExternalIP = external
	pcfg.Rules.AllowDestinations = []proxy.DestRule{{Network: netip.MustParsePrefix("127.0.0.0/8")}}
	p, err := proxy.New(pcfg, proxy.Deps{Leases: lm, Filters: &filters})
	require.NoError(t, err)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	go p.Serve(ln)
	t.Cleanup(func() { p.Close() })
	return ln.Addr().String()
}

// lineServer accepts one control connection, reads one PORT line and
// sends n datagrams to the control connection's peer IP at that port.
type lineServer struct {
	ln   net.Listener
	udp  *net.UDPConn
	addr netip.AddrPort
	// got is the PORT line as the server received it.
	got chan string
}

func newLineServer(t *testing.T, n int) *lineServer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	u, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	require.NoError(t, err)
	s := &lineServer{ln: ln, udp: u, addr: ln.Addr().(*net.TCPAddr).AddrPort(), got: make(chan string, 1)}
	done := make(chan struct{})
	t.Cleanup(func() { ln.Close(); u.Close(); <-done })
	go func() {
		defer close(done)
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(testTimeout))
		line, err := bufio.NewReader(c).ReadBytes('\n')
		if err != nil {
			return
		}
		s.got <- string(line)
		port, ok := ParsePortLine(line)
		if !ok {
			return
		}
		peer := c.RemoteAddr().(*net.TCPAddr).AddrPort()
		to := netip.AddrPortFrom(peer.Addr().Unmap(), port)
		for i := range n {
			if _, err := u.WriteToUDPAddrPort(fmt.Appendf(nil, "datagram %d", i), to); err != nil {
				return
			}
		}
		io.Copy(io.Discard, c) // until the client leaves
	}()
	return s
}

// socksRequest opens a no-authentication SOCKS5 session for cmd to dst and
// returns the connection and the reply's BND address.
func socksRequest(t *testing.T, proxyAddr string, cmd byte, dst netip.AddrPort) (net.Conn, netip.AddrPort) {
	t.Helper()
	c, err := net.Dial("tcp", proxyAddr)
	require.NoError(t, err)
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(testTimeout))
	a := dst.Addr().As4()
	_, err = c.Write([]byte{5, 1, 0, 5, cmd, 0, 1, a[0], a[1], a[2], a[3], byte(dst.Port() >> 8), byte(dst.Port())})
	require.NoError(t, err)
	reply := make([]byte, 2+10)
	_, err = io.ReadFull(c, reply)
	require.NoError(t, err)
	require.Equal(t, byte(0), reply[3], "SOCKS reply")
	return c, netip.AddrPortFrom(netip.AddrFrom4([4]byte(reply[6:10])), binary.BigEndian.Uint16(reply[10:]))
}

// TestLineFilterThroughProxy: the filter rewrites the PORT line and the
// server's datagrams reach the client, through its association when it has
// one and straight to its announced port when it has not.
func TestLineFilterThroughProxy(t *testing.T) {
	const n = 20
	for _, tt := range []struct {
		name  string
		assoc bool
	}{
		{"announced", false},
		{"firewall-client association", true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			srv := newLineServer(t, n)
			proxyAddr := startProxy(t, srv.addr.Port())
			u, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
			require.NoError(t, err)
			t.Cleanup(func() { u.Close() })
			u.SetDeadline(time.Now().Add(testTimeout))
			port := u.LocalAddr().(*net.UDPAddr).AddrPort().Port()
			var relay netip.AddrPort
			if tt.assoc {
				_, relay = socksRequest(t, proxyAddr, 3, netip.AddrPortFrom(netip.IPv4Unspecified(), port))
			}
			ctl, _ := socksRequest(t, proxyAddr, 1, srv.addr)
			_, err = ctl.Write(AppendPortLine(nil, port))
			require.NoError(t, err)

			select {
			case line := <-srv.got:
				assert.Equal(t, fmt.Sprintf("PORT %d\n", port), line, "rewritten to the external port, which kept the client's")
			case <-time.After(testTimeout):
				t.Fatal("the server got no PORT line")
			}
			buf := make([]byte, 2048)
			for i := range n {
				m, from, err := u.ReadFromUDPAddrPort(buf)
				require.NoError(t, err, "datagram %d", i)
				b := buf[:m]
				if tt.assoc {
					require.Equal(t, relay.Port(), from.Port(), "through the association's relay")
					require.Greater(t, len(b), 10)
					b = b[10:] // SOCKS UDP header, IPv4
				} else {
					assert.Equal(t, netip.AddrPortFrom(external, port), from, "unwrapped, from the expectation's lease")
				}
				assert.Equal(t, fmt.Sprintf("datagram %d", i), string(b))
			}
		})
	}
}

// TestLineFilterPassesOtherLines: lines that are not a well-formed PORT
// line, and lines longer than MaxLine, pass unchanged.
func TestLineFilterPassesOtherLines(t *testing.T) {
	long := "PORT " + string(make([]byte, MaxLine)) + "1\n"
	for _, line := range []string{"HELLO\n", "PORT 0\n", "PORT 65536\n", "PORT 01\n", "PORT x\n", long} {
		got := make(chan string, 1)
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		require.NoError(t, err)
		go func() {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			defer c.Close()
			c.SetDeadline(time.Now().Add(testTimeout))
			b, _ := io.ReadAll(c)
			got <- string(b)
		}()
		proxyAddr := startProxy(t, ln.Addr().(*net.TCPAddr).AddrPort().Port())
		ctl, _ := socksRequest(t, proxyAddr, 1, ln.Addr().(*net.TCPAddr).AddrPort())
		_, err = ctl.Write([]byte(line))
		require.NoError(t, err)
		require.NoError(t, ctl.(*net.TCPConn).CloseWrite())
		select {
		case g := <-got:
			assert.Equal(t, line, g)
		case <-time.After(testTimeout):
			t.Fatal("nothing reached the server")
		}
		ln.Close()
	}
}

func TestParsePortLine(t *testing.T) {
	for _, tt := range []struct {
		in   string
		port uint16
		ok   bool
	}{
		{"PORT 1\n", 1, true}, {"PORT 65535\r\n", 65535, true}, {"PORT 65536\n", 0, false},
		{"PORT 0\n", 0, false}, {"PORT 007\n", 0, false}, {"PORT +1\n", 0, false},
		{"PORT 1", 0, false}, {"port 1\n", 0, false}, {"PORT \n", 0, false},
	} {
		port, ok := ParsePortLine([]byte(tt.in))
		assert.Equal(t, tt.ok, ok, "%q", tt.in)
		assert.Equal(t, tt.port, port, "%q", tt.in)
	}
}

// FuzzParsePortLine: no panic, and an accepted line is the one its port
// formats to (modulo a \r before the \n).
func FuzzParsePortLine(f *testing.F) {
	for _, s := range []string{"PORT 1\n", "PORT 65535\r\n", "PORT 0\n", "HELLO\n"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		port, ok := ParsePortLine(b)
		if !ok {
			return
		}
		want := string(AppendPortLine(nil, port))
		if got := string(b); got != want && got != want[:len(want)-1]+"\r\n" {
			t.Fatalf("%q parsed as %d, which formats as %q", b, port, want)
		}
	})
}

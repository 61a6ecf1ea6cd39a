package e2e

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// boundaryWait bounds a direct attempt that must fail: the proxy host
// answers it with an ICMP error at once or drops it, and a reply that
// would prove the boundary open would come back within milliseconds.
const boundaryWait = 2 * time.Second

// TestFirewallBoundary: the topology is a real boundary. From the inside
// host, a TCP connection and a UDP datagram straight to the outside
// server fail (the proxy host routes for the inside but does not
// forward); through fwproxy on the proxy host both work. IPv6 has no
// UDP-through row: PySocks speaks IPv4 only; the IPv6 playlist test
// carries UDP through the proxy over IPv6.
func TestFirewallBoundary(t *testing.T) {
	for _, v6 := range []bool{false, true} {
		name := map[bool]string{false: "firewall IPv4", true: "firewall IPv6"}[v6]
		t.Run(name, func(t *testing.T) {
			n := newFirewallNet(t, v6)
			inside := n.fw.Inside
			web := webServer(t, n, "outside page")
			echo := newCountingEcho(t, n)

			ctx, cancel := context.WithTimeout(context.Background(), boundaryWait)
			defer cancel()
			c, err := inside.DialContext(ctx, "tcp", web.Listener.Addr().String())
			if err == nil {
				c.Close()
			}
			require.Error(t, err, "a direct TCP connection from inside reached the outside server")

			u, err := inside.ListenUDP("udp", netip.AddrPortFrom(n.playerIP(), 0))
			require.NoError(t, err)
			defer u.Close()
			_, err = u.WriteToUDPAddrPort([]byte("direct"), echo.addr.AddrPort())
			require.NoError(t, err)
			require.NoError(t, u.SetReadDeadline(time.Now().Add(boundaryWait)))
			buf := make([]byte, 512)
			_, _, err = u.ReadFromUDPAddrPort(buf)
			require.Error(t, err, "a direct UDP datagram from inside was answered by the outside server")

			p := startProxyIn(t, n, "-external-ip", n.externalIP())
			_, port, _ := net.SplitHostPort(web.Listener.Addr().String())
			out, err := curlIn(t, n, "--socks5", p.socks, "http://"+hostPort(n.serverIP(), port)+"/")
			require.NoError(t, err)
			assert.Equal(t, "outside page", out, "TCP through fwproxy")
			if !v6 {
				assert.Equal(t, echoLines("pysocks", 2, echo.addr), pysocksUDP(t, n, p, echo.addr, 2), "UDP through fwproxy")
			}

			from := echo.sources()
			assert.NotContains(t, from, n.playerIP(), "the outside server saw a datagram straight from the inside")
			if !v6 {
				assert.Contains(t, from, netip.MustParseAddr(n.externalIP()), "the proxied datagrams came from the proxy's outside address")
			}
		})
	}
}

// countingEcho is a UDP echo server on the outside host that remembers
// where its datagrams came from.
type countingEcho struct {
	addr *net.UDPAddr
	// mu guards from.
	mu   sync.Mutex
	from []netip.Addr
}

func newCountingEcho(t *testing.T, n *testNet) *countingEcho {
	t.Helper()
	var c *net.UDPConn
	require.NoError(t, n.inServer(func() (err error) {
		c, err = net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.AddrPortFrom(n.serverIP(), 0)))
		return err
	}))
	e := &countingEcho{addr: c.LocalAddr().(*net.UDPAddr)}
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 65535)
		for {
			k, src, err := c.ReadFromUDPAddrPort(buf)
			if errors.Is(err, net.ErrClosed) {
				return
			}
			if err != nil {
				continue
			}
			e.mu.Lock()
			e.from = append(e.from, src.Addr().Unmap())
			e.mu.Unlock()
			c.WriteToUDPAddrPort(append([]byte("echo:"), buf[:k]...), src)
		}
	}()
	t.Cleanup(func() {
		c.Close()
		<-done
	})
	return e
}

func (e *countingEcho) sources() []netip.Addr {
	e.mu.Lock()
	defer e.mu.Unlock()
	return append([]netip.Addr(nil), e.from...)
}

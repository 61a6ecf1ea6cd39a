package e2e

import (
	"context"
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"fwproxy/internal/netns"
)

// TestInsideIsNotADestination: from the inside host, through fwproxy with
// the default rules, neither the proxy host's own inside services (its
// SOCKS and metrics listeners, another service on its inside address) nor
// the inside network itself are reachable: each CONNECT is refused (0x02)
// and counted once under its reason, and a datagram to the inside is
// dropped and counted. With an explicit allow rule for the inside host the
// same CONNECT and datagram go through, so the refusal is the rule and
// not the network.
func TestInsideIsNotADestination(t *testing.T) {
	for _, v6 := range []bool{false, true} {
		name := map[bool]string{false: "firewall IPv4", true: "firewall IPv6"}[v6]
		t.Run(name, func(t *testing.T) {
			n := newFirewallNet(t, v6)
			proxyInside := n.fw.Proxy().IP(n.fw.InsideNet, n.v6)
			insideWeb := netip.MustParseAddrPort(webServerAt(t, n.fw.Inside.Do, n.playerIP(), "inside page").Listener.Addr().String())
			proxyHostWeb := netip.MustParseAddrPort(webServerAt(t, n.fw.Proxy().Do, proxyInside, "proxy host page").Listener.Addr().String())
			insideEcho := insideUDPEcho(t, n)
			outsideEcho := n.udpEcho(t).AddrPort()
			// A name only the proxy resolves, for the inside host.
			n.fw.Proxy().SetHosts(n.playerIP().String() + " printer.inside.test")
			args := []string{"-external-ip", n.externalIP(), "-metrics-listen", netip.AddrPortFrom(proxyInside, 0).String()}

			p := startProxyIn(t, n, args...)
			socks, metrics := netip.MustParseAddrPort(p.socks), netip.MustParseAddrPort(p.metrics)
			require.Equal(t, proxyInside, metrics.Addr(), "the metrics listener is on the proxy's inside address")
			targets := []struct {
				name string
				dst  netip.AddrPort
				host string
			}{
				{"socks listener", socks, ""},
				{"metrics listener", metrics, ""},
				{"a service on the proxy's inside address", proxyHostWeb, ""},
				{"the inside host", insideWeb, ""},
				{"the inside host by name", netip.AddrPortFrom(netip.AddrFrom4([4]byte{}), insideWeb.Port()), "printer.inside.test"},
			}
			for _, tt := range targets {
				t.Run(tt.name, func(t *testing.T) {
					c := dialSOCKSFrom(t, n.fw.Inside, p.socks)
					rep, _ := c.request(cmdConnect, tt.dst, tt.host)
					require.Equal(t, byte(replyDenied), rep)
					requireClosed(t, c.conn)
				})
			}

			u := associateFrom(t, n, p)
			u.send(insideEcho, "to the inside")
			p.waitMetric(t, `fwproxy_udp_datagrams_total{direction="client_to_remote",outcome="client_network"} 1`)
			assert.Equal(t, "echo:to the outside", u.roundTrip(outsideEcho, "to the outside"), "the association itself works")

			m := p.scrape(t)
			// The proxy's inside address is in the client network too; it is
			// counted as the proxy host (or its own socket), never twice.
			assert.Contains(t, m, `fwproxy_socks_destinations_refused_total{reason="own_socket"} 2`)
			assert.Contains(t, m, `fwproxy_socks_destinations_refused_total{reason="proxy_host"} 1`)
			assert.Contains(t, m, `fwproxy_socks_destinations_refused_total{reason="client_network"} 2`)
			assert.Contains(t, m, `fwproxy_socks_requests_total{command="connect",reply="not_allowed"} 5`)
			assert.Contains(t, m, `fwproxy_socks_requests_total{command="connect",reply="succeeded"} 0`, "no CONNECT got through")
			assert.Contains(t, m, `fwproxy_udp_datagrams_total{direction="client_to_remote",outcome="relayed"} 1`, "only the outside datagram was relayed")

			bits := 32
			if v6 {
				bits = 128
			}
			allowed := startProxyIn(t, n, append(args, "-allow", netip.PrefixFrom(n.playerIP(), bits).String())...)
			out, err := curlIn(t, n, "--socks5-hostname", allowed.socks, "http://"+hostPort(n.playerIP(), fmt.Sprint(insideWeb.Port()))+"/")
			require.NoError(t, err)
			assert.Equal(t, "inside page", out, "CONNECT to the inside host allowed explicitly")
			u = associateFrom(t, n, allowed)
			assert.Equal(t, "echo:to the inside", u.roundTrip(insideEcho, "to the inside"), "a datagram to the inside host allowed explicitly")
			m = allowed.scrape(t)
			assert.Contains(t, m, `fwproxy_socks_destinations_refused_total{reason="client_network"} 0`)
			assert.Contains(t, m, `fwproxy_udp_datagrams_total{direction="client_to_remote",outcome="client_network"} 0`)
		})
	}
}

// dialSOCKSFrom is dialSOCKS from host h.
func dialSOCKSFrom(t *testing.T, h *netns.Host, proxyAddr string) *socksConn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	c, err := h.DialContext(ctx, "tcp", proxyAddr)
	require.NoError(t, err)
	return greetSOCKS(t, c)
}

// insideUDPEcho is a UDP echo server on the inside host, at the players'
// address.
func insideUDPEcho(t *testing.T, n *testNet) netip.AddrPort {
	t.Helper()
	c, err := n.fw.Inside.ListenUDP("udp", netip.AddrPortFrom(n.playerIP(), 0))
	require.NoError(t, err)
	return serveUDPEcho(t, c).AddrPort()
}

// insideAssociation is a UDP association of the inside host.
type insideAssociation struct {
	t     *testing.T
	ctl   *socksConn
	sock  *net.UDPConn
	relay netip.AddrPort
}

// associateFrom opens a UDP association from the inside host through p.
func associateFrom(t *testing.T, n *testNet, p *proxyProc) *insideAssociation {
	t.Helper()
	sock, err := n.fw.Inside.ListenUDP("udp", netip.AddrPortFrom(n.playerIP(), 0))
	require.NoError(t, err)
	t.Cleanup(func() { sock.Close() })
	require.NoError(t, sock.SetDeadline(time.Now().Add(testTimeout)))
	ctl := dialSOCKSFrom(t, n.fw.Inside, p.socks)
	rep, relay := ctl.request(cmdAssociate, sock.LocalAddr().(*net.UDPAddr).AddrPort(), "")
	require.Equal(t, byte(replyOK), rep)
	return &insideAssociation{t: t, ctl: ctl, sock: sock, relay: relay}
}

// send sends payload to dst through the association.
func (a *insideAssociation) send(dst netip.AddrPort, payload string) {
	a.t.Helper()
	msg := []byte{0, 0, 0, 1}
	if dst.Addr().Is4() {
		b := dst.Addr().As4()
		msg = append(msg, b[:]...)
	} else {
		b := dst.Addr().As16()
		msg = append(msg[:3], 4)
		msg = append(msg, b[:]...)
	}
	msg = binary.BigEndian.AppendUint16(msg, dst.Port())
	_, err := a.sock.WriteToUDPAddrPort(append(msg, payload...), a.relay)
	require.NoError(a.t, err)
}

// roundTrip sends payload to dst and returns the payload of the first
// datagram relayed back.
func (a *insideAssociation) roundTrip(dst netip.AddrPort, payload string) string {
	a.t.Helper()
	a.send(dst, payload)
	buf := make([]byte, 2048)
	k, _, err := a.sock.ReadFromUDPAddrPort(buf)
	require.NoError(a.t, err)
	hdr := 4 + 4 + 2
	if k > 3 && buf[3] == 4 {
		hdr = 4 + 16 + 2
	}
	require.Greater(a.t, k, hdr, "a SOCKS UDP header and a payload")
	return string(buf[hdr:k])
}

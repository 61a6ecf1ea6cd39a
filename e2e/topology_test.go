package e2e

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"

	"fwproxy/internal/netns"
)

// testNet is where one run of a test body puts its parts: everything on
// loopback (fw nil), or the firewall topology of internal/netns, where the
// players are on the inside host, the servers on the outside host, and
// fwproxy on the proxy host, listening on its inside address and reaching
// out from its outside address (-external-ip). v6 makes every address of
// the topology IPv6.
type testNet struct {
	name string
	fw   *netns.Firewall
	v6   bool
}

// onLoopback is the single-host setup every test had before the topology.
var onLoopback = &testNet{name: "loopback"}

// newFirewallNet builds the firewall topology for t (skipping t, or
// failing it under CI, where namespaces cannot be made).
func newFirewallNet(t *testing.T, v6 bool) *testNet {
	t.Helper()
	name := "firewall IPv4"
	if v6 {
		name = "firewall IPv6"
	}
	return &testNet{name: name, fw: netns.NewFirewall(t, netns.FirewallSpec{Proxies: 1}), v6: v6}
}

// netKind is one topology a test body runs on.
type netKind struct {
	name string
	make func(t *testing.T) *testNet
}

// topologies are loopback, then the firewall topology over IPv4 and,
// withV6, over IPv6.
func topologies(withV6 bool) []netKind {
	kinds := []netKind{
		{"loopback", func(*testing.T) *testNet { return onLoopback }},
		{"firewall IPv4", func(t *testing.T) *testNet { return newFirewallNet(t, false) }},
	}
	if withV6 {
		kinds = append(kinds, netKind{"firewall IPv6", func(t *testing.T) *testNet { return newFirewallNet(t, true) }})
	}
	return kinds
}

// forEachNet runs body as one subtest per topology.
func forEachNet(t *testing.T, withV6 bool, body func(t *testing.T, n *testNet)) {
	for _, k := range topologies(withV6) {
		t.Run(k.name, func(t *testing.T) { body(t, k.make(t)) })
	}
}

// proxyHost is the host fwproxy runs on (nil on loopback).
func (n *testNet) proxyHost() *netns.Host {
	if n.fw == nil {
		return nil
	}
	return n.fw.Proxy()
}

// playerIP is the players' address.
func (n *testNet) playerIP() netip.Addr {
	if n.fw == nil {
		return playerIP
	}
	return n.fw.Inside.IP(n.fw.InsideNet, n.v6)
}

// toolIP is the address third-party clients' connections come from:
// they do not choose one, so on loopback it is 127.0.0.1.
func (n *testNet) toolIP() netip.Addr {
	if n.fw == nil {
		return netip.AddrFrom4([4]byte{127, 0, 0, 1})
	}
	return n.playerIP()
}

// serverIP is where the media and web servers listen.
func (n *testNet) serverIP() netip.Addr {
	if n.fw == nil {
		return netip.AddrFrom4([4]byte{127, 0, 0, 1})
	}
	return n.fw.Outside.IP(n.fw.OutsideNet, n.v6)
}

// externalIP is the proxy's address towards the servers.
func (n *testNet) externalIP() string {
	if n.fw == nil {
		return externalIP
	}
	return n.fw.Proxy().IP(n.fw.OutsideNet, n.v6).String()
}

// proxyArgs are fwproxy's address flags for this topology: SOCKS on the
// proxy's inside address (loopback), metrics on its loopback, leases on
// its outside address, and on the topology a rules file that admits the
// inside network.
func (n *testNet) proxyArgs(t *testing.T) []string {
	t.Helper()
	if n.fw == nil {
		return append([]string{"-listen", "127.0.0.1:0", "-metrics-listen", "127.0.0.1:0"}, allowLoopback...)
	}
	inside := n.fw.Proxy().IP(n.fw.InsideNet, n.v6)
	return []string{"-config", clientsConfig(t, netns.InsideV4.String(), netns.InsideV6.String()),
		"-listen", netip.AddrPortFrom(inside, 0).String(), "-metrics-listen", "127.0.0.1:0"}
}

// clientsConfig writes a configuration file whose rules admit clients from
// the given networks.
func clientsConfig(t *testing.T, clients ...string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "fwproxy.yaml")
	text := "rules:\n  clients:\n"
	for _, c := range clients {
		text += fmt.Sprintf("    - %q\n", c)
	}
	require.NoError(t, os.WriteFile(path, []byte(text), 0o600))
	return path
}

// inServer runs f, which opens sockets, on the server side.
func (n *testNet) inServer(f func() error) error {
	if n.fw == nil {
		return f()
	}
	return n.fw.Outside.Do(f)
}

// sockets is the players' mmsplayer.Config.Sockets (nil on loopback).
func (n *testNet) sockets() func(func() error) error {
	if n.fw == nil {
		return nil
	}
	return n.fw.Inside.Do
}

// playerCommand runs a third-party client on the player side.
func (n *testNet) playerCommand(ctx context.Context, name string, args ...string) *exec.Cmd {
	if n.fw == nil {
		return exec.CommandContext(ctx, name, args...)
	}
	return n.fw.Inside.Command(ctx, name, args...)
}

// httpClient reaches the proxy host's metrics listener.
func (n *testNet) httpClient() *http.Client {
	if n.fw == nil {
		return http.DefaultClient
	}
	return n.fw.Proxy().HTTPClient()
}

// udpEcho answers every datagram with "echo:" and the payload, on the
// server side; it stops with the test.
func (n *testNet) udpEcho(t *testing.T) *net.UDPAddr {
	t.Helper()
	var c *net.UDPConn
	require.NoError(t, n.inServer(func() (err error) {
		c, err = net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.AddrPortFrom(n.serverIP(), 0)))
		return err
	}))
	return serveUDPEcho(t, c)
}

// hostPort joins an address and port for URLs and command lines.
func hostPort(a netip.Addr, port string) string {
	return net.JoinHostPort(a.String(), port)
}

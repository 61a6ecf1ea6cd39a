package proxy

import (
	"bufio"
	"context"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	socks5 "github.com/armon/go-socks5"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"fwproxy/internal/selfaddr"
)

func prefix(s string) netip.Prefix { return netip.MustParsePrefix(s) }

// TestJudge: the one place that decides, for every kind of destination.
func TestJudge(t *testing.T) {
	const ownSocket = "127.0.0.1:1080"
	tests := []struct {
		name    string
		allow   []DestRule
		deny    []DestRule
		dst     string
		anyPort bool
		want    refusal
	}{
		{"outside address", nil, nil, "192.0.2.1:80", false, refusedNone},
		{"unspecified IPv4", nil, nil, "0.0.0.0:80", false, refusedUnspecified},
		{"unspecified IPv6", nil, nil, "[::]:80", false, refusedUnspecified},
		{"unspecified IPv4-mapped", nil, nil, "[::ffff:0.0.0.0]:80", false, refusedUnspecified},
		{"unspecified even when allowed by name", []DestRule{{Network: prefix("0.0.0.0/32")}}, nil, "0.0.0.0:80", false, refusedUnspecified},
		{"loopback", nil, nil, "127.0.0.1:80", false, refusedProxyHost},
		{"other loopback", nil, nil, "127.4.5.6:80", false, refusedProxyHost},
		{"loopback IPv4-mapped", nil, nil, "[::ffff:127.0.0.1]:80", false, refusedProxyHost},
		{"loopback IPv6", nil, nil, "[::1]:80", false, refusedProxyHost},
		{"loopback allowed explicitly", []DestRule{{Network: prefix("127.0.0.0/8")}}, nil, "127.0.0.1:80", false, refusedNone},
		{"mapped loopback allowed explicitly", []DestRule{{Network: prefix("127.0.0.0/8")}}, nil, "[::ffff:127.0.0.1]:80", false, refusedNone},
		{"allow everything is not explicit", []DestRule{{Network: prefix("0.0.0.0/0")}, {Network: prefix("::/0")}}, nil, "127.0.0.1:80", false, refusedProxyHost},
		{"multicast", nil, nil, "224.0.0.1:80", false, refusedMulticast},
		{"multicast IPv6", nil, nil, "[ff02::1]:80", false, refusedMulticast},
		{"limited broadcast", nil, nil, "255.255.255.255:80", false, refusedBroadcast},
		{"broadcast IPv4-mapped", nil, nil, "[::ffff:255.255.255.255]:80", false, refusedBroadcast},
		{"own socket", nil, nil, ownSocket, false, refusedOwnSocket},
		{"own socket, loopback allowed without port", []DestRule{{Network: prefix("127.0.0.0/8")}}, nil, ownSocket, false, refusedOwnSocket},
		{"own socket, every port is not a port", []DestRule{{Network: prefix("127.0.0.1/32"), FirstPort: 1, LastPort: 65535}}, nil, ownSocket, false, refusedOwnSocket},
		{"own socket named with its port", []DestRule{{Network: prefix("127.0.0.1/32"), FirstPort: 1080, LastPort: 1080}}, nil, ownSocket, false, refusedNone},
		{"own socket through the unspecified address", []DestRule{{Network: prefix("127.0.0.0/8")}}, nil, "0.0.0.0:1080", false, refusedUnspecified},
		{"own socket port, other loopback address", []DestRule{{Network: prefix("127.0.0.0/8")}}, nil, "127.0.0.2:1080", false, refusedNone},
		{"BIND peer judged without its port", []DestRule{{Network: prefix("127.0.0.0/8"), FirstPort: 80, LastPort: 80}}, nil, ownSocket, true, refusedNone},
		{"denied", nil, []DestRule{{Network: prefix("192.0.2.0/24")}}, "192.0.2.1:80", false, refusedRules},
		{"denied IPv4-mapped destination", nil, []DestRule{{Network: prefix("127.0.0.0/8")}}, "[::ffff:127.0.0.1]:80", false, refusedRules},
		{"IPv4-mapped deny rule", nil, []DestRule{{Network: prefix("::ffff:192.0.2.0/120")}}, "192.0.2.1:80", false, refusedRules},
		{"deny beats explicit allow", []DestRule{{Network: prefix("127.0.0.0/8")}}, []DestRule{{Network: prefix("127.0.0.1/32")}}, "127.0.0.1:80", false, refusedRules},
		{"not in allow list", []DestRule{{Network: prefix("198.51.100.0/24")}}, nil, "192.0.2.1:80", false, refusedRules},
		{"port outside allow rule", []DestRule{{Network: prefix("192.0.2.0/24"), FirstPort: 1755, LastPort: 1755}}, nil, "192.0.2.1:80", false, refusedRules},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := DefaultConfig()
			cfg.Rules.AllowDestinations, cfg.Rules.DenyDestinations = tt.allow, tt.deny
			self := selfaddr.New()
			self.Add(selfaddr.TCP, netip.MustParseAddrPort(ownSocket))
			srv, err := New(cfg, Deps{Self: self})
			require.NoError(t, err)
			defer srv.Close()
			got := srv.judge(netip.MustParseAddrPort(tt.dst), selfaddr.TCP, tt.anyPort)
			assert.Equal(t, tt.want.String(), got.String())
		})
	}
}

// TestJudgeOwnSocketByTransport: a socket of the proxy is its own only to
// traffic of its transport. A media server on the proxy host whose TCP
// port happens to be a lease's UDP port is a CONNECT destination like any
// other (it was refused as own_socket, found by the RTSP playlist test).
func TestJudgeOwnSocketByTransport(t *testing.T) {
	const listener, lease = "127.0.0.1:1080", "127.0.0.1:5004"
	tests := []struct {
		name  string
		proto selfaddr.Proto
		dst   string
		want  refusal
	}{
		{"CONNECT to the listener", selfaddr.TCP, listener, refusedOwnSocket},
		{"CONNECT to a lease's UDP port", selfaddr.TCP, lease, refusedNone},
		{"datagram to the lease", selfaddr.UDP, lease, refusedOwnSocket},
		{"datagram to the listener's TCP port", selfaddr.UDP, listener, refusedNone},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := DefaultConfig()
			cfg.Rules.AllowDestinations = []DestRule{{Network: prefix("127.0.0.0/8")}}
			self := selfaddr.New()
			self.Add(selfaddr.TCP, netip.MustParseAddrPort(listener))
			self.Add(selfaddr.UDP, netip.MustParseAddrPort(lease))
			srv, err := New(cfg, Deps{Self: self})
			require.NoError(t, err)
			defer srv.Close()
			assert.Equal(t, tt.want.String(), srv.judge(netip.MustParseAddrPort(tt.dst), tt.proto, false).String())
		})
	}
}

// TestJudgeClientNetworks: the networks clients come from are the inside,
// not a destination, unless an explicit allow rule names them; the proxy's
// host and own sockets keep their own reasons inside them.
func TestJudgeClientNetworks(t *testing.T) {
	const ownSocket = "127.0.0.1:1080"
	inside := []string{"127.0.0.0/8", "::1/128", "198.51.100.0/24", "2001:db8:1::/64"}
	tests := []struct {
		name    string
		clients []string
		allow   []DestRule
		deny    []DestRule
		dst     string
		anyPort bool
		want    refusal
	}{
		{"inside host", inside, nil, nil, "198.51.100.7:80", false, refusedClientNetwork},
		{"inside host IPv6", inside, nil, nil, "[2001:db8:1::7]:80", false, refusedClientNetwork},
		{"inside host IPv4-mapped", inside, nil, nil, "[::ffff:198.51.100.7]:80", false, refusedClientNetwork},
		{"inside BIND peer", inside, nil, nil, "198.51.100.7:0", true, refusedClientNetwork},
		{"outside host", inside, nil, nil, "203.0.113.5:80", false, refusedNone},
		{"outside host IPv6", inside, nil, nil, "[2001:db8:2::5]:80", false, refusedNone},
		{"a loopback client network is the proxy host", inside, nil, nil, "127.0.0.1:80", false, refusedProxyHost},
		{"own socket inside a client network", inside, nil, nil, ownSocket, false, refusedOwnSocket},
		{"allowed explicitly", inside, []DestRule{{Network: prefix("198.51.100.7/32")}}, nil, "198.51.100.7:80", false, refusedNone},
		{"allowed explicitly IPv6", inside, []DestRule{{Network: prefix("2001:db8:1::7/128")}}, nil, "[2001:db8:1::7]:80", false, refusedNone},
		{"an explicit rule lifts only what it names", inside, []DestRule{{Network: prefix("198.51.100.7/32")}}, nil, "198.51.100.8:80", false, refusedRules},
		{"an explicit rule with a port", inside, []DestRule{{Network: prefix("198.51.100.0/24"), FirstPort: 80, LastPort: 80}}, nil, "198.51.100.7:80", false, refusedNone},
		{"allow everything is not explicit", inside, []DestRule{{Network: prefix("0.0.0.0/0")}, {Network: prefix("::/0")}}, nil, "198.51.100.7:80", false, refusedClientNetwork},
		{"denied is the rules", inside, nil, []DestRule{{Network: prefix("198.51.100.0/24")}}, "198.51.100.7:80", false, refusedRules},
		{"IPv4-mapped client network", []string{"::ffff:192.0.2.0/120"}, nil, nil, "192.0.2.9:80", false, refusedClientNetwork},
		{"a whole-family client network names no inside", []string{"0.0.0.0/0", "::/0"}, nil, nil, "203.0.113.5:80", false, refusedNone},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := DefaultConfig()
			cfg.Rules.Clients = nil
			for _, c := range tt.clients {
				cfg.Rules.Clients = append(cfg.Rules.Clients, prefix(c))
			}
			cfg.Rules.AllowDestinations, cfg.Rules.DenyDestinations = tt.allow, tt.deny
			self := selfaddr.New()
			self.Add(selfaddr.TCP, netip.MustParseAddrPort(ownSocket))
			srv, err := New(cfg, Deps{Self: self})
			require.NoError(t, err)
			defer srv.Close()
			got := srv.judge(netip.MustParseAddrPort(tt.dst), selfaddr.TCP, tt.anyPort)
			assert.Equal(t, tt.want.String(), got.String())
		})
	}
}

// TestConnectToTheClientNetworks: a CONNECT back into the inside is refused
// before anything is dialled and counted once, by the first reason that
// applies; an explicit allow rule makes it a destination like any other.
func TestConnectToTheClientNetworks(t *testing.T) {
	resolver := staticResolver(map[string][]netip.Addr{
		"printer.inside.test": {netip.MustParseAddr("192.0.2.10")},
		"mixed.test":          {netip.MustParseAddr("203.0.113.5"), netip.MustParseAddr("192.0.2.10")},
	})
	tests := []struct {
		name    string
		allow   []DestRule
		dst     *socks5.AddrSpec
		want    Reply
		dials   int32
		counted string
	}{
		{"inside host", nil, &socks5.AddrSpec{IP: net.IPv4(192, 0, 2, 10).To4(), Port: 80}, ReplyNotAllowed, 0, "refused/client_network"},
		{"inside host by name", nil, &socks5.AddrSpec{FQDN: "printer.inside.test", Port: 80}, ReplyNotAllowed, 0, "refused/client_network"},
		{"a name with one inside address", nil, &socks5.AddrSpec{FQDN: "mixed.test", Port: 80}, ReplyNotAllowed, 0, "refused/client_network"},
		{"loopback, a client network too", nil, &socks5.AddrSpec{IP: net.IPv4(127, 0, 0, 1).To4(), Port: 80}, ReplyNotAllowed, 0, "refused/proxy_host"},
		{"inside host allowed explicitly", []DestRule{{Network: prefix("192.0.2.10/32"), FirstPort: 80, LastPort: 80}},
			&socks5.AddrSpec{IP: net.IPv4(192, 0, 2, 10).To4(), Port: 80}, ReplyConnectionRefused, 1, "request/connect/connection_refused"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var dials atomic.Int32
			// No packet leaves the machine: the dialler only counts.
			dial := func(context.Context, string, string) (net.Conn, error) {
				dials.Add(1)
				return nil, &net.OpError{Op: "dial", Net: "tcp", Err: syscall.ECONNREFUSED}
			}
			cfg := DefaultConfig()
			cfg.Rules.Clients = append(cfg.Rules.Clients, prefix("192.0.2.0/24"))
			cfg.Rules.AllowDestinations = tt.allow
			ts := startServer(t, cfg, Deps{Resolve: resolver, Dial: dial})
			c := dialClient(t, ts.addr)
			c.greet(methodNoAuth)
			rep, _ := c.request(CommandConnect, tt.dst)
			require.Equal(t, tt.want, rep, "reply %s", rep)
			c.expectClosed()
			require.True(t, waitFor(testTimeout, func() bool { return ts.rec.openSessions() == 0 }))
			assert.Equal(t, tt.dials, dials.Load(), "dial attempts")
			assert.Equal(t, 1, ts.rec.count(tt.counted))
			refusals := 0
			for _, r := range RefusalReasons() {
				refusals += ts.rec.count("refused/" + r)
			}
			assert.Equal(t, int(1-tt.dials), refusals, "refused once, under one reason")
		})
	}
}

func TestJudgeDoesNotAllocate(t *testing.T) {
	cfg := DefaultConfig()
	allowLoopback(&cfg)
	srv, err := New(cfg, Deps{})
	require.NoError(t, err)
	defer srv.Close()
	dsts := []netip.AddrPort{
		netip.MustParseAddrPort("192.0.2.1:80"), netip.MustParseAddrPort("127.0.0.1:80"),
		netip.MustParseAddrPort("[::ffff:127.0.0.1]:80"), netip.MustParseAddrPort("0.0.0.0:80"),
	}
	assert.Zero(t, testing.AllocsPerRun(100, func() {
		for _, d := range dsts {
			srv.judge(d, selfaddr.UDP, false)
		}
	}))
}

// TestConnectRefusesWhatIsNeverADestination drives the server as the
// issue's attacker did: loopback denied by the rules, and yet the
// unspecified address, mapped forms, multicast, broadcast and the proxy's
// own listener were reachable.
func TestConnectRefusesWhatIsNeverADestination(t *testing.T) {
	// A local service on the wildcard address: what 0.0.0.0 reaches.
	local := tcpTarget(t, "0.0.0.0:0", func(c net.Conn) { c.Write([]byte("secret")) })
	port := int(local.Port())
	tests := []struct {
		name   string
		mutate func(*Config)
		dst    func(ts *testServer) *socks5.AddrSpec
		reason string
	}{
		{"0.0.0.0", nil, func(*testServer) *socks5.AddrSpec { return &socks5.AddrSpec{IP: net.IPv4zero.To4(), Port: port} }, "unspecified"},
		{"::", nil, func(*testServer) *socks5.AddrSpec { return &socks5.AddrSpec{IP: net.IPv6zero, Port: port} }, "unspecified"},
		{"::ffff:0.0.0.0", nil, func(*testServer) *socks5.AddrSpec { return &socks5.AddrSpec{IP: net.IPv4zero.To16(), Port: port} }, "unspecified"},
		{"0.0.0.0 as a domain literal", nil, func(*testServer) *socks5.AddrSpec { return &socks5.AddrSpec{FQDN: "0.0.0.0", Port: port} }, "unspecified"},
		{"::ffff:127.0.0.1", nil, func(*testServer) *socks5.AddrSpec {
			return &socks5.AddrSpec{IP: net.IPv4(127, 0, 0, 1).To16(), Port: port}
		}, "rules"},
		{"127.0.0.1 with the defaults", func(c *Config) { c.Rules.DenyDestinations = nil }, func(*testServer) *socks5.AddrSpec {
			return &socks5.AddrSpec{IP: net.IPv4(127, 0, 0, 1).To4(), Port: port}
		}, "proxy_host"},
		{"multicast", nil, func(*testServer) *socks5.AddrSpec {
			return &socks5.AddrSpec{IP: net.IPv4(224, 0, 0, 1).To4(), Port: port}
		}, "multicast"},
		{"broadcast", nil, func(*testServer) *socks5.AddrSpec { return &socks5.AddrSpec{IP: net.IPv4bcast.To4(), Port: port} }, "broadcast"},
		{"the proxy's own listener, loopback allowed", func(c *Config) {
			c.Rules.DenyDestinations = nil
			allowLoopback(c)
		}, func(ts *testServer) *socks5.AddrSpec { return spec(netip.MustParseAddrPort(ts.addr)) }, "own_socket"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := DefaultConfig()
			cfg.Rules.DenyDestinations = []DestRule{{Network: prefix("127.0.0.0/8")}, {Network: prefix("::1/128")}}
			if tt.mutate != nil {
				tt.mutate(&cfg)
			}
			ts := startServer(t, cfg, Deps{})
			c := dialClient(t, ts.addr)
			c.greet(methodNoAuth)
			rep, _ := c.request(CommandConnect, tt.dst(ts))
			require.Equal(t, ReplyNotAllowed, rep, "reply %s", rep)
			c.expectClosed()
			require.True(t, waitFor(testTimeout, func() bool { return ts.rec.openSessions() == 0 }))
			assert.Equal(t, 1, ts.rec.count("refused/"+tt.reason), "counted as %s", tt.reason)
			assert.Equal(t, 1, ts.rec.count("request/connect/not_allowed"))
		})
	}
}

// TestNameJudgedOnEveryAddress: a name with one refused address is refused
// whole, and nothing is dialled for it.
func TestNameJudgedOnEveryAddress(t *testing.T) {
	resolver := staticResolver(map[string][]netip.Addr{
		"rebind.test": {netip.MustParseAddr("192.0.2.10"), netip.MustParseAddr("127.0.0.1")},
		"mapped.test": {netip.MustParseAddr("192.0.2.10"), netip.MustParseAddr("::ffff:127.0.0.1")},
		"zero.test":   {netip.MustParseAddr("192.0.2.10"), netip.MustParseAddr("0.0.0.0")},
		"fine.test":   {netip.MustParseAddr("192.0.2.10"), netip.MustParseAddr("192.0.2.11")},
	})
	tests := []struct {
		name    string
		deny    []DestRule
		want    Reply
		dials   int32
		counted string
	}{
		{"rebind.test", nil, ReplyNotAllowed, 0, "refused/proxy_host"},
		{"rebind.test", []DestRule{{Network: prefix("127.0.0.0/8")}}, ReplyNotAllowed, 0, "refused/rules"},
		{"mapped.test", []DestRule{{Network: prefix("127.0.0.0/8")}}, ReplyNotAllowed, 0, "refused/rules"},
		{"zero.test", nil, ReplyNotAllowed, 0, "refused/unspecified"},
		{"fine.test", nil, ReplyConnectionRefused, 2, "request/connect/connection_refused"},
	}
	for _, tt := range tests {
		t.Run(tt.name+"/"+tt.counted, func(t *testing.T) {
			var dials atomic.Int32
			// No packet leaves the machine: the dialler only counts.
			dial := func(context.Context, string, string) (net.Conn, error) {
				dials.Add(1)
				return nil, &net.OpError{Op: "dial", Net: "tcp", Err: syscall.ECONNREFUSED}
			}
			cfg := DefaultConfig()
			cfg.Rules.DenyDestinations = tt.deny
			ts := startServer(t, cfg, Deps{Resolve: resolver, Dial: dial})
			c := dialClient(t, ts.addr)
			c.greet(methodNoAuth)
			rep, _ := c.request(CommandConnect, &socks5.AddrSpec{FQDN: tt.name, Port: 80})
			require.Equal(t, tt.want, rep, "reply %s", rep)
			c.expectClosed()
			require.True(t, waitFor(testTimeout, func() bool { return ts.rec.openSessions() == 0 }))
			assert.Equal(t, tt.dials, dials.Load(), "dial attempts")
			assert.Equal(t, 1, ts.rec.count(tt.counted))
		})
	}
}

// TestAssociateRefusesWhatIsNeverADestination: a datagram to 0.0.0.0 is
// dropped and counted like one to a denied address, and so are datagrams
// to the proxy's host and to its own sockets.
func TestAssociateRefusesWhatIsNeverADestination(t *testing.T) {
	lm := newLeases(t, nil)
	cfg := testConfig()
	cfg.Rules.AllowDestinations = append(cfg.Rules.AllowDestinations, DestRule{Network: prefix("0.0.0.0/0")})
	cfg.Rules.DenyDestinations = []DestRule{{Network: prefix("127.0.0.9/32")}}
	// 192.0.2.0/24 stands for the inside: the lease socket is on 127.0.0.2,
	// from which Linux sends nothing off the host, should the judge let it by.
	cfg.Rules.Clients = append(cfg.Rules.Clients, prefix("192.0.2.0/24"))
	ts := startServer(t, cfg, Deps{
		Leases:  lm,
		Resolve: staticResolver(map[string][]netip.Addr{"rebind.test": {netip.MustParseAddr("127.0.0.1"), netip.MustParseAddr("0.0.0.0")}}),
	})
	sock := newUDPPeer(t, "127.0.0.1:0")
	u := associate(t, ts, sock, true)
	echo := newUDPPeer(t, "127.0.0.1:0")
	port := echo.addr().Port()
	// The lease's socket is not in the server's own-socket set (each has
	// its own here), so only the lease refuses it: counted once, as
	// own_socket, not as a failed send.
	snap := lm.Snapshot()
	require.Len(t, snap, 1)
	leaseSocket := snap[0].LocalAddr

	// A datagram relayed back into the proxy's own relay socket would come
	// in again as the client's.
	tests := []struct {
		name    string
		dst     netip.AddrPort
		domain  string
		counted string
	}{
		{"0.0.0.0", netip.AddrPortFrom(netip.IPv4Unspecified(), port), "", "udp/client_to_remote/unspecified"},
		{"::", netip.AddrPortFrom(netip.IPv6Unspecified(), port), "", "udp/client_to_remote/unspecified"},
		{"::ffff:0.0.0.0", netip.AddrPortFrom(netip.MustParseAddr("::ffff:0.0.0.0"), port), "", "udp/client_to_remote/unspecified"},
		{"denied", netip.MustParseAddrPort("127.0.0.9:9"), "", "udp/client_to_remote/not_allowed"},
		{"the relay socket itself", u.relay, "", "udp/client_to_remote/own_socket"},
		{"broadcast", netip.MustParseAddrPort("255.255.255.255:9"), "", "udp/client_to_remote/broadcast"},
		{"a host of the client networks", netip.MustParseAddrPort("192.0.2.10:9"), "", "udp/client_to_remote/client_network"},
		{"the lease socket, refused by the lease", leaseSocket, "", "udp/client_to_remote/own_socket"},
		{"a name with a refused address", netip.AddrPort{}, "rebind.test", "udp/client_to_remote/unspecified"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := ts.rec.count(tt.counted)
			if tt.domain != "" {
				hdr := []byte{0, 0, 0, atypDomain, byte(len(tt.domain))}
				hdr = append(hdr, tt.domain...)
				hdr = append(hdr, byte(port>>8), byte(port))
				sock.send(append(hdr, "x"...), u.relay)
			} else {
				u.sendVia([]byte("x"), tt.dst)
			}
			require.True(t, waitFor(testTimeout, func() bool { return ts.rec.count(tt.counted) == before+1 }), "counted as %s", tt.counted)
		})
	}
	// Nothing reached the local service, and an allowed destination still
	// works on the same association.
	u.sendVia([]byte("hello"), echo.addr())
	got, _ := echo.recv()
	assert.Equal(t, "hello", string(got))
	assert.Equal(t, 1, ts.rec.count("udp/client_to_remote/relayed"))
	assert.Zero(t, ts.rec.count("udp/client_to_remote/send_failed"), "a refusal is not a failed send")
}

// TestSessionsPerClient: one client IP takes its share of the sessions;
// another IP is still served, and the first gets a slot back when one of
// its sessions ends.
func TestSessionsPerClient(t *testing.T) {
	cfg := testConfig()
	cfg.MaxSessionsPerClient = 2
	logs := &countingHandler{}
	ts := startServer(t, cfg, Deps{Logger: newCountingLogger(logs)})
	addr := netip.MustParseAddrPort(ts.addr)

	held := make([]*client, 2)
	for i := range held {
		held[i] = clientFrom(t, "127.0.0.1", addr)
		require.Equal(t, byte(methodNoAuth), held[i].greet(methodNoAuth), "session %d is served", i)
	}
	for range 5 {
		refused := clientFrom(t, "127.0.0.1", addr)
		refused.expectClosed()
	}
	assert.Equal(t, 5, ts.rec.count("rejected/client_session_limit"))
	assert.Equal(t, 1, logs.count("client session limit reached, connection closed"), "a flood logs one warning, not one each")

	other := clientFrom(t, "127.0.0.2", addr)
	assert.Equal(t, byte(methodNoAuth), other.greet(methodNoAuth), "another client is still served")

	held[0].conn.Close()
	require.True(t, waitFor(testTimeout, func() bool { return ts.rec.openSessions() == 2 }))
	again := clientFrom(t, "127.0.0.1", addr)
	assert.Equal(t, byte(methodNoAuth), again.greet(methodNoAuth), "a slot freed is a slot again")
}

func TestWarnLimiter(t *testing.T) {
	var w warnLimiter
	t0 := time.Unix(1000, 0)
	n, ok := w.allow(t0)
	assert.True(t, ok)
	assert.Zero(t, n)
	for i := range 3 {
		_, ok = w.allow(t0.Add(time.Duration(i+1) * time.Second))
		assert.False(t, ok)
	}
	n, ok = w.allow(t0.Add(warnInterval))
	assert.True(t, ok)
	assert.Equal(t, 3, n, "the next warning says how many were held back")
}

// clientFrom is dialClient from the loopback address src.
func clientFrom(t *testing.T, src string, dst netip.AddrPort) *client {
	t.Helper()
	c := dialFrom(t, src, dst)
	c.SetDeadline(time.Now().Add(testTimeout))
	return &client{t: t, conn: c.(*net.TCPConn), br: newReader(c)}
}

func newReader(c net.Conn) *bufio.Reader { return bufio.NewReader(c) }

// countingHandler is a slog.Handler that counts records by message.
type countingHandler struct {
	mu   sync.Mutex
	msgs map[string]int
}

func newCountingLogger(h *countingHandler) *slog.Logger { return slog.New(h) }

func (h *countingHandler) Enabled(context.Context, slog.Level) bool { return true }
func (h *countingHandler) Handle(_ context.Context, r slog.Record) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.msgs == nil {
		h.msgs = map[string]int{}
	}
	h.msgs[r.Message]++
	return nil
}
func (h *countingHandler) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h *countingHandler) WithGroup(string) slog.Handler      { return h }

func (h *countingHandler) count(prefix string) int {
	h.mu.Lock()
	defer h.mu.Unlock()
	n := 0
	for m, c := range h.msgs {
		if strings.HasPrefix(m, prefix) {
			n += c
		}
	}
	return n
}

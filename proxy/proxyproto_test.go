package proxy

import (
	"bufio"
	"bytes"
	"io"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/pires/go-proxyproto"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// startProxyProtoServer runs a server behind a ProxyProtoListener that
// trusts from, admitting clients from clients; pcfg adjusts the listener
// (nil: defaults with a 2 s header timeout).
func startProxyProtoServer(t *testing.T, from, clients []netip.Prefix, pcfg *ProxyProtoConfig) *testServer {
	t.Helper()
	cfg := testConfig()
	cfg.Rules.Clients = clients
	rec := newRecorder()
	srv, err := New(cfg, Deps{Observer: rec, Leases: newLeases(t, nil)})
	require.NoError(t, err)
	inner, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	if pcfg == nil {
		c := DefaultProxyProtoConfig()
		c.HeaderTimeout = 2 * time.Second
		pcfg = &c
	}
	pcfg.From = from
	ln, err := NewProxyProtoListener(inner, *pcfg, rec, nil)
	require.NoError(t, err)
	return serveForTest(t, srv, ln, rec)
}

func proxyHeader(t *testing.T, version byte, cmd proxyproto.ProtocolVersionAndCommand, src string) []byte {
	t.Helper()
	h := proxyproto.HeaderProxyFromAddrs(version, net.TCPAddrFromAddrPort(netip.MustParseAddrPort(src)),
		net.TCPAddrFromAddrPort(netip.MustParseAddrPort("127.0.0.1:1080")))
	h.Command = cmd
	b, err := h.Format()
	require.NoError(t, err)
	return b
}

var (
	loopbackNet = []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}
	docNet      = []netip.Prefix{netip.MustParsePrefix("192.0.2.0/24")}
)

// TestProxyProtocol: balancers' headers name the client, which the rules
// judge; a missing, broken or untrusted header is refused and counted.
// Each header is sent in one write with the SOCKS greeting behind it, so
// a reader that took more than the header would break the handshake.
func TestProxyProtocol(t *testing.T) {
	echo := echoTarget(t)
	tests := []struct {
		name    string
		from    []netip.Prefix // balancer networks
		clients []netip.Prefix
		header  []byte
		// reject is the counted refusal; "" means the session works.
		reject string
	}{
		{"v1 from a balancer names an allowed client", loopbackNet, docNet, proxyHeader(t, 1, proxyproto.PROXY, "192.0.2.7:40000"), ""},
		{"v2 from a balancer names an allowed client", loopbackNet, docNet, proxyHeader(t, 2, proxyproto.PROXY, "192.0.2.7:40000"), ""},
		{"v2 IPv6 client", loopbackNet, []netip.Prefix{netip.MustParsePrefix("2001:db8::/32")}, proxyHeader(t, 2, proxyproto.PROXY, "[2001:db8::7]:40000"), ""},
		{"the header's client is judged, not the balancer", loopbackNet, loopbackNet, proxyHeader(t, 2, proxyproto.PROXY, "198.51.100.9:40000"), "client_not_allowed"},
		{"v2 LOCAL is the balancer itself", loopbackNet, docNet, proxyHeader(t, 2, proxyproto.LOCAL, "192.0.2.7:40000"), "client_not_allowed"},
		{"missing header from a balancer", loopbackNet, loopbackNet, nil, RejectProxyHeaderMissing},
		{"broken v1 header from a balancer", loopbackNet, loopbackNet, []byte("PROXY TCP4 not-an-address\r\n"), RejectProxyHeaderInvalid},
		{"v1 header without CRLF within 107 bytes", loopbackNet, loopbackNet, []byte("PROXY TCP4 " + string(make([]byte, 120))), RejectProxyHeaderInvalid},
		{"header from outside the balancer networks", docNet, loopbackNet, proxyHeader(t, 2, proxyproto.PROXY, "192.0.2.7:40000"), RejectProxyHeaderUntrusted},
		{"v1 header from outside the balancer networks", docNet, loopbackNet, proxyHeader(t, 1, proxyproto.PROXY, "192.0.2.7:40000"), RejectProxyHeaderUntrusted},
		{"plain client from outside the balancer networks", docNet, loopbackNet, nil, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ts := startProxyProtoServer(t, tt.from, tt.clients, nil)
			c := dialClient(t, ts.addr)
			c.write(append(append([]byte{}, tt.header...), 5, 1, methodNoAuth))
			if tt.reject != "" {
				c.expectClosed()
				require.True(t, waitFor(testTimeout, func() bool { return ts.rec.count("rejected/"+tt.reject) == 1 }), "refusal %q counted", tt.reject)
				return
			}
			require.Equal(t, byte(methodNoAuth), c.read(2)[1])
			reply, _ := c.request(CommandConnect, spec(echo))
			require.Equal(t, ReplySucceeded, reply)
			c.write([]byte("through the balancer"))
			assert.Equal(t, "through the balancer", string(c.read(len("through the balancer"))))
			for _, r := range []string{RejectProxyHeaderMissing, RejectProxyHeaderInvalid, RejectProxyHeaderUntrusted, "client_not_allowed"} {
				assert.Zero(t, ts.rec.count("rejected/"+r), r)
			}
		})
	}
}

// TestProxyProtocolSlowBalancerConnection: a balancer connection that
// sends nothing holds up neither Accept nor other clients, and is refused
// when its header timeout passes.
func TestProxyProtocolSlowBalancerConnection(t *testing.T) {
	echo := echoTarget(t)
	ts := startProxyProtoServer(t, loopbackNet, docNet, nil)
	silent := dialClient(t, ts.addr)

	c := dialClient(t, ts.addr)
	c.write(append(proxyHeader(t, 2, proxyproto.PROXY, "192.0.2.8:40000"), 5, 1, methodNoAuth))
	require.Equal(t, byte(methodNoAuth), c.read(2)[1])
	reply, _ := c.request(CommandConnect, spec(echo))
	require.Equal(t, ReplySucceeded, reply, "served while another balancer connection is silent")
	assert.Zero(t, ts.rec.count("rejected/"+RejectProxyHeaderMissing))

	silent.expectClosed()
	assert.Equal(t, 1, ts.rec.count("rejected/"+RejectProxyHeaderMissing))
}

// TestProxyProtocolSilentClientsHoldNothingUp: connections from outside
// the balancer networks that never send a byte take at most
// maxPeeksPerSource readers; the rest of that address's connections, and
// every other client, are served at once, long before the header timeout
// would free a reader.
func TestProxyProtocolSilentClientsHoldNothingUp(t *testing.T) {
	echo := echoTarget(t)
	pcfg := DefaultProxyProtoConfig()
	pcfg.HeaderTimeout = time.Minute // longer than the test may take
	pcfg.MaxPending = 8
	ts := startProxyProtoServer(t, docNet, loopbackNet, &pcfg)
	for range 3 * pcfg.MaxPending {
		dialClient(t, ts.addr)
	}
	c := dialClient(t, ts.addr)
	c.greet(methodNoAuth)
	reply, _ := c.request(CommandConnect, spec(echo))
	require.Equal(t, ReplySucceeded, reply, "served while silent connections wait")
}

// TestProxyProtocolPinsUDPToHeaderClient: an association opened through
// a balancer takes the client's datagrams from the header's address,
// where the client's UDP comes from (straight, not through the balancer),
// and refuses them from the balancer's.
func TestProxyProtocolPinsUDPToHeaderClient(t *testing.T) {
	ts := startProxyProtoServer(t, []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32")}, []netip.Prefix{netip.MustParsePrefix("127.0.0.5/32")}, nil)
	remote := newUDPPeer(t, "127.0.0.1:0")
	sock := newUDPPeer(t, "127.0.0.5:0")
	c := dialClient(t, ts.addr)
	c.write(append(proxyHeader(t, 2, proxyproto.PROXY, sock.addr().String()), 5, 1, methodNoAuth))
	require.Equal(t, byte(methodNoAuth), c.read(2)[1])
	reply, relay := c.request(CommandAssociate, spec(sock.addr()))
	require.Equal(t, ReplySucceeded, reply)

	fromBalancer := newUDPPeer(t, "127.0.0.1:0")
	fromBalancer.send(append(appendUDPHeader(nil, remote.addr()), "from the balancer"...), relay)
	sock.send(append(appendUDPHeader(nil, remote.addr()), "from the client"...), relay)
	got, _ := remote.recv()
	assert.Equal(t, "from the client", string(got), "only the header's client may use the association")
	require.True(t, waitFor(testTimeout, func() bool { return ts.rec.count("udp/client_to_remote/foreign_source") == 1 }),
		"the balancer's datagram is counted as from a foreign source")
}

// TestProxyProtoConfigValidate: settings that cannot work are refused.
func TestProxyProtoConfigValidate(t *testing.T) {
	ok := DefaultProxyProtoConfig()
	ok.From = loopbackNet
	tests := []struct {
		name   string
		mutate func(*ProxyProtoConfig)
		valid  bool
	}{
		{"default with a network", func(*ProxyProtoConfig) {}, true},
		{"no networks", func(c *ProxyProtoConfig) { c.From = nil }, false},
		{"zero header timeout", func(c *ProxyProtoConfig) { c.HeaderTimeout = 0 }, false},
		{"zero pending", func(c *ProxyProtoConfig) { c.MaxPending = 0 }, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := ok
			tt.mutate(&c)
			if tt.valid {
				assert.NoError(t, c.Validate())
			} else {
				assert.Error(t, c.Validate())
			}
		})
	}
}

// FuzzReadProxyHeader feeds arbitrary first bytes of a balancer's
// connection to the header reader and the parser. Properties: no panic; a
// header read is a prefix of the input and nothing past it is consumed
// (the SOCKS greeting behind it is the session's); a refusal has a reason;
// the parser, given what was read, consumes all of it and nothing more.
func FuzzReadProxyHeader(f *testing.F) {
	f.Add([]byte("PROXY TCP4 192.0.2.7 127.0.0.1 40000 1080\r\n\x05\x01\x00"))
	f.Add([]byte("PROXY TCP6 2001:db8::7 2001:db8::1 40000 1080\r\n"))
	f.Add([]byte("PROXY UNKNOWN\r\n\x05"))
	f.Add([]byte("PROXY TCP4 nonsense\r\n"))
	f.Add([]byte("\x05\x01\x00"))
	for _, v := range []byte{1, 2} {
		for _, cmd := range []proxyproto.ProtocolVersionAndCommand{proxyproto.PROXY, proxyproto.LOCAL} {
			h := proxyproto.HeaderProxyFromAddrs(v, net.TCPAddrFromAddrPort(netip.MustParseAddrPort("[2001:db8::7]:40000")),
				net.TCPAddrFromAddrPort(netip.MustParseAddrPort("[2001:db8::1]:1080")))
			h.Command = cmd
			if b, err := h.Format(); err == nil {
				f.Add(append(b, 5, 1, 0))
			}
		}
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		r := bytes.NewReader(data)
		raw, reason, err := readProxyHeader(r)
		if reason != "" {
			require.Error(t, err)
			require.Contains(t, []string{RejectProxyHeaderMissing, RejectProxyHeaderInvalid}, reason)
			return
		}
		require.NoError(t, err)
		require.True(t, bytes.HasPrefix(data, raw), "the header read is the input's start")
		require.Equal(t, len(data)-len(raw), r.Len(), "nothing past the header was consumed")
		br := bufio.NewReader(bytes.NewReader(raw))
		if _, err := proxyproto.Read(br); err == nil {
			_, err := br.ReadByte()
			require.ErrorIs(t, err, io.EOF, "the parser left bytes of the header unread")
		}
	})
}

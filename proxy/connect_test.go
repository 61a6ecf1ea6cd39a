package proxy

import (
	"bytes"
	"context"
	"io"
	"net"
	"net/netip"
	"syscall"
	"testing"
	"time"

	socks5 "github.com/armon/go-socks5"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestConnectRelaysEveryAddressType(t *testing.T) {
	target := echoTarget(t)
	deps := Deps{Resolve: staticResolver(map[string][]netip.Addr{
		"media.test": {target.Addr()},
		"two.test":   {netip.MustParseAddr("127.0.0.2"), target.Addr()},
	})}
	ts := startServer(t, testConfig(), deps)
	port := int(target.Port())

	tests := []struct {
		name string
		dst  *socks5.AddrSpec
	}{
		{"ipv4", &socks5.AddrSpec{IP: net.IPv4(127, 0, 0, 1).To4(), Port: port}},
		{"domain", &socks5.AddrSpec{FQDN: "media.test", Port: port}},
		// The first address refuses; the proxy tries the next, as a
		// dual-stack "localhost" needs.
		{"domain whose first address refuses", &socks5.AddrSpec{FQDN: "two.test", Port: port}},
		// VLC sends IP literals as domain names.
		{"domain that is an ipv4 literal", &socks5.AddrSpec{FQDN: "127.0.0.1", Port: port}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := dialClient(t, ts.addr)
			require.Equal(t, byte(methodNoAuth), c.greet(methodNoAuth))
			rep, bound := c.request(CommandConnect, tt.dst)
			require.Equal(t, ReplySucceeded, rep)
			assert.True(t, bound.Addr().IsLoopback(), "BND.ADDR %v is the proxy's address towards the target", bound)
			assert.NotZero(t, bound.Port())

			msg := bytes.Repeat([]byte("fwproxy "), 4096)
			go c.conn.Write(msg)
			got := c.read(len(msg))
			assert.Equal(t, msg, got)
		})
	}
}

func TestConnectIPv6(t *testing.T) {
	ln, err := net.Listen("tcp", "[::1]:0")
	if err != nil {
		t.Skipf("no IPv6 loopback on this machine: %v", err)
	}
	ln.Close()
	target := tcpTarget(t, "[::1]:0", func(c net.Conn) { io.Copy(c, c) })
	cfg := testConfig()
	ts := startServer(t, cfg, Deps{})
	c := dialClient(t, ts.addr)
	c.greet(methodNoAuth)
	rep, bound := c.request(CommandConnect, spec(target))
	require.Equal(t, ReplySucceeded, rep)
	assert.True(t, bound.Addr().Is6(), "BND.ADDR %v", bound)
	c.write([]byte("over six"))
	assert.Equal(t, []byte("over six"), c.read(8))
}

// closedPort returns a loopback port nothing listens on.
func closedPort(t *testing.T) netip.AddrPort {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	ap := addrPortOf(ln.Addr())
	ln.Close()
	return ap
}

func TestConnectReplyCodes(t *testing.T) {
	target := echoTarget(t)
	denied := echoTarget(t)
	resolver := staticResolver(map[string][]netip.Addr{"media.test": {target.Addr()}})
	blockingDial := func(ctx context.Context, _, _ string) (net.Conn, error) {
		// A destination that never answers a SYN: the dial runs into
		// its deadline exactly as a real one does.
		<-ctx.Done()
		return nil, &net.OpError{Op: "dial", Net: "tcp", Err: ctx.Err()}
	}

	tests := []struct {
		name    string
		mutate  func(*Config, *Deps)
		cmd     Command
		dst     *socks5.AddrSpec
		want    Reply
		counted string
	}{
		{"succeeded", nil, CommandConnect, spec(target), ReplySucceeded, "request/connect/succeeded"},
		{"connection refused", nil, CommandConnect, spec(closedPort(t)), ReplyConnectionRefused, "request/connect/connection_refused"},
		{"unknown host", nil, CommandConnect, &socks5.AddrSpec{FQDN: "nowhere.test", Port: 80}, ReplyHostUnreachable, "request/connect/host_unreachable"},
		{"destination denied", func(c *Config, _ *Deps) {
			c.Rules.DenyDestinations = []DestRule{{Network: netip.PrefixFrom(denied.Addr(), 32), FirstPort: denied.Port(), LastPort: denied.Port()}}
		}, CommandConnect, spec(denied), ReplyNotAllowed, "request/connect/not_allowed"},
		{"destination not in allow list", func(c *Config, _ *Deps) {
			c.Rules.AllowDestinations = []DestRule{{Network: netip.MustParsePrefix("127.0.0.1/32"), FirstPort: 1, LastPort: 1}}
		}, CommandConnect, spec(target), ReplyNotAllowed, "request/connect/not_allowed"},
		{"domain denied after resolution", func(c *Config, _ *Deps) {
			c.Rules.DenyDestinations = []DestRule{{Network: netip.MustParsePrefix("127.0.0.0/8")}}
		}, CommandConnect, &socks5.AddrSpec{FQDN: "media.test", Port: int(target.Port())}, ReplyNotAllowed, "request/connect/not_allowed"},
		{"command disabled", func(c *Config, _ *Deps) { c.Rules.Connect = false }, CommandConnect, spec(target), ReplyNotAllowed, "request/connect/not_allowed"},
		{"unknown command", nil, Command(9), spec(target), ReplyCommandNotSupported, "request/unknown/command_not_supported"},
		{"dial timeout", func(c *Config, d *Deps) {
			c.DialTimeout = 50 * time.Millisecond
			d.Dial = blockingDial
		}, CommandConnect, spec(target), ReplyTTLExpired, "request/connect/ttl_expired"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg, deps := testConfig(), Deps{Resolve: resolver}
			if tt.mutate != nil {
				tt.mutate(&cfg, &deps)
			}
			ts := startServer(t, cfg, deps)
			c := dialClient(t, ts.addr)
			c.greet(methodNoAuth)
			rep, _ := c.request(tt.cmd, tt.dst)
			require.Equal(t, tt.want, rep, "reply %s", rep)
			if rep != ReplySucceeded {
				c.expectClosed()
			}
			c.conn.Close()
			require.True(t, waitFor(testTimeout, func() bool { return ts.rec.openSessions() == 0 }))
			assert.Equal(t, 1, ts.rec.count(tt.counted), "counted as %s", tt.counted)
		})
	}
}

func TestReplyForDialError(t *testing.T) {
	op := func(err error) error { return &net.OpError{Op: "dial", Net: "tcp", Err: err} }
	tests := []struct {
		err  error
		want Reply
	}{
		{op(syscall.ECONNREFUSED), ReplyConnectionRefused},
		{op(syscall.ENETUNREACH), ReplyNetworkUnreachable},
		{op(syscall.EHOSTUNREACH), ReplyHostUnreachable},
		{op(syscall.ETIMEDOUT), ReplyTTLExpired},
		{op(context.DeadlineExceeded), ReplyTTLExpired},
		{&net.DNSError{Err: "no such host", IsNotFound: true}, ReplyHostUnreachable},
		{&net.DNSError{Err: "timeout", IsTimeout: true}, ReplyTTLExpired},
		{op(syscall.EACCES), ReplyGeneralFailure},
	}
	for _, tt := range tests {
		t.Run(tt.err.Error(), func(t *testing.T) {
			assert.Equal(t, tt.want, replyForDialError(tt.err))
		})
	}
}

// TestHalfClose checks that one side's end of stream is passed on while the
// other direction keeps flowing, both ways round.
func TestHalfClose(t *testing.T) {
	request := bytes.Repeat([]byte("q"), 100_000)
	response := bytes.Repeat([]byte("r"), 100_000)

	t.Run("client closes first", func(t *testing.T) {
		// The target answers only after it saw the client's EOF, as an
		// HTTP/1.0 server or `nc -q` does.
		target := tcpTarget(t, "127.0.0.1:0", func(c net.Conn) {
			got, err := io.ReadAll(c)
			if err != nil || !bytes.Equal(got, request) {
				return
			}
			c.Write(response)
		})
		ts := startServer(t, testConfig(), Deps{})
		c := dialClient(t, ts.addr)
		c.greet(methodNoAuth)
		rep, _ := c.request(CommandConnect, spec(target))
		require.Equal(t, ReplySucceeded, rep)
		c.write(request)
		require.NoError(t, c.conn.CloseWrite())
		got, err := io.ReadAll(c.br)
		require.NoError(t, err)
		assert.Equal(t, response, got)
	})

	t.Run("target closes first", func(t *testing.T) {
		// The target sends everything and shuts its side, then still reads
		// what the client sends after that.
		gotByTarget := make(chan []byte, 1)
		target := tcpTarget(t, "127.0.0.1:0", func(c net.Conn) {
			c.Write(response)
			c.(*net.TCPConn).CloseWrite()
			got, _ := io.ReadAll(c)
			gotByTarget <- got
		})
		ts := startServer(t, testConfig(), Deps{})
		c := dialClient(t, ts.addr)
		c.greet(methodNoAuth)
		rep, _ := c.request(CommandConnect, spec(target))
		require.Equal(t, ReplySucceeded, rep)
		got, err := io.ReadAll(c.br)
		require.NoError(t, err)
		assert.Equal(t, response, got)
		c.write(request)
		require.NoError(t, c.conn.CloseWrite())
		select {
		case g := <-gotByTarget:
			assert.Equal(t, request, g)
		case <-time.After(testTimeout):
			t.Fatal("target never got the client's bytes and EOF")
		}
	})
}

// TestBytesAfterRequestAreRelayed: a client may send data right behind the
// request, before it read the reply; none of it may be lost.
func TestBytesAfterRequestAreRelayed(t *testing.T) {
	target := echoTarget(t)
	ts := startServer(t, testConfig(), Deps{})
	c := dialClient(t, ts.addr)
	c.greet(methodNoAuth)
	c.write(append(appendRequest(nil, CommandConnect, spec(target)), "early bytes"...))
	rep, _ := c.readReply()
	require.Equal(t, ReplySucceeded, rep)
	assert.Equal(t, []byte("early bytes"), c.read(len("early bytes")))
	c.conn.Close()
	require.True(t, waitFor(testTimeout, func() bool { return ts.rec.openSessions() == 0 }))
	ts.rec.mu.Lock()
	defer ts.rec.mu.Unlock()
	assert.Equal(t, len("early bytes"), ts.rec.bytes[DirClientToTarget])
	assert.Equal(t, len("early bytes"), ts.rec.bytes[DirTargetToClient])
}

func TestIdleTimeoutClosesSession(t *testing.T) {
	target := echoTarget(t)
	cfg := testConfig()
	cfg.IdleTimeout = 100 * time.Millisecond
	ts := startServer(t, cfg, Deps{})
	c := dialClient(t, ts.addr)
	c.greet(methodNoAuth)
	rep, _ := c.request(CommandConnect, spec(target))
	require.Equal(t, ReplySucceeded, rep)
	// Traffic keeps it open...
	c.write([]byte("ping"))
	assert.Equal(t, []byte("ping"), c.read(4))
	// ...silence closes it (the read ends in EOF, not in our deadline).
	c.expectClosed()
}

func TestConnectFromExternalIP(t *testing.T) {
	seen := make(chan netip.AddrPort, 1)
	target := tcpTarget(t, "127.0.0.1:0", func(c net.Conn) { seen <- addrPortOf(c.RemoteAddr()) })
	tests := []struct {
		name     string
		external netip.Addr
		want     netip.Addr
	}{
		{"from the external address", netip.MustParseAddr("127.0.0.3"), netip.MustParseAddr("127.0.0.3")},
		{"unset: the kernel's choice", netip.Addr{}, netip.MustParseAddr("127.0.0.1")},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := testConfig()
			cfg.ExternalIP = tt.external
			ts := startServer(t, cfg, Deps{})
			c := dialClient(t, ts.addr)
			c.greet(methodNoAuth)
			rep, bound := c.request(CommandConnect, spec(target))
			require.Equal(t, ReplySucceeded, rep)
			assert.Equal(t, tt.want, bound.Addr())
			select {
			case from := <-seen:
				assert.Equal(t, tt.want, from.Addr())
			case <-time.After(testTimeout):
				t.Fatal("target saw no connection")
			}
		})
	}
}

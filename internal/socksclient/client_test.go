package socksclient_test

import (
	"context"
	"errors"
	"io"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/crypto/bcrypt"

	"fwproxy/internal/socksclient"
	"fwproxy/leases"
	"fwproxy/proxy"
)

const testTimeout = 30 * time.Second

// startProxy runs the real proxy on loopback, with loopback destinations
// allowed and the name echo.test resolving to 127.0.0.1; with a user
// alice:s3cret when login is set.
func startProxy(t *testing.T, login bool) string {
	t.Helper()
	cfg := proxy.DefaultConfig()
	cfg.Rules.AllowDestinations = []proxy.DestRule{
		{Network: netip.MustParsePrefix("127.0.0.0/8")}, {Network: netip.MustParsePrefix("::1/128")},
	}
	deps := proxy.Deps{Resolve: func(_ context.Context, name string) ([]netip.Addr, error) {
		if name == "echo.test" {
			return []netip.Addr{netip.MustParseAddr("127.0.0.1")}, nil
		}
		return nil, errors.New("no such host")
	}}
	if login {
		h, err := bcrypt.GenerateFromPassword([]byte("s3cret"), bcrypt.MinCost)
		require.NoError(t, err)
		users, err := proxy.ParseUsers(strings.NewReader("alice:" + string(h) + "\n"))
		require.NoError(t, err)
		deps.Credentials = users
	}
	lcfg := leases.DefaultConfig()
	lcfg.ListenIP = netip.MustParseAddr("127.0.0.1")
	lm, err := leases.New(lcfg, leases.Deps{})
	require.NoError(t, err)
	t.Cleanup(func() { lm.Close() })
	deps.Leases = lm
	srv, err := proxy.New(cfg, deps)
	require.NoError(t, err)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ln) }()
	t.Cleanup(func() {
		srv.Close()
		<-done
	})
	return ln.Addr().String()
}

// tcpEcho echoes every connection on network's loopback; it returns its
// address.
func tcpEcho(t *testing.T, network, addr string) netip.AddrPort {
	t.Helper()
	ln, err := net.Listen(network, addr)
	if err != nil {
		t.Skipf("no %s loopback: %v", network, err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				io.Copy(c, c)
			}()
		}
	}()
	return ln.Addr().(*net.TCPAddr).AddrPort()
}

func TestConnect(t *testing.T) {
	open := startProxy(t, false)
	authed := startProxy(t, true)
	echo4 := tcpEcho(t, "tcp4", "127.0.0.1:0")
	closed := func() netip.AddrPort {
		ln, err := net.Listen("tcp4", "127.0.0.1:0")
		require.NoError(t, err)
		defer ln.Close()
		return ln.Addr().(*net.TCPAddr).AddrPort()
	}()
	tests := []struct {
		name      string
		d         socksclient.Dialer
		dst       socksclient.Addr
		wantErr   error
		wantReply socksclient.Reply
	}{
		{"IPv4", socksclient.Dialer{Proxy: open}, socksclient.AddrFromAddrPort(echo4), nil, 0},
		{"domain name the proxy resolves", socksclient.Dialer{Proxy: open}, socksclient.Addr{Name: "echo.test", Port: echo4.Port()}, nil, 0},
		{"login", socksclient.Dialer{Proxy: authed, Username: "alice", Password: "s3cret"}, socksclient.AddrFromAddrPort(echo4), nil, 0},
		{"wrong password", socksclient.Dialer{Proxy: authed, Username: "alice", Password: "guess"}, socksclient.AddrFromAddrPort(echo4), socksclient.ErrLoginRefused, 0},
		{"no login where one is required", socksclient.Dialer{Proxy: authed}, socksclient.AddrFromAddrPort(echo4), socksclient.ErrNoAcceptableMethod, 0},
		{"refused destination", socksclient.Dialer{Proxy: open}, socksclient.AddrFromAddrPort(closed), nil, socksclient.ReplyConnectionRefused},
		{"unknown name", socksclient.Dialer{Proxy: open}, socksclient.Addr{Name: "nowhere.test", Port: 80}, nil, socksclient.ReplyGeneralFailure},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
			defer cancel()
			c, err := tt.d.Connect(ctx, tt.dst)
			switch {
			case tt.wantErr != nil:
				require.ErrorIs(t, err, tt.wantErr)
				return
			case tt.wantReply != 0:
				var re *socksclient.ReplyError
				require.ErrorAs(t, err, &re)
				assert.Equal(t, tt.wantReply, re.Code)
				return
			}
			require.NoError(t, err)
			defer c.Close()
			require.NoError(t, c.SetDeadline(time.Now().Add(testTimeout)))
			_, err = c.Write([]byte("ping"))
			require.NoError(t, err)
			b := make([]byte, 4)
			_, err = io.ReadFull(c, b)
			require.NoError(t, err)
			assert.Equal(t, "ping", string(b))
		})
	}
}

func TestConnectIPv6(t *testing.T) {
	echo6 := tcpEcho(t, "tcp6", "[::1]:0")
	d := socksclient.Dialer{Proxy: startProxy(t, false), Timeout: testTimeout}
	c, err := d.Connect(context.Background(), socksclient.AddrFromAddrPort(echo6))
	require.NoError(t, err)
	defer c.Close()
	_, err = c.Write([]byte("v6"))
	require.NoError(t, err)
	b := make([]byte, 2)
	_, err = io.ReadFull(c, b)
	require.NoError(t, err)
	assert.Equal(t, "v6", string(b))
}

// TestCancelInterruptsHandshake: a proxy that accepts and never answers
// does not hold the caller past its context.
func TestCancelInterruptsHandshake(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer ln.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		// Once the greeting is here the client is waiting for the answer,
		// past the dial (which the context ends by itself).
		c.SetDeadline(time.Now().Add(testTimeout))
		greeting := make([]byte, 3)
		io.ReadFull(c, greeting)
		accepted <- c
	}()
	ctx, cancel := context.WithCancel(context.Background())
	d := socksclient.Dialer{Proxy: ln.Addr().String(), Timeout: testTimeout}
	errc := make(chan error, 1)
	go func() {
		_, err := d.Connect(ctx, socksclient.AddrFromAddrPort(netip.MustParseAddrPort("127.0.0.1:9")))
		errc <- err
	}()
	select {
	case c := <-accepted:
		defer c.Close()
	case <-time.After(testTimeout):
		t.Fatal("the client never connected")
	}
	cancel()
	select {
	case err := <-errc:
		assert.ErrorIs(t, err, context.Canceled)
	case <-time.After(testTimeout):
		t.Fatal("Connect did not return after cancel")
	}
}

func udpEcho(t *testing.T, addr string) netip.AddrPort {
	t.Helper()
	u, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.MustParseAddrPort(addr)))
	if err != nil {
		t.Skipf("no loopback at %s: %v", addr, err)
	}
	t.Cleanup(func() { u.Close() })
	go func() {
		buf := make([]byte, 2048)
		for {
			n, from, err := u.ReadFromUDPAddrPort(buf)
			if err != nil {
				return
			}
			u.WriteToUDPAddrPort(buf[:n], from)
		}
	}()
	return u.LocalAddr().(*net.UDPAddr).AddrPort()
}

func TestAssociate(t *testing.T) {
	proxyAddr := startProxy(t, false)
	for _, tt := range []struct {
		name, client, echo string
		byName             bool
	}{
		{"IPv4", "127.0.0.1:0", "127.0.0.1:0", false},
		{"peer by name", "127.0.0.1:0", "127.0.0.1:0", true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			echo := udpEcho(t, tt.echo)
			u, err := net.ListenUDP("udp4", net.UDPAddrFromAddrPort(netip.MustParseAddrPort(tt.client)))
			require.NoError(t, err)
			d := socksclient.Dialer{Proxy: proxyAddr, Timeout: testTimeout}
			pc, err := d.Associate(context.Background(), u, netip.AddrPort{})
			require.NoError(t, err)
			defer pc.Close()
			require.NoError(t, pc.SetDeadline(time.Now().Add(testTimeout)))

			// A stranger's datagram to the client's socket is not the
			// relay's: dropped and counted, never returned.
			stranger, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
			require.NoError(t, err)
			defer stranger.Close()
			_, err = stranger.WriteTo([]byte{0, 0, 0, 1, 127, 0, 0, 1, 0, 9, 'x'}, u.LocalAddr())
			require.NoError(t, err)

			if tt.byName {
				_, err = pc.WriteToAddr([]byte("hello"), socksclient.Addr{Name: "echo.test", Port: echo.Port()})
			} else {
				_, err = pc.WriteTo([]byte("hello"), net.UDPAddrFromAddrPort(echo))
			}
			require.NoError(t, err)
			b := make([]byte, 64)
			n, from, err := pc.ReadFromAddr(b)
			require.NoError(t, err)
			assert.Equal(t, "hello", string(b[:n]))
			assert.Equal(t, echo, from.AddrPort(), "the header names the peer")
			assert.Equal(t, uint64(1), pc.Dropped(), "the stranger's datagram")

			// A payload longer than the buffer is reported, not cut silently.
			_, err = pc.WriteToAddr([]byte("longer than four"), socksclient.AddrFromAddrPort(echo))
			require.NoError(t, err)
			n, _, err = pc.ReadFromAddr(b[:4])
			assert.ErrorIs(t, err, io.ErrShortBuffer)
			assert.Equal(t, 4, n)
		})
	}
}

// TestAssociationEndsWithControl: closing the control connection's write
// side ends the association; the proxy then closes its side.
func TestAssociationEndsWithControl(t *testing.T) {
	d := socksclient.Dialer{Proxy: startProxy(t, false), Timeout: testTimeout}
	u, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	require.NoError(t, err)
	pc, err := d.Associate(context.Background(), u, netip.AddrPort{})
	require.NoError(t, err)
	defer pc.Close()
	ctl := pc.Control()
	require.NoError(t, ctl.(*net.TCPConn).CloseWrite())
	require.NoError(t, ctl.SetReadDeadline(time.Now().Add(testTimeout)))
	n, err := io.Copy(io.Discard, ctl)
	require.NoError(t, err, "the proxy closes the association")
	assert.Zero(t, n)
}

// TestHandshakeBytes plays the server side of one CONNECT and checks what
// the client sends: each step alone, answered before the next (no
// pipelining, which Dante's server does not expect).
func TestHandshakeBytes(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	t.Cleanup(func() { ln.Close() })
	got := make(chan [][]byte, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			got <- nil
			return
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(testTimeout))
		var steps [][]byte
		for _, answer := range [][]byte{{5, 2}, {1, 0}, {5, 0, 0, 1, 127, 0, 0, 2, 0x30, 0x39}} {
			b := make([]byte, 64)
			n, err := c.Read(b)
			if err != nil {
				break
			}
			steps = append(steps, b[:n])
			c.Write(answer)
		}
		got <- steps
	}()
	d := socksclient.Dialer{Proxy: ln.Addr().String(), Username: "u", Password: "pw", Timeout: testTimeout}
	c, bound, err := d.Request(context.Background(), socksclient.CmdConnect, socksclient.AddrFromAddrPort(netip.MustParseAddrPort("127.0.0.1:80")))
	require.NoError(t, err)
	c.Close()
	assert.Equal(t, netip.MustParseAddrPort("127.0.0.2:12345"), bound.AddrPort())
	assert.Equal(t, [][]byte{{5, 1, 2}, {1, 1, 'u', 2, 'p', 'w'}, {5, 1, 0, 1, 127, 0, 0, 1, 0, 80}}, <-got)
}

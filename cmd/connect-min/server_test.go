package main

import (
	"bytes"
	"errors"
	"io"
	"net"
	"net/netip"
	"runtime"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"fwproxy/internal/leakcheck"
	"fwproxy/internal/socksclient"
)

// ioLimit bounds every read and write of a test.
const ioLimit = 10 * time.Second

// modes are the modes this machine runs.
func modes() []string {
	if runtime.GOOS != "linux" {
		return []string{"netpoll"}
	}
	return []string{"netpoll", "threads"}
}

// testConfig listens on a free loopback port and binds outgoing IPv4
// connections to 127.0.0.2, so a test sees the -bind address applied.
func testConfig() config {
	return config{
		listen:           netip.MustParseAddrPort("127.0.0.1:0"),
		bind:             netip.MustParseAddr("127.0.0.2"),
		handshakeTimeout: 5 * time.Second,
		maxSessions:      64,
	}
}

// startServer serves cfg in mode until the test ends; the cleanup closes
// it, requires serve to return nil and no session goroutine to remain.
func startServer(t *testing.T, mode string, cfg config) server {
	t.Helper()
	s, err := newServer(mode, cfg)
	require.NoError(t, err)
	served := make(chan error, 1)
	go func() { served <- s.serve() }()
	t.Cleanup(func() {
		s.close()
		select {
		case err := <-served:
			assert.NoError(t, err)
		case <-time.After(ioLimit):
			t.Error("serve did not return after close")
		}
		leakcheck.Require(t, ioLimit, leakcheck.Filter{Frames: []string{
			"main.(*netpollServer)", "main.(*threadsServer)", "main.pipeTCP", "main.relayFDs"}})
	})
	return s
}

// listenTarget is a loopback listener on ip, closed when the test ends.
func listenTarget(t *testing.T, ip string) *net.TCPListener {
	t.Helper()
	ln, err := net.ListenTCP("tcp", &net.TCPAddr{IP: net.ParseIP(ip)})
	if err != nil && ip == "::1" {
		t.Skip("no IPv6 loopback:", err)
	}
	require.NoError(t, err)
	t.Cleanup(func() { ln.Close() })
	return ln
}

// dial connects to the server with every I/O bounded.
func dial(t *testing.T, s server) *net.TCPConn {
	t.Helper()
	c, err := net.DialTCP("tcp", nil, net.TCPAddrFromAddrPort(s.addr()))
	require.NoError(t, err)
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(ioLimit))
	return c
}

func TestConnectRelaysBothWaysWithHalfClose(t *testing.T) {
	// Larger than the socket buffers and the relay's buffer, so the copy
	// loops and the writes wait for the reader.
	up := bytes.Repeat([]byte("client→target "), 100_000)
	down := bytes.Repeat([]byte("target→client "), 100_000)
	type test struct {
		name, mode, target string
		// targetFirst: the target sends and half-closes first, then reads
		// what the client sends; else the client does, and the target
		// answers after the client's end.
		targetFirst bool
		wantBind    string // the address the target sees the proxy connect from
	}
	var tests []test
	for _, m := range modes() {
		tests = append(tests,
			test{m + ", client ends first, IPv4", m, "127.0.0.1", false, "127.0.0.2"},
			test{m + ", target ends first, IPv4", m, "127.0.0.1", true, "127.0.0.2"},
			test{m + ", client ends first, IPv6 (-bind is IPv4: not applied)", m, "::1", false, "::1"})
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := startServer(t, tt.mode, testConfig())
			ln := listenTarget(t, tt.target)
			type seen struct {
				from netip.AddrPort
				got  []byte
				err  error
			}
			done := make(chan seen, 1)
			go func() {
				c, err := ln.AcceptTCP()
				if err != nil {
					done <- seen{err: err}
					return
				}
				defer c.Close()
				c.SetDeadline(time.Now().Add(ioLimit))
				from := c.RemoteAddr().(*net.TCPAddr).AddrPort()
				if tt.targetFirst {
					if _, err := c.Write(down); err != nil {
						done <- seen{err: err}
						return
					}
					c.CloseWrite()
				}
				got, err := io.ReadAll(c)
				if err == nil && !tt.targetFirst {
					_, err = c.Write(down)
				}
				done <- seen{from, got, err}
			}()

			d := socksclient.Dialer{Proxy: s.addr().String(), Timeout: ioLimit}
			dst := ln.Addr().(*net.TCPAddr).AddrPort()
			nc, bound, err := d.Request(t.Context(), socksclient.CmdConnect, socksclient.AddrFromAddrPort(dst))
			require.NoError(t, err)
			c := nc.(*net.TCPConn)
			defer c.Close()
			c.SetDeadline(time.Now().Add(ioLimit))
			var got []byte
			if tt.targetFirst {
				got, err = io.ReadAll(c)
				require.NoError(t, err, "the target's half-close arrives as the end, the other way still open")
			}
			_, err = c.Write(up)
			require.NoError(t, err)
			require.NoError(t, c.CloseWrite())
			if !tt.targetFirst {
				got, err = io.ReadAll(c)
				require.NoError(t, err)
			}
			assert.True(t, bytes.Equal(down, got), "target → client: %d bytes of %d", len(got), len(down))

			var sn seen
			select {
			case sn = <-done:
			case <-time.After(ioLimit):
				t.Fatal("target did not finish")
			}
			require.NoError(t, sn.err)
			assert.True(t, bytes.Equal(up, sn.got), "client → target: %d bytes of %d", len(sn.got), len(up))
			assert.Equal(t, tt.wantBind, sn.from.Addr().Unmap().String(), "the outgoing connection's local address")
			assert.Equal(t, sn.from, bound.AddrPort(), "the reply names the outgoing connection's local address")
		})
	}
}

// closedPort is a loopback port nothing listens on (a moment ago).
func closedPort(t *testing.T) uint16 {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	p := ln.Addr().(*net.TCPAddr).AddrPort().Port()
	ln.Close()
	return p
}

func TestRefusals(t *testing.T) {
	refused := closedPort(t)
	tests := []struct {
		name     string
		greeting []byte
		request  []byte
		// want is the whole answer, after which the server closes.
		want []byte
	}{
		{"domain name", []byte{5, 1, 0}, append(append([]byte{5, 1, 0, 3, 9}, "localhost"...), 0, 80),
			[]byte{5, 0, 5, repAddressNotSupported, 0, 1, 0, 0, 0, 0, 0, 0}},
		{"BIND", []byte{5, 1, 0}, []byte{5, 2, 0, 1, 127, 0, 0, 1, 0, 80},
			[]byte{5, 0, 5, repCommandNotSupported, 0, 1, 0, 0, 0, 0, 0, 0}},
		{"UDP ASSOCIATE", []byte{5, 1, 0}, []byte{5, 3, 0, 1, 0, 0, 0, 0, 0, 0},
			[]byte{5, 0, 5, repCommandNotSupported, 0, 1, 0, 0, 0, 0, 0, 0}},
		{"unknown address type", []byte{5, 1, 0}, []byte{5, 1, 0, 9, 0},
			[]byte{5, 0, 5, repAddressNotSupported, 0, 1, 0, 0, 0, 0, 0, 0}},
		{"connection refused", []byte{5, 1, 0}, []byte{5, 1, 0, 1, 127, 0, 0, 1, byte(refused >> 8), byte(refused)},
			[]byte{5, 0, 5, repConnectionRefused, 0, 1, 0, 0, 0, 0, 0, 0}},
		{"no acceptable method", []byte{5, 2, 1, 2}, nil, []byte{5, methodNoAcceptable}},
		{"several methods, no authentication among them", []byte{5, 3, 2, 0, 1}, []byte{5, 2, 0, 1, 127, 0, 0, 1, 0, 80},
			[]byte{5, 0, 5, repCommandNotSupported, 0, 1, 0, 0, 0, 0, 0, 0}},
		{"SOCKS 4", []byte{4, 1}, nil, []byte{}},
	}
	for _, mode := range modes() {
		s := startServer(t, mode, testConfig())
		for _, tt := range tests {
			t.Run(mode+", "+tt.name, func(t *testing.T) {
				c := dial(t, s)
				_, err := c.Write(append(tt.greeting, tt.request...))
				require.NoError(t, err)
				got, err := io.ReadAll(c)
				require.NoError(t, err, "the server closes after its answer")
				assert.Equal(t, tt.want, got)
			})
		}
	}
}

func TestHandshakeDeadline(t *testing.T) {
	tests := []struct {
		name string
		send []byte
		want []byte // what the server answers before it gives up
	}{
		{"silent from the start", nil, []byte{}},
		{"half a greeting", []byte{5, 1}, []byte{}},
		{"greeting, no request", []byte{5, 1, 0}, []byte{5, 0}},
		{"half a request", []byte{5, 1, 0, 5, 1, 0, 1, 127}, []byte{5, 0}},
	}
	for _, mode := range modes() {
		cfg := testConfig()
		cfg.handshakeTimeout = 100 * time.Millisecond
		s := startServer(t, mode, cfg)
		for _, tt := range tests {
			t.Run(mode+", "+tt.name, func(t *testing.T) {
				c := dial(t, s)
				_, err := c.Write(tt.send)
				require.NoError(t, err)
				// The client's own deadline is 100 handshake timeouts away:
				// a server without one fails here with a timeout.
				got, err := io.ReadAll(c)
				require.NoError(t, err, "the server ends the session at its deadline")
				assert.Equal(t, tt.want, got)
			})
		}
	}
}

func TestSessionCap(t *testing.T) {
	for _, mode := range modes() {
		t.Run(mode, func(t *testing.T) {
			cfg := testConfig()
			cfg.maxSessions = 1
			s := startServer(t, mode, cfg)
			greet := func(c *net.TCPConn) ([]byte, error) {
				if _, err := c.Write([]byte{5, 1, 0}); err != nil {
					return nil, err
				}
				var sel [2]byte
				n, err := io.ReadFull(c, sel[:])
				return sel[:n], err
			}
			first := dial(t, s)
			sel, err := greet(first)
			require.NoError(t, err)
			require.Equal(t, []byte{5, 0}, sel)

			over := dial(t, s)
			over.Write([]byte{5, 1, 0})
			got, err := io.ReadAll(over)
			if !errors.Is(err, net.ErrClosed) && err != nil {
				// Closed with the greeting unread: a reset.
				require.ErrorIs(t, err, syscallECONNRESET())
			}
			assert.Empty(t, got, "a connection beyond the cap is closed unanswered")

			first.Close()
			// The first session's end frees its place, as soon as the
			// server has seen it.
			require.Eventually(t, func() bool {
				// Not dial: require must not fail from Eventually's goroutine.
				c, err := net.DialTCP("tcp", nil, net.TCPAddrFromAddrPort(s.addr()))
				if err != nil {
					return false
				}
				defer c.Close()
				c.SetDeadline(time.Now().Add(ioLimit))
				sel, err := greet(c)
				return err == nil && bytes.Equal(sel, []byte{5, 0})
			}, ioLimit, 5*time.Millisecond)
		})
	}
}

func TestCloseEndsSessions(t *testing.T) {
	for _, mode := range modes() {
		t.Run(mode, func(t *testing.T) {
			s, err := newServer(mode, testConfig())
			require.NoError(t, err)
			served := make(chan error, 1)
			go func() { served <- s.serve() }()

			// A session in its relay, to a target that never speaks, and
			// one in its handshake.
			ln := listenTarget(t, "127.0.0.1")
			d := socksclient.Dialer{Proxy: s.addr().String(), Timeout: ioLimit}
			relaying, err := d.Connect(t.Context(), socksclient.AddrFromAddrPort(ln.Addr().(*net.TCPAddr).AddrPort()))
			require.NoError(t, err)
			defer relaying.Close()
			target, err := ln.Accept()
			require.NoError(t, err)
			defer target.Close()
			greeting := dial(t, s)

			closed := make(chan struct{})
			go func() {
				s.close()
				close(closed)
			}()
			select {
			case <-closed:
			case <-time.After(ioLimit):
				t.Fatal("close did not end the sessions")
			}
			require.NoError(t, <-served)
			for _, c := range []net.Conn{relaying, greeting, target} {
				c.SetDeadline(time.Now().Add(ioLimit))
				_, err := io.ReadAll(c)
				if err != nil {
					require.ErrorIs(t, err, syscallECONNRESET())
				}
			}
			_, err = net.DialTCP("tcp", nil, net.TCPAddrFromAddrPort(s.addr()))
			assert.Error(t, err, "the listener is closed")
			leakcheck.Require(t, ioLimit, leakcheck.Filter{Frames: []string{
				"main.(*netpollServer)", "main.(*threadsServer)", "main.pipeTCP", "main.relayFDs"}})
		})
	}
}

func TestConfigValidate(t *testing.T) {
	tests := []struct {
		name string
		edit func(*config)
		ok   bool
	}{
		{"default", func(*config) {}, true},
		{"no listen address", func(c *config) { c.listen = netip.AddrPort{} }, false},
		{"zero handshake timeout", func(c *config) { c.handshakeTimeout = 0 }, false},
		{"no sessions", func(c *config) { c.maxSessions = 0 }, false},
		{"more sessions than threads allow", func(c *config) { c.maxSessions = maxSessionsLimit + 1 }, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := testConfig()
			tt.edit(&c)
			assert.Equal(t, tt.ok, c.validate() == nil, "%v", c.validate())
		})
	}
}

func TestLocalFor(t *testing.T) {
	c := testConfig()
	assert.Equal(t, netip.MustParseAddr("127.0.0.2"), c.localFor(netip.MustParseAddrPort("127.0.0.1:80")))
	assert.False(t, c.localFor(netip.MustParseAddrPort("[::1]:80")).IsValid(), "another family: the kernel's choice")
	c.bind = netip.Addr{}
	assert.False(t, c.localFor(netip.MustParseAddrPort("127.0.0.1:80")).IsValid())
}

// TestEarlyDataReachesTheTarget: a client that sends its greeting, its
// request and data at once, without waiting for the answers, loses none
// of it.
func TestEarlyDataReachesTheTarget(t *testing.T) {
	for _, mode := range modes() {
		t.Run(mode, func(t *testing.T) {
			s := startServer(t, mode, testConfig())
			ln := listenTarget(t, "127.0.0.1")
			got := make(chan string, 1)
			go func() {
				c, err := ln.Accept()
				if err != nil {
					got <- err.Error()
					return
				}
				defer c.Close()
				c.SetDeadline(time.Now().Add(ioLimit))
				b, err := io.ReadAll(c)
				if err != nil {
					got <- err.Error()
					return
				}
				got <- string(b)
			}()
			dst := ln.Addr().(*net.TCPAddr).AddrPort()
			req := append([]byte{5, 1, 0, 5, 1, 0, 1}, dst.Addr().AsSlice()...)
			req = append(req, byte(dst.Port()>>8), byte(dst.Port()))
			c := dial(t, s)
			_, err := c.Write(append(req, "early, "...))
			require.NoError(t, err)
			answers := make([]byte, 2+10)
			_, err = io.ReadFull(c, answers)
			require.NoError(t, err)
			assert.Equal(t, []byte{5, 0, 5, 0}, answers[:4])
			_, err = c.Write([]byte("then the rest"))
			require.NoError(t, err)
			require.NoError(t, c.CloseWrite())
			select {
			case b := <-got:
				assert.Equal(t, "early, then the rest", b)
			case <-time.After(ioLimit):
				t.Fatal("target got nothing")
			}
		})
	}
}

package proxy

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"

	socks5 "github.com/armon/go-socks5"
	"github.com/stretchr/testify/require"

	"fwproxy/internal/leakcheck"
)

// testTimeout bounds every blocking step of a test; generous, because
// these machines are shared, but finite.
const testTimeout = 10 * time.Second

// testConfig is DefaultConfig with limits short enough for tests, and
// loopback allowed as a destination (the tests' targets live there).
func testConfig() Config {
	cfg := DefaultConfig()
	cfg.HandshakeTimeout = 5 * time.Second
	cfg.DialTimeout = 5 * time.Second
	cfg.IdleTimeout = 0
	allowLoopback(&cfg)
	return cfg
}

// allowLoopback lifts the default refusal of the proxy's host for the
// loopback networks, with explicit allow rules, as an operator would.
func allowLoopback(cfg *Config) {
	cfg.Rules.AllowDestinations = append(cfg.Rules.AllowDestinations, loopbackRules()...)
}

func loopbackRules() []DestRule {
	return []DestRule{{Network: netip.MustParsePrefix("127.0.0.0/8")}, {Network: netip.MustParsePrefix("::1/128")}}
}

// recorder is an Observer that remembers what it was told.
type recorder struct {
	mu       sync.Mutex
	counts   map[string]int
	sessions int
	bytes    map[string]int
}

func newRecorder() *recorder {
	return &recorder{counts: map[string]int{}, bytes: map[string]int{}}
}

func (r *recorder) add(key string) {
	r.mu.Lock()
	r.counts[key]++
	r.mu.Unlock()
}

func (r *recorder) ConnectionRejected(reason string) { r.add("rejected/" + reason) }
func (r *recorder) SessionsChanged(d int) {
	r.mu.Lock()
	r.sessions += d
	r.mu.Unlock()
}
func (r *recorder) HandshakeFailed(reason string)    { r.add("handshake/" + reason) }
func (r *recorder) DestinationRefused(reason string) { r.add("refused/" + reason) }
func (r *recorder) Authenticated(method string, ok bool) {
	if ok {
		r.add("auth/" + method + "/success")
	} else {
		r.add("auth/" + method + "/failure")
	}
}
func (r *recorder) LoginRateLimited() { r.add("auth/username_password/rate_limited") }

func (r *recorder) ConnectExpectation(outcome string) { r.add("expect/" + outcome) }
func (r *recorder) Request(cmd, reply string, _, _ time.Duration) {
	r.add("request/" + cmd + "/" + reply)
}
func (r *recorder) Relayed(dir string, n int) {
	r.mu.Lock()
	r.bytes[dir] += n
	r.mu.Unlock()
}

func (r *recorder) count(key string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.counts[key]
}

func (r *recorder) openSessions() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.sessions
}

var _ Observer = (*recorder)(nil)

// testServer is a running Server on a loopback port.
type testServer struct {
	*Server
	addr string
	rec  *recorder
	done chan error
}

// startServer runs a server on 127.0.0.1:0; cleanup closes it, checks Serve
// returned and that no session goroutine is left.
func startServer(t *testing.T, cfg Config, deps Deps) *testServer {
	t.Helper()
	rec := newRecorder()
	if deps.Observer == nil {
		deps.Observer = rec
	}
	srv, err := New(cfg, deps)
	require.NoError(t, err)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	return serveForTest(t, srv, ln, rec)
}

// serveForTest runs srv on ln; cleanup closes it, checks Serve returned
// and that no session goroutine is left.
func serveForTest(t *testing.T, srv *Server, ln net.Listener, rec *recorder) *testServer {
	t.Helper()
	ts := &testServer{Server: srv, addr: ln.Addr().String(), rec: rec, done: make(chan error, 1)}
	go func() { ts.done <- srv.Serve(ln) }()
	t.Cleanup(func() {
		require.NoError(t, srv.Close())
		select {
		case err := <-ts.done:
			require.ErrorIs(t, err, ErrServerClosed)
		case <-time.After(testTimeout):
			t.Fatal("Serve did not return after Close")
		}
		requireNoProxyGoroutines(t)
	})
	return ts
}

// requireNoProxyGoroutines fails when a goroutine running this package's
// code (other than tests) is still alive.
func requireNoProxyGoroutines(t *testing.T) {
	t.Helper()
	leakcheck.Require(t, testTimeout, leakcheck.Filter{Frames: []string{"fwproxy/proxy.(*"}, SkipTests: true})
}

// waitFor polls cond until it holds or d passes. It is for conditions no
// event announces (a goroutine exiting); tests wait on events otherwise.
func waitFor(d time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(time.Millisecond)
	}
	return true
}

// echoTarget is a loopback TCP server that echoes what it reads and
// half-closes when its peer does.
func echoTarget(t *testing.T) netip.AddrPort {
	t.Helper()
	return tcpTarget(t, "127.0.0.1:0", func(c net.Conn) {
		io.Copy(c, c)
		c.(*net.TCPConn).CloseWrite()
	})
}

// tcpTarget serves handle for each connection on a loopback listener; the
// test's cleanup closes the listener and waits for the handlers.
func tcpTarget(t *testing.T, addr string, handle func(net.Conn)) netip.AddrPort {
	t.Helper()
	ln, err := net.Listen("tcp", addr)
	require.NoError(t, err)
	var wg sync.WaitGroup
	var mu sync.Mutex
	var conns []net.Conn
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				c.SetDeadline(time.Now().Add(testTimeout))
				handle(c)
			}()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	return addrPortOf(ln.Addr())
}

// client is a raw SOCKS5 client for tests.
type client struct {
	t    *testing.T
	conn *net.TCPConn
	br   *bufio.Reader
}

func dialClient(t *testing.T, addr string) *client {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, testTimeout)
	require.NoError(t, err)
	c.SetDeadline(time.Now().Add(testTimeout))
	t.Cleanup(func() { c.Close() })
	return &client{t: t, conn: c.(*net.TCPConn), br: bufio.NewReader(c)}
}

func (c *client) write(b []byte) {
	c.t.Helper()
	_, err := c.conn.Write(b)
	require.NoError(c.t, err)
}

func (c *client) read(n int) []byte {
	c.t.Helper()
	b := make([]byte, n)
	_, err := io.ReadFull(c.br, b)
	require.NoError(c.t, err)
	return b
}

// greet offers methods and returns the method the server chose.
func (c *client) greet(methods ...byte) byte {
	c.t.Helper()
	c.write(append([]byte{5, byte(len(methods))}, methods...))
	return c.read(2)[1]
}

// login runs RFC 1929 and returns the status byte.
func (c *client) login(user, pass string) byte {
	c.t.Helper()
	msg := []byte{1, byte(len(user))}
	msg = append(msg, user...)
	msg = append(msg, byte(len(pass)))
	msg = append(msg, pass...)
	c.write(msg)
	return c.read(2)[1]
}

// request sends a request and reads the reply.
func (c *client) request(cmd Command, dst *socks5.AddrSpec) (Reply, netip.AddrPort) {
	c.t.Helper()
	c.write(appendRequest(nil, cmd, dst))
	return c.readReply()
}

func (c *client) readReply() (Reply, netip.AddrPort) {
	c.t.Helper()
	head := c.read(4)
	require.Equal(c.t, byte(5), head[0], "reply version")
	var ip netip.Addr
	switch head[3] {
	case atypIPv4:
		ip = netip.AddrFrom4([4]byte(c.read(4)))
	case atypIPv6:
		ip = netip.AddrFrom16([16]byte(c.read(16)))
	default:
		c.t.Fatalf("reply address type %d", head[3])
	}
	p := c.read(2)
	return Reply(head[1]), netip.AddrPortFrom(ip, uint16(p[0])<<8|uint16(p[1]))
}

// expectClosed asserts the server closes the connection without sending
// anything more.
func (c *client) expectClosed() {
	c.t.Helper()
	b, err := c.br.ReadByte()
	if err == nil {
		c.t.Fatalf("expected close, got byte 0x%02x", b)
	}
	var ne net.Error
	require.False(c.t, errors.As(err, &ne) && ne.Timeout(), "server did not close: %v", err)
}

func spec(ap netip.AddrPort) *socks5.AddrSpec {
	return &socks5.AddrSpec{IP: ap.Addr().AsSlice(), Port: int(ap.Port())}
}

// staticResolver resolves names from a table, as /etc/hosts would; tests
// must not send DNS queries off the machine.
func staticResolver(table map[string][]netip.Addr) func(context.Context, string) ([]netip.Addr, error) {
	return func(_ context.Context, name string) ([]netip.Addr, error) {
		if a, ok := table[name]; ok {
			return a, nil
		}
		return nil, &net.DNSError{Err: "no such host", Name: name, IsNotFound: true}
	}
}

func (r *recorder) ActiveChanged(cmd string, d int) {
	r.mu.Lock()
	r.counts["active/"+cmd] += d
	r.mu.Unlock()
}

func (r *recorder) UDPCounters(dir, outcome string) (Counter, Counter) {
	return recCounter{r, "udp/" + dir + "/" + outcome}, recCounter{r, "udpbytes/" + dir + "/" + outcome}
}

// recCounter counts into its recorder under key.
type recCounter struct {
	r   *recorder
	key string
}

func (c recCounter) Add(v float64) {
	c.r.mu.Lock()
	c.r.counts[c.key] += int(v)
	c.r.mu.Unlock()
}

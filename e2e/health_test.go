package e2e

import (
	"context"
	"io"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"fwproxy/internal/socksclient"
)

// holdServer accepts TCP connections on loopback and holds each open until
// its client closes it (or the test ends).
func holdServer(t *testing.T) netip.AddrPort {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	done := make(chan struct{})
	go func() {
		defer close(done)
		var conns []net.Conn
		defer func() {
			for _, c := range conns {
				c.Close()
			}
		}()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			conns = append(conns, c)
			go closeAtEOF(c)
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		<-done
	})
	return ln.Addr().(*net.TCPAddr).AddrPort()
}

func closeAtEOF(c net.Conn) {
	io.Copy(io.Discard, c)
	c.Close()
}

// socksConnect opens a CONNECT session to dst through the proxy, without
// authentication, and returns it established.
func socksConnect(t *testing.T, proxyAddr string, dst netip.AddrPort) net.Conn {
	t.Helper()
	c, _ := socksRequest(t, proxyAddr, socksclient.CmdConnect, dst)
	return c
}

// socksRequest sends one SOCKS5 request without authentication, requires
// success, and returns the connection and BND.ADDR:BND.PORT. The
// connection is closed at cleanup.
func socksRequest(t *testing.T, proxyAddr string, cmd socksclient.Command, dst netip.AddrPort) (net.Conn, netip.AddrPort) {
	t.Helper()
	d := socksclient.Dialer{Proxy: proxyAddr, Timeout: testTimeout}
	c, bnd, err := d.Request(context.Background(), cmd, socksclient.AddrFromAddrPort(dst))
	require.NoError(t, err, "%v %v", cmd, dst)
	t.Cleanup(func() { c.Close() })
	return c, bnd.AddrPort()
}

// probe GETs a health path and returns its status and body.
func probe(t *testing.T, p *proxyProc, path string) (int, string) {
	t.Helper()
	client := &http.Client{Timeout: testTimeout}
	resp, err := client.Get("http://" + p.metrics + path)
	require.NoError(t, err)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return resp.StatusCode, strings.TrimSpace(string(b))
}

// TestHealthWhileDraining: /readyz and /healthz are 200 once the proxy
// listens; from SIGTERM on, while a session still drains, both answer 503
// "draining"; the process then exits 0 when the session ends.
func TestHealthWhileDraining(t *testing.T) {
	p := startProxy(t, "-drain-timeout", "5m")
	code, body := probe(t, p, "/readyz")
	assert.Equal(t, http.StatusOK, code, body)
	code, body = probe(t, p, "/healthz")
	assert.Equal(t, http.StatusOK, code)
	assert.Equal(t, "ok", body)

	session := socksConnect(t, p.socks, holdServer(t))
	p.waitMetric(t, "fwproxy_socks_sessions_active 1\n")
	require.NoError(t, p.Signal(syscall.SIGTERM))
	p.waitLog(t, `"msg":"shutting down"`, 1)
	code, body = probe(t, p, "/healthz")
	assert.Equal(t, http.StatusServiceUnavailable, code)
	assert.Equal(t, "draining", body)
	code, body = probe(t, p, "/readyz")
	assert.Equal(t, http.StatusServiceUnavailable, code)
	assert.Equal(t, "draining", body)
	select {
	case <-p.Done():
		t.Fatalf("fwproxy exited (%v) while a session was draining", p.Err())
	default:
	}

	session.Close()
	select {
	case <-p.Done():
		require.NoError(t, p.Err())
	case <-time.After(testTimeout):
		t.Fatalf("fwproxy did not exit once the session ended\n%s", p.logs)
	}
}

// TestFreshScrapeHasFailureSeries: before anything happened, the failure
// series are already there at 0 (so increase() sees the first failure),
// and the configured limits are exported.
func TestFreshScrapeHasFailureSeries(t *testing.T) {
	p := startProxy(t, "-max-sessions", "77", "-udp-ports", "40000-40099")
	m := p.scrape(t)
	for _, line := range []string{
		`fwproxy_socks_connections_rejected_total{reason="session_limit"} 0`,
		`fwproxy_socks_connections_rejected_total{reason="client_not_allowed"} 0`,
		`fwproxy_socks_handshake_failures_total{reason="auth_failed"} 0`,
		`fwproxy_socks_handshake_failures_total{reason="timeout"} 0`,
		`fwproxy_socks_authentications_total{method="username_password",result="failure"} 0`,
		`fwproxy_socks_requests_total{command="connect",reply="connection_refused"} 0`,
		`fwproxy_udp_datagrams_total{direction="remote_to_client",outcome="send_failed"} 0`,
		`fwproxy_leases_datagrams_total{outcome="dropped",reason="buffer_full"} 0`,
		`fwproxy_leases_acquire_failures_total{reason="no_port"} 0`,
		`fwproxy_mms_problems_total{direction="client_to_server",problem="funnel_rewrite_failed"} 0`,
		`fwproxy_limit_sessions 77`,
		`fwproxy_limit_udp_ports 100`,
	} {
		assert.Contains(t, m, line+"\n")
	}
}

// TestMetricsBasicAuth: with -metrics-users, /metrics and /debug/leases
// need the users' credentials; the health endpoints stay open for probes.
func TestMetricsBasicAuth(t *testing.T) {
	p := startProxy(t, "-metrics-users", usersFile(t, "prom", "scrape-pw"))
	tests := []struct {
		path, user, password string
		status               int
	}{
		{"/metrics", "", "", http.StatusUnauthorized},
		{"/metrics", "prom", "wrong", http.StatusUnauthorized},
		{"/metrics", "prom", "scrape-pw", http.StatusOK},
		{"/debug/leases", "", "", http.StatusUnauthorized},
		{"/debug/leases", "prom", "scrape-pw", http.StatusOK},
		{"/healthz", "", "", http.StatusOK},
		{"/readyz", "", "", http.StatusOK},
	}
	client := &http.Client{Timeout: testTimeout}
	for _, tt := range tests {
		t.Run(tt.path+" "+tt.user+":"+tt.password, func(t *testing.T) {
			req, err := http.NewRequest(http.MethodGet, "http://"+p.metrics+tt.path, nil)
			require.NoError(t, err)
			if tt.user != "" {
				req.SetBasicAuth(tt.user, tt.password)
			}
			resp, err := client.Do(req)
			require.NoError(t, err)
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			assert.Equal(t, tt.status, resp.StatusCode)
		})
	}
}

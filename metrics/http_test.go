package metrics

import (
	"bufio"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"fwproxy/proxy"
)

// boundedWait is how long a test waits for something the server must do
// within a much shorter configured time; it only bounds a broken run.
const boundedWait = 20 * time.Second

// startServer serves h through NewServer(cfg) on a loopback port and
// returns its address; the server is closed and waited for at cleanup.
func startServer(t *testing.T, h http.Handler, cfg ServerConfig) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	srv := NewServer(h, cfg, slog.New(slog.DiscardHandler))
	done := make(chan struct{})
	go func() {
		defer close(done)
		srv.Serve(ln)
	}()
	t.Cleanup(func() {
		srv.Close()
		<-done
	})
	return ln.Addr().String()
}

// readUntilClosed reads conn until the server closes it, and fails if that
// takes longer than boundedWait.
func readUntilClosed(t *testing.T, conn net.Conn, r io.Reader) {
	t.Helper()
	require.NoError(t, conn.SetReadDeadline(time.Now().Add(boundedWait)))
	_, err := io.Copy(io.Discard, r)
	require.False(t, errors.Is(err, os.ErrDeadlineExceeded), "the server kept the connection open")
}

func TestServerClosesIdleKeepAlive(t *testing.T) {
	cfg := DefaultServerConfig()
	cfg.IdleTimeout = 50 * time.Millisecond
	// net/http falls back to ReadTimeout when IdleTimeout is 0: make that
	// fallback far longer than the test waits, so only the idle timeout
	// can close the connection in time.
	cfg.ReadTimeout = time.Hour
	addr := startServer(t, Handler(NewRegistry(BuildInfo{Version: "test"}), HandlerOptions{}), cfg)

	conn, err := net.Dial("tcp", addr)
	require.NoError(t, err)
	defer conn.Close()
	_, err = io.WriteString(conn, "GET /healthz HTTP/1.1\r\nHost: test\r\n\r\n")
	require.NoError(t, err)
	br := bufio.NewReader(conn)
	resp, err := http.ReadResponse(br, nil)
	require.NoError(t, err)
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode)
	assert.False(t, resp.Close, "the connection is kept alive after the response")

	readUntilClosed(t, conn, br)
}

func TestServerCutsSlowHeaders(t *testing.T) {
	cfg := DefaultServerConfig()
	cfg.ReadHeaderTimeout = 50 * time.Millisecond
	cfg.ReadTimeout = time.Hour // nor may the whole-request limit be what cuts it
	cfg.IdleTimeout = time.Hour
	addr := startServer(t, Handler(NewRegistry(BuildInfo{Version: "test"}), HandlerOptions{}), cfg)

	conn, err := net.Dial("tcp", addr)
	require.NoError(t, err)
	defer conn.Close()
	// A request line and one header, then nothing: the slowloris pattern.
	_, err = io.WriteString(conn, "GET /metrics HTTP/1.1\r\nHost: test\r\n")
	require.NoError(t, err)
	readUntilClosed(t, conn, conn)
}

func TestServerRefusesLargeHeaders(t *testing.T) {
	cfg := DefaultServerConfig()
	addr := startServer(t, Handler(NewRegistry(BuildInfo{Version: "test"}), HandlerOptions{}), cfg)

	conn, err := net.Dial("tcp", addr)
	require.NoError(t, err)
	defer conn.Close()
	big := strings.Repeat("a", cfg.MaxHeaderBytes+8<<10)
	go io.WriteString(conn, "GET /healthz HTTP/1.1\r\nHost: test\r\nX-Big: "+big+"\r\n\r\n")
	require.NoError(t, conn.SetReadDeadline(time.Now().Add(boundedWait)))
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	require.NoError(t, err)
	resp.Body.Close()
	assert.Equal(t, http.StatusRequestHeaderFieldsTooLarge, resp.StatusCode)
}

func TestHealthLifecycle(t *testing.T) {
	h := &Health{}
	addr := startServer(t, Handler(NewRegistry(BuildInfo{Version: "test"}), HandlerOptions{Health: h}), DefaultServerConfig())
	steps := []struct {
		name                    string
		step                    func()
		healthz, readyz         int
		healthzBody, readyzBody string
	}{
		{"starting", func() {}, 200, 503, "ok", "starting"},
		{"ready", h.SetReady, 200, 200, "ok", "ready"},
		{"draining", h.SetDraining, 503, 503, "draining", "draining"},
	}
	for _, s := range steps {
		t.Run(s.name, func(t *testing.T) {
			s.step()
			code, body := get(t, "http://"+addr+"/healthz", "", "")
			assert.Equal(t, s.healthz, code)
			assert.Contains(t, body, s.healthzBody)
			code, body = get(t, "http://"+addr+"/readyz", "", "")
			assert.Equal(t, s.readyz, code)
			assert.Contains(t, body, s.readyzBody)
		})
	}
}

func TestBasicAuth(t *testing.T) {
	line, err := proxy.HashPassword("prom", []byte("scrape-secret"))
	require.NoError(t, err)
	users, err := proxy.ParseUsers(strings.NewReader(line + "\n"))
	require.NoError(t, err)
	extra := map[string]http.Handler{"/debug/leases": LeasesHandler(nil)}
	addr := startServer(t, Handler(NewRegistry(BuildInfo{Version: "test"}), HandlerOptions{Users: users, Extra: extra}), DefaultServerConfig())

	tests := []struct {
		name, path, user, password string
		status                     int
	}{
		{"metrics without credentials", "/metrics", "", "", http.StatusUnauthorized},
		{"metrics with a wrong password", "/metrics", "prom", "wrong", http.StatusUnauthorized},
		{"metrics for an unknown user", "/metrics", "nobody", "scrape-secret", http.StatusUnauthorized},
		{"metrics with the password", "/metrics", "prom", "scrape-secret", http.StatusOK},
		{"debug route without credentials", "/debug/leases", "", "", http.StatusUnauthorized},
		{"healthz stays open", "/healthz", "", "", http.StatusOK},
		{"readyz stays open", "/readyz", "", "", http.StatusOK},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, body := get(t, "http://"+addr+tt.path, tt.user, tt.password)
			assert.Equal(t, tt.status, code)
			if tt.status == http.StatusUnauthorized {
				assert.NotContains(t, body, "fwproxy_", "nothing of the scrape leaks")
			}
		})
	}
}

// get returns a GET's status and body, with basic credentials when user is
// not empty.
func get(t *testing.T, url, user, password string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, url, nil)
	require.NoError(t, err)
	if user != "" {
		req.SetBasicAuth(user, password)
	}
	client := &http.Client{Timeout: boundedWait}
	resp, err := client.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return resp.StatusCode, string(b)
}

package e2e

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"fwproxy/internal/fwproc"
	"fwproxy/internal/netns"
)

// testTimeout bounds each blocking step; generous for shared machines.
const testTimeout = 30 * time.Second

// binDir holds the binaries TestMain builds once for every test.
var binDir string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "fwproxy-e2e-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e:", err)
		os.Exit(1)
	}
	binDir = dir
	build := exec.Command("go", "build", "-race", "-o", dir, "../cmd/...")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "e2e: build:", err)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// proxyProc is a running fwproxy process.
type proxyProc struct {
	*fwproc.Proc
	socks   string // SOCKS5 address
	metrics string // metrics address
	logs    *fwproc.Logs
	// http reaches the metrics listener (from the proxy host).
	http *http.Client
	// killed: the test ended it with SIGKILL; cleanup expects no clean
	// exit then.
	killed bool
}

// allowLoopback lifts the default refusal of the proxy's host for the
// loopback networks, where the loopback tests' servers live, as an operator
// would: with explicit allow rules. The proxy's own sockets stay refused.
var allowLoopback = []string{"-allow", "127.0.0.0/8", "-allow", "::1/128"}

// startProxy runs fwproxy on loopback (see startProxyIn).
func startProxy(t *testing.T, args ...string) *proxyProc {
	t.Helper()
	return startProxyIn(t, onLoopback, args...)
}

// startProxyIn runs fwproxy with args on n's proxy host (listening on port
// 0 of its inside address unless args say otherwise) and waits for its
// "listening" line. Cleanup stops it with SIGTERM and requires a clean
// exit.
func startProxyIn(t *testing.T, n *testNet, args ...string) *proxyProc {
	t.Helper()
	return startProxyOn(t, n.proxyHost(), n.httpClient(), append(n.proxyArgs(t), args...)...)
}

// startProxyDefaults runs fwproxy on loopback with the default destination
// rules: the proxy's host is not a destination.
func startProxyDefaults(t *testing.T, args ...string) *proxyProc {
	t.Helper()
	return startProxyOn(t, nil, onLoopback.httpClient(), append([]string{"-listen", "127.0.0.1:0", "-metrics-listen", "127.0.0.1:0"}, args...)...)
}

// startProxyOn runs fwproxy with args on host (nil: this host), its
// metrics reached with client.
func startProxyOn(t *testing.T, host *netns.Host, client *http.Client, args ...string) *proxyProc {
	t.Helper()
	cfg := fwproc.Config{
		Binary:       filepath.Join(binDir, "fwproxy"),
		Args:         append([]string{"-log-format", "json", "-log-level", "debug"}, args...),
		StartTimeout: testTimeout,
	}
	if host != nil {
		cfg.Command = func(name string, args ...string) *exec.Cmd {
			return host.Command(context.Background(), name, args...)
		}
	}
	fp, err := fwproc.Start(context.Background(), cfg)
	require.NoError(t, err)
	p := &proxyProc{Proc: fp, socks: fp.Socks, metrics: fp.Metrics, logs: fp.Logs, http: client}
	t.Cleanup(func() { p.stop(t) })
	return p
}

// stop sends SIGTERM and requires exit status 0 within the time limit.
func (p *proxyProc) stop(t *testing.T) {
	t.Helper()
	err := p.Stop(testTimeout)
	switch {
	case p.killed:
	case errors.Is(err, fwproc.ErrStopTimeout):
		t.Errorf("fwproxy did not stop on SIGTERM\n%s", p.logs)
	case err != nil:
		t.Errorf("fwproxy exited with %v\n%s", err, p.logs)
	}
}

// scrape returns the proxy's /metrics text.
func (p *proxyProc) scrape(t *testing.T) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+p.metrics+"/metrics", nil)
	require.NoError(t, err)
	resp, err := p.http.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	require.Equal(t, http.StatusOK, resp.StatusCode)
	return string(body)
}

// waitMetric scrapes until the exposition contains line; counters are
// updated just after the datagram they count is sent, so a client can see
// the datagram a moment before the scrape sees the count.
func (p *proxyProc) waitMetric(t *testing.T, line string) {
	t.Helper()
	deadline := time.Now().Add(testTimeout)
	for {
		m := p.scrape(t)
		if strings.Contains(m, line) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("metric %q not seen; last scrape:\n%s", line, m)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// waitLog waits until the process has logged a line containing s at least
// n times in all.
func (p *proxyProc) waitLog(t *testing.T, s string, n int) {
	t.Helper()
	deadline := time.Now().Add(testTimeout)
	for p.logs.Count(s) < n {
		if time.Now().After(deadline) {
			t.Fatalf("log line %q not seen %d times:\n%s", s, n, p.logs)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

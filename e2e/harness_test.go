package e2e

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

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
	cmd     *exec.Cmd
	socks   string // SOCKS5 address
	metrics string // metrics address
	logs    *logBuffer
	exited  chan error
	// http reaches the metrics listener (from the proxy host).
	http *http.Client
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
	args = append([]string{"-log-format", "json", "-log-level", "debug"}, args...)
	bin := filepath.Join(binDir, "fwproxy")
	cmd := exec.Command(bin, args...)
	if host != nil {
		cmd = host.Command(context.Background(), bin, args...)
	}
	stderr, err := cmd.StderrPipe()
	require.NoError(t, err)
	require.NoError(t, cmd.Start())
	p := &proxyProc{cmd: cmd, logs: &logBuffer{}, exited: make(chan error, 1), http: client}

	ready := make(chan map[string]any, 1)
	copied := make(chan struct{})
	go func() {
		defer close(copied)
		sc := bufio.NewScanner(stderr)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			line := sc.Text()
			p.logs.add(line)
			if rec, ok := parseLogLine(line); ok && rec["msg"] == "listening" {
				select {
				case ready <- rec:
				default:
				}
			}
		}
	}()
	go func() {
		<-copied
		p.exited <- cmd.Wait()
	}()
	t.Cleanup(func() { p.stop(t) })

	select {
	case rec := <-ready:
		p.socks, _ = rec["socks"].(string)
		p.metrics, _ = rec["metrics"].(string)
	case err := <-p.exited:
		p.exited <- err
		t.Fatalf("fwproxy exited before listening: %v\n%s", err, p.logs)
	case <-time.After(testTimeout):
		t.Fatalf("fwproxy did not start listening\n%s", p.logs)
	}
	return p
}

// stop sends SIGTERM and requires exit status 0 within the time limit.
func (p *proxyProc) stop(t *testing.T) {
	t.Helper()
	if p.cmd.ProcessState != nil {
		return
	}
	p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-p.exited:
		p.exited <- err
		if err != nil {
			t.Errorf("fwproxy exited with %v\n%s", err, p.logs)
		}
	case <-time.After(testTimeout):
		p.cmd.Process.Kill()
		t.Errorf("fwproxy did not stop on SIGTERM\n%s", p.logs)
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

// logBuffer keeps a process's log lines for failure messages.
type logBuffer struct {
	mu    sync.Mutex
	lines []string
}

func (b *logBuffer) add(line string) {
	b.mu.Lock()
	b.lines = append(b.lines, line)
	b.mu.Unlock()
}

func (b *logBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return strings.Join(b.lines, "\n")
}

// contains reports whether a log line contains every one of parts.
func (b *logBuffer) contains(parts ...string) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
next:
	for _, l := range b.lines {
		for _, p := range parts {
			if !strings.Contains(l, p) {
				continue next
			}
		}
		return true
	}
	return false
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
	for strings.Count(p.logs.String(), s) < n {
		if time.Now().After(deadline) {
			t.Fatalf("log line %q not seen %d times:\n%s", s, n, p.logs)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

package e2e

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// udpEcho answers every datagram with "echo:" and the payload; it listens
// on a loopback address and stops with the test.
func udpEcho(t *testing.T) *net.UDPAddr {
	t.Helper()
	return onLoopback.udpEcho(t)
}

// serveUDPEcho answers on c until the test ends, and closes it.
func serveUDPEcho(t *testing.T, c *net.UDPConn) *net.UDPAddr {
	t.Helper()
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 65535)
		for {
			n, from, err := c.ReadFromUDPAddrPort(buf)
			if err != nil {
				return
			}
			c.WriteToUDPAddrPort(append([]byte("echo:"), buf[:n]...), from)
		}
	}()
	t.Cleanup(func() {
		c.Close()
		<-done
	})
	return c.LocalAddr().(*net.UDPAddr)
}

// runTool runs a third-party client with a clean environment plus env.
func runTool(t *testing.T, env []string, name string, args ...string) string {
	t.Helper()
	return runToolIn(t, onLoopback, env, name, args...)
}

// runToolIn runs a third-party client on n's player side.
func runToolIn(t *testing.T, n *testNet, env []string, name string, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	cmd := n.playerCommand(ctx, name, args...)
	cmd.Env = append([]string{"PATH=" + os.Getenv("PATH"), "HOME=" + t.TempDir()}, env...)
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err := cmd.Run()
	require.NoError(t, err, "%s %v\nstdout:\n%s\nstderr (tail):\n%s", name, args, out.String(), tail(errOut.String(), 30))
	return out.String()
}

func tail(s string, n int) string {
	lines := strings.Split(s, "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

func echoLines(prefix string, count int, echo *net.UDPAddr) string {
	var b strings.Builder
	for i := range count {
		fmt.Fprintf(&b, "echo:%s %d %s\n", prefix, i, echo)
	}
	return b.String()
}

// TestPySocksUDP: a UDP round trip through fwproxy with PySocks.
func TestPySocksUDP(t *testing.T) {
	forEachNet(t, false, func(t *testing.T, n *testNet) {
		echo := n.udpEcho(t)
		p := startProxyIn(t, n, "-external-ip", n.externalIP())
		out := pysocksUDP(t, n, p, echo, 5)
		assert.Equal(t, echoLines("pysocks", 5, echo), out)
		p.waitMetric(t, `fwproxy_udp_datagrams_total{direction="remote_to_client",outcome="relayed"} 5`)
	})
}

// pysocksUDP sends count datagrams to echo through p with PySocks from n's
// player side and returns what came back.
func pysocksUDP(t *testing.T, n *testNet, p *proxyProc, echo *net.UDPAddr, count int) string {
	t.Helper()
	host, port, _ := net.SplitHostPort(p.socks)
	return runToolIn(t, n, nil, "/usr/bin/python3", "testdata/pysocks_udp.py", host, port, echo.IP.String(), fmt.Sprint(echo.Port),
		fmt.Sprint(count), n.toolIP().String())
}

// TestDanteSocksifyUDP: unmodified UDP programs under Dante's socksify, one
// that sends first and one that binds first.
func TestDanteSocksifyUDP(t *testing.T) {
	_, err := exec.LookPath("socksify")
	require.NoError(t, err, "socksify is needed (Debian dante-client; make test installs it)")
	forEachNet(t, false, testDanteSocksifyUDP)
}

func testDanteSocksifyUDP(t *testing.T, n *testNet) {
	echo := n.udpEcho(t)
	p := startProxyIn(t, n, "-external-ip", n.externalIP())
	host, port, _ := net.SplitHostPort(p.socks)
	conf := filepath.Join(t.TempDir(), "socks.conf")
	require.NoError(t, os.WriteFile(conf, []byte(fmt.Sprintf(`route {
	from: 0.0.0.0/0 to: 0.0.0.0/0 via: %s port = %s
	proxyprotocol: socks_v5
	protocol: tcp udp
	command: connect bind udpassociate bindreply udpreply
	method: none
}
`, host, port)), 0o600))
	// Dante sends loopback and LAN destinations direct unless told not to;
	// here everything must go through the proxy.
	env := []string{"SOCKS_CONF=" + conf, "SOCKS_AUTOADD_LANROUTES=no"}

	for _, mode := range []string{"send-first", "bind-first"} {
		t.Run(mode, func(t *testing.T) {
			before := strings.Count(p.logs.String(), `"msg":"udp association"`)
			out := runToolIn(t, n, env, "socksify", "/usr/bin/python3", "testdata/udp_client.py", mode, echo.IP.String(), fmt.Sprint(echo.Port), "3")
			assert.Equal(t, echoLines(mode, 3, echo), out)
			assert.Greater(t, strings.Count(p.logs.String(), `"msg":"udp association"`), before, "the datagrams went through fwproxy")
		})
	}
}

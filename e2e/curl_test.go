package e2e

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// curl runs curl with args and returns its output and error.
func curl(t *testing.T, args ...string) (string, error) {
	t.Helper()
	return curlIn(t, onLoopback, args...)
}

// curlIn runs curl on n's player side.
func curlIn(t *testing.T, n *testNet, args ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	cmd := n.playerCommand(ctx, "curl", append([]string{"--silent", "--show-error", "--max-time", "20", "--noproxy", ""}, args...)...)
	// Proxy settings of the machine must not leak into the test.
	cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "HOME=" + t.TempDir()}
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err := cmd.Run()
	if err != nil {
		return out.String(), fmt.Errorf("curl %v: %w: %s", args, err, errOut.String())
	}
	return out.String(), nil
}

func usersFile(t *testing.T, user, password string) string {
	t.Helper()
	cmd := exec.Command(filepath.Join(binDir, "fwproxy"), "-hash-password", user)
	cmd.Stdin = strings.NewReader(password + "\n")
	line, err := cmd.Output()
	require.NoError(t, err)
	path := filepath.Join(t.TempDir(), "users")
	require.NoError(t, os.WriteFile(path, line, 0o600))
	return path
}

func TestCurlThroughProxy(t *testing.T) {
	_, err := exec.LookPath("curl")
	require.NoError(t, err, "curl is needed (make test installs it)")
	forEachNet(t, false, testCurlThroughProxy)
}

// webServer serves page on n's server side until the test ends.
func webServer(t *testing.T, n *testNet, page string) *httptest.Server {
	t.Helper()
	return webServerAt(t, n.inServer, n.serverIP(), page)
}

// webServerAt serves page on ip, its listener opened through open (a
// host's Do, or a plain call), until the test ends. The tests that show
// what the proxy refuses put one on the inside host (n.fw.Inside.Do,
// n.playerIP()) to stand for the inside network.
func webServerAt(t *testing.T, open func(func() error) error, ip netip.Addr, page string) *httptest.Server {
	t.Helper()
	web := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Write([]byte(page))
	}))
	require.NoError(t, open(func() (err error) {
		web.Listener.Close()
		web.Listener, err = net.Listen("tcp", netip.AddrPortFrom(ip, 0).String())
		return err
	}))
	web.Start()
	t.Cleanup(web.Close)
	return web
}

func testCurlThroughProxy(t *testing.T, n *testNet) {
	page := strings.Repeat("media over socks\n", 1000)
	web := webServer(t, n, page)
	_, port, _ := net.SplitHostPort(web.Listener.Addr().String())
	// A name only the proxy can resolve: localhost on loopback, and on the
	// topology a name in the proxy host's own hosts file.
	name := "localhost"
	if n.fw != nil {
		name = "media.test"
		n.fw.Proxy().SetHosts(n.serverIP().String() + " " + name)
	}
	byIP := "http://" + hostPort(n.serverIP(), port) + "/"
	byName := "http://" + net.JoinHostPort(name, port) + "/"

	open := startProxyIn(t, n)
	authed := startProxyIn(t, n, "-users", usersFile(t, "alice", "s3cret"))

	tests := []struct {
		name    string
		proxy   *proxyProc
		flag    string // --socks5 (client resolves) or --socks5-hostname (proxy resolves)
		url     string
		user    string
		wantErr bool
	}{
		{"socks5", open, "--socks5", byIP, "", false},
		{"socks5-hostname with an IP literal", open, "--socks5-hostname", byIP, "", false},
		{"socks5-hostname with a name the proxy resolves", open, "--socks5-hostname", byName, "", false},
		{"socks5 with user and password", authed, "--socks5", byIP, "alice:s3cret", false},
		{"socks5-hostname with user and password", authed, "--socks5-hostname", byName, "alice:s3cret", false},
		{"wrong password", authed, "--socks5", byIP, "alice:nope", true},
		{"no credentials where they are required", authed, "--socks5", byIP, "", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			args := []string{tt.flag, tt.proxy.socks}
			if tt.user != "" {
				args = append(args, "--proxy-user", tt.user)
			}
			out, err := curlIn(t, n, append(args, tt.url)...)
			if tt.wantErr {
				require.Error(t, err)
				return
			}
			require.NoError(t, err)
			assert.Equal(t, page, out)
		})
	}

	m := authed.scrape(t)
	assert.Contains(t, m, `fwproxy_socks_authentications_total{method="username_password",result="failure"} 1`)
	assert.Contains(t, m, `fwproxy_socks_authentications_total{method="username_password",result="success"} 2`)
	assert.Contains(t, m, `fwproxy_socks_requests_total{command="connect",reply="succeeded"} 2`)
	assert.True(t, open.logs.Contains(`"msg":"session"`, `"command":"connect"`, `"reply":"succeeded"`), "one log line per session")
}

// TestUsersReloadOnSIGHUP: the users file is read again on SIGHUP (with the
// rest of the configuration, cmd/fwproxy/daemon_test.go); a file
// that does not load leaves the current users in place.
func TestUsersReloadOnSIGHUP(t *testing.T) {
	web := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.Write([]byte("ok")) }))
	t.Cleanup(web.Close)
	url := web.URL + "/"
	// Cheap hashes: each fetch is a login, and at bcrypt's default cost
	// under the race detector on a loaded machine a login can outlast the
	// handshake timeout (seen in CI); this test is about the reload, and
	// the -hash-password output is tested by TestCurlThroughProxy.
	path := cheapUsersFile(t, map[string]string{"alice": "s3cret"})
	p := startProxy(t, "-users", path)
	fetch := func(user string) error {
		_, err := curl(t, "--socks5", p.socks, "--proxy-user", user, url)
		return err
	}
	require.NoError(t, fetch("alice:s3cret"))
	require.Error(t, fetch("bob:n3w"))

	reload := func(wantLog string) {
		before := strings.Count(p.logs.String(), wantLog)
		require.NoError(t, p.Signal(syscall.SIGHUP))
		p.waitLog(t, wantLog, before+1)
	}
	require.NoError(t, os.Rename(cheapUsersFile(t, map[string]string{"bob": "n3w"}), path))
	reload("config reloaded")
	require.NoError(t, fetch("bob:n3w"))
	require.Error(t, fetch("alice:s3cret"))

	require.NoError(t, os.WriteFile(path, []byte("bob:clear-text\n"), 0o600))
	reload("config reload failed")
	require.NoError(t, fetch("bob:n3w"), "a bad file keeps the users that were loaded")
}

package netns

import (
	"context"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestFirewallTopology: the hosts exist, reach their neighbours on both
// families, nobody forwards, and a socket opened with Do stays in its
// host while the calling goroutine's namespace is untouched.
func TestFirewallTopology(t *testing.T) {
	f := NewFirewall(t, FirewallSpec{Proxies: 2, Balancer: true})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	for _, h := range append([]*Host{f.Inside, f.Outside, f.Balancer}, f.Proxies...) {
		on, err := h.Forwarding()
		require.NoError(t, err)
		assert.False(t, on, "%s forwards", h.Name)
	}

	tests := []struct {
		name     string
		from, to *Host
		seg      *Segment
		v6       bool
	}{
		{"inside to proxy0 IPv4", f.Inside, f.Proxies[0], f.InsideNet, false},
		{"inside to proxy1 IPv6", f.Inside, f.Proxies[1], f.InsideNet, true},
		{"balancer to proxy1 IPv4", f.Balancer, f.Proxies[1], f.InsideNet, false},
		{"proxy0 to outside IPv6", f.Proxies[0], f.Outside, f.OutsideNet, true},
		{"proxy1 to outside IPv4", f.Proxies[1], f.Outside, f.OutsideNet, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ln, err := tt.to.Listen("tcp", netip.AddrPortFrom(tt.to.IP(tt.seg, tt.v6), 0).String())
			require.NoError(t, err)
			defer ln.Close()
			accepted := make(chan net.Addr, 1)
			go func() {
				c, err := ln.Accept()
				if err != nil {
					accepted <- nil
					return
				}
				accepted <- c.RemoteAddr()
				c.Close()
			}()
			c, err := tt.from.DialContext(ctx, "tcp", ln.Addr().String())
			require.NoError(t, err)
			defer c.Close()
			from := <-accepted
			require.NotNil(t, from)
			got := from.(*net.TCPAddr).AddrPort().Addr()
			assert.Equal(t, tt.from.IP(tt.seg, tt.v6), got)
		})
	}

	// The test process itself is not in any of the hosts.
	_, err := net.Listen("tcp", netip.AddrPortFrom(f.Inside.IP(f.InsideNet, false), 0).String())
	require.Error(t, err, "the inside address must not exist in the test's own namespace")

	out, err := f.Outside.Command(ctx, "ip", "-o", "addr", "show").CombinedOutput()
	require.NoError(t, err, "%s", out)
	assert.Contains(t, string(out), "203.0.113.100/24")
	assert.NotContains(t, string(out), "198.51.100.")
}

// TestSweepRemovesDeadRuns: a namespace named for a process that is gone
// is deleted, one of a live process is kept.
func TestSweepRemovesDeadRuns(t *testing.T) {
	if usable() != nil {
		unavailable(t, usable())
	}
	dead := Prefix + "999999999-deadbeef-stale"
	live := Prefix + strconv.Itoa(os.Getpid()) + "-cafef00d-live"
	for _, name := range []string{dead, live} {
		require.NoError(t, addNamespace(name))
		t.Cleanup(func() { deleteNamespace(name) })
	}
	require.NoError(t, Sweep())
	_, err := os.Stat(filepath.Join(runDir, dead))
	assert.ErrorIs(t, err, os.ErrNotExist, "the dead run's namespace is swept")
	_, err = os.Stat(filepath.Join(runDir, live))
	assert.NoError(t, err, "a live run's namespace is kept")
}

// TestReaperCleansUpAfterDeath: a test process that dies without its
// cleanups (as a test timeout makes it) leaves no namespace behind.
func TestReaperCleansUpAfterDeath(t *testing.T) {
	if os.Getenv("NETNS_TEST_DIE") == "1" {
		n := New(t)
		n.Host("doomed")
		os.Stdout.WriteString("prefix=" + n.prefix + "\n")
		os.Exit(3)
	}
	if usable() != nil {
		unavailable(t, usable())
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, os.Args[0], "-test.run=^TestReaperCleansUpAfterDeath$")
	cmd.Env = append(os.Environ(), "NETNS_TEST_DIE=1")
	out, err := cmd.Output()
	var exit *exec.ExitError
	require.ErrorAs(t, err, &exit, "%s", out)
	require.Equal(t, 3, exit.ExitCode(), "%s", out)
	_, prefix, ok := strings.Cut(strings.TrimSpace(string(out)), "prefix=")
	require.True(t, ok, "%s", out)
	require.NotEmpty(t, prefix)
	left := func() []string {
		var names []string
		entries, _ := os.ReadDir(runDir)
		for _, e := range entries {
			if strings.HasPrefix(e.Name(), prefix) {
				names = append(names, e.Name())
			}
		}
		return names
	}
	require.Eventually(t, func() bool { return len(left()) == 0 }, 20*time.Second, 20*time.Millisecond,
		"the dead run's namespaces were not reaped: %v", left())
}

package e2e

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"fwproxy/e2e/mmsplayer"
	"fwproxy/e2e/mmsserver"
	"fwproxy/internal/fwproc"
	"fwproxy/internal/netns"
)

// The balancer test: HAProxy (Debian's haproxy) on a host of its own on
// the inside, mode tcp, balance source, send-proxy-v2, in front of two
// fwproxy instances on two proxy hosts. Each instance has its own inside
// address (advertise_ip: where its associations' UDP goes, straight, not
// through the balancer) and its own outside address (external_ip: where
// the media server's UDP comes back). The players each have an inside
// address of their own, so that balance source spreads them.

const (
	balancerPort   = 1080
	balancedPlayer = 20
	// relayRange is each instance's relay_ports.
	relayLo, relayHi = 40000, 40999
)

// balancedSetup is long enough that an instance can be killed while its
// players are in the middle of their playlist.
var balancedSetup = playlistSetup{entries: 30, packets: 8, interval: 5 * time.Millisecond, tail: 3, ping: 100 * time.Millisecond}

// balanced is the running topology of the balancer test.
type balanced struct {
	fw       *netns.Firewall
	srv      *mmsserver.Server
	proxies  []*proxyProc
	balancer string // host:port
	players  []netip.Addr
}

// haproxyConfig is the tested recipe (README, Scaling out).
func haproxyConfig(bind netip.AddrPort, servers []netip.AddrPort) string {
	var b strings.Builder
	fmt.Fprintf(&b, `global
	maxconn 4096

defaults
	mode tcp
	timeout connect 2s
	timeout client 10m
	timeout server 10m
	# A server that refuses the connection is tried again elsewhere, so
	# that a player restarting after its instance died is not sent back
	# to it before the health check has noticed.
	retries 2
	option redispatch

frontend socks
	bind %s
	default_backend fwproxy

backend fwproxy
	balance source
	hash-type consistent
`, bind)
	for i, s := range servers {
		// The checks carry the PROXY header too (a LOCAL one), as fwproxy
		// requires of every connection from the balancer.
		fmt.Fprintf(&b, "\tserver fwproxy%d %s send-proxy-v2 check inter 250ms fall 1 rise 2\n", i, s)
	}
	return b.String()
}

// startBalanced builds the topology and starts the server, two fwproxy
// instances and HAProxy.
func startBalanced(t *testing.T) *balanced {
	t.Helper()
	haproxy := "/usr/sbin/haproxy"
	_, err := os.Stat(haproxy)
	require.NoError(t, err, "haproxy is needed (Debian haproxy; make test installs it)")

	fw := netns.NewFirewall(t, netns.FirewallSpec{Proxies: 2, Balancer: true})
	b := &balanced{fw: fw}
	for i := range balancedPlayer {
		b.players = append(b.players, netns.Nth(netns.InsideV4, 101+i))
	}
	fw.Inside.AddAddrs(fw.InsideNet, b.players...)

	n := &testNet{name: "balanced", fw: fw}
	var srvAddr netip.AddrPort
	b.srv, _ = startMMSServer(t, n, balancedSetup)
	srvAddr = b.srv.Addr()

	balancerIP := fw.Balancer.IP(fw.InsideNet, false)
	var servers []netip.AddrPort
	for _, host := range fw.Proxies {
		inside := host.IP(fw.InsideNet, false)
		listen := netip.AddrPortFrom(inside, balancerPort)
		servers = append(servers, listen)
		p := startProxyOn(t, host, host.HTTPClient(),
			"-config", clientsConfig(t, netns.InsideV4.String()),
			"-listen", listen.String(), "-metrics-listen", "127.0.0.1:0",
			"-external-ip", host.IP(fw.OutsideNet, false).String(),
			"-advertise-ip", inside.String(),
			"-relay-ports", fmt.Sprintf("%d-%d", relayLo, relayHi),
			"-proxy-protocol-from", balancerIP.String(),
			"-mms-ports", strconv.Itoa(int(srvAddr.Port())))
		b.proxies = append(b.proxies, p)
	}

	bind := netip.AddrPortFrom(balancerIP, balancerPort)
	b.balancer = bind.String()
	cfg := filepath.Join(t.TempDir(), "haproxy.cfg")
	require.NoError(t, os.WriteFile(cfg, []byte(haproxyConfig(bind, servers)), 0o600))
	startHAProxy(t, fw.Balancer, haproxy, cfg)
	// Ready when both servers are up: a player sent to a server not yet
	// checked would be fine, but the spread test wants both in the hash.
	for _, p := range b.proxies {
		p.waitLog(t, `"client":"`+balancerIP.String()+`:`, 1)
	}
	waitListening(t, fw.Inside, b.balancer)
	return b
}

// startHAProxy runs haproxy in the foreground on host; cleanup stops it.
func startHAProxy(t *testing.T, host *netns.Host, bin, cfg string) {
	t.Helper()
	check := host.Command(context.Background(), bin, "-c", "-f", cfg)
	out, err := check.CombinedOutput()
	require.NoError(t, err, "haproxy -c: %s", out)

	cmd := host.Command(context.Background(), bin, "-db", "-f", cfg)
	logs := fwproc.NewLogs(0)
	cmd.Stdout, cmd.Stderr = logs, logs
	require.NoError(t, cmd.Start())
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() {
		cmd.Process.Kill()
		select {
		case <-exited:
		case <-time.After(testTimeout):
			t.Errorf("haproxy did not exit\n%s", logs)
		}
	})
}

// waitListening waits until addr accepts a connection from host.
func waitListening(t *testing.T, host *netns.Host, addr string) {
	t.Helper()
	deadline := time.Now().Add(testTimeout)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		c, err := host.DialContext(ctx, "tcp", addr)
		cancel()
		if err == nil {
			c.Close()
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s does not accept connections: %v", addr, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// playerConfigs are the players through the balancer: the first
// two thirds firewall clients, the rest announced mode.
func (b *balanced) playerConfigs(t *testing.T, seed uint64, players []int) []mmsplayer.Config {
	t.Helper()
	entry, err := loadAsset(t).Truncate(balancedSetup.packets)
	require.NoError(t, err)
	n := &testNet{fw: b.fw}
	var cfgs []mmsplayer.Config
	for _, i := range players {
		mode := mmsplayer.ModeFirewall
		if i >= balancedPlayer*2/3 {
			mode = mmsplayer.ModeAnnounced
		}
		cfg := playerConfig(n, b.srv, &proxyProc{socks: b.balancer}, mode, entry, manyPlan(seed+uint64(i)))
		cfg.LocalIP = b.players[i]
		cfgs = append(cfgs, cfg)
	}
	return cfgs
}

// instancesOf says which instances logged something of the player at ip
// (its control connection's funnel, its associations).
func (b *balanced) instancesOf(ip netip.Addr) []int {
	var in []int
	for i, p := range b.proxies {
		if p.logs.Contains(`"client":"` + ip.String() + `:`) {
			in = append(in, i)
		}
	}
	return in
}

// relaysOf returns the relay addresses instance i gave the player at ip.
func (b *balanced) relaysOf(i int, ip netip.Addr) []netip.AddrPort {
	var relays []netip.AddrPort
	for _, l := range strings.Split(b.proxies[i].logs.String(), "\n") {
		if !strings.Contains(l, `"msg":"udp association"`) || !strings.Contains(l, `"client":"`+ip.String()+`:`) {
			continue
		}
		_, rest, ok := strings.Cut(l, `"relay":"`)
		if !ok {
			continue
		}
		s, _, _ := strings.Cut(rest, `"`)
		if ap, err := netip.ParseAddrPort(s); err == nil {
			relays = append(relays, ap)
		}
	}
	return relays
}

func allPlayers() []int {
	p := make([]int, balancedPlayer)
	for i := range p {
		p[i] = i
	}
	return p
}

// TestBalancedPlaylist: 20 players through HAProxy onto two instances.
// Every packet arrives; each player's control connection and associations
// land on one instance, whose own inside address and relay ports the
// associations name; both instances serve players.
func TestBalancedPlaylist(t *testing.T) {
	b := startBalanced(t)
	reports := playAll(t, b.playerConfigs(t, testSeed(t), allPlayers()))
	perInstance := make([]int, len(b.proxies))
	for i, r := range reports {
		name := fmt.Sprintf("player %d (%v, %v)", i, r.Mode, b.players[i])
		requireClean(t, name, r, balancedSetup.entries)
		in := b.instancesOf(b.players[i])
		require.Len(t, in, 1, "%s must land on exactly one instance, landed on %v", name, in)
		perInstance[in[0]]++
		if r.Mode == mmsplayer.ModeFirewall {
			relays := b.relaysOf(in[0], b.players[i])
			require.NotEmpty(t, relays, name)
			for _, relay := range relays {
				assert.Equal(t, b.fw.Proxies[in[0]].IP(b.fw.InsideNet, false), relay.Addr(), "%s: the association names its instance's own address", name)
				assert.True(t, relay.Port() >= relayLo && relay.Port() <= relayHi, "%s: relay port %d outside relay_ports", name, relay.Port())
			}
		}
	}
	t.Logf("players per instance: %v", perInstance)
	for i, k := range perInstance {
		assert.Positive(t, k, "instance %d served no player: balance source did not spread them", i)
	}
	for i, p := range b.proxies {
		m := settledMetrics(t, p)
		assert.Zero(t, m.sum("fwproxy_leases_datagrams_total", `outcome="dropped"`), "instance %d dropped datagrams", i)
		assert.Zero(t, m.sum("fwproxy_socks_connections_rejected_total", `reason="proxy_header_missing"`), "instance %d", i)
		assert.Zero(t, m.sum("fwproxy_socks_connections_rejected_total", `reason="proxy_header_untrusted"`), "instance %d", i)
		assert.Positive(t, m.sum("fwproxy_udp_datagrams_total", `direction="client_to_remote"`, `outcome="relayed"`)+
			m.sum("fwproxy_udp_datagrams_total", `direction="remote_to_client"`, `outcome="relayed"`), "instance %d relayed UDP", i)
	}
}

// TestBalancedInstanceKilled: an instance dies mid-playlist. Its players
// fail with an error saying their control connection ended, and play the
// playlist again through the balancer, on the other instance; the other
// instance's players lose nothing.
func TestBalancedInstanceKilled(t *testing.T) {
	b := startBalanced(t)
	seed := testSeed(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cfgs := b.playerConfigs(t, seed, allPlayers())
	reports := make([]*mmsplayer.Report, len(cfgs))
	done := make(chan int, len(cfgs))
	for i, c := range cfgs {
		go func() {
			reports[i] = mmsplayer.Play(ctx, c)
			done <- i
		}()
	}

	// Every player has its funnel on one instance, and the victim's
	// players are a few entries in: then kill instance 0.
	const victim = 0
	var onVictim []int
	placed := func() bool {
		onVictim = onVictim[:0]
		for i, ip := range b.players {
			in := b.instancesOf(ip)
			if len(in) != 1 {
				return false
			}
			if in[0] == victim {
				onVictim = append(onVictim, i)
			}
		}
		return true
	}
	require.True(t, waitUntil(testTimeout, placed), "not every player reached an instance")
	require.NotEmpty(t, onVictim, "no player on the instance to kill")
	b.proxies[victim].waitLog(t, `"msg":"mms playlist transition"`, 3*len(onVictim))
	b.proxies[victim].kill(t)
	for range cfgs {
		<-done
	}

	victims := map[int]bool{}
	for _, i := range onVictim {
		victims[i] = true
	}
	for i, r := range reports {
		name := fmt.Sprintf("player %d (%v, %v)", i, r.Mode, b.players[i])
		if victims[i] {
			require.Error(t, r.Err, "%s was on the killed instance and must fail", name)
			t.Logf("%s failed: %v", name, r.Err)
			assert.Less(t, len(r.Entries), balancedSetup.entries, "%s failed mid-playlist", name)
			continue
		}
		requireClean(t, name, r, balancedSetup.entries)
		assert.NotContains(t, b.instancesOf(b.players[i]), victim, "%s", name)
	}

	// The killed instance's players start again, through the balancer.
	again := playAll(t, b.playerConfigs(t, seed+1000, onVictim))
	for k, r := range again {
		i := onVictim[k]
		requireClean(t, fmt.Sprintf("player %d restarted (%v)", i, r.Mode), r, balancedSetup.entries)
	}
	m := settledMetrics(t, b.proxies[1-victim])
	assert.Zero(t, m.sum("fwproxy_leases_datagrams_total", `outcome="dropped"`), "the surviving instance dropped nothing")
	assert.Equal(t, float64(balancedPlayer), m.sum("fwproxy_mms_transitions_total", `transition="playlist_end"`),
		"the surviving instance played every playlist to its end: its own players' and the restarted ones'")
}

// kill ends the process with SIGKILL, as a crash would, and waits for it.
func (p *proxyProc) kill(t *testing.T) {
	t.Helper()
	p.killed = true
	require.NoError(t, p.Kill())
	select {
	case <-p.Done():
	case <-time.After(testTimeout):
		t.Fatal("fwproxy did not die")
	}
}

// waitUntil polls cond until it holds or d passes: for what no event
// announces (a log line of another process).
func waitUntil(d time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(10 * time.Millisecond)
	}
	return true
}

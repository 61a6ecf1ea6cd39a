package rtspplayer_test

import (
	"context"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"fwproxy/e2e/rtspplayer"
	"fwproxy/e2e/rtspserver"
	"fwproxy/internal/leakcheck"
)

const testTimeout = 30 * time.Second

// freePair is an even port whose pair is free on 127.0.0.1.
func freePair(t *testing.T) uint16 {
	t.Helper()
	for port := uint16(42000); port < 44000; port += 2 {
		a, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: int(port)})
		if err != nil {
			continue
		}
		b, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: int(port) + 1})
		a.Close()
		if err != nil {
			continue
		}
		b.Close()
		return port
	}
	t.Fatal("no free UDP port pair in 42000-44000")
	return 0
}

// TestPlayDirect: the player against gortsplib's server with no proxy:
// every item's whole sequence, its own ports in each reply, the server's
// record of each SETUP; and the failures a report names. Afterwards no
// goroutine of the server or the player is left.
func TestPlayDirect(t *testing.T) {
	cfg := rtspserver.DefaultConfig()
	cfg.Packets = 20
	srv, err := rtspserver.Listen(cfg)
	require.NoError(t, err)
	defer func() {
		srv.Close()
		leakcheck.Require(t, testTimeout, leakcheck.Filter{Frames: []string{
			"fwproxy/e2e/rtspserver.", "fwproxy/e2e/rtspplayer.", "github.com/bluenviron/gortsplib/v4.",
		}})
	}()
	local := netip.MustParseAddr("127.0.0.1")
	base := func(port uint16) rtspplayer.Config {
		return rtspplayer.Config{Server: srv.Addr(), Tag: "t", Mode: rtspplayer.ModeAnnounced, LocalIP: local,
			Port: port, Items: 3, Packets: cfg.Packets, StepTimeout: 5 * time.Second}
	}

	held := freePair(t)
	hold, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: int(held)})
	require.NoError(t, err)
	defer hold.Close()

	tests := []struct {
		name  string
		cfg   func() rtspplayer.Config
		fail  rtspplayer.FailKind // "" plays clean
		items int                 // items in the report
	}{
		{"three items on one pair of ports", func() rtspplayer.Config { return base(freePair(t)) }, "", 3},
		{"same control connection for odd items", func() rtspplayer.Config {
			c := base(freePair(t))
			c.KeepConnection, c.Tag = true, "keep"
			return c
		}, "", 3},
		{"RTP port taken", func() rtspplayer.Config { return base(held) }, rtspplayer.FailBind, 1},
		{"no server", func() rtspplayer.Config {
			c := base(freePair(t))
			c.Server = netip.AddrPortFrom(local, 9) // discard: nothing listens
			return c
		}, rtspplayer.FailConnect, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
			defer cancel()
			c := tt.cfg()
			before := len(srv.Setups())
			r := rtspplayer.Play(ctx, c)
			require.Len(t, r.Items, tt.items)
			if tt.fail != "" {
				require.Error(t, r.Err)
				assert.Equal(t, 1, r.Count(tt.fail), "failures %v", r.Failures)
				return
			}
			require.NoError(t, r.Err, "failures %v", r.Failures)
			own := [2]int{int(c.Port), int(c.Port) + 1}
			for i, it := range r.Items {
				assert.Equal(t, c.Packets, it.Received, "item %d lost %v", i, it.Lost)
				assert.Zero(t, it.Duplicates+it.Corrupt+it.Stray)
				assert.Equal(t, own, it.ReplyPorts)
				assert.Equal(t, int(srv.RTPAddr().Port()), it.ServerPorts[0])
				assert.Equal(t, c.KeepConnection && i%2 == 1, it.SameConnection)
			}
			setups := srv.Setups()[before:]
			require.Len(t, setups, 3)
			for i, s := range setups {
				assert.True(t, strings.HasPrefix(s.Path, rtspserver.SeqPath+"/"+c.Tag+"-"), s.Path)
				assert.Equal(t, own, s.ClientPorts, "item %d", i)
				assert.Equal(t, local, s.Remote.Addr())
			}
		})
	}
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	require.NoError(t, srv.WaitSequences(ctx))
	for _, p := range srv.Plays() {
		assert.Equal(t, cfg.Packets, p.Sent, p.Path)
		assert.Zero(t, p.Failed, p.Path)
	}
}

// TestInvalidConfig: what cannot work is refused before any socket opens.
func TestInvalidConfig(t *testing.T) {
	ok := rtspplayer.Config{Server: netip.MustParseAddrPort("127.0.0.1:554"), LocalIP: netip.MustParseAddr("127.0.0.1"),
		Mode: rtspplayer.ModeAnnounced, Port: 40000, Items: 1, Packets: 1, StepTimeout: time.Second}
	tests := []struct {
		name   string
		change func(*rtspplayer.Config)
		want   string
	}{
		{"odd port", func(c *rtspplayer.Config) { c.Port = 40001 }, "even"},
		{"firewall client without a proxy", func(c *rtspplayer.Config) { c.Mode = rtspplayer.ModeFirewall }, "needs Proxy"},
		{"no items", func(c *rtspplayer.Config) { c.Items = 0 }, "must be > 0"},
		{"no server", func(c *rtspplayer.Config) { c.Server = netip.AddrPort{} }, "must be set"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := ok
			tt.change(&c)
			r := rtspplayer.Play(context.Background(), c)
			require.Error(t, r.Err)
			assert.Contains(t, r.Err.Error(), tt.want)
			assert.Empty(t, r.Items)
		})
	}
}

package proxy

import (
	"math/rand/v2"
	"net"
	"net/netip"
	"testing"

	socks5 "github.com/armon/go-socks5"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestRelayPorts: associations' relay sockets take ports of the range
// only, skip a port someone else holds, and when the range is used up the
// request fails (general failure) until a port is given back.
func TestRelayPorts(t *testing.T) {
	// Below the kernel's ephemeral range, so that no other test's socket
	// is likely to sit there.
	base := uint16(20000 + rand.IntN(10000))
	cfg := testConfig()
	cfg.RelayPorts = PortRange{Min: base, Max: base + 2}
	ts := startServer(t, cfg, Deps{Leases: newLeases(t, nil)})
	taken, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), base+1)))
	require.NoError(t, err, "port %d must be free for this test", base+1)
	defer taken.Close()

	var got []uint16
	var clients []*udpClient
	for range 2 {
		u := associate(t, ts, newUDPPeer(t, "127.0.0.1:0"), false)
		clients = append(clients, u)
		got = append(got, u.relay.Port())
	}
	assert.ElementsMatch(t, []uint16{base, base + 2}, got, "the range's free ports, never the held one")

	c := dialClient(t, ts.addr)
	c.greet(methodNoAuth)
	rep, _ := c.request(CommandAssociate, &socks5.AddrSpec{IP: net.IPv4zero.To4()})
	assert.Equal(t, ReplyGeneralFailure, rep, "the range is used up")

	clients[0].closeGracefully()
	again := associate(t, ts, newUDPPeer(t, "127.0.0.1:0"), false)
	assert.Equal(t, got[0], again.relay.Port(), "the port given back is used again")
}

func TestPortRangeValidate(t *testing.T) {
	tests := []struct {
		name  string
		r     PortRange
		valid bool
	}{
		{"ephemeral", PortRange{}, true},
		{"one port", PortRange{Min: 40000, Max: 40000}, true},
		{"range", PortRange{Min: 40000, Max: 40999}, true},
		{"reversed", PortRange{Min: 40999, Max: 40000}, false},
		{"port zero", PortRange{Min: 0, Max: 10}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.valid {
				assert.NoError(t, tt.r.Validate())
			} else {
				assert.Error(t, tt.r.Validate())
			}
		})
	}
}

// TestListenRelayEphemeral: without a range the kernel picks.
func TestListenRelayEphemeral(t *testing.T) {
	c, err := listenRelay(netip.MustParseAddr("127.0.0.1"), PortRange{})
	require.NoError(t, err)
	defer c.Close()
	assert.NotZero(t, addrPortOf(c.LocalAddr()).Port())
}

package leases

import (
	"net"
	"net/netip"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// holdPair binds an even port and the next one on loopback, as another
// program would, and returns the even one.
func holdPair(t *testing.T) uint16 {
	t.Helper()
	for p := uint16(20000); p < 60000; p += 2 {
		a, err := net.ListenUDP("udp4", net.UDPAddrFromAddrPort(netip.AddrPortFrom(loopback, p)))
		if err != nil {
			continue
		}
		b, err := net.ListenUDP("udp4", net.UDPAddrFromAddrPort(netip.AddrPortFrom(loopback, p+1)))
		if err != nil {
			a.Close()
			continue
		}
		t.Cleanup(func() { a.Close(); b.Close() })
		return p
	}
	t.Fatal("no free port pair on loopback")
	return 0
}

// TestFallbackKeepsPairs: a firewall client associates its RTP and RTCP
// ports one at a time; when both are taken on the external address the two
// leases still land on an even port and the next one, whichever it binds
// first, so an RTSP server can be told them as one client_port range.
func TestFallbackKeepsPairs(t *testing.T) {
	tests := []struct {
		name      string
		rtcpFirst bool
	}{
		{"RTP port associated first", false},
		{"RTCP port associated first", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// Several rounds: a random fallback has the right parity or
			// sits next to its neighbour by chance in some of them.
			env := newEnv(t, testConfig())
			for range 8 {
				fallbackPair(t, env, tt.rtcpFirst)
			}
		})
	}
}

func fallbackPair(t *testing.T, env *testEnv, rtcpFirst bool) {
	t.Helper()
	a := holdPair(t)
	order := []uint16{a, a + 1}
	if rtcpFirst {
		order = []uint16{a + 1, a}
	}
	got := map[uint16]uint16{}
	for _, p := range order {
		h, err := env.m.Acquire(ctxT(t), key(p), Request{Kind: KindAssociation, WantPort: p, Deliver: newSink().deliver})
		require.NoError(t, err)
		defer h.Release()
		assert.Equal(t, p%2, h.Port()%2, "a fallback keeps the parity of the client's port %d", p)
		got[p] = h.Port()
	}
	assert.NotEqual(t, a, got[a], "the client's own ports are taken")
	assert.Equal(t, got[a]+1, got[a+1], "RTCP next to RTP: %v", got)
}

// TestFallbackPairBusy: when the port next to the neighbour's is taken, the
// lease falls back to a random port of the right parity, not a failure.
func TestFallbackPairBusy(t *testing.T) {
	env := newEnv(t, testConfig())
	a := holdPair(t)
	rtp, err := env.m.Acquire(ctxT(t), key(a), Request{Kind: KindAssociation, WantPort: a, Deliver: newSink().deliver})
	require.NoError(t, err)
	defer rtp.Release()
	block, err := net.ListenUDP("udp4", net.UDPAddrFromAddrPort(netip.AddrPortFrom(loopback, rtp.Port()+1)))
	if err != nil {
		t.Skipf("port %d next to the RTP lease is in use already: %v", rtp.Port()+1, err)
	}
	defer block.Close()
	rtcp, err := env.m.Acquire(ctxT(t), key(a+1), Request{Kind: KindAssociation, WantPort: a + 1, Deliver: newSink().deliver})
	require.NoError(t, err)
	defer rtcp.Release()
	assert.NotEqual(t, rtp.Port()+1, rtcp.Port())
	assert.Equal(t, uint16(1), rtcp.Port()%2, "an RTCP fallback stays odd")
}

// TestFallbackLeavesRoomForThePair: a random fallback for the first port
// of a pair avoids ports whose partner another lease holds, so the second
// port still lands beside it. In a range of ten where three of the five
// even ports have their odd partner leased, a fallback that ignored the
// partners would split the pair in three rounds of five.
func TestFallbackLeavesRoomForThePair(t *testing.T) {
	tests := []struct {
		name      string
		rtcpFirst bool
	}{
		{"RTP port associated first", false},
		{"RTCP port associated first", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := testConfig()
			cfg.Linger = 0 // a released lease frees its port at once
			lo := freeRange(t, 11)
			lo += lo % 2 // even: the pairs of the range are lo+2k, lo+2k+1
			cfg.PortMin, cfg.PortMax = lo, lo+9
			env := newEnv(t, cfg)
			// Other clients' leases: the odd partners of lo, lo+4 and
			// lo+8, or, when RTCP comes first, the even partners of lo+1,
			// lo+5 and lo+9.
			taken := []uint16{lo + 1, lo + 5, lo + 9}
			if tt.rtcpFirst {
				taken = []uint16{lo, lo + 4, lo + 8}
			}
			for i, p := range taken {
				other := Key{Client: netip.MustParseAddr("127.0.0.9"), Port: 1000 + uint16(i)}
				h, err := env.m.Acquire(ctxT(t), other, Request{Kind: KindAssociation, WantPort: p, ExactPort: true, Deliver: newSink().deliver})
				require.NoError(t, err)
				defer h.Release()
			}
			for round := range 20 {
				// The client's own ports are outside the range, so both
				// leases fall back.
				rtp := uint16(2000 + 2*round)
				order := []uint16{rtp, rtp + 1}
				if tt.rtcpFirst {
					order = []uint16{rtp + 1, rtp}
				}
				got := map[uint16]uint16{}
				var held []*Holder
				for _, p := range order {
					h, err := env.m.Acquire(ctxT(t), key(p), Request{Kind: KindAssociation, WantPort: p, Deliver: newSink().deliver})
					require.NoError(t, err)
					held = append(held, h)
					got[p] = h.Port()
				}
				assert.Equal(t, got[rtp]+1, got[rtp+1], "round %d: RTCP next to RTP: %v", round, got)
				for _, h := range held {
					h.Release()
				}
			}
		})
	}
}

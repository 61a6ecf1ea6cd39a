package selfaddr

import (
	"net"
	"net/netip"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestContains(t *testing.T) {
	s := New()
	s.interfaceAddrs = testInterfaces
	s.Add(netip.MustParseAddrPort("127.0.0.1:1080"))
	s.Add(netip.MustParseAddrPort("[::ffff:203.0.113.1]:5000"))
	s.Add(netip.MustParseAddrPort("0.0.0.0:9480"))
	rm := s.Add(netip.MustParseAddrPort("198.51.100.1:4000"))
	rm()
	rm() // twice is harmless

	tests := []struct {
		dst  string
		want bool
	}{
		{"127.0.0.1:1080", true},
		{"[::ffff:127.0.0.1]:1080", true},
		{"127.0.0.2:1080", false}, // a specific bind is not reached through another loopback address
		{"127.0.0.1:1081", false},
		{"0.0.0.0:1080", true}, // Linux connects the unspecified address to the local host
		{"[::]:1080", true},
		{"[::ffff:0.0.0.0]:1080", true},
		{"0.0.0.0:1", false},
		{"203.0.113.1:5000", true},
		{"127.0.0.5:9480", true}, // wildcard-bound: any local address
		{"[::1]:9480", true},
		{"192.0.2.7:9480", true},
		{"[2001:db8::7]:9480", true},
		{"192.0.2.8:9480", false}, // not an address of this host
		{"198.51.100.1:4000", false},
	}
	for _, tt := range tests {
		t.Run(tt.dst, func(t *testing.T) {
			assert.Equal(t, tt.want, s.Contains(netip.MustParseAddrPort(tt.dst)))
		})
	}
	assert.Equal(t, 3, s.Len())
}

func TestNilSetContainsNothing(t *testing.T) {
	var s *Set
	s.Add(netip.MustParseAddrPort("127.0.0.1:1"))()
	assert.False(t, s.Contains(netip.MustParseAddrPort("127.0.0.1:1")))
	assert.Zero(t, s.Len())
}

func TestMultisetCounts(t *testing.T) {
	s := New()
	ap := netip.MustParseAddrPort("127.0.0.1:7000")
	rm1, rm2 := s.Add(ap), s.Add(ap)
	rm1()
	assert.True(t, s.Contains(ap), "a second socket on the same address keeps it ours")
	rm2()
	assert.False(t, s.Contains(ap))
}

func TestAddAddrRealSocket(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer ln.Close()
	s := New()
	rm := s.AddAddr(ln.Addr())
	assert.True(t, s.Contains(AddrPortOf(ln.Addr())))
	rm()
	assert.False(t, s.Contains(AddrPortOf(ln.Addr())))
}

func TestContainsDoesNotAllocate(t *testing.T) {
	s := New()
	s.Add(netip.MustParseAddrPort("127.0.0.1:1080"))
	hit, miss := netip.MustParseAddrPort("127.0.0.1:1080"), netip.MustParseAddrPort("127.0.0.1:1")
	assert.Zero(t, testing.AllocsPerRun(100, func() {
		s.Contains(hit)
		s.Contains(miss)
	}))
}

// testInterfaces is a host with a /24 on 192.0.2.0, a point-to-point /32
// and a /64 of 2001:db8::.
func testInterfaces() ([]netip.Prefix, error) {
	return []netip.Prefix{
		netip.MustParsePrefix("127.0.0.1/8"),
		netip.MustParsePrefix("192.0.2.7/24"),
		netip.MustParsePrefix("198.51.100.9/32"),
		netip.MustParsePrefix("2001:db8::7/64"),
	}, nil
}

func TestIsHostAndIsBroadcast(t *testing.T) {
	s := New()
	s.interfaceAddrs = testInterfaces
	tests := []struct {
		ip              string
		host, broadcast bool
	}{
		{"127.0.0.1", true, false},
		{"127.3.4.5", true, false},
		{"::1", true, false},
		{"::ffff:127.0.0.1", true, false},
		{"0.0.0.0", true, false},
		{"::", true, false},
		{"192.0.2.7", true, false},
		{"::ffff:192.0.2.7", true, false},
		{"2001:db8::7", true, false},
		{"fe80::1%eth0", false, false},
		{"198.51.100.9", true, false},
		{"192.0.2.8", false, false},
		{"192.0.2.255", false, true}, // the /24's directed broadcast
		{"::ffff:192.0.2.255", false, true},
		{"198.51.100.255", false, false}, // a /32 has no broadcast address
		{"255.255.255.255", false, true},
		{"203.0.113.1", false, false},
	}
	for _, tt := range tests {
		t.Run(tt.ip, func(t *testing.T) {
			ip := netip.MustParseAddr(tt.ip)
			assert.Equal(t, tt.host, s.IsHost(ip), "IsHost")
			assert.Equal(t, tt.broadcast, s.IsBroadcast(ip), "IsBroadcast")
		})
	}
}

func TestNilSetKnowsLoopbackAndLimitedBroadcast(t *testing.T) {
	var s *Set
	assert.True(t, s.IsHost(netip.MustParseAddr("127.0.0.1")))
	assert.False(t, s.IsHost(netip.MustParseAddr("192.0.2.7")))
	assert.True(t, s.IsBroadcast(netip.MustParseAddr("255.255.255.255")))
}

func TestRealHostAddresses(t *testing.T) {
	s := New()
	nets, err := hostAddrs()
	require.NoError(t, err)
	for _, p := range nets {
		assert.True(t, s.IsHost(p.Addr()), "%v is this host's", p)
	}
}

func TestHostChecksDoNotAllocate(t *testing.T) {
	s := New()
	s.interfaceAddrs = testInterfaces
	ip, bc := netip.MustParseAddr("192.0.2.7"), netip.MustParseAddr("192.0.2.255")
	assert.Zero(t, testing.AllocsPerRun(100, func() {
		s.IsHost(ip)
		s.IsBroadcast(bc)
	}))
}

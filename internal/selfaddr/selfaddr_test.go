package selfaddr

import (
	"fmt"
	"net"
	"net/netip"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestContains(t *testing.T) {
	s := New()
	s.interfaceAddrs = testInterfaces
	s.Add(TCP, netip.MustParseAddrPort("127.0.0.1:1080"))
	s.Add(UDP, netip.MustParseAddrPort("[::ffff:203.0.113.1]:5000"))
	s.Add(TCP, netip.MustParseAddrPort("0.0.0.0:9480"))
	rm := s.Add(TCP, netip.MustParseAddrPort("198.51.100.1:4000"))
	rm()
	rm()                                                   // twice is harmless
	s.Add(0, netip.MustParseAddrPort("198.51.100.1:4001")) // no transport: nothing

	tests := []struct {
		proto Proto
		dst   string
		want  bool
	}{
		{TCP, "127.0.0.1:1080", true},
		{TCP, "[::ffff:127.0.0.1]:1080", true},
		{TCP, "127.0.0.2:1080", false}, // a specific bind is not reached through another loopback address
		{TCP, "127.0.0.1:1081", false},
		{TCP, "0.0.0.0:1080", true}, // Linux connects the unspecified address to the local host
		{TCP, "[::]:1080", true},
		{TCP, "[::ffff:0.0.0.0]:1080", true},
		{TCP, "0.0.0.0:1", false},
		{UDP, "203.0.113.1:5000", true},
		{TCP, "127.0.0.5:9480", true}, // wildcard-bound: any local address
		{TCP, "[::1]:9480", true},
		{TCP, "192.0.2.7:9480", true},
		{TCP, "[2001:db8::7]:9480", true},
		{TCP, "192.0.2.8:9480", false}, // not an address of this host
		{TCP, "198.51.100.1:4000", false},
		{TCP, "198.51.100.1:4001", false},
		// The other transport on the same port reaches none of ours.
		{UDP, "127.0.0.1:1080", false},
		{UDP, "0.0.0.0:1080", false},
		{TCP, "203.0.113.1:5000", false},
		{UDP, "127.0.0.5:9480", false},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprintf("%d %s", tt.proto, tt.dst), func(t *testing.T) {
			assert.Equal(t, tt.want, s.Contains(tt.proto, netip.MustParseAddrPort(tt.dst)))
		})
	}
	assert.Equal(t, 3, s.Len())
}

func TestNilSetContainsNothing(t *testing.T) {
	var s *Set
	s.Add(TCP, netip.MustParseAddrPort("127.0.0.1:1"))()
	assert.False(t, s.Contains(TCP, netip.MustParseAddrPort("127.0.0.1:1")))
	assert.Zero(t, s.Len())
}

func TestMultisetCounts(t *testing.T) {
	s := New()
	ap := netip.MustParseAddrPort("127.0.0.1:7000")
	rm1, rm2 := s.Add(UDP, ap), s.Add(UDP, ap)
	rm1()
	assert.True(t, s.Contains(UDP, ap), "a second socket on the same address keeps it ours")
	rm2()
	assert.False(t, s.Contains(UDP, ap))
}

// TestAddAddrRealSocket: a listener's and a UDP socket's addresses are
// registered for their own transport.
func TestAddAddrRealSocket(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer ln.Close()
	uc, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	require.NoError(t, err)
	defer uc.Close()
	s := New()
	rmTCP, rmUDP := s.AddAddr(ln.Addr()), s.AddAddr(uc.LocalAddr())
	tcpAt, udpAt := AddrPortOf(ln.Addr()), AddrPortOf(uc.LocalAddr())
	assert.True(t, s.Contains(TCP, tcpAt))
	assert.False(t, s.Contains(UDP, tcpAt))
	assert.True(t, s.Contains(UDP, udpAt))
	assert.False(t, s.Contains(TCP, udpAt))
	rmTCP()
	rmUDP()
	assert.False(t, s.Contains(TCP, tcpAt))
	assert.False(t, s.Contains(UDP, udpAt))
	assert.Zero(t, s.Len())
}

func TestContainsDoesNotAllocate(t *testing.T) {
	s := New()
	s.Add(UDP, netip.MustParseAddrPort("127.0.0.1:1080"))
	hit, miss := netip.MustParseAddrPort("127.0.0.1:1080"), netip.MustParseAddrPort("127.0.0.1:1")
	assert.Zero(t, testing.AllocsPerRun(100, func() {
		s.Contains(UDP, hit)
		s.Contains(UDP, miss)
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

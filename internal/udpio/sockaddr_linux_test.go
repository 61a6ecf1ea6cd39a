//go:build linux

package udpio

import (
	"encoding/binary"
	"net/netip"
	"syscall"
	"testing"
	"unsafe"

	"github.com/stretchr/testify/require"
)

func rawInet4(ip [4]byte, port uint16) []byte {
	b := make([]byte, syscall.SizeofSockaddrInet4)
	*(*uint16)(unsafe.Pointer(&b[0])) = syscall.AF_INET
	binary.BigEndian.PutUint16(b[2:], port)
	copy(b[4:], ip[:])
	return b
}

func rawInet6(ip [16]byte, port uint16) []byte {
	b := make([]byte, syscall.SizeofSockaddrInet6)
	*(*uint16)(unsafe.Pointer(&b[0])) = syscall.AF_INET6
	binary.BigEndian.PutUint16(b[2:], port)
	copy(b[8:], ip[:])
	return b
}

func TestParseRawSockaddr(t *testing.T) {
	tests := []struct {
		name string
		in   []byte
		want netip.AddrPort
		ok   bool
	}{
		{"v4", rawInet4([4]byte{192, 0, 2, 7}, 1755), netip.MustParseAddrPort("192.0.2.7:1755"), true},
		{"v6", rawInet6(netip.MustParseAddr("2001:db8::9").As16(), 443), netip.MustParseAddrPort("[2001:db8::9]:443"), true},
		{"v4-mapped v6 is unmapped", rawInet6(netip.MustParseAddr("::ffff:192.0.2.1").As16(), 7000), netip.MustParseAddrPort("192.0.2.1:7000"), true},
		{"short v4", rawInet4([4]byte{1, 2, 3, 4}, 1)[:7], netip.AddrPort{}, false},
		{"short v6", rawInet6([16]byte{}, 1)[:23], netip.AddrPort{}, false},
		{"unix family", []byte{1, 0, 0, 0}, netip.AddrPort{}, false},
		{"empty", nil, netip.AddrPort{}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, ok := parseRawSockaddr(tt.in)
			require.Equal(t, tt.ok, ok)
			require.Equal(t, tt.want, got)
		})
	}
}

// FuzzParseRawSockaddr: never panics, and what it accepts re-encodes to the
// bytes it read.
func FuzzParseRawSockaddr(f *testing.F) {
	f.Add(rawInet4([4]byte{127, 0, 0, 1}, 9))
	f.Add(rawInet6(netip.MustParseAddr("::1").As16(), 9))
	f.Add([]byte{})
	f.Add([]byte{2})
	f.Fuzz(func(t *testing.T, b []byte) {
		ap, ok := parseRawSockaddr(b)
		if !ok {
			return
		}
		require.True(t, ap.IsValid())
		require.Equal(t, binary.BigEndian.Uint16(b[2:4]), ap.Port())
		if ap.Addr().Is4() && len(b) >= 24 && *(*uint16)(unsafe.Pointer(&b[0])) == syscall.AF_INET6 {
			require.Equal(t, netip.AddrFrom16([16]byte(b[8:24])).Unmap(), ap.Addr())
		} else if ap.Addr().Is4() {
			require.Equal(t, b[4:8], ap.Addr().AsSlice())
		} else {
			require.Equal(t, b[8:24], ap.Addr().AsSlice())
		}
	})
}

// TestPutRawSockaddr: how a destination is written for each socket family,
// IPv4-mapped handling included.
func TestPutRawSockaddr(t *testing.T) {
	tests := []struct {
		name  string
		to    string
		inet6 bool
		want  []byte
		err   error
	}{
		{"v4 on v4", "192.0.2.7:1755", false, rawInet4([4]byte{192, 0, 2, 7}, 1755), nil},
		{"mapped on v4 is unmapped", "[::ffff:192.0.2.7]:1755", false, rawInet4([4]byte{192, 0, 2, 7}, 1755), nil},
		{"v6 on v4 is refused", "[2001:db8::9]:443", false, nil, ErrFamily},
		{"v4 on v6 is mapped", "192.0.2.7:5004", true, rawInet6(netip.MustParseAddr("::ffff:192.0.2.7").As16(), 5004), nil},
		{"v6 on v6", "[2001:db8::9]:443", true, rawInet6(netip.MustParseAddr("2001:db8::9").As16(), 443), nil},
		{"zone is not sent", "[fe80::1%eth0]:9", true, rawInet6(netip.MustParseAddr("fe80::1").As16(), 9), nil},
		{"no address", "", true, nil, ErrNoDestination},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var to netip.AddrPort
			if tt.to != "" {
				to = netip.MustParseAddrPort(tt.to)
			}
			var sa syscall.RawSockaddrAny
			n, err := putRawSockaddr(&sa, to, tt.inet6)
			require.ErrorIs(t, err, tt.err)
			if tt.err != nil {
				return
			}
			require.Equal(t, tt.want, (*[syscall.SizeofSockaddrAny]byte)(unsafe.Pointer(&sa))[:n])
		})
	}
}

// FuzzPutRawSockaddr: whatever destination and socket family, the encoder
// never panics, writes within the length it returns, and what it writes
// decodes to the destination (unmapped, zone dropped); it fails only for an
// IPv6 destination on an IPv4 socket.
func FuzzPutRawSockaddr(f *testing.F) {
	f.Add(netip.MustParseAddr("192.0.2.7").AsSlice(), uint16(1755), false)
	f.Add(netip.MustParseAddr("::ffff:192.0.2.7").AsSlice(), uint16(1755), false)
	f.Add(netip.MustParseAddr("192.0.2.7").AsSlice(), uint16(0), true)
	f.Add(netip.MustParseAddr("2001:db8::9").AsSlice(), uint16(443), true)
	f.Add(netip.MustParseAddr("2001:db8::9").AsSlice(), uint16(443), false)
	f.Add([]byte{}, uint16(9), true)
	f.Fuzz(func(t *testing.T, ip []byte, port uint16, inet6 bool) {
		addr, _ := netip.AddrFromSlice(ip)
		to := netip.AddrPortFrom(addr, port)
		sa := syscall.RawSockaddrAny{}
		raw := (*[syscall.SizeofSockaddrAny]byte)(unsafe.Pointer(&sa))
		for i := range raw {
			raw[i] = 0xa5 // what the encoder does not write must not matter
		}
		n, err := putRawSockaddr(&sa, to, inet6)
		switch {
		case !addr.IsValid():
			require.ErrorIs(t, err, ErrNoDestination)
			return
		case !inet6 && addr.Is6() && !addr.Is4In6():
			require.ErrorIs(t, err, ErrFamily)
			return
		}
		require.NoError(t, err)
		if inet6 {
			require.Equal(t, uint32(syscall.SizeofSockaddrInet6), n)
		} else {
			require.Equal(t, uint32(syscall.SizeofSockaddrInet4), n)
		}
		got, ok := parseRawSockaddr(raw[:n])
		require.True(t, ok)
		require.Equal(t, netip.AddrPortFrom(addr.Unmap().WithZone(""), port), got)
	})
}

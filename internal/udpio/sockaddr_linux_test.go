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
		{"v4-mapped v6 is unmapped", rawInet6(netip.MustParseAddr("::ffff:10.0.0.1").As16(), 7000), netip.MustParseAddrPort("10.0.0.1:7000"), true},
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

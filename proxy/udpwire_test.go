package proxy

import (
	"net/netip"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestParseUDPHeader(t *testing.T) {
	tests := []struct {
		name    string
		in      []byte
		want    udpHeader
		wantN   int
		wantErr error
	}{
		{"ipv4", []byte{0, 0, 0, 1, 127, 0, 0, 1, 0x1b, 0x58, 'x'}, udpHeader{Addr: netip.MustParseAddr("127.0.0.1"), Port: 7000}, 10, nil},
		{"ipv6", append([]byte{0, 0, 0, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1}, 0x06, 0xdb), udpHeader{Addr: netip.IPv6Loopback(), Port: 1755}, 22, nil},
		{"v4-mapped ipv6 is unmapped", append([]byte{0, 0, 0, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 10, 0, 0, 1}, 0, 53), udpHeader{Addr: netip.MustParseAddr("10.0.0.1"), Port: 53}, 22, nil},
		{"domain", []byte{0, 0, 0, 3, 4, 'h', 'o', 's', 't', 0, 80}, udpHeader{Domain: []byte("host"), Port: 80}, 11, nil},
		{"fragment number is reported", []byte{0, 0, 2, 1, 1, 2, 3, 4, 0, 1}, udpHeader{Frag: 2, Addr: netip.MustParseAddr("1.2.3.4"), Port: 1}, 10, nil},
		{"empty", nil, udpHeader{}, 0, errUDPShort},
		{"short ipv4", []byte{0, 0, 0, 1, 127, 0, 0, 1, 0}, udpHeader{}, 0, errUDPShort},
		{"short ipv6", []byte{0, 0, 0, 4, 1}, udpHeader{}, 0, errUDPShort},
		{"domain longer than datagram", []byte{0, 0, 0, 3, 200, 'a', 0, 1}, udpHeader{}, 0, errUDPShort},
		{"domain without length", []byte{0, 0, 0, 3}, udpHeader{}, 0, errUDPShort},
		{"unknown address type", []byte{0, 0, 0, 7, 1, 2, 3, 4, 0, 1}, udpHeader{}, 0, errUDPAddrType},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h, n, err := parseUDPHeader(tt.in)
			if tt.wantErr != nil {
				require.ErrorIs(t, err, tt.wantErr)
				return
			}
			require.NoError(t, err)
			assert.Equal(t, tt.want, h)
			assert.Equal(t, tt.wantN, n)
		})
	}
}

func TestUDPHeaderAllocatesNothing(t *testing.T) {
	dgram := append(appendUDPHeader(nil, netip.MustParseAddrPort("127.0.0.1:1755")), make([]byte, 1200)...)
	out := make([]byte, 0, maxUDPHeaderLen)
	from := netip.MustParseAddrPort("[::1]:7000")
	allocs := testing.AllocsPerRun(1000, func() {
		h, n, err := parseUDPHeader(dgram)
		if err != nil || n != 10 || h.Port != 1755 {
			t.Fatal("parse failed")
		}
		out = appendUDPHeader(out[:0], from)
	})
	assert.Zero(t, allocs)
}

// FuzzParseUDPHeader: no panic; an accepted IP header re-encodes to the bytes
// parsed (FRAG and RSV aside, which a reply always sends as zero).
func FuzzParseUDPHeader(f *testing.F) {
	f.Add([]byte{0, 0, 0, 1, 127, 0, 0, 1, 0x1b, 0x58, 'x'})
	f.Add([]byte{0, 0, 0, 3, 4, 'h', 'o', 's', 't', 0, 80})
	f.Add(append([]byte{0, 0, 0, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1}, 0x06, 0xdb))
	f.Add([]byte{0, 0, 1, 1, 1, 2, 3, 4, 0, 1})
	f.Fuzz(func(t *testing.T, b []byte) {
		h, n, err := parseUDPHeader(b)
		if err != nil {
			return
		}
		require.LessOrEqual(t, n, len(b))
		require.LessOrEqual(t, n, maxUDPHeaderLen)
		if h.Addr.IsValid() && b[3] == atypIPv4 {
			want := append([]byte{0, 0, 0}, b[3:n]...)
			require.Equal(t, want, appendUDPHeader(nil, netip.AddrPortFrom(h.Addr, h.Port)))
		}
	})
}

package mmsplayer

import (
	"bytes"
	"net/netip"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestParseUDPHeader(t *testing.T) {
	tests := []struct {
		name    string
		b       []byte
		from    netip.AddrPort
		n       int
		wantErr bool
	}{
		{"IPv4", []byte{0, 0, 0, 1, 127, 0, 0, 1, 0x06, 0xdb, 'x'}, netip.MustParseAddrPort("127.0.0.1:1755"), 10, false},
		{"IPv6", append([]byte{0, 0, 0, 4}, append(netip.MustParseAddr("::1").AsSlice(), 0, 80)...), netip.MustParseAddrPort("[::1]:80"), 22, false},
		{"domain", []byte{0, 0, 0, 3, 1, 'h', 0, 80}, netip.AddrPort{}, 8, false},
		{"fragment", []byte{0, 0, 1, 1, 127, 0, 0, 1, 0, 80}, netip.AddrPort{}, 0, true},
		{"short", []byte{0, 0, 0}, netip.AddrPort{}, 0, true},
		{"short IPv4", []byte{0, 0, 0, 1, 127, 0}, netip.AddrPort{}, 0, true},
		{"short domain", []byte{0, 0, 0, 3, 9, 'h'}, netip.AddrPort{}, 0, true},
		{"unknown type", []byte{0, 0, 0, 9, 0, 0}, netip.AddrPort{}, 0, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			from, n, err := parseUDPHeader(tt.b)
			if tt.wantErr {
				assert.Error(t, err)
				return
			}
			require.NoError(t, err)
			assert.Equal(t, tt.from, from)
			assert.Equal(t, tt.n, n)
		})
	}
}

func TestSocksAddrRoundTrip(t *testing.T) {
	for _, s := range []string{"127.0.0.1:7000", "[2001:db8::1]:1755", "0.0.0.0:0"} {
		ap := netip.MustParseAddrPort(s)
		b := appendSocksAddr(nil, ap)
		got, err := readSocksAddr(bytes.NewReader(b))
		require.NoError(t, err, s)
		assert.Equal(t, ap, got)
	}
	got, err := readSocksAddr(bytes.NewReader([]byte{3, 4, 'h', 'o', 's', 't', 0, 80}))
	require.NoError(t, err, "a domain name reply is read and skipped")
	assert.False(t, got.IsValid())
	_, err = readSocksAddr(bytes.NewReader([]byte{1, 127, 0}))
	assert.Error(t, err)
}

// FuzzParseUDPHeader: no input panics, and an accepted header fits b.
func FuzzParseUDPHeader(f *testing.F) {
	f.Add([]byte{0, 0, 0, 1, 127, 0, 0, 1, 0x06, 0xdb, 'x'})
	f.Add([]byte{0, 0, 0, 3, 1, 'h', 0, 80})
	f.Fuzz(func(t *testing.T, b []byte) {
		if _, n, err := parseUDPHeader(b); err == nil && (n < 4 || n > len(b)) {
			t.Fatalf("header length %d for %d bytes", n, len(b))
		}
	})
}

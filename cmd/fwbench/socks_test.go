package main

import (
	"bytes"
	"context"
	"io"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestUDPHeaderRoundTrip(t *testing.T) {
	for _, a := range []string{"127.0.0.1:5004", "[::1]:7000"} {
		ap := netip.MustParseAddrPort(a)
		d := append(appendUDPHeader(nil, ap), "payload"...)
		p, err := udpPayload(d)
		require.NoError(t, err)
		assert.Equal(t, "payload", string(p))
	}
	_, err := udpPayload([]byte{0, 0, 0, atypIPv4, 127})
	assert.Error(t, err)
	_, err = udpPayload([]byte{0, 0, 0, atypDomain, 1, 'x', 0, 1})
	assert.Error(t, err, "a proxy relays from addresses, never names")
}

func TestReadReply(t *testing.T) {
	tests := []struct {
		name    string
		in      []byte
		want    netip.AddrPort
		wantErr bool
	}{
		{"ipv4", []byte{5, 0, 0, atypIPv4, 127, 0, 0, 1, 0x04, 0x38}, netip.MustParseAddrPort("127.0.0.1:1080"), false},
		{"ipv6", append(append([]byte{5, 0, 0, atypIPv6}, netip.IPv6Loopback().AsSlice()...), 0, 80), netip.MustParseAddrPort("[::1]:80"), false},
		{"domain keeps the port", []byte{5, 0, 0, atypDomain, 1, 'x', 0, 7}, netip.AddrPortFrom(netip.Addr{}, 7), false},
		{"refused", []byte{5, 5, 0, atypIPv4, 0, 0, 0, 0, 0, 0}, netip.AddrPort{}, true},
		{"truncated", []byte{5, 0, 0, atypIPv4, 127}, netip.AddrPort{}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := readReply(bytes.NewReader(tt.in))
			if tt.wantErr {
				assert.Error(t, err)
				return
			}
			require.NoError(t, err)
			assert.Equal(t, tt.want, got)
		})
	}
}

// TestSocksHandshake plays the server side of one CONNECT on a loopback
// pair and checks the bytes the client sends.
func TestSocksHandshake(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	t.Cleanup(func() { ln.Close() })
	got := make(chan []byte, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			got <- nil
			return
		}
		defer c.Close()
		greet := make([]byte, 3)
		io.ReadFull(c, greet)
		c.Write([]byte{5, 0})
		req := make([]byte, 10)
		io.ReadFull(c, req)
		c.Write([]byte{5, 0, 0, atypIPv4, 127, 0, 0, 2, 0x30, 0x39})
		got <- append(greet, req...)
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, bound, err := dialSocks(ctx, ln.Addr().String(), cmdConnect, netip.MustParseAddrPort("127.0.0.1:80"))
	require.NoError(t, err)
	c.Close()
	assert.Equal(t, netip.MustParseAddrPort("127.0.0.2:12345"), bound)
	assert.Equal(t, []byte{5, 1, 0, 5, 1, 0, atypIPv4, 127, 0, 0, 1, 0, 80}, <-got)
}

func TestRelayAddr(t *testing.T) {
	assert.Equal(t, netip.MustParseAddrPort("127.0.0.1:4000"),
		relayAddr(netip.MustParseAddrPort("0.0.0.0:4000"), "127.0.0.1:1080"), "unspecified BND.ADDR means the proxy's")
	assert.Equal(t, netip.MustParseAddrPort("127.0.0.5:4000"),
		relayAddr(netip.MustParseAddrPort("127.0.0.5:4000"), "127.0.0.1:1080"))
}

package main

import (
	"net/netip"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"fwproxy/internal/socksclient"
)

// TestUDPPayloadRoundTrip: the header the load loops build once is the one
// they strip, and stripping does not allocate (it runs per datagram).
func TestUDPPayloadRoundTrip(t *testing.T) {
	for _, ap := range []netip.AddrPort{netip.MustParseAddrPort("127.0.0.1:9"), netip.MustParseAddrPort("[::1]:9")} {
		d := append(appendUDPHeader(nil, ap), "payload"...)
		p, err := udpPayload(d)
		require.NoError(t, err)
		assert.Equal(t, "payload", string(p))
		assert.Zero(t, testing.AllocsPerRun(100, func() { udpPayload(d) }))
	}
	_, err := udpPayload([]byte{0, 0, 0, 1, 127})
	assert.Error(t, err)
}

func TestRelayAddr(t *testing.T) {
	assert.Equal(t, netip.MustParseAddrPort("127.0.0.1:4000"),
		relayAddr(socksclient.AddrFromAddrPort(netip.MustParseAddrPort("0.0.0.0:4000")), "127.0.0.1:1080"), "unspecified BND.ADDR means the proxy's")
	assert.Equal(t, netip.MustParseAddrPort("127.0.0.5:4000"),
		relayAddr(socksclient.AddrFromAddrPort(netip.MustParseAddrPort("127.0.0.5:4000")), "127.0.0.1:1080"))
}

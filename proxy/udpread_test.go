package proxy

import (
	"bytes"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// udpPair is two loopback sockets: a relay (whose sink and source are
// tested) and a client.
func udpPair(t *testing.T, network, ip string) (relay, client *net.UDPConn) {
	t.Helper()
	listen := func() *net.UDPConn {
		c, err := net.ListenUDP(network, net.UDPAddrFromAddrPort(netip.AddrPortFrom(netip.MustParseAddr(ip), 0)))
		require.NoError(t, err)
		c.SetDeadline(time.Now().Add(testTimeout))
		t.Cleanup(func() { c.Close() })
		return c
	}
	return listen(), listen()
}

// TestRawClientSinkGathersHeaderAndPayload: what the sink sends is the
// SOCKS header for from followed by the payload, for every payload size
// from empty to the largest datagram, on IPv4 and IPv6.
func TestRawClientSinkGathersHeaderAndPayload(t *testing.T) {
	for _, tt := range []struct{ network, ip string }{{"udp4", "127.0.0.1"}, {"udp6", "::1"}} {
		t.Run(tt.network, func(t *testing.T) {
			relay, client := udpPair(t, tt.network, tt.ip)
			sink, err := newClientSink(relay)
			require.NoError(t, err)
			from := netip.MustParseAddrPort("[2001:db8::7]:5004")
			to := addrPortOf(client.LocalAddr())
			buf := make([]byte, maxDatagram+64)
			// 65507 is the largest UDP payload over IPv4 (65535 less the IP and UDP headers).
			for _, size := range []int{0, 1, 1200, 65507 - maxUDPAddrHeaderLen} {
				payload := bytes.Repeat([]byte{byte(size)}, size)
				require.NoError(t, sink.send(from, payload, to), "size %d", size)
				n, src, err := client.ReadFromUDPAddrPort(buf)
				require.NoError(t, err)
				assert.Equal(t, addrPortOf(relay.LocalAddr()), netip.AddrPortFrom(src.Addr().Unmap(), src.Port()))
				want := append(appendUDPHeader(nil, from), payload...)
				assert.True(t, bytes.Equal(want, buf[:n]), "size %d: datagram differs", size)
			}
		})
	}
}

// TestRawClientSourceAcrossIdle: the source hands each datagram over with
// its sender, also after being idle longer than bufferHold (when it has
// given its buffer back and must take one again).
func TestRawClientSourceAcrossIdle(t *testing.T) {
	relay, client := udpPair(t, "udp4", "127.0.0.1")
	src, err := newClientSource(relay, newDatagramBufs())
	require.NoError(t, err)
	defer src.close()
	to := addrPortOf(relay.LocalAddr())
	for i, pause := range []time.Duration{0, 0, bufferHold * 3 / 2, 0} {
		time.Sleep(pause)
		msg := []byte{byte(i), 'x', 'y'}
		_, err := client.WriteToUDPAddrPort(msg, to)
		require.NoError(t, err)
		got, from, err := src.next()
		require.NoError(t, err, "datagram %d", i)
		assert.Equal(t, msg, got)
		assert.Equal(t, addrPortOf(client.LocalAddr()), from)
	}
	relay.Close()
	_, _, err = src.next()
	assert.ErrorIs(t, err, net.ErrClosed)
}

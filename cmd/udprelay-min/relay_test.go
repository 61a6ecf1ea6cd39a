package main

import (
	"encoding/binary"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func listen(t *testing.T) *net.UDPConn {
	c, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	require.NoError(t, err)
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(10 * time.Second))
	return c
}

func addr(c *net.UDPConn) netip.AddrPort { return c.LocalAddr().(*net.UDPAddr).AddrPort() }

func startRelay(t *testing.T, players int) (*relay, netip.AddrPort, netip.AddrPort) {
	in, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	require.NoError(t, err)
	out, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	require.NoError(t, err)
	r := newRelay(in, out, players)
	done := make(chan struct{})
	go func() {
		defer close(done)
		r.run()
	}()
	t.Cleanup(func() {
		r.close()
		<-done
	})
	return r, addr(in), addr(out)
}

func index(i uint32) []byte { return binary.BigEndian.AppendUint32(nil, i) }

// register sends the player's index to out and waits for the echo.
func register(t *testing.T, p *net.UDPConn, i uint32, out netip.AddrPort) {
	_, err := p.WriteToUDPAddrPort(index(i), out)
	require.NoError(t, err)
	buf := make([]byte, 16)
	n, from, err := p.ReadFromUDPAddrPort(buf)
	require.NoError(t, err)
	assert.Equal(t, out, from)
	assert.Equal(t, index(i), buf[:n], "the acknowledgement is the index")
}

func TestRelayRoutesByIndex(t *testing.T) {
	r, in, out := startRelay(t, 8)
	players := []*net.UDPConn{listen(t), listen(t), listen(t)}
	for i, p := range players {
		register(t, p, uint32(i), out)
	}
	sender := listen(t)
	// A burst, so recvmmsg returns more than one, small enough for the
	// default socket buffers.
	const perPlayer = 20
	for k := range perPlayer {
		for i := range players {
			d := append(index(uint32(i)), byte(k), byte(k>>8))
			_, err := sender.WriteToUDPAddrPort(append(d, make([]byte, 1000)...), in)
			require.NoError(t, err)
		}
	}
	buf := make([]byte, 2048)
	for i, p := range players {
		for k := range perPlayer {
			n, from, err := p.ReadFromUDPAddrPort(buf)
			require.NoError(t, err, "player %d datagram %d", i, k)
			assert.Equal(t, out, from, "sent from the out socket")
			require.Equal(t, 1006, n)
			assert.Equal(t, uint32(i), binary.BigEndian.Uint32(buf), "each datagram reaches the player it names")
			assert.Equal(t, k, int(buf[4])|int(buf[5])<<8, "in order")
		}
	}
	// The relay counts a batch after sending it, so a player can have read
	// the last datagram before the count is in: wait for it, bounded.
	require.Eventually(t, func() bool { return r.counts().relayed == uint64(3*perPlayer) },
		5*time.Second, time.Millisecond, "relayed count %d", r.counts().relayed)
}

func TestRelayCountsUnroutable(t *testing.T) {
	tests := []struct {
		name string
		data []byte
	}{
		{"no index", []byte{1, 2}},
		{"unregistered player", index(5)},
		{"index past the table", index(1 << 30)},
	}
	r, in, out := startRelay(t, 8)
	p := listen(t)
	register(t, p, 0, out)
	sender := listen(t)
	for i, tt := range tests {
		_, err := sender.WriteToUDPAddrPort(tt.data, in)
		require.NoError(t, err)
		// A routable datagram after each shows the bad one was passed over.
		_, err = sender.WriteToUDPAddrPort(append(index(0), byte(i)), in)
		require.NoError(t, err)
		buf := make([]byte, 64)
		n, _, err := p.ReadFromUDPAddrPort(buf)
		require.NoError(t, err, tt.name)
		assert.Equal(t, append(index(0), byte(i)), buf[:n], tt.name)
	}
	assert.Equal(t, uint64(len(tests)), r.counts().unknown)
}

func TestRunFlags(t *testing.T) {
	for _, args := range [][]string{{"-in", "nope"}, {"-max-players", "0"}, {"-out", "127.0.0.1"}} {
		assert.Equal(t, 2, run(t.Context(), args, &strings.Builder{}), "%q", args)
	}
}

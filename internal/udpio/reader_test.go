package udpio

import (
	"bytes"
	"net"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestReaderDelivers: each reader hands over the datagram, its size and its
// sender, unmapped, on IPv4, IPv6 and a dual-stack socket reached over
// IPv4; then ends with net.ErrClosed holding no buffer.
func TestReaderDelivers(t *testing.T) {
	for _, rk := range readerKinds {
		for _, keep := range []time.Duration{0, time.Minute} {
			for _, tt := range []struct {
				name, network, ip, peerNetwork, peerIP string
			}{
				{"udp4", "udp4", "127.0.0.1", "udp4", "127.0.0.1"},
				{"udp6", "udp6", "::1", "udp6", "::1"},
				{"dual-stack from IPv4", "udp", "::", "udp4", "127.0.0.1"},
			} {
				t.Run(rk.name+"/keep="+keep.String()+"/"+tt.name, func(t *testing.T) {
					c := listen(t, tt.network, tt.ip)
					peer := listen(t, tt.peerNetwork, tt.peerIP)
					bufs := &countingBuffers{size: 2048}
					r, err := rk.make(c, Policy{Buffers: bufs, Keep: keep})
					require.NoError(t, err)
					to := loopbackOf(c, tt.peerNetwork == "udp4")
					for _, size := range []int{0, 1, 1200, 2048} {
						msg := bytes.Repeat([]byte{byte(size)}, size)
						_, err := peer.WriteToUDPAddrPort(msg, to)
						require.NoError(t, err)
						res := waitNext(t, nextAsync(r))
						require.NoError(t, res.err)
						assert.True(t, bytes.Equal(msg, res.b), "size %d: datagram differs", size)
						assert.Equal(t, size, res.size)
						assert.Equal(t, addrOf(peer), res.from)
						assert.True(t, res.from.Addr().Is4() == (tt.peerNetwork == "udp4"), "sender %v not unmapped", res.from)
					}
					c.Close()
					res := waitNext(t, nextAsync(r))
					require.ErrorIs(t, res.err, net.ErrClosed)
					r.Close()
					if rk.name == "platform" {
						assert.Zero(t, bufs.held(), "buffers held after the end")
					}
				})
			}
		}
	}
}

// TestReaderTooLarge: a datagram larger than the buffers is reported with a
// size larger than len(b), never passed on as if it were whole.
func TestReaderTooLarge(t *testing.T) {
	for _, rk := range readerKinds {
		t.Run(rk.name, func(t *testing.T) {
			c := listen(t, "udp4", "127.0.0.1")
			peer := listen(t, "udp4", "127.0.0.1")
			r, err := rk.make(c, Policy{Buffers: NewPool(8, 1)})
			require.NoError(t, err)
			for _, msg := range []string{"12345678", "123456789", "a datagram far larger than eight bytes"} {
				_, err := peer.WriteToUDPAddrPort([]byte(msg), addrOf(c))
				require.NoError(t, err)
				res := waitNext(t, nextAsync(r))
				require.NoError(t, res.err)
				assert.Equal(t, msg[:min(8, len(msg))], string(res.b))
				if len(msg) <= 8 {
					assert.Equal(t, len(msg), res.size)
				} else {
					assert.Greater(t, res.size, len(res.b), "%q", msg)
				}
			}
		})
	}
}

// TestNewReaderNeedsBuffers: a policy without room is refused, not a panic
// at the first datagram.
func TestNewReaderNeedsBuffers(t *testing.T) {
	c := listen(t, "udp4", "127.0.0.1")
	for _, rk := range readerKinds {
		for _, p := range []Policy{{}, {Buffers: NewPool(0, 1)}} {
			_, err := rk.make(c, p)
			assert.ErrorIs(t, err, ErrNoBuffers, rk.name)
		}
	}
}

// TestPoolClearsAndBounds: a buffer comes back cleared as far as it was
// used, and the pool keeps no more idle buffers than it was told.
func TestPoolClearsAndBounds(t *testing.T) {
	p := NewPool(16, 2)
	b := p.Get()
	require.Len(t, b, 16)
	copy(b, "secret payload!!")
	p.Put(b, 6)
	got := p.Get()
	assert.Equal(t, make([]byte, 6), got[:6], "used bytes cleared")
	assert.Equal(t, "payload!!", string(got[7:]), "only the used bytes are cleared")

	p.Put(make([]byte, 8), 8) // not the pool's: dropped
	bs := [][]byte{p.Get(), p.Get(), p.Get()}
	for _, b := range bs {
		require.Len(t, b, 16)
		p.Put(b, 0)
	}
	assert.Len(t, p.free, 2)
	p.Put(make([]byte, 16), 99) // used beyond the size is clamped, no panic
}

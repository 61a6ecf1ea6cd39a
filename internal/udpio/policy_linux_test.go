//go:build linux

package udpio

import (
	"net"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// send writes n one-byte datagrams from peer to c.
func send(t *testing.T, peer, c *net.UDPConn, n int) {
	t.Helper()
	for i := range n {
		_, err := peer.WriteToUDPAddrPort([]byte{byte(i)}, addrOf(c))
		require.NoError(t, err)
	}
}

// TestPolicyHolding: a reader parked before any datagram holds no buffer
// and (with Keep, which peeks) never took one; then, over bursts of
// datagrams, the leases' policy (Keep 0) parks holding none after every
// burst, having given back as far as it used, while the associations'
// policy keeps one buffer across every datagram and while it waits.
func TestPolicyHolding(t *testing.T) {
	for _, tt := range []struct {
		name       string
		keep       time.Duration
		heldParked int64 // buffers held when parked after a burst
	}{
		{"keep 0 gives back per burst", 0, 0},
		{"keep holds across datagrams", time.Hour, 1},
	} {
		t.Run(tt.name, func(t *testing.T) {
			c := listen(t, "udp4", "127.0.0.1")
			peer := listen(t, "udp4", "127.0.0.1")
			bufs := &countingBuffers{size: 2048}
			log := newDrainLog(bufs)
			r, err := NewReader(c, Policy{Buffers: bufs, Keep: tt.keep, Drained: log.drained})
			require.NoError(t, err)
			next := nextAsync(r)
			log.waitHeld(t, 0)
			if tt.keep > 0 {
				assert.Zero(t, bufs.gets.Load(), "an idle reader took a buffer")
			}
			gets := bufs.gets.Load()
			for burst := range 3 {
				send(t, peer, c, 4)
				for i := range 4 {
					res := waitNext(t, next)
					require.NoError(t, res.err, "burst %d datagram %d", burst, i)
					next = nextAsync(r)
				}
				log.waitHeld(t, tt.heldParked)
				if tt.keep == 0 {
					assert.Equal(t, int64(1), bufs.lastUsed.Load(), "cleared as far as used")
				}
			}
			if tt.keep > 0 {
				assert.Equal(t, int64(1), bufs.gets.Load()-gets, "a busy reader went to the pool again")
			}
			c.Close()
			require.ErrorIs(t, waitNext(t, next).err, net.ErrClosed)
			assert.Zero(t, bufs.held())
		})
	}
}

// TestPolicyKeepGivesBack is the second half: Keep after it took a buffer,
// a silent reader gives it back, clears the deadline it used, and reads the
// next datagram with a new buffer.
func TestPolicyKeepGivesBack(t *testing.T) {
	c := listen(t, "udp4", "127.0.0.1")
	peer := listen(t, "udp4", "127.0.0.1")
	bufs := &countingBuffers{size: 2048}
	log := newDrainLog(bufs)
	r, err := NewReader(c, Policy{Buffers: bufs, Keep: 20 * time.Millisecond, Drained: log.drained})
	require.NoError(t, err)
	for round := range 3 {
		next := nextAsync(r)
		send(t, peer, c, 1)
		res := waitNext(t, next)
		require.NoError(t, res.err, "round %d", round)
		// The reader may have parked, holding nothing, before the
		// datagram came: only the give-back after Keep counts.
		log.forget()
		next = nextAsync(r)
		log.waitHeld(t, 0)
		// Parked without a buffer, the reader takes one only for the next
		// datagram.
		gets := bufs.gets.Load()
		send(t, peer, c, 1)
		require.NoError(t, waitNext(t, next).err, "round %d after giving back", round)
		assert.Equal(t, gets+1, bufs.gets.Load())
	}
	c.Close()
	require.ErrorIs(t, waitNext(t, nextAsync(r)).err, net.ErrClosed)
	assert.Zero(t, bufs.held())
}

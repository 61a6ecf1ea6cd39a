//go:build linux

package udpio

import (
	"fmt"
	"net/netip"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// TestAllocsPerDatagram: a datagram written by a Writer and read by a
// Reader allocates nothing, under both buffer policies.
func TestAllocsPerDatagram(t *testing.T) {
	for _, keep := range []time.Duration{0, time.Hour} {
		t.Run("keep="+keep.String(), func(t *testing.T) {
			c := listen(t, "udp4", "127.0.0.1")
			peer := listen(t, "udp", "::")
			r, err := NewReader(c, Policy{Buffers: NewPool(2048, 4), Keep: keep, Drained: func() {}})
			require.NoError(t, err)
			defer r.Close()
			w, err := NewWriter(peer)
			require.NoError(t, err)
			head, payload := make([]byte, 22), make([]byte, 1200)
			to := addrOf(c)
			var failed error
			roundTrip := func() {
				if err := w.WriteTo(head, payload, to); err != nil {
					failed = err
					return
				}
				if _, size, _, err := r.Next(); err != nil || size != len(head)+len(payload) {
					failed = err
				}
			}
			for range 10 {
				roundTrip()
			}
			allocs := testing.AllocsPerRun(1000, roundTrip)
			require.NoError(t, failed)
			require.Zero(t, allocs)
		})
	}
}

// TestAllocsPerDatagramEach: the same through Each, whose batches come from
// a pool of their own.
func TestAllocsPerDatagramEach(t *testing.T) {
	for _, keep := range []time.Duration{0, time.Hour} {
		t.Run("keep="+keep.String(), func(t *testing.T) {
			c := listen(t, "udp4", "127.0.0.1")
			peer := listen(t, "udp", "::")
			r, err := NewReader(c, Policy{Buffers: NewPool(2048, 4*BatchSize), Keep: keep, Drained: func() {}})
			require.NoError(t, err)
			got := make(chan int, 1)
			done := make(chan error, 1)
			go func() { done <- r.Each(func(_ []byte, size int, _ netip.AddrPort) { got <- size }) }()
			defer func() {
				c.Close()
				<-done
				r.Close()
			}()
			w, err := NewWriter(peer)
			require.NoError(t, err)
			head, payload := make([]byte, 22), make([]byte, 1200)
			to := addrOf(c)
			var failed error
			// One timer for the whole test: time.After would allocate per
			// datagram.
			deadline := time.NewTimer(testTimeout)
			defer deadline.Stop()
			roundTrip := func() {
				if err := w.WriteTo(head, payload, to); err != nil {
					failed = err
					return
				}
				select {
				case size := <-got:
					if size != len(head)+len(payload) {
						failed = fmt.Errorf("size %d", size)
					}
				case <-deadline.C:
					failed = fmt.Errorf("no datagram")
				}
			}
			for range 10 {
				roundTrip()
			}
			allocs := testing.AllocsPerRun(1000, roundTrip)
			require.NoError(t, failed)
			require.Zero(t, allocs)
		})
	}
}

package udpio

import (
	"bytes"
	"fmt"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// eachRun is Each running on its own goroutine: what fn received, in
// order, and what Each returned.
type eachRun struct {
	got  chan nextResult
	done chan error
}

func startEach(r Reader) *eachRun {
	e := &eachRun{got: make(chan nextResult, 1024), done: make(chan error, 1)}
	go func() {
		e.done <- r.Each(func(b []byte, size int, from netip.AddrPort) {
			e.got <- nextResult{b: append([]byte(nil), b...), size: size, from: from}
		})
	}()
	return e
}

func (e *eachRun) next(t *testing.T) nextResult {
	t.Helper()
	select {
	case res := <-e.got:
		return res
	case <-time.After(testTimeout):
		t.Fatal("Each delivered nothing")
		return nextResult{}
	}
}

// TestEachDelivers: Each hands over every datagram of a burst, in order,
// with its real size (larger than len(b) when it did not fit) and its
// sender, whether the burst fills its batches or not; after each burst it
// parks with no buffer held (Keep 0) and the next datagram still wakes it,
// which is what its skipped empty read must not lose. It ends with
// net.ErrClosed holding nothing.
func TestEachDelivers(t *testing.T) {
	for _, rk := range readerKinds {
		for _, keep := range []time.Duration{0, time.Minute} {
			for _, burst := range []int{1, BatchSize, BatchSize + 1, 3*BatchSize + 1} {
				t.Run(fmt.Sprintf("%s/keep=%v/burst=%d", rk.name, keep, burst), func(t *testing.T) {
					c := listen(t, "udp4", "127.0.0.1")
					peer := listen(t, "udp4", "127.0.0.1")
					bufs := &countingBuffers{size: 64}
					parked := newDrainLog(bufs)
					r, err := rk.make(c, Policy{Buffers: bufs, Keep: keep, Drained: parked.drained})
					require.NoError(t, err)
					e := startEach(r)
					for round := range 20 {
						var sent [][]byte
						for i := range burst {
							// Every fourth datagram is larger than the buffers.
							size := (round*burst + i) % 4 * 30
							msg := bytes.Repeat([]byte{byte(round), byte(i)}, size/2)
							_, err := peer.WriteToUDPAddrPort(msg, addrOf(c))
							require.NoError(t, err)
							sent = append(sent, msg)
						}
						for i, msg := range sent {
							res := e.next(t)
							if len(msg) <= 64 || rk.name == "platform" {
								assert.Equal(t, len(msg), res.size, "round %d datagram %d", round, i)
							} else {
								// The portable reader knows only that it did not fit.
								assert.Greater(t, res.size, len(res.b), "round %d datagram %d", round, i)
							}
							assert.True(t, bytes.Equal(msg[:min(len(msg), 64)], res.b), "round %d datagram %d differs", round, i)
							assert.Equal(t, addrOf(peer), res.from)
						}
						if rk.name == "platform" && keep == 0 {
							parked.waitHeld(t, 0)
						}
					}
					c.Close()
					select {
					case err := <-e.done:
						require.ErrorIs(t, err, net.ErrClosed)
					case <-time.After(testTimeout):
						t.Fatal("Each did not end when the socket closed")
					}
					r.Close()
					if rk.name == "platform" {
						assert.Zero(t, bufs.held(), "buffers held after the end")
					}
				})
			}
		}
	}
}

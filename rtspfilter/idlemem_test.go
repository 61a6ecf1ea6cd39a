package rtspfilter

import (
	"net"
	"testing"

	"github.com/stretchr/testify/assert"

	"fwproxy/internal/idlemem"
)

// maxIdleConnBytes bounds what an idle RTSP control connection may cost
// in heap and stacks: its two parked directions (goroutine stacks of 2–8
// KiB each) and a small wait buffer each, no read, head or copy buffer.
const maxIdleConnBytes = 20 << 10

// idleRTSP holds n filtered control connections idle after an OPTIONS and
// its answer, and returns what one costs.
func idleRTSP(tb testing.TB, n int) idlemem.Footprint {
	tb.Helper()
	f, _ := segEnv(tb)
	conns := make([]*Connection, 0, n)
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	request := []byte("OPTIONS rtsp://127.0.0.1/live RTSP/1.0\r\nCSeq: 1\r\nUser-Agent: idle\r\n\r\n")
	answer := []byte("RTSP/1.0 200 OK\r\nCSeq: 1\r\nPublic: DESCRIBE, SETUP, TEARDOWN, PLAY, PAUSE, GET_PARAMETER\r\n\r\n")
	return idlemem.Measure(tb, n, func() idlemem.Relay {
		c := f.NewConnection(segInfo())
		conns = append(conns, c)
		return c
	}, func(tb testing.TB, client, server net.Conn) {
		idlemem.Pass(tb, client, server, request)
		idlemem.Pass(tb, server, client, answer)
	})
}

// BenchmarkIdleConnectionMemory reports what one RTSP control connection
// held idle costs the proxy's process in the filter: a player holds one
// for as long as it plays.
func BenchmarkIdleConnectionMemory(b *testing.B) {
	for b.Loop() {
		idleRTSP(b, 2000).Report(b)
	}
}

// TestIdleConnectionMemory: a parked control connection holds no read,
// head or copy buffer in either direction.
func TestIdleConnectionMemory(t *testing.T) {
	fp := idleRTSP(t, 200)
	assert.InDelta(t, 2, fp.Goroutines, 0.1, "one goroutine per direction")
	assert.Less(t, fp.Bytes(), float64(maxIdleConnBytes), "heap %.0f B, stacks %.0f B per connection", fp.HeapBytes, fp.StackBytes)
}

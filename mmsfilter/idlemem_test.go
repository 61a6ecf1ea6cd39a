package mmsfilter

import (
	"net"
	"net/netip"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"fwproxy/internal/idlemem"
	"fwproxy/leases"
	"fwproxy/proxy"
)

// maxIdleConnBytes bounds what an idle MMS control connection may cost
// in heap and stacks: its two parked directions (goroutine stacks of 2–8
// KiB each) and a small read buffer each, no command-sized buffer.
const maxIdleConnBytes = 24 << 10

// idleMMS holds n filtered control connections idle after a Connect and
// its answer, and returns what one costs.
func idleMMS(tb testing.TB, n int) idlemem.Footprint {
	tb.Helper()
	lcfg := leases.DefaultConfig()
	lcfg.ListenIP = external
	lm, err := leases.New(lcfg, leases.Deps{})
	require.NoError(tb, err)
	defer lm.Close()
	f, err := New(Config{ExternalIP: external, AcquireTimeout: filterTestTimeout}, Deps{Leases: lm})
	require.NoError(tb, err)
	info := proxy.SessionInfo{
		Client: netip.MustParseAddrPort("127.0.0.1:51000"),
		Target: netip.MustParseAddrPort("127.0.0.1:1755"),
		Local:  netip.MustParseAddrPort("127.0.0.2:52000"),
	}
	conns := make([]*Connection, 0, n)
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	request := AppendCommand(nil, 0, connectMsg())
	answer := AppendCommand(nil, 0, connectedEXMsg())
	return idlemem.Measure(tb, n, func() idlemem.Relay {
		c := f.NewConnection(info)
		conns = append(conns, c)
		return c
	}, func(tb testing.TB, client, server net.Conn) {
		idlemem.Pass(tb, client, server, request)
		idlemem.Pass(tb, server, client, answer)
	})
}

// BenchmarkIdleConnectionMemory reports what one MMS control connection
// held idle costs the proxy's process in the filter: an announced-mode
// player holds one for as long as it plays.
func BenchmarkIdleConnectionMemory(b *testing.B) {
	for b.Loop() {
		idleMMS(b, 2000).Report(b)
	}
}

// TestIdleConnectionMemory: a parked control connection holds no
// command-sized buffer in either direction.
func TestIdleConnectionMemory(t *testing.T) {
	fp := idleMMS(t, 200)
	assert.InDelta(t, 2, fp.Goroutines, 0.1, "one goroutine per direction")
	assert.Less(t, fp.Bytes(), float64(maxIdleConnBytes), "heap %.0f B, stacks %.0f B per connection", fp.HeapBytes, fp.StackBytes)
}

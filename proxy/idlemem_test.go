package proxy

import (
	"io"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"fwproxy/internal/idlemem"
	"fwproxy/internal/leakcheck"
	"fwproxy/leases"
)

// BenchmarkIdleAssociationMemory holds idleAssociations UDP associations,
// each with its lease, silent, and reports what one costs the server: its
// goroutines, their stacks, and the Go heap (the client side of each, a TCP
// connection and a UDP socket without goroutines, is in the heap figure
// too: about 0.6 KiB). Kernel socket memory is not included; fwbench's
// memory scenario measures the whole process's RSS.
func BenchmarkIdleAssociationMemory(b *testing.B) {
	const idleAssociations = 2000
	for b.Loop() {
		cfg := DefaultConfig()
		allowLoopback(&cfg)
		cfg.MaxSessions = idleAssociations + 16
		cfg.MaxSessionsPerClient = 0
		m := newLeases(b, func(c *leases.Config) { c.MaxLeases, c.MaxLeasesPerClient = 0, 0 })
		srv, err := New(cfg, Deps{Leases: m})
		require.NoError(b, err)
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		require.NoError(b, err)
		go srv.Serve(ln)

		goroutines, stacks, heap := idlemem.Snapshot()
		clients := make([]idleClient, 0, idleAssociations)
		for range idleAssociations {
			clients = append(clients, openIdleAssociation(b, ln.Addr().String()))
		}
		// Every association's goroutines have parked once the count stops
		// moving; the count is bounded, so is the wait.
		idlemem.Settle(b)
		g, s, h := idlemem.Snapshot()
		n := float64(idleAssociations)
		b.ReportMetric(float64(g-goroutines)/n, "goroutines/assoc")
		b.ReportMetric(float64(s-stacks)/n, "stack-B/assoc")
		b.ReportMetric(float64(h-heap)/n, "heap-B/assoc")
		b.ReportMetric(float64(s-stacks+h-heap)/n, "B/assoc")

		for _, c := range clients {
			c.close()
		}
		srv.Close()
	}
}

// idleClient is the client side of one idle association.
type idleClient struct {
	ctl  net.Conn
	sock *net.UDPConn
}

func (c idleClient) close() {
	c.ctl.Close()
	c.sock.Close()
}

func openIdleAssociation(tb testing.TB, srvAddr string) idleClient {
	tb.Helper()
	sock, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	require.NoError(tb, err)
	ctl, err := net.Dial("tcp", srvAddr)
	require.NoError(tb, err)
	port := addrPortOf(sock.LocalAddr()).Port()
	req := append([]byte{5, 1, 0}, appendRequest(nil, CommandAssociate, spec(netip.AddrPortFrom(netip.IPv4Unspecified(), port)))...)
	_, err = ctl.Write(req)
	require.NoError(tb, err)
	var reply [2 + 10]byte
	ctl.SetReadDeadline(time.Now().Add(testTimeout))
	_, err = io.ReadFull(ctl, reply[:])
	require.NoError(tb, err)
	require.Equal(tb, byte(ReplySucceeded), reply[3])
	return idleClient{ctl: ctl, sock: sock}
}

// TestIdleAssociationGoroutines: an established association is its client
// reader and hold (and its lease's reader), parked with shallow stacks; the
// session goroutine, whose stack the handshake and the setup grew, has
// ended. Its close still ends the session once.
func TestIdleAssociationGoroutines(t *testing.T) {
	ts := startServer(t, testConfig(), Deps{Leases: newLeases(t, nil)})
	u := associate(t, ts, newUDPPeer(t, "127.0.0.1:0"), true)
	parked := func() bool {
		return leakcheck.Count("fwproxy/proxy.(*association).hold") == 1 &&
			leakcheck.Count("fwproxy/proxy.(*association).readClient") == 1
	}
	require.Eventually(t, parked, testTimeout, time.Millisecond, "the association's goroutines")
	assert.Zero(t, leakcheck.Count("fwproxy/proxy.(*session).run"), "no session goroutine is left waiting")
	assert.Zero(t, leakcheck.Count("fwproxy/proxy.(*association).fromClient"), "the waiting reader's stack holds no relaying frame")
	assert.Equal(t, 1, ts.rec.openSessions())

	u.closeGracefully()
	require.Eventually(t, func() bool { return ts.rec.openSessions() == 0 }, testTimeout, time.Millisecond, "the session ends")
	assert.Zero(t, leakcheck.Count("fwproxy/proxy.(*association).hold"))
}

package leases

import (
	"context"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// bareLease builds a lease with a real socket but no reader goroutine, so a
// test may drive handle() itself.
func bareLease(t testing.TB, m *Manager) *lease {
	c, err := net.ListenUDP("udp4", net.UDPAddrFromAddrPort(netip.AddrPortFrom(loopback, 0)))
	require.NoError(t, err)
	t.Cleanup(func() { c.Close() })
	return newLease(m, key(1), c, c.LocalAddr().(*net.UDPAddr).AddrPort().Port())
}

func TestAllocsInboundPath(t *testing.T) {
	m, err := New(testConfig(), Deps{})
	require.NoError(t, err)
	defer m.Close()
	l := bareLease(t, m)
	delivered := 0
	l.mu.Lock()
	l.addHolderLocked(Request{Kind: KindAssociation, Deliver: func(b []byte, _ netip.AddrPort) { delivered += len(b) }})
	l.mu.Unlock()
	// A full peer set makes the permitted check scan every entry.
	for i := range m.cfg.MaxPeers {
		l.permit(netip.AddrFrom4([4]byte{192, 0, 2, byte(i)}))
	}
	from := netip.AddrPortFrom(netip.AddrFrom4([4]byte{192, 0, 2, byte(m.cfg.MaxPeers - 1)}), 1755)
	b := make([]byte, 1200)
	allocs := testing.AllocsPerRun(1000, func() {
		l.handle(b, len(b), from)
	})
	require.Zero(t, allocs)
	require.Equal(t, 1001*1200, delivered)

	notPermitted := netip.AddrPortFrom(netip.MustParseAddr("198.51.100.1"), 1)
	allocs = testing.AllocsPerRun(1000, func() {
		l.handle(b, len(b), notPermitted)
	})
	require.Zero(t, allocs)
	l.flushCounts()
}

// TestAllocsSocketToDeliver measures the whole inbound path through a real
// socket: poller wake-up, pooled buffer, recvfrom, peer check, delivery,
// per-burst counting.
func TestAllocsSocketToDeliver(t *testing.T) {
	m, err := New(testConfig(), Deps{})
	require.NoError(t, err)
	defer m.Close()
	got := make(chan struct{}, 1)
	h, err := m.Acquire(context.Background(), key(1), Request{Kind: KindAssociation, Deliver: func([]byte, netip.AddrPort) {
		got <- struct{}{}
	}})
	require.NoError(t, err)
	srv := newPeer(t)
	h.AllowPeer(loopback)
	dst := h.LocalAddr()
	payload := make([]byte, 1200)
	timeout := time.NewTimer(waitLimit)
	defer timeout.Stop()
	roundTrip := func() {
		if _, err := srv.c.WriteToUDPAddrPort(payload, dst); err != nil {
			panic(err)
		}
		select {
		case <-got:
		case <-timeout.C:
			panic("datagram not delivered")
		}
	}
	for range 100 { // warm the buffer pool
		roundTrip()
	}
	allocs := testing.AllocsPerRun(1000, roundTrip)
	// The runtime's own bookkeeping (a rare poller or GC allocation) may
	// show as a fraction; the path itself must not allocate per datagram.
	require.Less(t, allocs, 0.05)
}

func TestAllocsSend(t *testing.T) {
	m, err := New(testConfig(), Deps{})
	require.NoError(t, err)
	defer m.Close()
	h, err := m.Acquire(context.Background(), key(1), Request{Kind: KindAssociation, Deliver: func([]byte, netip.AddrPort) {}})
	require.NoError(t, err)
	srv := newPeer(t)
	dst := srv.addr()
	b := make([]byte, 1200)
	require.NoError(t, h.Send(b, dst)) // first send permits the peer
	allocs := testing.AllocsPerRun(1000, func() {
		if err := h.Send(b, dst); err != nil {
			panic(err)
		}
	})
	require.Zero(t, allocs)
	allocs = testing.AllocsPerRun(1000, func() {
		if err := h.WriteTo(b, dst); err != nil {
			panic(err)
		}
	})
	require.Zero(t, allocs)
}

// TestReaderCountsFlushUnderFlood: a reader that never drains its socket
// still reports every maxPendingCounts datagrams.
func TestReaderCountsFlushUnderFlood(t *testing.T) {
	rec := newRecorder()
	m, err := New(testConfig(), Deps{Observer: rec})
	require.NoError(t, err)
	defer m.Close()
	l := bareLease(t, m)
	l.mu.Lock()
	l.addHolderLocked(Request{Kind: KindAssociation, Deliver: func([]byte, netip.AddrPort) {}})
	l.mu.Unlock()
	l.permit(loopback)
	from := netip.AddrPortFrom(loopback, 1)
	b := []byte("x")
	for range maxPendingCounts - 1 {
		l.handle(b, 1, from)
	}
	require.Zero(t, rec.outcome(OutcomeDelivered))
	l.handle(b, 1, from)
	require.EqualValues(t, maxPendingCounts, rec.outcome(OutcomeDelivered))
	l.handle(b, 1, netip.AddrPortFrom(netip.MustParseAddr("192.0.2.1"), 1))
	l.flushCounts()
	require.EqualValues(t, 1, rec.dropped(ReasonNotPermitted))
}

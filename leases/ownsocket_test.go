package leases

import (
	"net"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"fwproxy/internal/selfaddr"
)

// loopDeliverer is an announced-mode DeliverFunc that, like the MMS
// filter's, writes each datagram unwrapped to a fixed address from the
// lease's own socket. It counts its calls, and signals each "marker"
// datagram instead of forwarding it.
type loopDeliverer struct {
	h       atomic.Pointer[Holder]
	to      netip.AddrPort
	calls   atomic.Int64
	markers chan struct{}
	errs    sync.Map // error text -> true
}

func (d *loopDeliverer) deliver(b []byte, _ netip.AddrPort) {
	d.calls.Add(1)
	if string(b) == "marker" {
		d.markers <- struct{}{}
		return
	}
	if h := d.h.Load(); h != nil {
		if err := h.WriteTo(b, d.to); err != nil {
			d.errs.Store(err.Error(), true)
		}
	}
}

func (d *loopDeliverer) waitMarker(t *testing.T) {
	t.Helper()
	select {
	case <-d.markers:
	case <-ctxT(t).Done():
		t.Fatal("marker datagram not delivered")
	}
}

// TestDeliveryToOwnSocketIsDropped is issue 10 case 4 at the lease: an
// announced holder whose delivery address is the lease's own socket (or
// another lease's) must not loop a datagram through the proxy for ever.
// Each such delivery is dropped and counted once (own_socket), instead of
// delivered, and logged once per lease.
func TestDeliveryToOwnSocketIsDropped(t *testing.T) {
	const n = 20
	tests := []struct {
		name string
		// to is where the lease delivers: its own socket, or another one's.
		to func(t *testing.T, env *testEnv, own *Holder) netip.AddrPort
	}{
		{"its own socket", func(_ *testing.T, _ *testEnv, own *Holder) netip.AddrPort { return own.LocalAddr() }},
		{"its own socket, IPv4-mapped", func(_ *testing.T, _ *testEnv, own *Holder) netip.AddrPort {
			return netip.AddrPortFrom(netip.AddrFrom16(own.LocalAddr().Addr().As16()), own.Port())
		}},
		{"another lease's socket", func(t *testing.T, env *testEnv, _ *Holder) netip.AddrPort {
			other, err := env.m.Acquire(ctxT(t), key(7101), announced(newSink()))
			require.NoError(t, err)
			other.AllowPeer(loopback) // the media server's IP is the proxy's too
			return other.LocalAddr()
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			env := newEnv(t, testConfig())
			srv := newPeer(t)
			d := &loopDeliverer{markers: make(chan struct{}, 4)}
			h, err := env.m.Acquire(ctxT(t), key(7100), Request{Kind: KindAnnounced, Deliver: d.deliver})
			require.NoError(t, err)
			d.h.Store(h)
			d.to = tt.to(t, env, h)
			h.AllowPeer(loopback)

			var payloads []string
			for i := range n {
				payloads = append(payloads, strings.Repeat("x", i+1))
			}
			srv.send(t, h.LocalAddr(), payloads...)
			srv.send(t, h.LocalAddr(), "marker")
			d.waitMarker(t)
			// A loop would keep re-sending every datagram: by the time a
			// second marker sent now is delivered, each would have come
			// round at least once more.
			srv.send(t, h.LocalAddr(), "marker")
			d.waitMarker(t)
			assert.EqualValues(t, n+2, d.calls.Load(), "every datagram reached the DeliverFunc once, none came back")
			env.rec.waitFor(t, "own_socket drops", func() bool { return env.rec.dropped(ReasonOwnSocket) >= n })
			assert.EqualValues(t, n, env.rec.dropped(ReasonOwnSocket), "each refused delivery counted once")
			env.rec.waitFor(t, "markers delivered", func() bool { return env.rec.outcome(OutcomeDelivered) >= 2 })
			assert.EqualValues(t, 2, env.rec.outcome(OutcomeDelivered), "refused deliveries are not counted delivered")
			_, refused := d.errs.Load(ErrOwnSocket.Error())
			assert.True(t, refused, "WriteTo returns ErrOwnSocket")
			assert.Equal(t, 1, strings.Count(env.logs.String(), "proxy's own sockets"), "logged once per lease, not per datagram")
		})
	}
}

// TestFlushToOwnSocketIsDropped: buffered datagrams flushed to a delivery
// address that is one of the proxy's sockets are counted own_socket, not
// flushed.
func TestFlushToOwnSocketIsDropped(t *testing.T) {
	env := newEnv(t, testConfig())
	srv := newPeer(t)
	d := &loopDeliverer{markers: make(chan struct{}, 1)}
	h, err := env.m.Acquire(ctxT(t), key(7110), Request{Kind: KindAnnounced, Deliver: d.deliver})
	require.NoError(t, err)
	d.h.Store(h)
	d.to = h.LocalAddr()
	h.AllowPeer(loopback)
	h.Hold()
	srv.send(t, h.LocalAddr(), "a", "bb", "ccc")
	env.rec.waitFor(t, "held", func() bool { return env.rec.outcome(OutcomeBuffered) == 3 })
	h.Resume()
	assert.EqualValues(t, 3, d.calls.Load())
	assert.EqualValues(t, 3, env.rec.dropped(ReasonOwnSocket))
	assert.Zero(t, env.rec.outcome(OutcomeFlushed))
}

// TestSendToOwnSocketIsRefused: a client's datagram addressed to one of the
// proxy's sockets (a lease's, or anything the proxy registered in the
// shared set) never leaves, is counted, and does not make the destination
// a permitted peer.
func TestSendToOwnSocketIsRefused(t *testing.T) {
	env := newEnv(t, testConfig())
	h, err := env.m.Acquire(ctxT(t), Key{Client: netip.MustParseAddr("10.0.0.7"), Port: 7120}, assoc(newSink()))
	require.NoError(t, err)
	other, err := env.m.Acquire(ctxT(t), key(7121), assoc(newSink()))
	require.NoError(t, err)
	listener, err := net.ListenUDP("udp4", net.UDPAddrFromAddrPort(netip.AddrPortFrom(netip.MustParseAddr("127.0.0.3"), 0)))
	require.NoError(t, err)
	defer listener.Close()
	remove := env.self.AddAddr(listener.LocalAddr())

	for _, dst := range []netip.AddrPort{h.LocalAddr(), other.LocalAddr(), listener.LocalAddr().(*net.UDPAddr).AddrPort()} {
		require.ErrorIs(t, h.Send([]byte("loop"), dst), ErrOwnSocket, "%v", dst)
	}
	assert.EqualValues(t, 3, env.rec.dropped(ReasonOwnSocket))
	assert.False(t, h.l.permitted(netip.MustParseAddr("127.0.0.3")), "a refused destination is not permitted")
	assert.Equal(t, 1, strings.Count(env.logs.String(), "proxy's own sockets"))

	remove()
	require.NoError(t, h.Send([]byte("ok"), listener.LocalAddr().(*net.UDPAddr).AddrPort()), "no longer one of ours")
}

// TestLeaseSocketsRegisteredWhileBound: every lease socket is in the shared
// set exactly while it is bound: active, lingering, and not after expiry,
// eviction or Close.
func TestLeaseSocketsRegisteredWhileBound(t *testing.T) {
	cfg := testConfig()
	cfg.MaxLeases = 2
	env := newEnv(t, cfg)
	h1, err := env.m.Acquire(ctxT(t), key(1), assoc(newSink()))
	require.NoError(t, err)
	h2, err := env.m.Acquire(ctxT(t), key(2), assoc(newSink()))
	require.NoError(t, err)
	a1, a2 := h1.LocalAddr(), h2.LocalAddr()
	require.True(t, env.self.Contains(selfaddr.UDP, a1))
	require.True(t, env.self.Contains(selfaddr.UDP, a2))
	require.Equal(t, 2, env.self.Len())

	h1.Release()
	require.True(t, env.self.Contains(selfaddr.UDP, a1), "a lingering lease still owns its socket")
	h3, err := env.m.Acquire(ctxT(t), key(3), assoc(newSink())) // evicts key 1
	require.NoError(t, err)
	require.False(t, env.self.Contains(selfaddr.UDP, a1), "evicted")
	h2.Release()
	env.clock.Advance(cfg.Linger)
	require.False(t, env.self.Contains(selfaddr.UDP, a2), "expired")
	require.True(t, env.self.Contains(selfaddr.UDP, h3.LocalAddr()))
	require.NoError(t, env.m.Close())
	require.Zero(t, env.self.Len(), "Close unregisters every socket")
}

// TestNeverBindsTheDeliveryAddress is the root cause of issue 10 case 4:
// with the client on the external IP, port preservation would give an
// announced lease the very port the client announced, so delivery to the
// client would reach the lease itself and the client could never bind its
// port. Request.DeliverTo keeps the lease off that address.
func TestNeverBindsTheDeliveryAddress(t *testing.T) {
	env := newEnv(t, testConfig())
	p := freePort(t)
	client := Key{Client: loopback, Port: p}
	deliverTo := netip.AddrPortFrom(loopback, p)

	_, err := env.m.Acquire(ctxT(t), client, Request{Kind: KindAnnounced, WantPort: p, ExactPort: true, DeliverTo: deliverTo, Deliver: nopDeliver})
	require.ErrorIs(t, err, ErrPortTaken, "the exact port is the delivery address")
	h, err := env.m.Acquire(ctxT(t), client, Request{Kind: KindAnnounced, WantPort: p, DeliverTo: deliverTo, Deliver: nopDeliver})
	require.NoError(t, err)
	require.NotEqual(t, p, h.Port(), "falls back to another port")
	require.True(t, portFree(p), "the client can still bind its port")

	// Only the delivery address is avoided: a client elsewhere keeps its
	// port (port preservation).
	q := freePort(t)
	h2, err := env.m.Acquire(ctxT(t), Key{Client: netip.MustParseAddr("10.0.0.5"), Port: q},
		Request{Kind: KindAnnounced, WantPort: q, DeliverTo: netip.AddrPortFrom(netip.MustParseAddr("10.0.0.5"), q), Deliver: nopDeliver})
	require.NoError(t, err)
	require.Equal(t, q, h2.Port())
}

package leases

import (
	"net/netip"

	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestHoldBuffersAnnouncedDeliveryUntilResume(t *testing.T) {
	env := newEnv(t, testConfig())
	p := newPeer(t)
	s := newSink()
	h, err := env.m.Acquire(ctxT(t), key(7000), announced(s))
	require.NoError(t, err)
	h.AllowPeer(p.addr().Addr())

	p.send(t, h.LocalAddr(), "a1", "a2")
	s.waitN(t, 2)
	h.Hold()
	p.send(t, h.LocalAddr(), "h1", "h2", "h3")
	env.rec.waitFor(t, "3 buffered", func() bool { return env.rec.outcome(OutcomeBuffered) == 3 })
	assert.Len(t, s.all(), 2, "nothing delivered while held")

	h.Resume()
	p.send(t, h.LocalAddr(), "after")
	assert.Equal(t, []string{"a1", "a2", "h1", "h2", "h3", "after"}, s.waitN(t, 6), "held datagrams first, in order")
	assert.EqualValues(t, 3, env.rec.outcome(OutcomeFlushed))
}

func TestHoldDoesNotPauseAnAssociation(t *testing.T) {
	env := newEnv(t, testConfig())
	p := newPeer(t)
	assocSink, annSink := newSink(), newSink()
	a, err := env.m.Acquire(ctxT(t), key(7001), assoc(assocSink))
	require.NoError(t, err)
	m, err := env.m.Acquire(ctxT(t), key(7001), announced(annSink))
	require.NoError(t, err)
	m.AllowPeer(p.addr().Addr())
	m.Hold()
	p.send(t, a.LocalAddr(), "x")
	assert.Equal(t, []string{"x"}, assocSink.waitN(t, 1))
	assert.Empty(t, annSink.all())
}

func TestReleaseOfHoldingHolderFlushesToTheNext(t *testing.T) {
	env := newEnv(t, testConfig())
	p := newPeer(t)
	first, second := newSink(), newSink()
	h1, err := env.m.Acquire(ctxT(t), key(7002), announced(first))
	require.NoError(t, err)
	h1.AllowPeer(p.addr().Addr())
	h2, err := env.m.Acquire(ctxT(t), key(7002), announced(second))
	require.NoError(t, err)
	h2.Hold()
	p.send(t, h2.LocalAddr(), "w1", "w2")
	env.rec.waitFor(t, "2 buffered", func() bool { return env.rec.outcome(OutcomeBuffered) == 2 })

	h2.Release()
	assert.Equal(t, []string{"w1", "w2"}, first.waitN(t, 2), "the remaining holder gets what waited")
	h1.Release()
}

func TestHoldWithLingerZeroDrops(t *testing.T) {
	cfg := testConfig()
	cfg.Linger = 0
	env := newEnv(t, cfg)
	p := newPeer(t)
	s := newSink()
	h, err := env.m.Acquire(ctxT(t), key(7003), announced(s))
	require.NoError(t, err)
	h.AllowPeer(p.addr().Addr())
	h.Hold()
	p.send(t, h.LocalAddr(), "lost")
	env.rec.waitFor(t, "a no_holder drop", func() bool { return env.rec.dropped(ReasonNoHolder) == 1 })
	h.Resume()
	p.send(t, h.LocalAddr(), "kept")
	assert.Equal(t, []string{"kept"}, s.waitN(t, 1))
}

// TestAllowPeerSurvivesAFullPeerSet: a client that sends to more hosts than
// MaxPeers must not push the media server a filter registered out of the
// permitted set.
func TestAllowPeerSurvivesAFullPeerSet(t *testing.T) {
	cfg := testConfig()
	cfg.MaxPeers = 2
	env := newEnv(t, cfg)
	media := newPeer(t)
	s := newSink()
	h, err := env.m.Acquire(ctxT(t), key(7004), assoc(s))
	require.NoError(t, err)
	h.AllowPeer(media.addr().Addr())
	for i := range 5 {
		require.NoError(t, h.Send([]byte("x"), netip.AddrPortFrom(netip.AddrFrom4([4]byte{127, 0, 1, byte(i + 1)}), 9)))
	}
	media.send(t, h.LocalAddr(), "still permitted")
	assert.Equal(t, []string{"still permitted"}, s.waitN(t, 1))
}

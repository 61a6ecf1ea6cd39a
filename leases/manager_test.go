package leases

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestConfigValidate(t *testing.T) {
	tests := []struct {
		name    string
		mutate  func(*Config)
		wantErr string
	}{
		{"default", func(*Config) {}, ""},
		{"linger 0 needs no buffer cap", func(c *Config) {
			c.Linger = 0
			c.MaxBufferedDatagrams, c.MaxBufferedBytes, c.MaxBufferedBytesTotal = 0, 0, 0
		}, ""},
		{"no listen ip", func(c *Config) { c.ListenIP = netip.Addr{} }, "ListenIP is not set"},
		{"wildcard v4", func(c *Config) { c.ListenIP = netip.IPv4Unspecified() }, "wildcard"},
		{"wildcard v6", func(c *Config) { c.ListenIP = netip.IPv6Unspecified() }, "wildcard"},
		{"zone", func(c *Config) { c.ListenIP = netip.MustParseAddr("fe80::1%lo") }, "zone"},
		{"port min 0", func(c *Config) { c.PortMin = 0 }, "PortMin is 0"},
		{"port max below min", func(c *Config) { c.PortMin, c.PortMax = 2000, 1999 }, "PortMax 1999 < PortMin 2000"},
		{"negative attempts", func(c *Config) { c.BindAttempts = -1 }, "BindAttempts"},
		{"negative linger", func(c *Config) { c.Linger = -time.Second }, "Linger"},
		{"negative max leases", func(c *Config) { c.MaxLeases = -1 }, "MaxLeases -1"},
		{"negative per client", func(c *Config) { c.MaxLeasesPerClient = -1 }, "MaxLeasesPerClient"},
		{"negative datagrams", func(c *Config) { c.MaxBufferedDatagrams = -1 }, "MaxBufferedDatagrams"},
		{"negative bytes", func(c *Config) { c.MaxBufferedBytes = -1 }, "MaxBufferedBytes -1"},
		{"negative total", func(c *Config) { c.MaxBufferedBytesTotal = -1 }, "MaxBufferedBytesTotal"},
		{"unbounded buffer", func(c *Config) {
			c.MaxBufferedDatagrams, c.MaxBufferedBytes, c.MaxBufferedBytesTotal = 0, 0, 0
		}, "at least one buffer cap"},
		{"no peers", func(c *Config) { c.MaxPeers = 0 }, "MaxPeers"},
		{"datagram size 0", func(c *Config) { c.MaxDatagramSize = 0 }, "MaxDatagramSize"},
		{"datagram size too big", func(c *Config) { c.MaxDatagramSize = 70000 }, "MaxDatagramSize"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := DefaultConfig()
			tt.mutate(&cfg)
			err := cfg.Validate()
			if tt.wantErr == "" {
				require.NoError(t, err)
				return
			}
			require.ErrorContains(t, err, tt.wantErr)
			_, err = New(cfg, Deps{})
			require.ErrorContains(t, err, tt.wantErr)
		})
	}
}

func TestEnumStrings(t *testing.T) {
	// Every value must be a valid Prometheus label value and distinct.
	seen := map[string]bool{}
	check := func(s string) {
		t.Helper()
		require.Regexp(t, `^[a-z][a-z_]*$`, s)
		require.False(t, seen[s], "duplicate %q", s)
		seen[s] = true
	}
	for e := Event(1); e < NumEvents; e++ {
		check("event_" + e.String())
	}
	for o := Outcome(1); o < NumOutcomes; o++ {
		check("outcome_" + o.String())
	}
	for r := DropReason(0); r < NumDropReasons; r++ {
		check("reason_" + r.String())
	}
	for f := FailReason(1); f < NumFailReasons; f++ {
		check("fail_" + f.String())
	}
	for k := Kind(1); k < NumKinds; k++ {
		check("kind_" + k.String())
	}
	for st := State(1); st < NumStates; st++ {
		check("state_" + st.String())
	}
	// One past the last has no name: the counts are not stale.
	for _, s := range []string{NumEvents.String(), NumOutcomes.String(), NumDropReasons.String(), NumFailReasons.String(), NumKinds.String(), NumStates.String()} {
		assert.Equal(t, "unknown", s)
	}
	assert.Equal(t, "unknown", Event(200).String())
	assert.Equal(t, "association", KindAssociation.String())
	assert.Equal(t, "lingering", StateLingering.String())
}

func TestReleaseThenAcquireReclaims(t *testing.T) {
	env := newEnv(t, testConfig())
	srv := newPeer(t)
	k := key(7000)
	want := freePort(t)

	s1 := newSink()
	h1, err := env.m.Acquire(ctxT(t), k, Request{Kind: KindAssociation, WantPort: want, Deliver: s1.deliver})
	require.NoError(t, err)
	require.Equal(t, want, h1.Port(), "port preservation")
	require.Equal(t, netip.AddrPortFrom(loopback, want), h1.LocalAddr())
	require.Equal(t, k, h1.Key())
	require.NoError(t, h1.Send([]byte("hello"), srv.addr()))

	srv.send(t, h1.LocalAddr(), seq("d", 1, 3)...)
	require.Equal(t, seq("d", 1, 3), s1.waitN(t, 3))

	h1.Release()
	in, ok := snapshotOf(env.m, k)
	require.True(t, ok)
	require.Equal(t, StateLingering, in.State)
	require.Equal(t, env.clock.Now().Add(10*time.Second), in.LingerDeadline)
	require.Zero(t, in.Associations)
	env.clock.Advance(3 * time.Second)
	in, _ = snapshotOf(env.m, k)
	require.Equal(t, 3*time.Second, in.Age)
	require.Equal(t, 1, in.Peers)

	srv.send(t, h1.LocalAddr(), seq("d", 4, 6)...)
	env.rec.waitFor(t, "3 buffered", func() bool { return env.rec.outcome(OutcomeBuffered) == 3 })
	st := env.m.Stats()
	require.Equal(t, Stats{Leases: 1, Lingering: 1, BufferedDatagrams: 3, BufferedBytes: 3 * int64(bufferedCost(2))}, st, "bytes are charged, not just payload")

	s2 := newSink()
	h2, err := env.m.Acquire(ctxT(t), k, Request{Kind: KindAssociation, WantPort: want, Deliver: s2.deliver})
	require.NoError(t, err)
	require.Equal(t, h1.Port(), h2.Port(), "reclaim keeps the port")
	// The flush happens inside Acquire: the buffer is there before it returns.
	require.Equal(t, seq("d", 4, 6), s2.all())
	srv.send(t, h2.LocalAddr(), "d7")
	require.Equal(t, seq("d", 4, 7), s2.waitN(t, 4))
	require.Equal(t, seq("d", 1, 3), s1.all(), "old holder gets nothing after release")

	assert.EqualValues(t, 1, env.rec.event(EventAcquire))
	assert.EqualValues(t, 1, env.rec.event(EventReclaim))
	assert.EqualValues(t, 1, env.rec.event(EventRelease))
	assert.EqualValues(t, 3, env.rec.outcome(OutcomeFlushed))
	assert.Equal(t, Stats{Leases: 1, Active: 1}, env.m.Stats())
	assert.Zero(t, env.clock.pending(), "reclaim stops the linger timer")
	assert.Contains(t, env.logs.String(), "lease reclaim")
}

func TestAcquireBeforeReleaseHandsOver(t *testing.T) {
	env := newEnv(t, testConfig())
	srv := newPeer(t)
	k := key(7001)

	s1, s2 := newSink(), newSink()
	h1, err := env.m.Acquire(ctxT(t), k, assoc(s1))
	require.NoError(t, err)
	h1.AllowPeer(loopback)
	srv.send(t, h1.LocalAddr(), "a1")
	s1.waitN(t, 1)

	h2, err := env.m.Acquire(ctxT(t), k, assoc(s2))
	require.NoError(t, err)
	require.Equal(t, h1.Port(), h2.Port())
	require.Greater(t, h2.Generation(), h1.Generation())
	srv.send(t, h2.LocalAddr(), "b1")
	require.Equal(t, []string{"b1"}, s2.waitN(t, 1))

	// The stale release: it must neither start a linger nor steal delivery.
	h1.Release()
	h1.Release()
	in, _ := snapshotOf(env.m, k)
	require.Equal(t, StateActive, in.State)
	require.Equal(t, 1, in.Associations)
	srv.send(t, h2.LocalAddr(), "b2")
	require.Equal(t, []string{"b1", "b2"}, s2.waitN(t, 2))
	require.Equal(t, []string{"a1"}, s1.all())
	require.ErrorIs(t, h1.Send([]byte("x"), srv.addr()), ErrReleased)
	require.ErrorIs(t, h1.WriteTo([]byte("x"), srv.addr()), ErrReleased)

	h2.Release()
	in, _ = snapshotOf(env.m, k)
	require.Equal(t, StateLingering, in.State)
	assert.EqualValues(t, 1, env.rec.event(EventHandover))
	assert.EqualValues(t, 2, env.rec.event(EventRelease), "second Release of h1 is a no-op")
}

// TestHandoverReturnsToLiveHolder is issue 10 case 5: a second association
// for the same key that opens and closes while the first still lives (or
// fails right after its handover, which releases it just the same) must give
// delivery back to the first, not strand it with a buffer that can only
// fill up. Datagrams held for the holder meanwhile (here: by an announced
// holder's Hold on a lease that never had an association) are flushed to
// it first, in order.
func TestHandoverReturnsToLiveHolder(t *testing.T) {
	const burst = 300 // more than MaxBufferedDatagrams (256)
	tests := []struct {
		name string
		kind Kind
		// between runs after the second holder's acquire, before its
		// release; it returns what the first holder must get first.
		between func(t *testing.T, env *testEnv, srv *peer, h1, h2 *Holder, s2 *sink) []string
	}{
		{"second association opens and closes", KindAssociation,
			func(t *testing.T, _ *testEnv, srv *peer, _, h2 *Holder, s2 *sink) []string {
				srv.send(t, h2.LocalAddr(), "b1")
				require.Equal(t, []string{"b1"}, s2.waitN(t, 1))
				return nil
			}},
		{"second association fails after its handover", KindAssociation,
			func(*testing.T, *testEnv, *peer, *Holder, *Holder, *sink) []string { return nil }},
		{"newest announced holder leaves while holding", KindAnnounced,
			func(t *testing.T, env *testEnv, srv *peer, _, h2 *Holder, _ *sink) []string {
				h2.Hold()
				srv.send(t, h2.LocalAddr(), "w1", "w2", "w3")
				env.rec.waitFor(t, "held", func() bool { return env.rec.outcome(OutcomeBuffered) == 3 })
				return []string{"w1", "w2", "w3"}
			}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			env := newEnv(t, testConfig())
			srv := newPeer(t)
			k := key(7007)
			s1, s2 := newSink(), newSink()
			h1, err := env.m.Acquire(ctxT(t), k, Request{Kind: tt.kind, Deliver: s1.deliver})
			require.NoError(t, err)
			h1.AllowPeer(loopback)
			srv.send(t, h1.LocalAddr(), "a1")
			require.Equal(t, []string{"a1"}, s1.waitN(t, 1))

			h2, err := env.m.Acquire(ctxT(t), k, Request{Kind: tt.kind, Deliver: s2.deliver})
			require.NoError(t, err)
			require.EqualValues(t, 1, env.rec.event(EventHandover))
			flushed := tt.between(t, env, srv, h1, h2, s2)
			got2 := len(s2.all())
			h2.Release()
			require.Equal(t, append([]string{"a1"}, flushed...), s1.all(), "held datagrams flushed to the live holder at once, in order")

			in, _ := snapshotOf(env.m, k)
			require.Equal(t, StateActive, in.State)
			// In rounds, so that the kernel's socket buffer never overflows.
			want := append([]string{"a1"}, flushed...)
			for i := 1; i <= burst; i += 50 {
				send := seq("c", i, i+49)
				srv.send(t, h1.LocalAddr(), send...)
				want = append(want, send...)
				require.Equal(t, want, s1.waitN(t, len(want)), "the live holder gets everything after, in order")
			}
			assert.Len(t, s2.all(), got2, "the released holder gets nothing more")
			assert.Zero(t, env.m.Stats().BufferedDatagrams)
			assert.Zero(t, env.rec.dropped(ReasonBufferFull))

			// Its own release then starts the linger as usual.
			h1.Release()
			in, _ = snapshotOf(env.m, k)
			require.Equal(t, StateLingering, in.State)
		})
	}
}

// TestAssociationGraceEnds: when the last association of a lease leaves
// while an announced holder (an MMS session that joined it) stays, data
// waits in the buffer for the firewall client's rebind, but only for
// Linger: a lease with a live holder is never left undeliverable for as
// long as that holder lives.
func TestAssociationGraceEnds(t *testing.T) {
	tests := []struct {
		name        string
		rebind      bool
		wantAnn     []string
		wantRebound []string
	}{
		{"association rebinds within the grace", true, nil, []string{"w1", "w2", "w3"}},
		{"no association comes back", false, []string{"w1", "w2", "w3"}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			env := newEnv(t, testConfig())
			srv := newPeer(t)
			k := key(7060)
			an, as1, as2 := newSink(), newSink(), newSink()
			m, err := env.m.Acquire(ctxT(t), k, announced(an))
			require.NoError(t, err)
			m.AllowPeer(loopback)
			a1, err := env.m.Acquire(ctxT(t), k, assoc(as1))
			require.NoError(t, err)
			srv.send(t, m.LocalAddr(), "x1")
			require.Equal(t, []string{"x1"}, as1.waitN(t, 1))

			a1.Release()
			require.Equal(t, 1, env.clock.pending(), "the grace timer runs")
			srv.send(t, m.LocalAddr(), "w1", "w2")
			env.rec.waitFor(t, "buffered", func() bool { return env.rec.outcome(OutcomeBuffered) == 2 })
			if tt.rebind {
				_, err := env.m.Acquire(ctxT(t), k, assoc(as2))
				require.NoError(t, err)
				require.Zero(t, env.clock.pending(), "a returning association ends the grace")
				env.clock.Advance(testConfig().Linger)
			} else {
				env.clock.Advance(testConfig().Linger)
				require.Zero(t, env.clock.pending())
			}
			srv.send(t, m.LocalAddr(), "w3")
			if tt.rebind {
				require.Equal(t, tt.wantRebound, as2.waitN(t, 3))
				assert.Empty(t, an.all())
			} else {
				require.Equal(t, tt.wantAnn, an.waitN(t, 3), "the announced holder gets what waited, in order, then the rest")
			}
			in, _ := snapshotOf(env.m, k)
			assert.Equal(t, StateActive, in.State)
			assert.Zero(t, in.BufferedDatagrams)
		})
	}
}

func TestAcquireWaitsForClose(t *testing.T) {
	cfg := testConfig()
	cfg.Linger = 0
	env := newEnv(t, cfg)
	srv := newPeer(t)
	k := key(7002)
	want := freePort(t)
	req := func(s *sink) Request {
		return Request{Kind: KindAssociation, WantPort: want, ExactPort: true, Deliver: s.deliver}
	}

	s1 := newSink()
	h1, err := env.m.Acquire(ctxT(t), k, req(s1))
	require.NoError(t, err)
	h1.AllowPeer(loopback)
	// Park the reader (outside the delivery lock) so the close cannot finish.
	unblock := make(chan struct{})
	env.rec.block.Store(&unblock)
	srv.send(t, h1.LocalAddr(), "x")
	<-env.rec.blocked
	env.rec.block.Store(nil)

	released := make(chan struct{})
	go func() { h1.Release(); close(released) }()
	waitUntil(t, "close in progress", func() bool {
		in, ok := snapshotOf(env.m, k)
		return ok && in.State == StateClosing
	})
	require.Equal(t, Stats{Leases: 1, Closing: 1}, env.m.Stats())

	type result struct {
		h   *Holder
		err error
	}
	got := make(chan result, 1)
	go func() {
		h, err := env.m.Acquire(ctxT(t), k, req(newSink()))
		got <- result{h, err}
	}()
	// The release and the new acquire are both on the key.
	waitUsers(t, env.m, k, 2)
	select {
	case r := <-got:
		t.Fatalf("acquire returned during close: %v", r.err)
	default:
	}

	close(unblock)
	<-released
	r := <-got
	require.NoError(t, r.err, "never address-in-use for the own key's previous socket")
	require.Equal(t, want, r.h.Port())
	require.Equal(t, []string{"x"}, s1.all())
	assert.EqualValues(t, 1, env.rec.event(EventClose))
	assert.EqualValues(t, 2, env.rec.event(EventAcquire))
}

// waitUsers waits until n goroutines hold or wait for k's turn.
func waitUsers(t *testing.T, m *Manager, k Key, n int) {
	t.Helper()
	waitUntil(t, "key users", func() bool {
		m.mu.Lock()
		defer m.mu.Unlock()
		s := m.slots[k]
		return s != nil && s.users >= n
	})
}

func TestLingerExpiry(t *testing.T) {
	env := newEnv(t, testConfig())
	srv := newPeer(t)
	k := key(7003)
	s1 := newSink()
	h1, err := env.m.Acquire(ctxT(t), k, assoc(s1))
	require.NoError(t, err)
	port := h1.Port()
	require.NoError(t, h1.Send([]byte("hi"), srv.addr()))
	h1.Release()
	srv.send(t, h1.LocalAddr(), seq("l", 1, 3)...)
	env.rec.waitFor(t, "buffered", func() bool { return env.rec.outcome(OutcomeBuffered) == 3 })

	env.clock.Advance(9 * time.Second)
	in, ok := snapshotOf(env.m, k)
	require.True(t, ok, "not yet expired")
	require.Equal(t, StateLingering, in.State)

	env.clock.Advance(time.Second)
	_, ok = snapshotOf(env.m, k)
	require.False(t, ok)
	require.True(t, portFree(port), "socket closed")
	assert.EqualValues(t, 3, env.rec.dropped(ReasonExpiredUnflushed))
	assert.EqualValues(t, 1, env.rec.event(EventExpire))
	assert.Equal(t, Stats{}, env.m.Stats())

	h2, err := env.m.Acquire(ctxT(t), k, assoc(newSink()))
	require.NoError(t, err)
	assert.EqualValues(t, 2, env.rec.event(EventAcquire), "a fresh lease, not a reclaim")
	h2.Release()
}

func TestExpiryRacingReclaim(t *testing.T) {
	t.Run("stale timer after reclaim", func(t *testing.T) {
		env := newEnv(t, testConfig())
		k := key(7004)
		h1, err := env.m.Acquire(ctxT(t), k, assoc(newSink()))
		require.NoError(t, err)
		h1.Release()
		env.m.mu.Lock()
		l := env.m.slots[k].lease
		env.m.mu.Unlock()
		l.mu.Lock()
		staleSeq := l.lingerSeq
		l.mu.Unlock()

		h2, err := env.m.Acquire(ctxT(t), k, assoc(newSink()))
		require.NoError(t, err)
		// The timer fired just before the reclaim stopped it: its callback
		// runs late and must see that its linger period is over.
		env.m.expire(l, staleSeq)
		in, ok := snapshotOf(env.m, k)
		require.True(t, ok)
		require.Equal(t, StateActive, in.State)
		require.Equal(t, h2.Port(), in.Port)
		assert.Zero(t, env.rec.event(EventExpire))

		// A new linger period after a second release is not confused with
		// the old one either.
		h2.Release()
		env.m.expire(l, staleSeq)
		in, _ = snapshotOf(env.m, k)
		require.Equal(t, StateLingering, in.State)
	})
	t.Run("expiry first then acquire", func(t *testing.T) {
		env := newEnv(t, testConfig())
		k := key(7005)
		want := freePort(t)
		h1, err := env.m.Acquire(ctxT(t), k, Request{Kind: KindAssociation, WantPort: want, ExactPort: true, Deliver: newSink().deliver})
		require.NoError(t, err)
		h1.Release()
		env.clock.Advance(time.Minute)
		h2, err := env.m.Acquire(ctxT(t), k, Request{Kind: KindAssociation, WantPort: want, ExactPort: true, Deliver: newSink().deliver})
		require.NoError(t, err)
		require.Equal(t, want, h2.Port())
		assert.EqualValues(t, 1, env.rec.event(EventExpire))
	})
	t.Run("concurrent", func(t *testing.T) {
		env := newEnv(t, testConfig())
		k := key(7006)
		want := freePort(t)
		req := Request{Kind: KindAssociation, WantPort: want, ExactPort: true, Deliver: newSink().deliver}
		h, err := env.m.Acquire(ctxT(t), k, req)
		require.NoError(t, err)
		for i := range 50 {
			h.Release()
			var wg sync.WaitGroup
			wg.Add(1)
			go func() { defer wg.Done(); env.clock.Advance(10 * time.Second) }()
			h, err = env.m.Acquire(ctxT(t), k, req)
			wg.Wait()
			require.NoError(t, err, "round %d", i)
			require.Equal(t, want, h.Port())
			in, ok := snapshotOf(env.m, k)
			require.True(t, ok)
			require.Equal(t, StateActive, in.State)
		}
		// Every round either reclaimed, or expired and then acquired anew.
		require.EqualValues(t, 50, env.rec.event(EventReclaim)+env.rec.event(EventExpire))
		require.Equal(t, env.rec.event(EventExpire)+1, env.rec.event(EventAcquire))
		t.Logf("reclaims %d, expiries %d", env.rec.event(EventReclaim), env.rec.event(EventExpire))
	})
}

func TestCaps(t *testing.T) {
	otherClient := netip.MustParseAddr("10.0.0.6")
	t.Run("per client", func(t *testing.T) {
		cfg := testConfig()
		cfg.MaxLeasesPerClient = 2
		env := newEnv(t, cfg)
		srv := newPeer(t)
		a, err := env.m.Acquire(ctxT(t), key(1), assoc(newSink()))
		require.NoError(t, err)
		_, err = env.m.Acquire(ctxT(t), key(2), assoc(newSink()))
		require.NoError(t, err)
		_, err = env.m.Acquire(ctxT(t), key(3), assoc(newSink()))
		require.ErrorIs(t, err, ErrClientLimit)
		require.ErrorContains(t, err, "leases: acquire 10.0.0.5//3")
		// Another client is not affected.
		_, err = env.m.Acquire(ctxT(t), Key{Client: otherClient, Port: 3}, assoc(newSink()))
		require.NoError(t, err)
		// A lingering lease of the client is evicted to make room.
		require.NoError(t, a.Send([]byte("x"), srv.addr()))
		a.Release()
		srv.send(t, a.LocalAddr(), "buffered")
		env.rec.waitFor(t, "buffered", func() bool { return env.rec.outcome(OutcomeBuffered) == 1 })
		_, err = env.m.Acquire(ctxT(t), key(3), assoc(newSink()))
		require.NoError(t, err)
		_, ok := snapshotOf(env.m, key(1))
		require.False(t, ok)
		assert.EqualValues(t, 1, env.rec.event(EventEvict))
		assert.EqualValues(t, 1, env.rec.dropped(ReasonEvicted))
		assert.EqualValues(t, 1, env.rec.failed(FailClientLimit))
		assert.Zero(t, env.clock.pending(), "evicted lease's timer stopped")
	})
	t.Run("global evicts oldest lingering", func(t *testing.T) {
		cfg := testConfig()
		cfg.MaxLeases = 3
		env := newEnv(t, cfg)
		var hs []*Holder
		for i := range 3 {
			h, err := env.m.Acquire(ctxT(t), key(uint16(10+i)), assoc(newSink()))
			require.NoError(t, err)
			hs = append(hs, h)
		}
		_, err := env.m.Acquire(ctxT(t), Key{Client: otherClient, Port: 1}, assoc(newSink()))
		require.ErrorIs(t, err, ErrTableFull)
		hs[2].Release() // lingering first: the oldest
		hs[0].Release()
		_, err = env.m.Acquire(ctxT(t), Key{Client: otherClient, Port: 1}, assoc(newSink()))
		require.NoError(t, err)
		_, ok := snapshotOf(env.m, key(12))
		require.False(t, ok, "oldest lingering lease evicted")
		in, ok := snapshotOf(env.m, key(10))
		require.True(t, ok)
		require.Equal(t, StateLingering, in.State)
		_, err = env.m.Acquire(ctxT(t), Key{Client: otherClient, Port: 2}, assoc(newSink()))
		require.NoError(t, err)
		_, err = env.m.Acquire(ctxT(t), Key{Client: otherClient, Port: 3}, assoc(newSink()))
		require.ErrorIs(t, err, ErrTableFull)
		assert.EqualValues(t, 2, env.rec.event(EventEvict))
		assert.EqualValues(t, 2, env.rec.failed(FailTableFull))
		assert.Equal(t, 3, env.m.Stats().Leases)
	})
}

// TestPortExhaustionEvictsLingering is issue 10 case 7: with every port of
// a small range held by a lingering lease (closed associations), a new
// association must evict the oldest of them and take its port, as the
// per-client and table caps do, instead of failing with no_port for the
// whole linger.
func TestPortExhaustionEvictsLingering(t *testing.T) {
	const n = 11
	lo := freeRange(t, n)
	cfg := testConfig()
	cfg.PortMin, cfg.PortMax = lo, lo+n-1
	env := newEnv(t, cfg)
	var hs []*Holder
	for i := range n {
		h, err := env.m.Acquire(ctxT(t), key(uint16(100+i)), assoc(newSink()))
		require.NoError(t, err)
		hs = append(hs, h)
	}
	_, err := env.m.Acquire(ctxT(t), key(200), assoc(newSink()))
	require.ErrorIs(t, err, ErrNoPort, "no port and nothing lingering: refused")
	require.EqualValues(t, 1, env.rec.failed(FailNoPort))

	for _, h := range hs {
		h.Release()
	}
	require.Equal(t, n, env.m.Stats().Lingering)
	for i := range 3 {
		h, err := env.m.Acquire(ctxT(t), key(uint16(200+i)), assoc(newSink()))
		require.NoError(t, err, "acquire %d with the range full of lingering leases", n+1+i)
		require.Equal(t, hs[i].Port(), h.Port(), "takes the port of the oldest lingering lease")
		_, ok := snapshotOf(env.m, key(uint16(100+i)))
		require.False(t, ok, "oldest lingering lease evicted")
	}
	assert.EqualValues(t, 3, env.rec.event(EventEvict))
	assert.EqualValues(t, 1, env.rec.failed(FailNoPort), "no further refusal")
	assert.Equal(t, Stats{Leases: n, Active: 3, Lingering: n - 3}, env.m.Stats())
}

func TestPorts(t *testing.T) {
	env := newEnv(t, testConfig())
	other := Key{Client: netip.MustParseAddr("10.0.0.9"), Port: 7000}
	want := freePort(t)
	h1, err := env.m.Acquire(ctxT(t), key(7000), Request{Kind: KindAssociation, WantPort: want, Deliver: newSink().deliver})
	require.NoError(t, err)
	require.Equal(t, want, h1.Port())

	// The same port for another client: explicit error, or fallback.
	_, err = env.m.Acquire(ctxT(t), other, Request{Kind: KindAssociation, WantPort: want, ExactPort: true, Deliver: newSink().deliver})
	require.ErrorIs(t, err, ErrPortTaken)
	h2, err := env.m.Acquire(ctxT(t), other, Request{Kind: KindAssociation, WantPort: want, Deliver: newSink().deliver})
	require.NoError(t, err)
	require.NotEqual(t, want, h2.Port())

	// A port held by another program.
	c, err := net.ListenUDP("udp4", net.UDPAddrFromAddrPort(netip.AddrPortFrom(loopback, 0)))
	require.NoError(t, err)
	defer c.Close()
	busy := c.LocalAddr().(*net.UDPAddr).AddrPort().Port()
	_, err = env.m.Acquire(ctxT(t), key(7001), Request{Kind: KindAssociation, WantPort: busy, ExactPort: true, Deliver: newSink().deliver})
	require.ErrorIs(t, err, ErrPortTaken)
	h3, err := env.m.Acquire(ctxT(t), key(7001), Request{Kind: KindAssociation, WantPort: busy, Deliver: newSink().deliver})
	require.NoError(t, err)
	require.NotEqual(t, busy, h3.Port())

	assert.EqualValues(t, 2, env.rec.failed(FailPortTaken))
}

func TestPortRange(t *testing.T) {
	// A one-port range makes exhaustion and out-of-range requests exact.
	p := freePort(t)
	cfg := testConfig()
	cfg.PortMin, cfg.PortMax = p, p
	env := newEnv(t, cfg)
	req := func(want uint16, exact bool) Request {
		return Request{Kind: KindAssociation, WantPort: want, ExactPort: exact, Deliver: newSink().deliver}
	}
	_, err := env.m.Acquire(ctxT(t), key(1), req(p-1, true))
	require.ErrorIs(t, err, ErrPortOutOfRange)
	h, err := env.m.Acquire(ctxT(t), key(1), req(p-1, false))
	require.NoError(t, err, "out-of-range wish falls back into the range")
	require.Equal(t, p, h.Port())
	_, err = env.m.Acquire(ctxT(t), key(2), req(0, false))
	require.ErrorIs(t, err, ErrNoPort)
	h.Release()
	env.clock.Advance(time.Hour)
	h, err = env.m.Acquire(ctxT(t), key(2), req(0, false))
	require.NoError(t, err)
	require.Equal(t, p, h.Port())
}

func TestBindErrors(t *testing.T) {
	// An injected listener shows that address-in-use is retried elsewhere
	// and any other bind error is returned as is.
	boom := errors.New("boom")
	var mu sync.Mutex
	tried := map[uint16]int{}
	listen := func(ctx context.Context, addr netip.AddrPort) (*net.UDPConn, error) {
		mu.Lock()
		tried[addr.Port()]++
		n := len(tried)
		mu.Unlock()
		if addr.Port() == 4242 {
			return nil, boom
		}
		if n <= 3 {
			return nil, &net.OpError{Op: "listen", Net: "udp4", Err: syscall.EADDRINUSE}
		}
		return defaultListenUDP(ctx, netip.AddrPortFrom(addr.Addr(), 0))
	}
	m, err := New(testConfig(), Deps{ListenUDP: listen})
	require.NoError(t, err)
	defer m.Close()
	h, err := m.Acquire(ctxT(t), key(1), Request{Kind: KindAssociation, WantPort: 5000, Deliver: newSink().deliver})
	require.NoError(t, err)
	require.Equal(t, 1, tried[5000])
	require.GreaterOrEqual(t, len(tried), 4)
	h.Release()
	_, err = m.Acquire(ctxT(t), key(2), Request{Kind: KindAssociation, WantPort: 4242, Deliver: newSink().deliver})
	require.ErrorIs(t, err, boom)
}

func TestInboundFilter(t *testing.T) {
	cfg := testConfig()
	cfg.MaxPeers = 2
	env := newEnv(t, cfg)
	srv := newPeer(t)
	s := newSink()
	h, err := env.m.Acquire(ctxT(t), key(7010), assoc(s))
	require.NoError(t, err)

	srv.send(t, h.LocalAddr(), "unsolicited")
	env.rec.waitFor(t, "drop", func() bool { return env.rec.dropped(ReasonNotPermitted) == 1 })
	require.Empty(t, s.all())

	require.NoError(t, h.WriteTo([]byte("to client"), srv.addr()))
	srv.send(t, h.LocalAddr(), "still unsolicited")
	env.rec.waitFor(t, "drop", func() bool { return env.rec.dropped(ReasonNotPermitted) == 2 })

	// A mapped destination is sent to (and permitted) in its IPv4 form.
	mapped := netip.AddrPortFrom(netip.AddrFrom16(srv.addr().Addr().As16()), srv.addr().Port())
	require.NoError(t, h.Send([]byte("req"), mapped))
	srv.send(t, h.LocalAddr(), "reply")
	require.Equal(t, []string{"reply"}, s.waitN(t, 1))

	// The peer set is bounded: two more peers the client sends to push the
	// oldest out.
	require.NoError(t, h.Send([]byte("x"), netip.MustParseAddrPort("127.0.1.1:9")))
	require.NoError(t, h.Send([]byte("x"), netip.MustParseAddrPort("[::ffff:127.0.1.2]:9"))) // mapped form is unmapped
	in, _ := snapshotOf(env.m, key(7010))
	require.Equal(t, 2, in.Peers)
	srv.send(t, h.LocalAddr(), "evicted peer")
	env.rec.waitFor(t, "drop", func() bool { return env.rec.dropped(ReasonNotPermitted) == 3 })
	assert.Contains(t, env.logs.String(), "peer set full")

	l := h.l
	tests := []struct {
		ip   string
		want bool
	}{
		{"127.0.1.1", true},
		{"::ffff:127.0.1.1", true},
		{"127.0.1.2", true},
		{"127.0.0.1", false},
		{"2001:db8::1", false},
	}
	for _, tt := range tests {
		assert.Equal(t, tt.want, l.permitted(netip.MustParseAddr(tt.ip)), tt.ip)
	}
}

func TestBufferCaps(t *testing.T) {
	tests := []struct {
		name       string
		mutate     func(*Config)
		send       []string
		wantFlush  []string
		wantReason DropReason
	}{
		{"datagrams", func(c *Config) { c.MaxBufferedDatagrams = 2 }, seq("b", 1, 5), seq("b", 1, 2), ReasonBufferFull},
		{"bytes", func(c *Config) { c.MaxBufferedBytes = bufferedCost(2) + bufferedCost(3) }, []string{"aa", "bbb", "c", "dd"}, []string{"aa", "bbb"}, ReasonBufferFull},
		{"total bytes", func(c *Config) { c.MaxBufferedBytesTotal = 2 * int64(bufferedCost(2)) }, []string{"aa", "bb", "c"}, []string{"aa", "bb"}, ReasonTotalBufferFull},
		// Issue 10 #8: zero-byte datagrams cost memory, so they hit the
		// byte caps too.
		{"zero-byte datagrams hit the bytes cap", func(c *Config) { c.MaxBufferedBytes = 3 * bufferedCost(0) }, []string{"", "", "", "", ""}, []string{"", "", ""}, ReasonBufferFull},
		{"zero-byte datagrams hit the total cap", func(c *Config) { c.MaxBufferedBytesTotal = 2 * int64(bufferedCost(0)) }, []string{"", "", ""}, []string{"", ""}, ReasonTotalBufferFull},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := testConfig()
			tt.mutate(&cfg)
			env := newEnv(t, cfg)
			srv := newPeer(t)
			h, err := env.m.Acquire(ctxT(t), key(7020), assoc(newSink()))
			require.NoError(t, err)
			h.AllowPeer(loopback)
			h.Release()
			srv.send(t, h.LocalAddr(), tt.send...)
			wantDrops := int64(len(tt.send) - len(tt.wantFlush))
			env.rec.waitFor(t, "drops", func() bool { return env.rec.dropped(tt.wantReason) == wantDrops })
			assert.EqualValues(t, len(tt.wantFlush), env.rec.outcome(OutcomeBuffered))
			s := newSink()
			_, err = env.m.Acquire(ctxT(t), key(7020), assoc(s))
			require.NoError(t, err)
			require.Equal(t, tt.wantFlush, s.all())
			assert.Zero(t, env.m.Stats().BufferedBytes)
			assert.Equal(t, 1, strings.Count(env.logs.String(), "lease buffer full"), "one warning per linger period, not one per datagram")
		})
	}
}

func TestTooLarge(t *testing.T) {
	cfg := testConfig()
	cfg.MaxDatagramSize = 8
	env := newEnv(t, cfg)
	srv := newPeer(t)
	s := newSink()
	h, err := env.m.Acquire(ctxT(t), key(7030), assoc(s))
	require.NoError(t, err)
	h.AllowPeer(loopback)
	srv.send(t, h.LocalAddr(), "123456789", "12345678")
	require.Equal(t, []string{"12345678"}, s.waitN(t, 1))
	env.rec.waitFor(t, "drop", func() bool { return env.rec.dropped(ReasonTooLarge) == 1 })
}

func TestAnnouncedDelivery(t *testing.T) {
	env := newEnv(t, testConfig())
	srv := newPeer(t)
	k := key(7040)
	an1, an2, as1, as2 := newSink(), newSink(), newSink(), newSink()

	a1, err := env.m.Acquire(ctxT(t), k, announced(an1))
	require.NoError(t, err)
	a1.AllowPeer(loopback)
	srv.send(t, a1.LocalAddr(), "m1")
	require.Equal(t, []string{"m1"}, an1.waitN(t, 1), "announced-only lease delivers to the announced holder")

	a2, err := env.m.Acquire(ctxT(t), k, announced(an2))
	require.NoError(t, err)
	srv.send(t, a1.LocalAddr(), "m2")
	require.Equal(t, []string{"m2"}, an2.waitN(t, 1), "newest announced holder wins")
	a2.Release()
	srv.send(t, a1.LocalAddr(), "m3")
	require.Equal(t, []string{"m1", "m3"}, an1.waitN(t, 2), "back to the remaining announced holder")

	// A firewall client's association joins: it takes delivery.
	u1, err := env.m.Acquire(ctxT(t), k, assoc(as1))
	require.NoError(t, err)
	srv.send(t, a1.LocalAddr(), "m4")
	require.Equal(t, []string{"m4"}, as1.waitN(t, 1))
	// Its client closes the socket: the MMS session keeps the lease open
	// and data waits for the rebind instead of going to the announced path.
	u1.Release()
	in, _ := snapshotOf(env.m, k)
	require.Equal(t, StateActive, in.State)
	require.Equal(t, 1, in.Announced)
	srv.send(t, a1.LocalAddr(), "m5", "m6")
	env.rec.waitFor(t, "buffered", func() bool { return env.rec.outcome(OutcomeBuffered) == 2 })
	_, err = env.m.Acquire(ctxT(t), k, assoc(as2))
	require.NoError(t, err)
	require.Equal(t, []string{"m5", "m6"}, as2.all())
	require.Equal(t, []string{"m1", "m3"}, an1.all())
	assert.EqualValues(t, 2, env.rec.event(EventJoin))
	assert.EqualValues(t, 1, env.rec.event(EventHandover))
}

func TestLingerZero(t *testing.T) {
	cfg := testConfig()
	cfg.Linger = 0
	env := newEnv(t, cfg)
	srv := newPeer(t)
	k := key(7050)

	an := newSink()
	a, err := env.m.Acquire(ctxT(t), k, announced(an))
	require.NoError(t, err)
	u, err := env.m.Acquire(ctxT(t), k, assoc(newSink()))
	require.NoError(t, err)
	u.AllowPeer(loopback)
	u.Release()
	srv.send(t, a.LocalAddr(), "lost")
	env.rec.waitFor(t, "drop", func() bool { return env.rec.dropped(ReasonNoHolder) == 1 })
	require.Empty(t, an.all())

	port := a.Port()
	a.Release()
	_, ok := snapshotOf(env.m, k)
	require.False(t, ok, "last release closes at once")
	require.True(t, portFree(port))
	assert.EqualValues(t, 1, env.rec.event(EventClose))
	assert.Zero(t, env.clock.pending())
}

func TestAcquireWaitHonoursContextAndClose(t *testing.T) {
	env := newEnv(t, testConfig())
	k := key(7060)
	// Hold the key's turn as a slow operation would.
	s, err := env.m.lockKey(context.Background(), k)
	require.NoError(t, err)

	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	_, err = env.m.Acquire(ctx, k, assoc(newSink()))
	require.ErrorIs(t, err, context.DeadlineExceeded)
	assert.EqualValues(t, 1, env.rec.failed(FailCanceled))

	got := make(chan error, 1)
	go func() {
		_, err := env.m.Acquire(ctxT(t), k, assoc(newSink()))
		got <- err
	}()
	waitUsers(t, env.m, k, 2)
	closed := make(chan struct{})
	go func() { env.m.Close(); close(closed) }()
	require.ErrorIs(t, <-got, ErrClosed)
	env.m.unlockKey(k, s)
	<-closed
}

func TestBadRequest(t *testing.T) {
	env := newEnv(t, testConfig())
	tests := []struct {
		name string
		key  Key
		req  Request
	}{
		{"no deliver", key(1), Request{Kind: KindAssociation}},
		{"no kind", key(1), Request{Deliver: newSink().deliver}},
		{"no client", Key{Port: 1}, assoc(newSink())},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := env.m.Acquire(ctxT(t), tt.key, tt.req)
			require.ErrorIs(t, err, ErrBadRequest)
		})
	}
}

func TestMappedClientIsUnmapped(t *testing.T) {
	env := newEnv(t, testConfig())
	h, err := env.m.Acquire(ctxT(t), Key{Client: netip.MustParseAddr("::ffff:10.0.0.5"), Port: 9}, assoc(newSink()))
	require.NoError(t, err)
	require.Equal(t, key(9), h.Key())
	h2, err := env.m.Acquire(ctxT(t), key(9), assoc(newSink()))
	require.NoError(t, err)
	require.Equal(t, h.Port(), h2.Port(), "same lease")
}

func TestCloseTearsDown(t *testing.T) {
	base := countFDs(t)
	env := newEnv(t, testConfig())
	srv := newPeer(t)
	var hs []*Holder
	for i := range 5 {
		h, err := env.m.Acquire(ctxT(t), key(uint16(100+i)), assoc(newSink()))
		require.NoError(t, err)
		h.AllowPeer(loopback)
		hs = append(hs, h)
	}
	hs[0].Release()
	srv.send(t, hs[0].LocalAddr(), "pending")
	env.rec.waitFor(t, "buffered", func() bool { return env.rec.outcome(OutcomeBuffered) == 1 })

	var wg sync.WaitGroup
	for range 3 {
		wg.Add(1)
		go func() { defer wg.Done(); require.NoError(t, env.m.Close()) }()
	}
	wg.Wait()
	require.NoError(t, env.m.Close())
	requireNoLeakedGoroutines(t)
	require.Equal(t, base+1, countFDs(t), "only the test peer's socket is left")
	require.Zero(t, env.clock.pending())
	require.Empty(t, env.m.Snapshot())
	require.Equal(t, Stats{}, env.m.Stats())
	require.NotContains(t, env.logs.String(), "reader stopped", "a closed socket ends its reader quietly")
	assert.EqualValues(t, 5, env.rec.event(EventClose))
	assert.EqualValues(t, 1, env.rec.dropped(ReasonClosed))

	_, err := env.m.Acquire(ctxT(t), key(1), assoc(newSink()))
	require.ErrorIs(t, err, ErrClosed)
	require.ErrorIs(t, hs[1].Send([]byte("x"), srv.addr()), net.ErrClosed)
	hs[1].Release() // after Close: harmless
}

// TestPortableReader runs the delivery rules over the portable reader that
// non-Linux systems use.
func TestPortableReader(t *testing.T) {
	cfg := testConfig()
	cfg.MaxDatagramSize = 8
	env := newEnv(t, cfg)
	env.m.newSource = newStdSource
	srv := newPeer(t)
	s1, s2 := newSink(), newSink()
	h1, err := env.m.Acquire(ctxT(t), key(7070), assoc(s1))
	require.NoError(t, err)
	require.NoError(t, h1.Send([]byte("hi"), srv.addr()))
	srv.send(t, h1.LocalAddr(), "123456789", "p1")
	require.Equal(t, []string{"p1"}, s1.waitN(t, 1))
	env.rec.waitFor(t, "too large", func() bool { return env.rec.dropped(ReasonTooLarge) == 1 })
	h1.Release()
	srv.send(t, h1.LocalAddr(), "p2", "p3")
	env.rec.waitFor(t, "buffered", func() bool { return env.rec.outcome(OutcomeBuffered) == 2 })
	h2, err := env.m.Acquire(ctxT(t), key(7070), assoc(s2))
	require.NoError(t, err)
	require.Equal(t, h1.Port(), h2.Port())
	require.Equal(t, []string{"p2", "p3"}, s2.all())
}

func TestKeyAndHolderAccessors(t *testing.T) {
	require.Equal(t, "10.0.0.5//7", key(7).String())
	require.Equal(t, "10.0.0.5/alice/7", Key{Client: key(7).Client, User: "alice", Port: 7}.String())
	env := newEnv(t, testConfig())
	h, err := env.m.Acquire(ctxT(t), key(7), announced(newSink()))
	require.NoError(t, err)
	require.Equal(t, KindAnnounced, h.Kind())
	require.False(t, h.HasAssociation())
	require.EqualValues(t, 1, h.Generation())
}

// TestGenerationNumbersOneLease: Generation counts a lease's holders across
// reclaims and starts again with a new socket; it does not pick the
// delivery target (a newer announced holder does not take delivery from an
// older association).
func TestGenerationNumbersOneLease(t *testing.T) {
	env := newEnv(t, testConfig())
	srv := newPeer(t)
	a, an := newSink(), newSink()
	h1, err := env.m.Acquire(ctxT(t), key(7080), assoc(a))
	require.NoError(t, err)
	h1.AllowPeer(srv.addr().Addr())
	h2, err := env.m.Acquire(ctxT(t), key(7080), announced(an))
	require.NoError(t, err)
	require.Equal(t, []uint64{1, 2}, []uint64{h1.Generation(), h2.Generation()})
	srv.send(t, h1.LocalAddr(), "x")
	require.Equal(t, []string{"x"}, a.waitN(t, 1), "the older association keeps delivery")
	require.Empty(t, an.all())

	h2.Release()
	h1.Release() // lingers
	h3, err := env.m.Acquire(ctxT(t), key(7080), assoc(newSink()))
	require.NoError(t, err)
	require.EqualValues(t, 3, h3.Generation(), "a reclaim goes on counting")
	h3.Release()
	env.clock.Advance(time.Minute) // expires: the next Acquire binds a new socket
	h4, err := env.m.Acquire(ctxT(t), key(7080), assoc(newSink()))
	require.NoError(t, err)
	require.EqualValues(t, 1, h4.Generation(), "a new socket starts again")
}

package leases

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// evenRange finds n consecutive free loopback ports starting at an even one.
func evenRange(t *testing.T, n int) uint16 {
	t.Helper()
	lo := freeRange(t, n+1)
	return lo + lo%2
}

// rangeConfig is testConfig with the port range [lo, lo+n-1].
func rangeConfig(lo uint16, n int) Config {
	cfg := testConfig()
	cfg.PortMin, cfg.PortMax = lo, lo+uint16(n-1)
	return cfg
}

// occupy binds port on loopback outside the Manager (another program).
func occupy(t *testing.T, port uint16) {
	t.Helper()
	c, err := net.ListenUDP("udp4", net.UDPAddrFromAddrPort(netip.AddrPortFrom(loopback, port)))
	require.NoError(t, err)
	t.Cleanup(func() { c.Close() })
}

func pairKeys(p uint16) []Key { return []Key{key(p), key(p + 1)} }

func groupOf(reqs ...Request) GroupRequest { return GroupRequest{Members: reqs} }

func evenGroup(reqs ...Request) GroupRequest {
	return GroupRequest{Members: reqs, EvenFirst: true}
}

// requireNothingHeld checks that a failed group left no lease, no
// reservation and no bound port behind.
func requireNothingHeld(t *testing.T, env *testEnv, ports ...uint16) {
	t.Helper()
	require.Zero(t, env.m.Stats().Leases, "no lease left")
	total, clients, bound := tableCounts(env.m)
	require.Zero(t, total, "no reservation left")
	require.Zero(t, clients, "no per-client count left")
	require.Zero(t, bound, "no port left in the table")
	for _, p := range ports {
		require.True(t, portFree(p), "port %d bound after a failed group", p)
	}
}

// tableCounts reads the table's bookkeeping; asserting outside the lock
// keeps a failed assertion from leaving mu locked for the cleanup's Close.
func tableCounts(m *Manager) (total, clients, ports int) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.total, len(m.perClient), len(m.ports)
}

func TestGroupPortChoice(t *testing.T) {
	// The range is 8 ports from an even lo; the client's ports sit inside it.
	tests := []struct {
		name      string
		offset    uint16 // keys' ports: lo+offset, lo+offset+1
		evenFirst bool
		occupied  []uint16 // offsets bound by another program
		preserved bool
	}{
		{"even client ports preserved", 2, true, nil, true},
		{"odd client ports preserved without parity", 3, false, nil, true},
		{"odd client ports fall back to an even pair", 3, true, nil, false},
		{"taken RTCP port falls back", 2, true, []uint16{3}, false},
		{"taken RTP port falls back", 2, true, []uint16{2}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			lo := evenRange(t, 8)
			env := newEnv(t, rangeConfig(lo, 8))
			for _, o := range tt.occupied {
				occupy(t, lo+o)
			}
			keys := pairKeys(lo + tt.offset)
			req := GroupRequest{Members: []Request{assoc(newSink()), assoc(newSink())}, EvenFirst: tt.evenFirst}
			g, err := env.m.AcquireGroup(ctxT(t), keys, req)
			require.NoError(t, err)
			ports := g.Ports()
			require.Len(t, ports, 2)
			require.Equal(t, ports[0]+1, ports[1], "consecutive")
			if tt.evenFirst {
				require.Zero(t, ports[0]%2, "RTP on an even port")
			}
			if tt.preserved {
				require.Equal(t, []uint16{keys[0].Port, keys[1].Port}, ports)
			} else {
				require.NotEqual(t, keys[0].Port, ports[0])
			}
			for _, o := range tt.occupied {
				require.NotContains(t, ports, lo+o)
			}
			for i, h := range g.Holders() {
				require.Equal(t, keys[i], h.Key())
				require.Equal(t, ports[i], h.LocalAddr().Port())
			}
			require.EqualValues(t, 2, env.rec.event(EventAcquire))
			g.Release()
		})
	}
}

// TestGroupAvoidsDeliverTo: members never bind a port some member
// delivers to, even the other member's (the client on the external IP).
func TestGroupAvoidsDeliverTo(t *testing.T) {
	lo := evenRange(t, 6)
	env := newEnv(t, rangeConfig(lo, 6))
	keys := pairKeys(lo + 2)
	rtp, rtcp := announced(newSink()), announced(newSink())
	rtp.DeliverTo = netip.AddrPortFrom(loopback, lo+2)
	rtcp.DeliverTo = netip.AddrPortFrom(loopback, lo+3)
	for range 20 {
		g, err := env.m.AcquireGroup(ctxT(t), keys, evenGroup(rtp, rtcp))
		require.NoError(t, err)
		require.NotContains(t, g.Ports(), lo+2)
		require.NotContains(t, g.Ports(), lo+3)
		g.Release()
		env.clock.Advance(time.Minute) // expire, so the next round picks again
		waitUntil(t, "expiry", func() bool { return env.m.Stats().Leases == 0 })
	}
}

func TestGroupAllOrNothing(t *testing.T) {
	tests := []struct {
		name  string
		setup func(t *testing.T, env *testEnv, lo uint16) // lo: an even range of 2 ports
		cfg   func(cfg *Config)
		req   func(keys []Key) GroupRequest
		want  error
		fail  FailReason
		held  int // leases the setup holds, still there afterwards
	}{
		{
			name:  "second port held by another program",
			setup: func(t *testing.T, _ *testEnv, lo uint16) { occupy(t, lo+1) },
			want:  ErrNoPort, fail: FailNoPort,
		},
		{
			name:  "second port held by another program, exact ports",
			setup: func(t *testing.T, _ *testEnv, lo uint16) { occupy(t, lo+1) },
			req: func(keys []Key) GroupRequest {
				r := evenGroup(assoc(newSink()), assoc(newSink()))
				r.ExactPorts = true
				return r
			},
			want: ErrPortTaken, fail: FailPortTaken,
		},
		{
			name: "second port held by an active lease of another key",
			setup: func(t *testing.T, env *testEnv, lo uint16) {
				_, err := env.m.Acquire(ctxT(t), key(9), Request{Kind: KindAssociation, WantPort: lo + 1, ExactPort: true, Deliver: newSink().deliver})
				require.NoError(t, err)
			},
			cfg:  func(cfg *Config) { cfg.PortMax++ }, // room for no other pair
			want: ErrNoPort, fail: FailNoPort, held: 1,
		},
		{
			name: "client cap hit at the second member",
			setup: func(t *testing.T, env *testEnv, _ uint16) {
				_, err := env.m.Acquire(ctxT(t), key(9), assoc(newSink()))
				require.NoError(t, err)
			},
			cfg:  func(cfg *Config) { cfg.MaxLeasesPerClient = 2; cfg.PortMax += 2 },
			want: ErrClientLimit, fail: FailClientLimit, held: 1,
		},
		{
			name: "table cap hit at the second member",
			setup: func(t *testing.T, env *testEnv, _ uint16) {
				_, err := env.m.Acquire(ctxT(t), Key{Client: netip.MustParseAddr("10.0.0.6"), Port: 9}, assoc(newSink()))
				require.NoError(t, err)
			},
			cfg:  func(cfg *Config) { cfg.MaxLeases = 2; cfg.PortMax += 2 },
			want: ErrTableFull, fail: FailTableFull, held: 1,
		},
		{
			name: "existing leases not consecutive",
			setup: func(t *testing.T, env *testEnv, lo uint16) {
				for i, k := range pairKeys(lo) {
					_, err := env.m.Acquire(ctxT(t), k, Request{Kind: KindAssociation, WantPort: lo + uint16(3*i), Deliver: newSink().deliver})
					require.NoError(t, err)
				}
			},
			cfg:  func(cfg *Config) { cfg.PortMax += 4 },
			want: ErrGroupLayout, fail: FailGroupLayout, held: 2,
		},
		{
			name: "existing RTCP lease on an even port",
			setup: func(t *testing.T, env *testEnv, lo uint16) {
				_, err := env.m.Acquire(ctxT(t), key(lo+1), Request{Kind: KindAssociation, WantPort: lo + 2, ExactPort: true, Deliver: newSink().deliver})
				require.NoError(t, err)
			},
			cfg:  func(cfg *Config) { cfg.PortMax += 4 },
			want: ErrGroupLayout, fail: FailGroupLayout, held: 1,
		},
		{
			name: "exact ports that break parity",
			req: func(keys []Key) GroupRequest {
				keys[0].Port++ // consecutive, but the first is odd
				keys[1].Port++
				r := evenGroup(assoc(newSink()), assoc(newSink()))
				r.ExactPorts = true
				return r
			},
			want: ErrGroupLayout, fail: FailGroupLayout,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			lo := evenRange(t, 6)
			cfg := rangeConfig(lo, 2)
			if tt.cfg != nil {
				tt.cfg(&cfg)
			}
			env := newEnv(t, cfg)
			if tt.setup != nil {
				tt.setup(t, env, lo)
			}
			keys := pairKeys(lo)
			req := evenGroup(assoc(newSink()), assoc(newSink()))
			if tt.req != nil {
				req = tt.req(keys)
			}
			before := env.m.Snapshot()
			g, err := env.m.AcquireGroup(ctxT(t), keys, req)
			require.ErrorIs(t, err, tt.want)
			require.Nil(t, g)
			require.Contains(t, err.Error(), "leases: acquire group [")
			require.EqualValues(t, 1, env.rec.failed(tt.fail))
			require.Equal(t, tt.held, env.m.Stats().Leases)
			after := env.m.Snapshot()
			require.Equal(t, len(before), len(after))
			for i := range before {
				require.Equal(t, before[i].Key, after[i].Key)
				require.Equal(t, before[i].Port, after[i].Port)
				require.Equal(t, before[i].Associations, after[i].Associations, "no holder added")
			}
			total, _, ports := tableCounts(env.m)
			require.Equal(t, tt.held, total, "reservations undone")
			require.Equal(t, tt.held, ports, "ports undone")
			if tt.held == 0 {
				requireNothingHeld(t, env, lo)
			}
		})
	}
}

func TestGroupBadRequest(t *testing.T) {
	env := newEnv(t, testConfig())
	s := newSink()
	tests := []struct {
		name string
		keys []Key
		req  GroupRequest
	}{
		{"no keys", nil, groupOf()},
		{"fewer members than keys", pairKeys(7000), groupOf(assoc(s))},
		{"a key twice", []Key{key(7000), key(7000)}, groupOf(assoc(s), assoc(s))},
		{"member with WantPort", pairKeys(7000), groupOf(assoc(s), Request{Kind: KindAssociation, WantPort: 7001, Deliver: s.deliver})},
		{"member without Deliver", pairKeys(7000), groupOf(assoc(s), Request{Kind: KindAssociation})},
		{"too many keys", make([]Key, maxGroupSize+1), GroupRequest{Members: make([]Request, maxGroupSize+1)}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := env.m.AcquireGroup(ctxT(t), tt.keys, tt.req)
			require.ErrorIs(t, err, ErrBadRequest)
			require.Zero(t, env.m.Stats().Leases)
		})
	}
}

// TestGroupLingerReclaim: a released group lingers as a group; acquiring
// the same keys within Linger gets the same ports and each lease's buffered
// datagrams, in order, before AcquireGroup returns.
func TestGroupLingerReclaim(t *testing.T) {
	tests := []struct {
		name    string
		release func(g *Group)
	}{
		{"group release", func(g *Group) { g.Release() }},
		{"members released one by one", func(g *Group) {
			g.Holder(1).Release()
			g.Holder(0).Release()
			g.Release() // nothing left: a no-op
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			lo := evenRange(t, 4)
			env := newEnv(t, rangeConfig(lo, 4))
			p := newPeer(t)
			keys := pairKeys(lo)
			g, err := env.m.AcquireGroup(ctxT(t), keys, evenGroup(assoc(newSink()), assoc(newSink())))
			require.NoError(t, err)
			ports := g.Ports()
			for _, h := range g.Holders() {
				h.AllowPeer(p.addr().Addr())
			}
			tt.release(g)
			require.EqualValues(t, 2, env.rec.event(EventRelease))
			require.Equal(t, 2, env.m.Stats().Lingering)

			p.send(t, g.Holder(0).LocalAddr(), "rtp1", "rtp2", "rtp3")
			p.send(t, g.Holder(1).LocalAddr(), "rtcp1", "rtcp2")
			env.rec.waitFor(t, "5 buffered", func() bool { return env.rec.outcome(OutcomeBuffered) == 5 })

			env.clock.Advance(time.Second) // within Linger
			rtp, rtcp := newSink(), newSink()
			g2, err := env.m.AcquireGroup(ctxT(t), keys, evenGroup(assoc(rtp), assoc(rtcp)))
			require.NoError(t, err)
			require.Equal(t, ports, g2.Ports(), "same external ports")
			require.Equal(t, []string{"rtp1", "rtp2", "rtp3"}, rtp.all(), "flushed inside AcquireGroup, in order")
			require.Equal(t, []string{"rtcp1", "rtcp2"}, rtcp.all())
			require.EqualValues(t, 2, env.rec.event(EventReclaim))
			require.EqualValues(t, 2, env.rec.event(EventAcquire), "no new socket")

			p.send(t, g2.Holder(0).LocalAddr(), "rtp4")
			require.Equal(t, []string{"rtp1", "rtp2", "rtp3", "rtp4"}, rtp.waitN(t, 4))

			g2.Release()
			env.clock.Advance(time.Minute)
			waitUntil(t, "expiry", func() bool { return env.m.Stats().Leases == 0 })
			require.EqualValues(t, 2, env.rec.event(EventExpire))
			requireNothingHeld(t, env, ports...)
		})
	}
}

// TestGroupAroundExistingLease: a key that already has a lease keeps its
// port; the group is laid out around it (here an association joined by an
// announced pair, and a group whose RTCP lease was evicted while lingering).
func TestGroupAroundExistingLease(t *testing.T) {
	lo := evenRange(t, 6)
	env := newEnv(t, rangeConfig(lo, 6))
	keys := pairKeys(lo + 1) // odd client ports
	a, err := env.m.Acquire(ctxT(t), keys[0], Request{Kind: KindAssociation, WantPort: lo + 2, ExactPort: true, Deliver: newSink().deliver})
	require.NoError(t, err)
	g, err := env.m.AcquireGroup(ctxT(t), keys, evenGroup(announced(newSink()), announced(newSink())))
	require.NoError(t, err)
	require.Equal(t, []uint16{lo + 2, lo + 3}, g.Ports())
	require.True(t, g.Holder(0).HasAssociation())
	require.False(t, g.Holder(1).HasAssociation())
	require.EqualValues(t, 1, env.rec.event(EventJoin))
	g.Release()
	a.Release()

	// The RTCP lease goes (evicted while lingering); the group comes back
	// on the same pair: RTP reclaimed, RTCP bound again at its place.
	_, ok := env.m.tryEvict(keys[1])
	require.True(t, ok, "evicted")
	g2, err := env.m.AcquireGroup(ctxT(t), keys, evenGroup(assoc(newSink()), assoc(newSink())))
	require.NoError(t, err)
	require.Equal(t, []uint16{lo + 2, lo + 3}, g2.Ports())
	g2.Release()
}

// TestGroupEvictsLingeringRun: with the range full of lingering leases, a
// group evicts a whole run for itself, never an active lease.
func TestGroupEvictsLingeringRun(t *testing.T) {
	lo := evenRange(t, 4)
	env := newEnv(t, rangeConfig(lo, 4))
	var hs []*Holder
	for i := range 4 {
		h, err := env.m.Acquire(ctxT(t), key(uint16(9000+i)), Request{Kind: KindAssociation, WantPort: lo + uint16(i), ExactPort: true, Deliver: newSink().deliver})
		require.NoError(t, err)
		hs = append(hs, h)
	}
	// Lingering at lo+1 (oldest) and lo+2; active at lo and lo+3: no
	// even-first run is all lingering, so the group must fail.
	hs[1].Release()
	hs[2].Release()
	_, err := env.m.AcquireGroup(ctxT(t), pairKeys(7000), evenGroup(assoc(newSink()), assoc(newSink())))
	require.ErrorIs(t, err, ErrNoPort)
	require.Equal(t, 4, env.m.Stats().Leases, "no active lease evicted")
	// Without parity the lingering run lo+1, lo+2 is taken.
	g, err := env.m.AcquireGroup(ctxT(t), pairKeys(7000), groupOf(assoc(newSink()), assoc(newSink())))
	require.NoError(t, err)
	require.Equal(t, []uint16{lo + 1, lo + 2}, g.Ports())
	require.EqualValues(t, 2, env.rec.event(EventEvict))
	hs[0].Release()
	hs[3].Release()
	g.Release()
}

// TestGroupsSharingKeysConcurrently: many goroutines acquire and release
// groups of overlapping keys, given in different orders, together with
// single acquires of the same keys. Everything must finish inside its
// context: a group that took its turns in request order instead of
// canonical order deadlocks here within a few rounds.
func TestGroupsSharingKeysConcurrently(t *testing.T) {
	tests := []struct {
		name   string
		linger time.Duration
	}{
		{"linger", 10 * time.Second},
		{"linger 0", 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := testConfig()
			cfg.Linger = tt.linger
			env := newEnv(t, cfg)
			const (
				workers = 16
				rounds  = 60
				nkeys   = 5
			)
			var keys []Key
			for i := range nkeys {
				keys = append(keys, key(uint16(20000+2*i)))
			}
			ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
			defer cancel()
			var wg sync.WaitGroup
			errs := make(chan error, workers*rounds)
			var okGroups sync.Map
			for w := range workers {
				wg.Add(1)
				go func() {
					defer wg.Done()
					rng := rand.New(rand.NewPCG(uint64(w), 1))
					for r := range rounds {
						if w%4 == 0 && r%2 == 0 {
							h, err := env.m.Acquire(ctx, keys[rng.IntN(nkeys)], assoc(newSink()))
							if err != nil {
								errs <- err
								continue
							}
							h.Release()
							continue
						}
						n := 2 + rng.IntN(2)
						perm := rng.Perm(nkeys)[:n]
						gk := make([]Key, n)
						reqs := make([]Request, n)
						for i, p := range perm {
							gk[i] = keys[p]
							reqs[i] = announced(newSink())
						}
						g, err := env.m.AcquireGroup(ctx, gk, GroupRequest{Members: reqs, EvenFirst: rng.IntN(2) == 0})
						if err != nil {
							errs <- err
							continue
						}
						okGroups.Store(fmt.Sprint(w, r), true)
						ports := g.Ports()
						for i := 1; i < n; i++ {
							if ports[i] != ports[0]+uint16(i) {
								errs <- fmt.Errorf("ports %v not consecutive", ports)
							}
						}
						g.Release()
					}
				}()
			}
			done := make(chan struct{})
			go func() { wg.Wait(); close(done) }()
			select {
			case <-done:
			case <-time.After(2 * waitLimit):
				t.Fatal("groups deadlocked")
			}
			close(errs)
			for err := range errs {
				// Overlapping live groups legitimately cannot always be
				// laid out; a context error means someone was stuck.
				require.Truef(t, errors.Is(err, ErrGroupLayout) || errors.Is(err, ErrPortTaken), "unexpected error: %v", err)
			}
			n := 0
			okGroups.Range(func(any, any) bool { n++; return true })
			require.Positive(t, n, "some groups succeeded")
			total, _, ports := tableCounts(env.m)
			st := env.m.Stats()
			require.Zero(t, st.Active, "every holder released")
			require.Equal(t, st.Leases, total, "reservations match the table")
			require.Equal(t, st.Leases, ports, "ports match the table")
		})
	}
}

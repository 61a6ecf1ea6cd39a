package leases

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"fwproxy/internal/leakcheck"
	"fwproxy/internal/selfaddr"
)

// waitLimit bounds every wait in the tests: a hang fails fast instead of
// eating the package timeout.
const waitLimit = 10 * time.Second

var loopback = netip.MustParseAddr("127.0.0.1")

// fakeClock is a manual Clock: timers fire only inside Advance, on the
// caller's goroutine, in deadline order.
type fakeClock struct {
	mu     sync.Mutex
	now    time.Time
	timers []*fakeTimer
}

type fakeTimer struct {
	c    *fakeClock
	when time.Time
	f    func()
	done bool // fired or stopped; guarded by c.mu
}

func newFakeClock() *fakeClock {
	return &fakeClock{now: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) AfterFunc(d time.Duration, f func()) Timer {
	c.mu.Lock()
	defer c.mu.Unlock()
	t := &fakeTimer{c: c, when: c.now.Add(d), f: f}
	c.timers = append(c.timers, t)
	return t
}

func (t *fakeTimer) Stop() bool {
	t.c.mu.Lock()
	defer t.c.mu.Unlock()
	if t.done {
		return false
	}
	t.done = true
	t.c.timers = slices.DeleteFunc(t.c.timers, func(x *fakeTimer) bool { return x == t })
	return true
}

// Advance moves time forward and runs every timer that came due.
func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	var due []*fakeTimer
	c.timers = slices.DeleteFunc(c.timers, func(t *fakeTimer) bool {
		if !t.when.After(c.now) {
			t.done = true
			due = append(due, t)
			return true
		}
		return false
	})
	c.mu.Unlock()
	slices.SortStableFunc(due, func(a, b *fakeTimer) int { return a.when.Compare(b.when) })
	for _, t := range due {
		t.f()
	}
}

func (c *fakeClock) pending() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.timers)
}

// recorder is a test Observer that counts everything and wakes waiters.
type recorder struct {
	events  [NumEvents]atomic.Int64
	dgrams  [NumOutcomes][NumDropReasons]atomic.Int64
	fails   [NumFailReasons]atomic.Int64
	changed chan struct{}
	// When block is set, reporting delivered datagrams waits for it to be
	// closed (after poking blocked): this parks a lease's reader outside its
	// delivery lock, so a close of that lease stays in progress.
	block   atomic.Pointer[chan struct{}]
	blocked chan struct{}
}

var _ Observer = (*recorder)(nil)

func newRecorder() *recorder {
	return &recorder{changed: make(chan struct{}, 1), blocked: make(chan struct{}, 1)}
}

func (r *recorder) poke() {
	select {
	case r.changed <- struct{}{}:
	default:
	}
}

func (r *recorder) LeaseEvent(e Event) { r.events[e].Add(1); r.poke() }
func (r *recorder) Datagrams(o Outcome, reason DropReason, n, _ int) {
	r.dgrams[o][reason].Add(int64(n))
	r.poke()
	if b := r.block.Load(); b != nil && o == OutcomeDelivered {
		r.blocked <- struct{}{}
		<-*b
	}
}
func (r *recorder) AcquireFailed(f FailReason) { r.fails[f].Add(1); r.poke() }

func (r *recorder) event(e Event) int64             { return r.events[e].Load() }
func (r *recorder) outcome(o Outcome) int64         { return r.dgrams[o][ReasonNone].Load() }
func (r *recorder) dropped(reason DropReason) int64 { return r.dgrams[OutcomeDropped][reason].Load() }
func (r *recorder) failed(f FailReason) int64       { return r.fails[f].Load() }
func (r *recorder) waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.NewTimer(waitLimit)
	defer deadline.Stop()
	for !cond() {
		select {
		case <-r.changed:
		case <-deadline.C:
			t.Fatalf("timed out waiting for %s", what)
		}
	}
}

// sink collects what a holder's DeliverFunc receives.
type sink struct {
	mu      sync.Mutex
	got     []string
	changed chan struct{}
	block   chan struct{} // when non-nil, Deliver waits for it to close
	entered chan struct{} // poked when Deliver starts
}

func newSink() *sink {
	return &sink{changed: make(chan struct{}, 1), entered: make(chan struct{}, 1)}
}

func (s *sink) deliver(b []byte, _ netip.AddrPort) {
	select {
	case s.entered <- struct{}{}:
	default:
	}
	if s.block != nil {
		<-s.block
	}
	s.mu.Lock()
	s.got = append(s.got, string(b))
	s.mu.Unlock()
	select {
	case s.changed <- struct{}{}:
	default:
	}
}

func (s *sink) all() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.got)
}

func (s *sink) waitN(t *testing.T, n int) []string {
	t.Helper()
	deadline := time.NewTimer(waitLimit)
	defer deadline.Stop()
	for {
		got := s.all()
		if len(got) >= n {
			return got
		}
		select {
		case <-s.changed:
		case <-deadline.C:
			t.Fatalf("timed out waiting for %d datagrams, have %q", n, got)
		}
	}
}

func testConfig() Config {
	cfg := DefaultConfig()
	cfg.ListenIP = loopback
	cfg.Linger = 10 * time.Second
	return cfg
}

type testEnv struct {
	m     *Manager
	self  *selfaddr.Set // shared with the Manager, as the proxy shares it
	clock *fakeClock
	rec   *recorder
	logs  *syncBuffer
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func newEnv(t *testing.T, cfg Config) *testEnv {
	t.Helper()
	env := &testEnv{self: selfaddr.New(), clock: newFakeClock(), rec: newRecorder(), logs: &syncBuffer{}}
	m, err := New(cfg, Deps{
		Self:     env.self,
		Logger:   slog.New(slog.NewTextHandler(env.logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
		Observer: env.rec,
		Clock:    env.clock,
	})
	require.NoError(t, err)
	env.m = m
	t.Cleanup(func() {
		require.NoError(t, m.Close())
		requireNoLeakedGoroutines(t)
	})
	return env
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	t.Cleanup(cancel)
	return ctx
}

func key(n uint16) Key { return Key{Client: netip.MustParseAddr("10.0.0.5"), Port: n} }

func assoc(s *sink) Request { return Request{Kind: KindAssociation, Deliver: s.deliver} }

func announced(s *sink) Request { return Request{Kind: KindAnnounced, Deliver: s.deliver} }

// peer is a remote media server on loopback.
type peer struct {
	c *net.UDPConn
}

func newPeer(t testing.TB) *peer {
	t.Helper()
	c, err := net.ListenUDP("udp4", net.UDPAddrFromAddrPort(netip.AddrPortFrom(loopback, 0)))
	require.NoError(t, err)
	t.Cleanup(func() { c.Close() })
	return &peer{c: c}
}

func (p *peer) addr() netip.AddrPort { return p.c.LocalAddr().(*net.UDPAddr).AddrPort() }

func (p *peer) send(t *testing.T, to netip.AddrPort, payloads ...string) {
	t.Helper()
	for _, s := range payloads {
		_, err := p.c.WriteToUDPAddrPort([]byte(s), to)
		require.NoError(t, err)
	}
}

// freePort finds a loopback UDP port that is free right now.
func freePort(t *testing.T) uint16 {
	t.Helper()
	c, err := net.ListenUDP("udp4", net.UDPAddrFromAddrPort(netip.AddrPortFrom(loopback, 0)))
	require.NoError(t, err)
	p := c.LocalAddr().(*net.UDPAddr).AddrPort().Port()
	require.NoError(t, c.Close())
	return p
}

// freeRange finds n consecutive loopback UDP ports that are free right now.
func freeRange(t *testing.T, n int) uint16 {
	t.Helper()
	for range 100 {
		lo := freePort(t)
		if int(lo)+n > 65536 {
			continue
		}
		ok := true
		for p := range n {
			if !portFree(lo + uint16(p)) {
				ok = false
				break
			}
		}
		if ok {
			return lo
		}
	}
	t.Fatalf("no %d consecutive free UDP ports", n)
	return 0
}

// portFree reports whether port can be bound on loopback now, proving the
// Manager closed its socket.
func portFree(port uint16) bool {
	c, err := net.ListenUDP("udp4", net.UDPAddrFromAddrPort(netip.AddrPortFrom(loopback, port)))
	if err != nil {
		return false
	}
	c.Close()
	return true
}

func seq(prefix string, from, to int) []string {
	var out []string
	for i := from; i <= to; i++ {
		out = append(out, fmt.Sprintf("%s%d", prefix, i))
	}
	return out
}

// requireNoLeakedGoroutines fails when a goroutine of this package's
// leases, manager or raw sources is still alive. Close has waited for every
// goroutine the package started, but one that has just signalled may still
// be on its way out of its last frame: Require gives it a bounded moment.
func requireNoLeakedGoroutines(t *testing.T) {
	t.Helper()
	leakcheck.Require(t, 5*time.Second, leakcheck.Filter{Frames: []string{
		"fwproxy/leases.(*lease)", "fwproxy/leases.(*Manager)", "fwproxy/internal/udpio.",
	}})
}

func countFDs(t *testing.T) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Skipf("no /proc/self/fd: %v", err)
	}
	return len(ents)
}

func snapshotOf(m *Manager, k Key) (LeaseInfo, bool) {
	for _, in := range m.Snapshot() {
		if in.Key == k {
			return in, true
		}
	}
	return LeaseInfo{}, false
}

// waitUntil polls cond: for state that no event announces.
func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(waitLimit)
	tick := time.NewTicker(time.Millisecond)
	defer tick.Stop()
	for !cond() {
		require.True(t, time.Now().Before(deadline), "timed out waiting for %s", what)
		<-tick.C
	}
}

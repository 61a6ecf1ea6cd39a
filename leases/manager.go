package leases

import (
	"fmt"
	"io"
	"log/slog"
	"math"
	"net/netip"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"

	"github.com/hashicorp/golang-lru/v2/simplelru"

	"fwproxy/internal/selfaddr"
	"fwproxy/internal/udpio"
)

// Manager owns the lease table. Create it with New; it is safe for
// concurrent use.
type Manager struct {
	cfg    Config
	log    *slog.Logger
	obs    Observer
	clock  Clock
	listen ListenFunc
	self   *selfaddr.Set
	pool   *bufPool
	// newSource is newPlatformSource; benchmarks swap in the portable one
	// to measure the difference.
	newSource sourceFunc

	done      chan struct{} // closed when Close starts
	closeOnce sync.Once
	// wg counts reader goroutines, running timer callbacks and in-flight
	// Acquire/Release calls, so Close can wait for all of them.
	wg sync.WaitGroup

	bufBytes     atomic.Int64 // bytes charged for all leases' buffers (bufferedCost)
	bufDatagrams atomic.Int64

	// mu guards the fields below. Lock order: mu before any lease's mu or
	// peersMu. mu is never held while waiting for a turn, a reader, a socket
	// or a DeliverFunc.
	mu        sync.Mutex
	closed    bool
	slots     map[Key]*keySlot
	ports     map[uint16]Key     // external ports bound or being bound
	perClient map[netip.Addr]int // leases plus reservations, by client IP
	total     int                // leases plus reservations
	// lingering orders lingering leases by when they started lingering, so
	// eviction takes the oldest first.
	lingering *simplelru.LRU[Key, *lease]
}

// New validates cfg and returns a running Manager. Close it to release its
// sockets.
func New(cfg Config, deps Deps) (*Manager, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if deps.Logger == nil {
		deps.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if deps.Observer == nil {
		deps.Observer = NopObserver{}
	}
	if deps.Clock == nil {
		deps.Clock = systemClock{}
	}
	if deps.ListenUDP == nil {
		deps.ListenUDP = defaultListenUDP
	}
	if deps.Self == nil {
		deps.Self = selfaddr.New()
	}
	lruSize := math.MaxInt32
	if cfg.MaxLeases > 0 {
		lruSize = cfg.MaxLeases
	}
	lingering, err := simplelru.NewLRU[Key, *lease](lruSize, nil)
	if err != nil {
		return nil, fmt.Errorf("leases: new: %w", err)
	}
	cfg.ListenIP = cfg.ListenIP.Unmap()
	return &Manager{
		cfg:       cfg,
		log:       deps.Logger,
		obs:       deps.Observer,
		clock:     deps.Clock,
		listen:    deps.ListenUDP,
		self:      deps.Self,
		newSource: newPlatformSource,
		// A buffer is only out of the pool while a reader drains a readable
		// socket, so a few per CPU cover the steady state.
		pool:      newBufPool(cfg.MaxDatagramSize, 4*udpio.BatchSize*runtime.GOMAXPROCS(0)),
		done:      make(chan struct{}),
		slots:     make(map[Key]*keySlot),
		ports:     make(map[uint16]Key),
		perClient: make(map[netip.Addr]int),
		lingering: lingering,
	}, nil
}

// leasesLocked lists the leases in the table.
func (m *Manager) leasesLocked() []*lease {
	out := make([]*lease, 0, len(m.slots))
	for _, s := range m.slots {
		if s.lease != nil {
			out = append(out, s.lease)
		}
	}
	return out
}

// Snapshot lists the live table, ordered by external port.
func (m *Manager) Snapshot() []LeaseInfo {
	m.mu.Lock()
	ls := m.leasesLocked()
	m.mu.Unlock()
	now := m.clock.Now()
	out := make([]LeaseInfo, 0, len(ls))
	for _, l := range ls {
		out = append(out, l.info(now))
	}
	slices.SortFunc(out, func(a, b LeaseInfo) int { return int(a.Port) - int(b.Port) })
	return out
}

// Stats returns table totals without touching any lease's locks.
func (m *Manager) Stats() Stats {
	var st Stats
	m.mu.Lock()
	for _, s := range m.slots {
		if s.lease == nil {
			continue
		}
		st.Leases++
		switch State(s.lease.state.Load()) {
		case StateActive:
			st.Active++
		case StateLingering:
			st.Lingering++
		case StateClosing:
			st.Closing++
		}
	}
	m.mu.Unlock()
	st.BufferedDatagrams = m.bufDatagrams.Load()
	st.BufferedBytes = m.bufBytes.Load()
	return st
}

// Close closes every socket, stops every timer and waits for every goroutine
// the Manager started and every Acquire/Release in flight. Buffered
// datagrams are dropped (reason closed). It is idempotent; concurrent
// callers all return after the teardown finished.
func (m *Manager) Close() error {
	m.closeOnce.Do(m.shutdown)
	return nil
}

func (m *Manager) shutdown() {
	m.mu.Lock()
	m.closed = true
	close(m.done)
	ls := m.leasesLocked()
	m.mu.Unlock()

	dropped, droppedBytes := 0, 0
	for _, l := range ls {
		n, b := l.shutdown()
		dropped += n
		droppedBytes += b
	}
	// Waiters on turns see done and leave; turn holders finish their short
	// work (a bind, or a close whose reader has just been unblocked).
	m.wg.Wait()

	m.mu.Lock()
	clear(m.slots)
	clear(m.ports)
	clear(m.perClient)
	m.total = 0
	m.lingering.Purge()
	m.mu.Unlock()

	if dropped > 0 {
		m.obs.Datagrams(OutcomeDropped, ReasonClosed, dropped, droppedBytes)
	}
	closedN := 0
	for _, l := range ls {
		if l.finished.CompareAndSwap(false, true) {
			m.obs.LeaseEvent(EventClose)
			closedN++
		}
	}
	m.log.Debug("lease manager closed", "leases", closedN, "dropped", dropped)
}

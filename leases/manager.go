package leases

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"math/rand/v2"
	"net"
	"net/netip"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/hashicorp/golang-lru/v2/simplelru"

	"fwproxy/internal/selfaddr"
)

// Key identifies one client's UDP port binding.
type Key struct {
	Client netip.Addr // client IP (always Unmap()ed)
	User   string     // authenticated SOCKS user, "" without authentication
	Port   uint16     // the client's own UDP port (bound by it, or announced by it)
}

// String is "ip/user/port", the user empty without authentication
// ("10.0.0.5//7000"): always three fields, so a log search can split it.
func (k Key) String() string {
	return fmt.Sprintf("%v/%s/%d", k.Client, k.User, k.Port)
}

// DeliverFunc gets one inbound datagram from the external socket. b is only
// valid during the call. It is called with the lease's delivery lock held,
// never concurrently for one lease, from the lease reader goroutine or from
// Acquire while flushing the linger buffer. It must not block for long (one
// UDP write) and must not call the Manager or any Holder method that takes
// the key's turn (Release); Send, WriteTo and AllowPeer are fine.
type DeliverFunc func(b []byte, from netip.AddrPort)

// Request describes what an Acquire wants.
type Request struct {
	Kind Kind
	// WantPort is the external port wanted (port preservation); 0 = any port
	// in range. It only matters when a new socket is bound: an existing lease
	// for the key keeps its port.
	WantPort uint16
	// ExactPort, with WantPort: fail with ErrPortTaken (or ErrPortOutOfRange)
	// rather than fall back to another port.
	ExactPort bool
	// DeliverTo is where the holder sends inbound datagrams, when that is
	// a fixed address (announced mode: the client's IP and announced port).
	// A new socket is never bound there, whatever WantPort says: with the
	// client on the external IP, port preservation would otherwise take the
	// very port the client announced, so the client could never bind it and
	// every delivery would go back into the lease. Zero: no constraint.
	DeliverTo netip.AddrPort
	// Deliver receives inbound datagrams while this holder is the lease's
	// delivery target. Required.
	Deliver DeliverFunc
	// Session, when not 0, is the requesting SOCKS session's id; the lease
	// log lines about this holder carry it as "sid", so that one search
	// finds a player's CONNECT, association and lease lines.
	Session uint64
}

// LeaseInfo describes one lease at the moment of a Snapshot.
type LeaseInfo struct {
	Key               Key
	Port              uint16
	LocalAddr         netip.AddrPort
	State             State
	Associations      int // live KindAssociation holders
	Announced         int // live KindAnnounced holders
	BufferedDatagrams int
	BufferedBytes     int // charged: payload plus a fixed overhead per datagram
	Peers             int
	Age               time.Duration
	LingerDeadline    time.Time // zero unless lingering
}

// Stats are table totals, cheap enough to read on every scrape.
type Stats struct {
	Leases            int
	Active            int
	Lingering         int
	Closing           int
	BufferedDatagrams int64
	// BufferedBytes is what the buffers are charged against
	// MaxBufferedBytesTotal: payload plus a fixed overhead per datagram.
	BufferedBytes int64
}

// keySlot serialises everything that happens to one Key.
type keySlot struct {
	// turn is a one-token semaphore: whoever has put a token in holds the
	// key's turn. Acquire, Release, expiry and eviction take it; the reader
	// never does, so closing a socket while holding the turn cannot deadlock.
	turn chan struct{}

	// users and lease are guarded by Manager.mu; lease is written only by
	// the turn holder.
	users int    // goroutines holding or waiting for the turn
	lease *lease // nil when the key has no socket
}

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
		pool:      newBufPool(cfg.MaxDatagramSize, 4*runtime.GOMAXPROCS(0)),
		done:      make(chan struct{}),
		slots:     make(map[Key]*keySlot),
		ports:     make(map[uint16]Key),
		perClient: make(map[netip.Addr]int),
		lingering: lingering,
	}, nil
}

// Acquire registers a holder on key's lease, creating the lease (and binding
// its socket) if the key has none. It waits for the key's turn — in
// particular for a close of the key's previous socket to finish — honouring
// ctx and Close. Errors wrap ErrPortTaken, ErrPortOutOfRange,
// ErrClientLimit, ErrTableFull, ErrNoPort, ErrClosed, ErrBadRequest or ctx's
// error.
func (m *Manager) Acquire(ctx context.Context, key Key, req Request) (*Holder, error) {
	key.Client = key.Client.Unmap()
	h, err := m.acquire(ctx, key, req)
	if err != nil {
		m.obs.AcquireFailed(failReason(err))
		return nil, fmt.Errorf("leases: acquire %v: %w", key, err)
	}
	return h, nil
}

func failReason(err error) FailReason {
	switch {
	case errors.Is(err, ErrPortTaken):
		return FailPortTaken
	case errors.Is(err, ErrPortOutOfRange):
		return FailPortOutOfRange
	case errors.Is(err, ErrClientLimit):
		return FailClientLimit
	case errors.Is(err, ErrTableFull):
		return FailTableFull
	case errors.Is(err, ErrNoPort):
		return FailNoPort
	case errors.Is(err, ErrClosed):
		return FailClosed
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return FailCanceled
	case errors.Is(err, ErrBadRequest):
		return FailBadRequest
	}
	return FailOther
}

func (m *Manager) acquire(ctx context.Context, key Key, req Request) (*Holder, error) {
	if req.Deliver == nil || !req.Kind.valid() || !key.Client.IsValid() {
		return nil, ErrBadRequest
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if !m.enter() {
		return nil, ErrClosed
	}
	defer m.wg.Done()
	s, err := m.lockKey(ctx, key)
	if err != nil {
		return nil, err
	}
	defer m.unlockKey(key, s)

	m.mu.Lock()
	l := s.lease
	m.mu.Unlock()
	if l != nil {
		return m.attach(l, req)
	}
	return m.create(ctx, key, s, req)
}

// attach adds a holder to an existing lease. The caller holds the key's turn.
func (m *Manager) attach(l *lease, req Request) (*Holder, error) {
	m.mu.Lock()
	m.lingering.Remove(l.key)
	m.mu.Unlock()

	l.mu.Lock()
	ev := EventJoin
	switch {
	case l.state.Load() == uint32(StateClosing):
		// Only Close moves a lease to closing without the key's turn.
		l.mu.Unlock()
		return nil, ErrClosed
	case l.state.Load() == uint32(StateLingering):
		ev = EventReclaim
		l.state.Store(uint32(StateActive))
		l.stopLingerLocked()
	case l.timer != nil && req.Kind == KindAssociation:
		// An association is back within its grace: the timer goes, and
		// the buffer is flushed to it below.
		l.stopLingerLocked()
		if l.hasKindLocked(req.Kind) {
			ev = EventHandover
		}
	case l.hasKindLocked(req.Kind):
		ev = EventHandover
	}
	h := l.addHolderLocked(req)
	f := l.flushLocked()
	l.mu.Unlock()

	m.obs.LeaseEvent(ev)
	f.report(m.obs)
	m.log.Debug("lease "+ev.String(), "key", l.key, "port", l.local.Port(), "kind", req.Kind, "flushed", f.n, "sid", req.Session)
	return h, nil
}

// create binds a new socket for key. The caller holds the key's turn.
func (m *Manager) create(ctx context.Context, key Key, s *keySlot, req Request) (*Holder, error) {
	if err := m.reserve(ctx, key); err != nil {
		return nil, err
	}
	conn, port, err := m.bind(ctx, key, req)
	if errors.Is(err, ErrNoPort) {
		conn, port, err = m.bindEvicting(ctx, key, req)
	}
	if err != nil {
		m.unreserve(key)
		return nil, err
	}
	l := newLease(m, key, conn, port)
	src, err := m.newSource(conn, m.pool, l.flushCounts)
	if err != nil {
		conn.Close()
		m.forgetPort(port)
		m.unreserve(key)
		return nil, err
	}
	// Nothing else can see l yet; the lock only keeps the race detector and
	// the lock discipline honest.
	l.mu.Lock()
	h := l.addHolderLocked(req)
	l.mu.Unlock()

	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		conn.Close()
		m.forgetPort(port)
		m.unreserve(key)
		return nil, ErrClosed
	}
	s.lease = l
	// Add under mu while !closed, so Close's Wait cannot miss the reader.
	m.wg.Add(1)
	m.mu.Unlock()
	l.unregister = m.self.Add(l.local)
	go l.runReader(src)

	m.obs.LeaseEvent(EventAcquire)
	m.log.Debug("lease acquire", "key", key, "port", port, "kind", req.Kind, "wanted", req.WantPort, "sid", req.Session)
	return h, nil
}

// reserve counts a lease for key against the caps, evicting lingering
// leases to make room. The caller holds key's turn.
func (m *Manager) reserve(ctx context.Context, key Key) error {
	// Each round evicts at most one lease; a few rounds cover evictions
	// that other acquires raced us for.
	for round := 0; ; round++ {
		m.mu.Lock()
		if m.closed {
			m.mu.Unlock()
			return ErrClosed
		}
		clientFull := m.cfg.MaxLeasesPerClient > 0 && m.perClient[key.Client] >= m.cfg.MaxLeasesPerClient
		tableFull := m.cfg.MaxLeases > 0 && m.total >= m.cfg.MaxLeases
		if !clientFull && !tableFull {
			m.total++
			m.perClient[key.Client]++
			m.mu.Unlock()
			return nil
		}
		victims := m.victimsLocked(key.Client, clientFull)
		m.mu.Unlock()

		err := ErrTableFull
		if clientFull {
			err = ErrClientLimit
		}
		if len(victims) == 0 || round >= 8 {
			m.log.Warn("lease refused", "key", key, "err", err)
			return err
		}
		for _, v := range victims {
			if _, ok := m.tryEvict(v); ok {
				break
			}
		}
		if err := ctx.Err(); err != nil {
			return err
		}
	}
}

// victimsLocked lists up to four of the oldest lingering keys, only those of
// client when sameClient (evicting someone else's lease cannot lower this
// client's count).
func (m *Manager) victimsLocked(client netip.Addr, sameClient bool) []Key {
	var out []Key
	for _, k := range m.lingering.Keys() {
		if sameClient && k.Client != client {
			continue
		}
		out = append(out, k)
		if len(out) == 4 {
			break
		}
	}
	return out
}

func (m *Manager) unreserve(key Key) {
	m.mu.Lock()
	m.unreserveLocked(key)
	m.mu.Unlock()
}

func (m *Manager) unreserveLocked(key Key) {
	m.total--
	if n := m.perClient[key.Client] - 1; n > 0 {
		m.perClient[key.Client] = n
	} else {
		delete(m.perClient, key.Client)
	}
}

// tryEvict closes vk's lease if it is still lingering and nobody else holds
// vk's turn, and returns the port it freed. It never waits for the turn:
// the caller holds its own key's turn, and waiting for a second one could
// deadlock against an Acquire that is evicting in the other direction.
func (m *Manager) tryEvict(vk Key) (port uint16, ok bool) {
	m.mu.Lock()
	s := m.slots[vk]
	if s == nil || s.lease == nil {
		m.mu.Unlock()
		return 0, false
	}
	s.users++
	m.mu.Unlock()
	select {
	case s.turn <- struct{}{}:
	default:
		m.dropSlot(vk, s)
		return 0, false
	}
	defer m.unlockKey(vk, s)
	m.mu.Lock()
	l := s.lease
	m.mu.Unlock()
	if l == nil || l.state.Load() != uint32(StateLingering) {
		return 0, false
	}
	m.log.Warn("lease evicted to make room", "key", vk, "port", l.local.Port())
	m.closeLease(s, l, EventEvict, ReasonEvicted)
	return l.local.Port(), true
}

// bindEvicting is bind's last resort when no port of the range is free:
// like the table caps, the port range makes room by evicting the oldest
// lingering lease (of any client: a range full of one client's lingering
// leases must not lock everyone else out) and binding the port it freed.
// A few rounds cover ports that concurrent acquires took first. The caller
// holds key's turn.
func (m *Manager) bindEvicting(ctx context.Context, key Key, req Request) (*net.UDPConn, uint16, error) {
	for range 8 {
		m.mu.Lock()
		victims := m.victimsLocked(netip.Addr{}, false)
		m.mu.Unlock()
		if len(victims) == 0 {
			break
		}
		for _, v := range victims {
			p, ok := m.tryEvict(v)
			if !ok {
				continue
			}
			conn, err := m.tryBind(ctx, key, req, p)
			if err == nil {
				return conn, p, nil
			}
			if !errors.Is(err, errPortBusy) {
				return nil, 0, err
			}
			break
		}
		if err := ctx.Err(); err != nil {
			return nil, 0, err
		}
	}
	m.log.Warn("lease refused", "key", key, "err", ErrNoPort)
	return nil, 0, ErrNoPort
}

// errPortBusy means "try another port"; it never leaves the package.
var errPortBusy = errors.New("port busy")

// bind picks and binds an external port: WantPort when usable, then
// BindAttempts random ports, then a scan of the whole range from a random
// start.
func (m *Manager) bind(ctx context.Context, key Key, req Request) (*net.UDPConn, uint16, error) {
	lo, hi := m.cfg.PortMin, m.cfg.PortMax
	if req.WantPort != 0 {
		inRange := req.WantPort >= lo && req.WantPort <= hi
		switch {
		case inRange:
			conn, err := m.tryBind(ctx, key, req, req.WantPort)
			if err == nil {
				return conn, req.WantPort, nil
			}
			if !errors.Is(err, errPortBusy) {
				return nil, 0, err
			}
			if req.ExactPort {
				return nil, 0, ErrPortTaken
			}
			m.log.Debug("wanted port busy, falling back", "key", key, "port", req.WantPort)
		case req.ExactPort:
			return nil, 0, ErrPortOutOfRange
		}
	}
	span := int(hi-lo) + 1
	for range m.cfg.BindAttempts {
		p := lo + uint16(rand.IntN(span))
		conn, err := m.tryBind(ctx, key, req, p)
		if err == nil {
			return conn, p, nil
		}
		if !errors.Is(err, errPortBusy) {
			return nil, 0, err
		}
	}
	start := rand.IntN(span)
	for i := range span {
		if i%256 == 0 {
			if err := ctx.Err(); err != nil {
				return nil, 0, err
			}
		}
		p := lo + uint16((start+i)%span)
		conn, err := m.tryBind(ctx, key, req, p)
		if err == nil {
			return conn, p, nil
		}
		if !errors.Is(err, errPortBusy) {
			return nil, 0, err
		}
	}
	return nil, 0, ErrNoPort
}

// tryBind reserves port p in the table, then binds it. A port already in
// the table, or where req delivers to, is busy without a syscall.
func (m *Manager) tryBind(ctx context.Context, key Key, req Request, p uint16) (*net.UDPConn, error) {
	if req.DeliverTo.IsValid() && netip.AddrPortFrom(m.cfg.ListenIP, p) == unmapped(req.DeliverTo) {
		return nil, errPortBusy
	}
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		return nil, ErrClosed
	}
	if _, taken := m.ports[p]; taken {
		m.mu.Unlock()
		return nil, errPortBusy
	}
	m.ports[p] = key
	m.mu.Unlock()

	conn, err := m.listen(ctx, netip.AddrPortFrom(m.cfg.ListenIP, p))
	if err == nil {
		return conn, nil
	}
	m.forgetPort(p)
	// EACCES: a privileged port in the range without the capability;
	// treat it as taken rather than failing the whole acquire.
	if errors.Is(err, syscall.EADDRINUSE) || errors.Is(err, syscall.EACCES) {
		return nil, errPortBusy
	}
	return nil, fmt.Errorf("bind port %d: %w", p, err)
}

func (m *Manager) forgetPort(p uint16) {
	m.mu.Lock()
	delete(m.ports, p)
	m.mu.Unlock()
}

// release drops h from its lease and starts the linger (or closes) when it
// was the last holder.
func (m *Manager) release(h *Holder) {
	l := h.l
	if !m.enter() {
		return
	}
	defer m.wg.Done()
	s, err := m.lockKey(context.Background(), l.key)
	if err != nil {
		return // Close is tearing everything down anyway
	}
	defer m.unlockKey(l.key, s)
	m.mu.Lock()
	current := s.lease == l
	m.mu.Unlock()
	if !current {
		return // the lease was closed (expired, evicted) under this holder
	}

	l.mu.Lock()
	if l.state.Load() == uint32(StateClosing) {
		l.mu.Unlock()
		return
	}
	l.removeHolderLocked(h)
	remaining := len(l.holders)
	if remaining == 0 && m.cfg.Linger > 0 {
		l.stopLingerLocked() // an association grace in progress
		l.state.Store(uint32(StateLingering))
		l.startLingerLocked()
	}
	if remaining > 0 && l.target == nil && m.cfg.Linger > 0 {
		// Only announced holders are left on a lease that had an
		// association: its client is between close and bind-again, so
		// data waits in the buffer, but only for Linger. A live holder's
		// lease must not stay undeliverable for as long as it lives.
		// (Linger 0 keeps the old behaviour: dropped, no_holder.)
		l.startAssocGraceLocked()
	}
	// The released holder may have been holding delivery (hold.go): what
	// waited for it goes to the remaining target now, before anything newer.
	flushed := l.flushLocked()
	deadline := l.lingerDeadline
	l.mu.Unlock()

	m.obs.LeaseEvent(EventRelease)
	flushed.report(m.obs)
	switch {
	case remaining > 0:
		m.log.Debug("lease release", "key", l.key, "port", l.local.Port(), "kind", h.kind, "remaining", remaining, "sid", h.session)
	case m.cfg.Linger == 0:
		m.log.Debug("lease release, closing (linger 0)", "key", l.key, "port", l.local.Port(), "sid", h.session)
		m.closeLease(s, l, EventClose, ReasonNoHolder)
	default:
		m.mu.Lock()
		m.lingering.Add(l.key, l)
		m.mu.Unlock()
		m.log.Debug("lease linger", "key", l.key, "port", l.local.Port(), "until", deadline, "sid", h.session)
	}
}

// endAssocGrace is the association grace timer's callback (see
// startAssocGraceLocked): no association came back within Linger, so the
// announced holders get delivery, and what waited, in order.
func (m *Manager) endAssocGrace(l *lease, seq uint64) {
	m.withTurnOf(l, func(_ *keySlot, current bool) {
		l.mu.Lock()
		if !current || l.state.Load() != uint32(StateActive) || l.lingerSeq != seq || l.target != nil {
			l.mu.Unlock()
			return
		}
		l.timer = nil
		l.endAssocGraceLocked()
		f := l.flushLocked()
		l.mu.Unlock()
		f.report(m.obs)
		m.log.Debug("lease: no association came back, delivering to the announced holder", "key", l.key, "port", l.local.Port(), "flushed", f.n)
	})
}

// expire is the linger timer's callback. seq identifies the linger period
// the timer was started for; a reclaim in between makes it stale.
func (m *Manager) expire(l *lease, seq uint64) {
	m.withTurnOf(l, func(s *keySlot, current bool) {
		l.mu.Lock()
		live := current && l.state.Load() == uint32(StateLingering) && l.lingerSeq == seq
		l.mu.Unlock()
		if live {
			m.closeLease(s, l, EventExpire, ReasonExpiredUnflushed)
		}
	})
}

// withTurnOf runs a timer callback's work for l with its key's turn held,
// unless the Manager is closing; current says whether l is still the key's
// lease.
func (m *Manager) withTurnOf(l *lease, fn func(s *keySlot, current bool)) {
	if !m.enter() {
		return
	}
	defer m.wg.Done()
	s, err := m.lockKey(context.Background(), l.key)
	if err != nil {
		return
	}
	defer m.unlockKey(l.key, s)
	m.mu.Lock()
	current := s.lease == l
	m.mu.Unlock()
	fn(s, current)
}

// closeLease closes l's socket, waits for its reader and removes it from the
// table. The caller holds the key's turn (s), and no other lock: the reader
// may be inside a DeliverFunc holding l.mu.
func (m *Manager) closeLease(s *keySlot, l *lease, ev Event, reason DropReason) {
	l.state.Store(uint32(StateClosing))
	l.closeSocket()
	l.mu.Lock()
	l.stopLingerLocked()
	n, bytes := l.dropBufferLocked()
	l.mu.Unlock()
	<-l.readerDone

	// The port is free in the kernel now, so the table may hand it out.
	m.mu.Lock()
	if cur, ok := m.lingering.Peek(l.key); ok && cur == l {
		m.lingering.Remove(l.key)
	}
	s.lease = nil
	delete(m.ports, l.local.Port())
	m.unreserveLocked(l.key)
	m.mu.Unlock()

	if n > 0 {
		m.obs.Datagrams(OutcomeDropped, reason, n, bytes)
	}
	if l.finished.CompareAndSwap(false, true) {
		m.obs.LeaseEvent(ev)
	}
	if n > 0 {
		m.log.Debug("lease "+ev.String(), "key", l.key, "port", l.local.Port(), "dropped", n)
	} else {
		m.log.Debug("lease "+ev.String(), "key", l.key, "port", l.local.Port())
	}
}

// enter registers an in-flight call so Close waits for it; false once Close
// has started.
func (m *Manager) enter() bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return false
	}
	m.wg.Add(1)
	return true
}

// lockKey waits for key's turn, ctx, or Close.
func (m *Manager) lockKey(ctx context.Context, key Key) (*keySlot, error) {
	m.mu.Lock()
	s := m.slots[key]
	if s == nil {
		s = &keySlot{turn: make(chan struct{}, 1)}
		m.slots[key] = s
	}
	s.users++
	m.mu.Unlock()
	select {
	case s.turn <- struct{}{}:
		return s, nil
	case <-ctx.Done():
		m.dropSlot(key, s)
		return nil, ctx.Err()
	case <-m.done:
		m.dropSlot(key, s)
		return nil, ErrClosed
	}
}

func (m *Manager) unlockKey(key Key, s *keySlot) {
	<-s.turn
	m.dropSlot(key, s)
}

func (m *Manager) dropSlot(key Key, s *keySlot) {
	m.mu.Lock()
	s.users--
	if s.users == 0 && s.lease == nil {
		delete(m.slots, key)
	}
	m.mu.Unlock()
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

// unmapped is ap with an IPv4-mapped address unmapped and no zone, the one
// spelling the table and the set of own addresses use.
func unmapped(ap netip.AddrPort) netip.AddrPort {
	return netip.AddrPortFrom(ap.Addr().Unmap().WithZone(""), ap.Port())
}

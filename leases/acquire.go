package leases

import (
	"context"
	"errors"
	"fmt"

	"fwproxy/internal/selfaddr"
)

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
	case errors.Is(err, ErrGroupLayout):
		return FailGroupLayout
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
	l.unregister = m.self.Add(selfaddr.UDP, l.local)
	go l.runReader(src)

	m.obs.LeaseEvent(EventAcquire)
	m.log.Debug("lease acquire", "key", key, "port", port, "kind", req.Kind, "wanted", req.WantPort, "sid", req.Session)
	return h, nil
}

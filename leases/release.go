package leases

import "context"

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
	m.releaseWithTurn(s, h)
}

// releaseWithTurn is release's work; the caller holds the turn s of h's key
// (a Group's Release holds all its members' turns at once).
func (m *Manager) releaseWithTurn(s *keySlot, h *Holder) {
	l := h.l
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
	// The released holder may have been holding delivery (Holder.Hold): what
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

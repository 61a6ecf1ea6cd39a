package leases

import "context"

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

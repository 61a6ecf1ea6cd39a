package leases

import (
	"context"
	"net"
	"net/netip"
)

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
// It is the one-key case of bindGroupEvicting. The caller holds key's turn.
func (m *Manager) bindEvicting(ctx context.Context, key Key, req Request) (*net.UDPConn, uint16, error) {
	conns, p, err := m.bindGroupEvicting(ctx, []Key{key}, []*lease{nil}, false, []netip.AddrPort{req.DeliverTo})
	if err != nil {
		return nil, 0, err
	}
	return conns[0], uint16(p), nil
}

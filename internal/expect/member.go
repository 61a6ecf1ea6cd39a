package expect

import (
	"net/netip"
	"sync"

	"fwproxy/leases"
)

// member delivers one expected port to the client in announced mode. A
// reclaimed lease flushes what it buffered while it lingered during the
// Acquire that reclaims it, before the holder is known: those datagrams
// wait in early and go out, in order, as soon as it is (dropping them
// would lose the very data the linger kept).
type member struct {
	to netip.AddrPort
	// mu guards holder and early, and orders the flush of early before
	// any later delivery (deliveries come one at a time per lease, with
	// the lease's delivery lock held, so mu is taken inside that lock
	// and never the other way round).
	mu     sync.Mutex
	holder *leases.Holder
	early  [][]byte
}

// deliver is the member's DeliverFunc in announced mode: unwrapped to the
// client's announced port, from the lease's own socket. A send error (the
// client's port closed while it binds again) is counted by the lease.
func (m *member) deliver(b []byte, _ netip.AddrPort) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.holder == nil {
		// Only during the acquire, and only what the lease had
		// buffered, which its caps bound.
		m.early = append(m.early, append([]byte(nil), b...))
		return
	}
	m.holder.WriteTo(b, m.to)
}

// attach makes h the member's holder and sends what came early.
func (m *member) attach(h *leases.Holder) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.holder = h
	for _, b := range m.early {
		h.WriteTo(b, m.to)
	}
	m.early = nil
}

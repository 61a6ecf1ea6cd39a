package leases

// Hold and Resume let an announced-mode holder pause delivery to itself
// while its client is known to be rebinding. An MMS player that only
// tunnels TCP closes its own UDP port at a playlist transition and binds it
// again before it asks for the next entry's header (MS-MMSP §3.1.5.19:
// EndOfStream, StreamChange, then ReadBlock); datagrams relayed to it in
// between would hit a closed port. Held, they go to the linger buffer
// (same bounds, same counters) and Resume delivers them first, in order.
//
// A hold only affects delivery to a KindAnnounced target: a firewall
// client's association announces its own close and bind by releasing and
// acquiring. With Linger 0 nothing is buffered, as everywhere else.

// Hold pauses delivery to h's lease while h (an announced holder) is its
// delivery target. It lasts until Resume or h's Release.
func (h *Holder) Hold() {
	l := h.l
	l.mu.Lock()
	if h.kind == KindAnnounced && !h.released.Load() {
		l.heldBy = h
	}
	l.mu.Unlock()
}

// Resume ends h's hold and delivers what was buffered meanwhile.
func (h *Holder) Resume() {
	l := h.l
	l.mu.Lock()
	if l.heldBy != h {
		l.mu.Unlock()
		return
	}
	l.heldBy = nil
	f := l.flushLocked()
	l.mu.Unlock()
	f.report(l.m.obs)
}

// activeTargetLocked is the holder to deliver to now, or nil to buffer.
func (l *lease) activeTargetLocked() *Holder {
	if l.heldBy != nil && l.target != nil && l.target.kind == KindAnnounced {
		return nil
	}
	return l.target
}

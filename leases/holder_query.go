package leases

// HasAssociation reports whether the holder's lease has a live
// KindAssociation holder (itself included). An application filter uses it
// to tell whether its announcement joined a firewall client's own binding
// or stands alone.
func (h *Holder) HasAssociation() bool {
	l := h.l
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.hasKindLocked(KindAssociation)
}

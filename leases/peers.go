package leases

import (
	"net/netip"
	"slices"
)

// permitted reports whether ip may send to this lease. Hot path: a read
// lock and a short linear scan, no allocation.
func (l *lease) permitted(ip netip.Addr) bool {
	ip = ip.Unmap()
	l.peersMu.RLock()
	defer l.peersMu.RUnlock()
	for _, p := range l.pinned {
		if p == ip {
			return true
		}
	}
	for _, p := range l.peers {
		if p == ip {
			return true
		}
	}
	return false
}

// pin adds ip to the pinned peers, which the ring's replacement never
// touches; when they too are full the oldest pinned entry goes.
func (l *lease) pin(ip netip.Addr) {
	ip = ip.Unmap()
	if !ip.IsValid() {
		return
	}
	l.peersMu.Lock()
	defer l.peersMu.Unlock()
	if slices.Contains(l.pinned, ip) {
		return
	}
	if len(l.pinned) >= l.m.cfg.MaxPeers {
		l.pinned = slices.Delete(l.pinned, 0, 1)
	}
	l.pinned = append(l.pinned, ip)
}

// permit adds ip to the permitted peers, replacing the oldest entry when
// the set is full.
func (l *lease) permit(ip netip.Addr) {
	ip = ip.Unmap()
	if !ip.IsValid() || l.permitted(ip) {
		return
	}
	l.peersMu.Lock()
	defer l.peersMu.Unlock()
	for _, p := range l.peers {
		if p == ip {
			return
		}
	}
	max := l.m.cfg.MaxPeers
	if len(l.peers) < max {
		l.peers = append(l.peers, ip)
		return
	}
	l.peers[l.peerNext] = ip
	l.peerNext = (l.peerNext + 1) % max
	if !l.peersWarned {
		l.peersWarned = true
		l.m.log.Warn("lease peer set full, replacing oldest peers", "key", l.key, "port", l.local.Port(), "max", max)
	}
}

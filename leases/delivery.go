package leases

import (
	"net/netip"
	"slices"

	"fwproxy/internal/selfaddr"
)

// activeTargetLocked is the holder to deliver to now, or nil to buffer.
func (l *lease) activeTargetLocked() *Holder {
	if l.heldBy != nil && l.target != nil && l.target.kind == KindAnnounced {
		return nil
	}
	return l.target
}

// deliverLocked hands b to the target's DeliverFunc and reports whether it
// went out; false when the DeliverFunc's WriteTo refused it because it was
// addressed to one of the proxy's own sockets.
func (l *lease) deliverLocked(b []byte, from netip.AddrPort) bool {
	l.delivering.Store(true)
	l.target.deliver(b, from)
	l.delivering.Store(false)
	return !l.ownRefused.Swap(false)
}

// refuseOwn reports whether dst is one of the proxy's own sockets; if so
// it logs that once for the lease and, unless a delivery is under way
// (which counts it, see deliverLocked), counts the datagram.
func (l *lease) refuseOwn(dst netip.AddrPort, size int, outbound bool) bool {
	if !l.m.self.Contains(selfaddr.UDP, dst) {
		return false
	}
	if !outbound && l.delivering.Load() {
		l.ownRefused.Store(true)
	} else {
		l.m.obs.Datagrams(OutcomeDropped, ReasonOwnSocket, 1, size)
	}
	if l.ownWarned.CompareAndSwap(false, true) {
		l.m.log.Warn("lease refused to send to one of the proxy's own sockets, dropping (logged once per lease)",
			"key", l.key, "port", l.local.Port(), "dst", dst)
	}
	return true
}

func (l *lease) hasKindLocked(k Kind) bool {
	for _, h := range l.holders {
		if h.kind == k {
			return true
		}
	}
	return false
}

func (l *lease) addHolderLocked(req Request) *Holder {
	l.nextGen++
	h := &Holder{l: l, kind: req.Kind, gen: l.nextGen, deliver: req.Deliver, session: req.Session}
	l.holders = append(l.holders, h)
	if req.Kind == KindAssociation {
		l.everAssoc = true
	}
	l.retargetLocked()
	return h
}

func (l *lease) removeHolderLocked(h *Holder) {
	if l.heldBy == h {
		l.heldBy = nil
	}
	if i := slices.Index(l.holders, h); i >= 0 {
		// slices.Delete zeroes the vacated slot, so a released holder
		// (and its DeliverFunc's captures) is not kept alive.
		l.holders = slices.Delete(l.holders, i, i+1)
	}
	if len(l.holders) == 0 {
		l.holders = nil
	}
	l.retargetLocked()
}

// retargetLocked picks the delivery target: the newest live association
// holder; without one, the newest announced holder only if the lease never
// had an association (once it had, its client is merely between close and
// bind-again, and data waits in the buffer for it).
//
// A handed-over association is a target again as soon as every newer one
// has gone: processes sharing a client IP and user are one client to the
// proxy, so a second association that opens and closes while the first
// lives (or that fails after its handover) must give delivery back to the
// first, which is still bound and reading. Buffering for it instead would
// strand it for as long as it lives, since a lease with a holder never
// lingers and so never expires.
func (l *lease) retargetLocked() {
	l.target = nil
	for i := len(l.holders) - 1; i >= 0; i-- {
		if h := l.holders[i]; h.kind == KindAssociation {
			l.target = h
			return
		}
	}
	if l.everAssoc {
		return
	}
	if n := len(l.holders); n > 0 {
		l.target = l.holders[n-1]
	}
}

// normalise unmaps an IPv4-mapped destination for an IPv4 socket, which
// cannot send to the mapped form.
func (l *lease) normalise(dst netip.AddrPort) netip.AddrPort {
	if l.local.Addr().Is4() && dst.Addr().Is4In6() {
		return netip.AddrPortFrom(dst.Addr().Unmap(), dst.Port())
	}
	return dst
}

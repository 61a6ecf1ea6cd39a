package leases

import (
	"net/netip"
	"sync/atomic"
)

// Holder is one registration on a lease. Its methods are safe for
// concurrent use.
type Holder struct {
	l        *lease
	kind     Kind
	gen      uint64
	deliver  DeliverFunc
	session  uint64 // Request.Session, for log lines
	released atomic.Bool
}

// Generation is the holder's registration number on its lease: 1 for the
// lease's first holder, one more for every later Acquire of the key while
// the same socket lives (reclaims after a linger included). It starts again
// at 1 when the key gets a new socket, so it orders only holders of one
// lease. It is for logs and tests: delivery does not look at it but at the
// holders' kinds and arrival (the newest live association holder; the
// newest announced holder only while no association is expected; see the
// package README).
func (h *Holder) Generation() uint64 { return h.gen }

// Key is the lease's key.
func (h *Holder) Key() Key { return h.l.key }

// Kind is the kind this holder registered with.
func (h *Holder) Kind() Kind { return h.kind }

// Port is the external port.
func (h *Holder) Port() uint16 { return h.l.local.Port() }

// LocalAddr is the external socket's address.
func (h *Holder) LocalAddr() netip.AddrPort { return h.l.local }

// Send writes b to dst from the external socket (client -> world) and
// permits dst's IP as an inbound peer. b is not retained. It does not
// allocate when dst is already permitted. A dst that is one of the proxy's
// own sockets is refused (ErrOwnSocket), counted and not permitted.
func (h *Holder) Send(b []byte, dst netip.AddrPort) error {
	if h.released.Load() {
		return ErrReleased
	}
	dst = h.l.normalise(dst)
	if h.l.refuseOwn(dst, len(b), true) {
		return ErrOwnSocket
	}
	h.l.permit(dst.Addr())
	_, err := h.l.conn.WriteToUDPAddrPort(b, dst)
	return err
}

// WriteTo writes b to dst from the external socket without permitting dst
// (announced mode: the lease's own socket delivering to the client). b is
// not retained. A dst that is one of the proxy's own sockets is refused
// (ErrOwnSocket) and counted once: from a DeliverFunc, the datagram being
// delivered counts as dropped (own_socket) instead of delivered.
func (h *Holder) WriteTo(b []byte, dst netip.AddrPort) error {
	if h.released.Load() {
		return ErrReleased
	}
	dst = h.l.normalise(dst)
	if h.l.refuseOwn(dst, len(b), false) {
		return ErrOwnSocket
	}
	_, err := h.l.conn.WriteToUDPAddrPort(b, dst)
	return err
}

// AllowPeer permits ip as an inbound peer (an application filter registers
// the media server this way); it stays permitted however many hosts the
// client sends to. It is not undone by Release: the permission
// belongs to the lease and survives a reclaim.
func (h *Holder) AllowPeer(ip netip.Addr) {
	h.l.pin(ip)
}

// Release unregisters the holder. When it was the lease's last holder the
// linger starts (or, with Linger 0, the socket closes before Release
// returns). Release is idempotent, and the release of a holder that was
// handed over, or whose lease has since closed, changes nothing for newer
// holders. It may wait for the key's turn; it must not be called from a
// DeliverFunc.
func (h *Holder) Release() {
	if !h.released.CompareAndSwap(false, true) {
		return
	}
	h.l.m.release(h)
}

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

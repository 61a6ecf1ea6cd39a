package leases

import (
	"errors"
	"net"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"
)

// lease is one external socket held for one key.
type lease struct {
	m          *Manager
	key        Key
	conn       *net.UDPConn
	local      netip.AddrPort
	created    time.Time
	readerDone chan struct{} // closed when the reader goroutine has returned

	// state holds a State. It changes only with the key's turn held (and,
	// except for the move to closing, with mu held), so readers that hold
	// either see a stable value; Stats reads it with neither.
	state atomic.Uint32
	// finished makes the final close/expire/evict event count once even when
	// Close races a last Release.
	finished atomic.Bool

	// peersMu guards peers, peerNext and pinned. It is separate from mu so Send
	// never waits behind a delivery.
	peersMu sync.RWMutex
	peers   []netip.Addr // ring of permitted inbound IPs, len <= MaxPeers
	// pinned are the peers an application filter registered (AllowPeer):
	// a client that sends to many hosts must not push its media server out
	// of the ring. Bounded by MaxPeers as well.
	pinned      []netip.Addr
	peerNext    int // next slot to overwrite once full
	peersWarned bool

	// mu is the delivery lock. It guards the fields below and is held
	// across every DeliverFunc call, so deliveries for one lease are serial
	// and a reclaim's flush precedes every datagram read after it.
	mu             sync.Mutex
	holders        []*Holder // live holders, oldest first
	target         *Holder   // delivery target; nil means buffer (or drop at Linger 0)
	heldBy         *Holder   // an announced holder that paused delivery to itself (hold.go)
	everAssoc      bool      // has ever had a KindAssociation holder
	nextGen        uint64
	buf            []buffered
	bufBytes       int // charged for buf: payload plus bufferedOverhead each
	bufPayload     int // payload bytes in buf, for the byte counters
	lingerDeadline time.Time
	lingerSeq      uint64 // identifies the current linger period for its timer
	timer          Timer
	overflowWarned bool // one Warn per linger period, not one per datagram

	// counts are touched only by the reader goroutine and reported in one
	// go when the socket has been drained (see flushCounts).
	counts readerCounts

	// unregister removes the socket from the Manager's set of own
	// addresses; set once the lease is in the table, called once closed.
	unregister func()
	// delivering is set, with mu held, around every DeliverFunc call, and
	// ownRefused by a WriteTo that refused to send to one of the proxy's
	// own sockets meanwhile: the datagram being delivered is then counted
	// dropped (own_socket), not delivered. WriteTo is the DeliverFunc's
	// way out, so outside a delivery it counts its refusal itself.
	delivering atomic.Bool
	ownRefused atomic.Bool
	// ownWarned: the first own-socket refusal of the lease is logged, the
	// rest only counted.
	ownWarned atomic.Bool
}

type buffered struct {
	data []byte
	from netip.AddrPort
}

// bufferedOverhead is what one buffered datagram costs beyond its payload,
// charged against MaxBufferedBytes and MaxBufferedBytesTotal so that the
// caps bound memory, not just payload: a flood of zero-byte datagrams costs
// memory too (issue 10 #8 measured ~80 B each, uncharged). It is:
//
//   - the buffered element in l.buf (a slice header and a netip.AddrPort,
//     56 B on 64-bit), twice: append grows the array to a size class, and
//     just after a growth it can be half empty (9 elements in an array of
//     18 is the worst case, 112 B a datagram);
//   - 16 B for the allocation rounding of a small payload's copy: Go's
//     size classes are at most 16 B apart up to 128 B.
//
// Above 128 B the classes are at most an eighth apart, which bufferedCost
// adds in proportion. TestBufferedOverheadIsHonest measures the heap per
// buffered datagram and keeps both terms within bounds of the truth.
const bufferedOverhead = 2*int(unsafe.Sizeof(buffered{})) + 16

// bufferedCost is what buffering a datagram of n payload bytes is charged:
// the payload, its allocation's rounding, and bufferedOverhead.
func bufferedCost(n int) int { return n + n/8 + bufferedOverhead }

type countPair struct{ n, bytes int }

type readerCounts struct {
	delivered, buffered countPair
	dropped             [numReasons]countPair
	pending             int // datagrams counted since the last flush
}

// maxPendingCounts bounds how stale the metrics get under a flood that never
// lets the socket drain (and so never reaches the idle flush).
const maxPendingCounts = 64

func newLease(m *Manager, key Key, conn *net.UDPConn, port uint16) *lease {
	local := netip.AddrPortFrom(m.cfg.ListenIP, port)
	if ua, ok := conn.LocalAddr().(*net.UDPAddr); ok {
		ap := ua.AddrPort()
		local = netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
	}
	l := &lease{
		m:          m,
		key:        key,
		conn:       conn,
		local:      local,
		created:    m.clock.Now(),
		readerDone: make(chan struct{}),
	}
	l.state.Store(uint32(StateActive))
	return l
}

// runReader is the reader goroutine's launcher.
func (l *lease) runReader(src datagramSource) {
	defer l.m.wg.Done()
	defer close(l.readerDone)
	if err := l.readLoop(src); err != nil {
		l.m.log.Warn("lease reader stopped", "key", l.key, "port", l.local.Port(), "err", err)
	}
}

// readLoop reads until the socket is closed.
func (l *lease) readLoop(src datagramSource) error {
	consecutiveErrs := 0
	for {
		b, size, from, err := src.next()
		if err != nil {
			l.flushCounts()
			if errors.Is(err, net.ErrClosed) {
				return nil
			}
			// Transient receive errors (a queued ICMP error, ENOMEM) are
			// survivable; a stream of them means the socket is unusable.
			consecutiveErrs++
			if consecutiveErrs >= 16 {
				return err
			}
			continue
		}
		consecutiveErrs = 0
		l.handle(b, size, from)
	}
}

// handle routes one inbound datagram. b is the reader's buffer: it is copied
// only when buffered.
func (l *lease) handle(b []byte, size int, from netip.AddrPort) {
	c := &l.counts
	c.pending++
	if c.pending >= maxPendingCounts {
		defer l.flushCounts()
	}
	if size > len(b) || size > l.m.cfg.MaxDatagramSize {
		c.dropped[ReasonTooLarge].add(size)
		return
	}
	if !l.permitted(from.Addr()) {
		c.dropped[ReasonNotPermitted].add(size)
		return
	}
	l.mu.Lock()
	switch {
	case l.state.Load() == uint32(StateClosing):
		c.dropped[ReasonClosed].add(size)
	case l.activeTargetLocked() != nil:
		if l.deliverLocked(b, from) {
			c.delivered.add(size)
		} else {
			c.dropped[ReasonOwnSocket].add(size)
		}
	case l.m.cfg.Linger == 0:
		c.dropped[ReasonNoHolder].add(size)
	default:
		if r := l.bufferLocked(b, from); r != ReasonNone {
			c.dropped[r].add(size)
		} else {
			c.buffered.add(size)
		}
	}
	l.mu.Unlock()
}

func (p *countPair) add(bytes int) {
	p.n++
	p.bytes += bytes
}

// flushCounts reports what the reader counted since the last flush. It runs
// on the reader goroutine only.
func (l *lease) flushCounts() {
	c := &l.counts
	if c.pending == 0 {
		return
	}
	obs := l.m.obs
	if c.delivered.n > 0 {
		obs.Datagrams(OutcomeDelivered, ReasonNone, c.delivered.n, c.delivered.bytes)
	}
	if c.buffered.n > 0 {
		obs.Datagrams(OutcomeBuffered, ReasonNone, c.buffered.n, c.buffered.bytes)
	}
	for r := range c.dropped {
		if c.dropped[r].n > 0 {
			obs.Datagrams(OutcomeDropped, DropReason(r), c.dropped[r].n, c.dropped[r].bytes)
		}
	}
	*c = readerCounts{}
}

// bufferLocked copies b into the linger buffer, or says why it cannot.
func (l *lease) bufferLocked(b []byte, from netip.AddrPort) DropReason {
	cfg := &l.m.cfg
	cost := bufferedCost(len(b))
	if (cfg.MaxBufferedDatagrams > 0 && len(l.buf) >= cfg.MaxBufferedDatagrams) ||
		(cfg.MaxBufferedBytes > 0 && l.bufBytes+cost > cfg.MaxBufferedBytes) {
		l.warnOverflowLocked(ReasonBufferFull)
		return ReasonBufferFull
	}
	if !l.m.takeBufBytes(cost) {
		l.warnOverflowLocked(ReasonTotalBufferFull)
		return ReasonTotalBufferFull
	}
	l.buf = append(l.buf, buffered{data: append([]byte(nil), b...), from: from})
	l.bufBytes += cost
	l.bufPayload += len(b)
	l.m.bufDatagrams.Add(1)
	return ReasonNone
}

func (l *lease) warnOverflowLocked(r DropReason) {
	if l.overflowWarned {
		return
	}
	l.overflowWarned = true
	l.m.log.Warn("lease buffer full, dropping", "key", l.key, "port", l.local.Port(), "reason", r,
		"datagrams", len(l.buf), "charged_bytes", l.bufBytes)
}

// takeBufBytes reserves n charged bytes of the global buffer budget.
func (m *Manager) takeBufBytes(n int) bool {
	limit := m.cfg.MaxBufferedBytesTotal
	if limit <= 0 {
		m.bufBytes.Add(int64(n))
		return true
	}
	for {
		cur := m.bufBytes.Load()
		if cur+int64(n) > limit {
			return false
		}
		if m.bufBytes.CompareAndSwap(cur, cur+int64(n)) {
			return true
		}
	}
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

// flushResult is what a flush of the linger buffer did.
type flushResult struct {
	n, bytes      int // flushed
	own, ownBytes int // refused: addressed to one of the proxy's own sockets
}

// report counts the flush; call it with no lock held.
func (f flushResult) report(obs Observer) {
	if f.n > 0 {
		obs.Datagrams(OutcomeFlushed, ReasonNone, f.n, f.bytes)
	}
	if f.own > 0 {
		obs.Datagrams(OutcomeDropped, ReasonOwnSocket, f.own, f.ownBytes)
	}
}

// flushLocked delivers the linger buffer, oldest first, to the target.
func (l *lease) flushLocked() (f flushResult) {
	if l.activeTargetLocked() == nil || len(l.buf) == 0 {
		return f
	}
	for i := range l.buf {
		d := &l.buf[i]
		if l.deliverLocked(d.data, d.from) {
			f.n++
			f.bytes += len(d.data)
		} else {
			f.own++
			f.ownBytes += len(d.data)
		}
	}
	l.discardBufferLocked()
	return f
}

// closeSocket closes the lease's socket and takes it out of the set of the
// proxy's own addresses.
func (l *lease) closeSocket() {
	l.conn.Close()
	if l.unregister != nil {
		l.unregister()
	}
}

// refuseOwn reports whether dst is one of the proxy's own sockets; if so
// it logs that once for the lease and, unless a delivery is under way
// (which counts it, see deliverLocked), counts the datagram.
func (l *lease) refuseOwn(dst netip.AddrPort, size int, outbound bool) bool {
	if !l.m.self.Contains(dst) {
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

// dropBufferLocked empties the linger buffer and says what was lost
// (datagrams and payload bytes).
func (l *lease) dropBufferLocked() (n, bytes int) {
	n, bytes = len(l.buf), l.bufPayload
	l.discardBufferLocked()
	return n, bytes
}

func (l *lease) discardBufferLocked() {
	l.m.bufBytes.Add(-int64(l.bufBytes))
	l.m.bufDatagrams.Add(-int64(len(l.buf)))
	// Drop the backing array: an idle lease must not keep a burst's worth
	// of slice headers alive.
	l.buf = nil
	l.bufBytes = 0
	l.bufPayload = 0
	l.overflowWarned = false
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

// startLingerLocked arms the linger timer for a new linger period.
func (l *lease) startLingerLocked() {
	l.lingerSeq++
	seq := l.lingerSeq
	l.lingerDeadline = l.m.clock.Now().Add(l.m.cfg.Linger)
	l.timer = l.m.clock.AfterFunc(l.m.cfg.Linger, func() { l.m.expire(l, seq) })
}

// startAssocGraceLocked arms the association grace: the lease's last
// association left while announced holders remain. Delivery waits in the
// buffer for a new association (the firewall client rebinding) for Linger,
// then goes to the announced holders. It shares the linger timer fields:
// the two never run at once (a grace needs holders, a linger none).
func (l *lease) startAssocGraceLocked() {
	l.stopLingerLocked()
	l.lingerSeq++
	seq := l.lingerSeq
	l.timer = l.m.clock.AfterFunc(l.m.cfg.Linger, func() { l.m.endAssocGrace(l, seq) })
}

// endAssocGraceLocked makes the announced holders targets again.
func (l *lease) endAssocGraceLocked() {
	l.everAssoc = false
	l.retargetLocked()
}

func (l *lease) stopLingerLocked() {
	if l.timer != nil {
		l.timer.Stop()
		l.timer = nil
	}
	l.lingerSeq++ // a timer that already fired finds its period gone
	l.lingerDeadline = time.Time{}
}

// shutdown is Manager.Close's part: unlike closeLease it does not take the
// key's turn (turn holders are finishing up concurrently) and does not wait
// for the reader (Close waits for all goroutines at once).
func (l *lease) shutdown() (n, bytes int) {
	l.state.Store(uint32(StateClosing))
	l.closeSocket()
	l.mu.Lock()
	l.stopLingerLocked()
	n, bytes = l.dropBufferLocked()
	l.mu.Unlock()
	return n, bytes
}

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

func (l *lease) info(now time.Time) LeaseInfo {
	l.peersMu.RLock()
	peers := len(l.peers) + len(l.pinned)
	l.peersMu.RUnlock()
	l.mu.Lock()
	defer l.mu.Unlock()
	in := LeaseInfo{
		Key:               l.key,
		Port:              l.local.Port(),
		LocalAddr:         l.local,
		State:             State(l.state.Load()),
		BufferedDatagrams: len(l.buf),
		BufferedBytes:     l.bufBytes,
		Peers:             peers,
		Age:               now.Sub(l.created),
	}
	if in.State == StateLingering {
		in.LingerDeadline = l.lingerDeadline
	}
	for _, h := range l.holders {
		switch h.kind {
		case KindAssociation:
			in.Associations++
		case KindAnnounced:
			in.Announced++
		}
	}
	return in
}

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

// Generation numbers the registrations on one lease, starting at 1; a
// newer holder has a higher one. Delivery goes to the live association
// holder with the highest generation, so the release of a lower one (a
// handed-over holder) changes nothing for the newer one; the release of
// the newest gives delivery back to the next live one.
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

// normalise unmaps an IPv4-mapped destination for an IPv4 socket, which
// cannot send to the mapped form.
func (l *lease) normalise(dst netip.AddrPort) netip.AddrPort {
	if l.local.Addr().Is4() && dst.Addr().Is4In6() {
		return netip.AddrPortFrom(dst.Addr().Unmap(), dst.Port())
	}
	return dst
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

package leases

import (
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"
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
	heldBy         *Holder   // an announced holder that paused delivery to itself (Holder.Hold)
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

// closeSocket closes the lease's socket and takes it out of the set of the
// proxy's own addresses.
func (l *lease) closeSocket() {
	l.conn.Close()
	if l.unregister != nil {
		l.unregister()
	}
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

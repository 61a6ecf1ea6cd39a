package leases

import (
	"fmt"
	"net/netip"
	"time"
)

// Key identifies one client's UDP port binding.
type Key struct {
	Client netip.Addr // client IP (always Unmap()ed)
	User   string     // authenticated SOCKS user, "" without authentication
	Port   uint16     // the client's own UDP port (bound by it, or announced by it)
}

// String is "ip/user/port", the user empty without authentication
// ("10.0.0.5//7000"): always three fields, so a log search can split it.
func (k Key) String() string {
	return fmt.Sprintf("%v/%s/%d", k.Client, k.User, k.Port)
}

// DeliverFunc gets one inbound datagram from the external socket. b is only
// valid during the call. It is called with the lease's delivery lock held,
// never concurrently for one lease, from the lease reader goroutine or from
// Acquire while flushing the linger buffer. It must not block for long (one
// UDP write) and must not call the Manager or any Holder method that takes
// the key's turn (Release); Send, WriteTo and AllowPeer are fine.
type DeliverFunc func(b []byte, from netip.AddrPort)

// Request describes what an Acquire wants.
type Request struct {
	Kind Kind
	// WantPort is the external port wanted (port preservation); 0 = any port
	// in range. It only matters when a new socket is bound: an existing lease
	// for the key keeps its port.
	WantPort uint16
	// ExactPort, with WantPort: fail with ErrPortTaken (or ErrPortOutOfRange)
	// rather than fall back to another port.
	ExactPort bool
	// DeliverTo is where the holder sends inbound datagrams, when that is
	// a fixed address (announced mode: the client's IP and announced port).
	// A new socket is never bound there, whatever WantPort says: with the
	// client on the external IP, port preservation would otherwise take the
	// very port the client announced, so the client could never bind it and
	// every delivery would go back into the lease. Zero: no constraint.
	DeliverTo netip.AddrPort
	// Deliver receives inbound datagrams while this holder is the lease's
	// delivery target. Required.
	Deliver DeliverFunc
	// Session, when not 0, is the requesting SOCKS session's id; the lease
	// log lines about this holder carry it as "sid", so that one search
	// finds a player's CONNECT, association and lease lines.
	Session uint64
}

// LeaseInfo describes one lease at the moment of a Snapshot.
type LeaseInfo struct {
	Key               Key
	Port              uint16
	LocalAddr         netip.AddrPort
	State             State
	Associations      int // live KindAssociation holders
	Announced         int // live KindAnnounced holders
	BufferedDatagrams int
	BufferedBytes     int // charged: payload plus a fixed overhead per datagram
	Peers             int
	Age               time.Duration
	LingerDeadline    time.Time // zero unless lingering
}

// Stats are table totals, cheap enough to read on every scrape.
type Stats struct {
	Leases            int
	Active            int
	Lingering         int
	Closing           int
	BufferedDatagrams int64
	// BufferedBytes is what the buffers are charged against
	// MaxBufferedBytesTotal: payload plus a fixed overhead per datagram.
	BufferedBytes int64
}

// Package expect is the expectation half of an application filter, as in
// netfilter's conntrack helpers: a filter that reads a client announcing
// "send my UDP to port P" on its control connection asks for that UDP here
// and rewrites the announcement to the external address it gets. The
// protocol half (parsing, rewriting, knowing when the client pauses) stays
// in the filter.
//
// One expectation is one UDP lease of the proxy's lease manager, keyed by
// the client's IP, its SOCKS user and the announced port. It permits one
// peer (the server, from any source port) and delivers in one of two modes:
//
//   - joined: the client holds its own UDP association for that port (a
//     firewall client), so the expectation shares the association's lease
//     and the data reaches the client through the association;
//   - announced: the client only tunnels TCP, so the lease sends the
//     datagrams unwrapped to the client's IP at the announced port.
//
// ExpectGroup is the same for neighbouring ports taken as one step (RTP
// and RTCP, RFC 3550 §11): a lease group of the lease manager, on
// consecutive external ports, all or nothing, released and reclaimed as
// one.
//
// The filter drives the expectation from its own protocol state: Hold
// while the client is known to be rebinding its port, Resume when it is
// back, Release when the control connection ends or moves elsewhere.
// Nothing here parses or knows a protocol.
package expect

import (
	"context"
	"fmt"
	"net/netip"

	"fwproxy/leases"
)

// Leaser hands out UDP leases; *leases.Manager is one.
type Leaser interface {
	Acquire(ctx context.Context, key leases.Key, req leases.Request) (*leases.Holder, error)
}

var _ Leaser = (*leases.Manager)(nil)

// Mode says how an expectation's datagrams reach the client.
type Mode uint8

const (
	// Joined: through the client's own UDP association for the port.
	Joined Mode = iota
	// Announced: unwrapped, from the lease socket to the client's address.
	Announced
)

func (m Mode) String() string {
	if m == Joined {
		return "association"
	}
	return "announced"
}

// Want describes the UDP a filter expects.
type Want struct {
	// Client is the control connection's client and User its SOCKS user
	// ("" without authentication); with Port they key the lease, so that
	// an expectation meets the client's own association. Only the
	// client's IP is used: data never goes to an address the client
	// merely announced.
	Client netip.Addr
	User   string
	// Port is the client's UDP port, as announced on the control
	// connection. The lease keeps it as its external port when it can.
	Port uint16
	// Peer is the only address allowed to send (from any source port):
	// the server the control connection goes to.
	Peer netip.Addr
	// Session is the SOCKS session's id for the lease's log lines; 0 none.
	Session uint64
}

// UDP is one expectation. Its methods are safe for concurrent use; Release
// may be called more than once.
type UDP struct {
	// m delivers to the client; a reclaimed lease's flush during the
	// Acquire waits in it until the holder is known (see member).
	m    *member
	mode Mode
}

// ExpectUDP acquires the lease for w and permits w.Peer to send to it.
// On error nothing is held.
func ExpectUDP(ctx context.Context, l Leaser, w Want) (*UDP, error) {
	client := w.Client.Unmap()
	key := leases.Key{Client: client, User: w.User, Port: w.Port}
	u := &UDP{m: &member{to: netip.AddrPortFrom(client, w.Port)}}
	h, err := l.Acquire(ctx, key, leases.Request{
		Kind:     leases.KindAnnounced,
		WantPort: w.Port,
		// With the client on the external IP, port preservation would
		// otherwise give the lease the very port the client announced:
		// every delivery to the client would reach the lease itself, and
		// the client could never bind its port.
		DeliverTo: u.m.to,
		Deliver:   u.m.deliver,
		Session:   w.Session,
	})
	if err != nil {
		return nil, fmt.Errorf("expect UDP for %v: %w", key, err)
	}
	u.m.attach(h)
	h.AllowPeer(w.Peer.Unmap())
	u.mode = Announced
	if h.HasAssociation() {
		u.mode = Joined
	}
	return u, nil
}

// Mode is how the datagrams reach the client, as decided at ExpectUDP.
func (u *UDP) Mode() Mode { return u.mode }

// Key is the lease's key.
func (u *UDP) Key() leases.Key { return u.m.holderNow().Key() }

// Port is the external port the server must send to.
func (u *UDP) Port() uint16 { return u.m.holderNow().Port() }

// Hold pauses announced-mode delivery (the client is rebinding its port);
// what arrives meanwhile waits in the lease, within its buffer caps. A
// joined expectation is not held: the firewall client announces its own
// close and bind through its association.
func (u *UDP) Hold() { u.m.holderNow().Hold() }

// Resume ends a Hold and delivers what waited first, in order.
func (u *UDP) Resume() { u.m.holderNow().Resume() }

// Release gives the lease back; it lingers for the client's next bind as
// every lease does.
func (u *UDP) Release() { u.m.holderNow().Release() }

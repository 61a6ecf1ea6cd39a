package expect

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"sync"

	"fwproxy/leases"
)

// GroupLeaser hands out lease groups; *leases.Manager is one.
type GroupLeaser interface {
	Leaser
	AcquireGroup(ctx context.Context, keys []leases.Key, req leases.GroupRequest) (*leases.Group, error)
}

var _ GroupLeaser = (*leases.Manager)(nil)

// GroupWant describes the UDP a filter expects on several neighbouring
// ports of one client: an RTP port and its RTCP port (RFC 3550 §11), or a
// few such pairs.
type GroupWant struct {
	// Client, User and Session are as in Want.
	Client  netip.Addr
	User    string
	Session uint64
	// Ports are the client's UDP ports as announced, in order (RTP
	// first). Each keys one lease. When they are consecutive and free the
	// external ports keep them; otherwise the group gets consecutive
	// external ports elsewhere, the first one even when Ports[0] is even
	// (an RTP port is even, RFC 3550 §11, and some servers insist).
	Ports []uint16
	// Peers may send to every member, from any source port: the server,
	// and the source it names. More can be added later (AllowPeer).
	Peers []netip.Addr
}

// UDPGroup is one multi-port expectation. Its methods are safe for
// concurrent use; Release may be called more than once.
type UDPGroup struct {
	members []*member
	mode    Mode
	// release gives every member back: as one group when the ports were
	// acquired as one, one by one when the client's associations imposed
	// ports that are not a run (see ExpectGroup).
	release   func()
	releaseMu sync.Once
}

// member is one port of a group. A reclaimed lease flushes what it
// buffered during the acquire, before the holder is known: those
// datagrams wait in early and go out, in order, as soon as it is.
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

// ExpectGroup acquires one lease per announced port as one step (all or
// nothing) and permits w.Peers on each. On error nothing is held.
//
// Modes: when the client holds UDP associations for all the ports (a
// firewall client) the group joins them and is Joined; otherwise it is
// Announced (a port without an association gets its datagrams unwrapped
// at the client's address; one with an association still gets them
// through it, as the lease always prefers an association). When the
// associations' own external ports are not one run of consecutive ports
// they are joined one by one: the server is then told the two ports as
// they are.
func ExpectGroup(ctx context.Context, l GroupLeaser, w GroupWant) (*UDPGroup, error) {
	if len(w.Ports) == 0 {
		return nil, errors.New("expect UDP group: no ports")
	}
	client := w.Client.Unmap()
	keys := make([]leases.Key, len(w.Ports))
	reqs := make([]leases.Request, len(w.Ports))
	g := &UDPGroup{members: make([]*member, len(w.Ports))}
	for i, p := range w.Ports {
		keys[i] = leases.Key{Client: client, User: w.User, Port: p}
		m := &member{to: netip.AddrPortFrom(client, p)}
		g.members[i] = m
		// DeliverTo: never bind the very port the client announced when
		// it is on the external IP (see ExpectUDP).
		reqs[i] = leases.Request{Kind: leases.KindAnnounced, DeliverTo: m.to, Deliver: m.deliver, Session: w.Session}
	}
	hs, release, err := acquireMembers(ctx, l, keys, reqs, w.Ports[0]%2 == 0 && len(w.Ports) > 1)
	if err != nil {
		return nil, fmt.Errorf("expect UDP group for %v/%s/%v: %w", client, w.User, w.Ports, err)
	}
	g.release = release
	joined := true
	for i, h := range hs {
		g.members[i].attach(h)
		for _, p := range w.Peers {
			if p.IsValid() {
				h.AllowPeer(p.Unmap())
			}
		}
		joined = joined && h.HasAssociation()
	}
	g.mode = Announced
	if joined {
		g.mode = Joined
	}
	return g, nil
}

// acquireMembers takes the group, or, when the client's associations
// already hold the keys on ports that are not one run, each key on its
// own (every one of them then exists, so nothing new is bound).
func acquireMembers(ctx context.Context, l GroupLeaser, keys []leases.Key, reqs []leases.Request, evenFirst bool) ([]*leases.Holder, func(), error) {
	grp, err := l.AcquireGroup(ctx, keys, leases.GroupRequest{Members: reqs, EvenFirst: evenFirst})
	if err == nil {
		return grp.Holders(), grp.Release, nil
	}
	if !errors.Is(err, leases.ErrGroupLayout) {
		return nil, nil, err
	}
	hs := make([]*leases.Holder, 0, len(keys))
	releaseAll := func() {
		for _, h := range hs {
			h.Release()
		}
	}
	for i, k := range keys {
		h, err := l.Acquire(ctx, k, reqs[i])
		if err != nil {
			releaseAll()
			return nil, nil, err
		}
		hs = append(hs, h)
	}
	return hs, releaseAll, nil
}

// Mode is how the datagrams reach the client, as decided at ExpectGroup.
func (g *UDPGroup) Mode() Mode { return g.mode }

// Len is the number of ports.
func (g *UDPGroup) Len() int { return len(g.members) }

// Ports are the external ports the server must send to, in the order of
// the announced ones.
func (g *UDPGroup) Ports() []uint16 {
	out := make([]uint16, len(g.members))
	for i, m := range g.members {
		out[i] = m.holderNow().Port()
	}
	return out
}

// Keys are the leases' keys, in the order of the announced ports.
func (g *UDPGroup) Keys() []leases.Key {
	out := make([]leases.Key, len(g.members))
	for i, m := range g.members {
		out[i] = m.holderNow().Key()
	}
	return out
}

func (m *member) holderNow() *leases.Holder {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.holder
}

// AllowPeer permits ip on every member, from any source port (a server
// that names another source for its data). It survives Release with the
// leases, as Holder.AllowPeer does.
func (g *UDPGroup) AllowPeer(ip netip.Addr) {
	if !ip.IsValid() {
		return
	}
	for _, m := range g.members {
		m.holderNow().AllowPeer(ip.Unmap())
	}
}

// Hold pauses announced-mode delivery on every member; see UDP.Hold.
func (g *UDPGroup) Hold() {
	for _, m := range g.members {
		m.holderNow().Hold()
	}
}

// Resume ends a Hold on every member, each delivering what waited first.
func (g *UDPGroup) Resume() {
	for _, m := range g.members {
		m.holderNow().Resume()
	}
}

// Release gives every lease back, as one group: they linger together and
// a later ExpectGroup of the same ports reclaims them together. It must
// not be called from a DeliverFunc.
func (g *UDPGroup) Release() { g.releaseMu.Do(g.release) }

package leases

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync/atomic"

	"fwproxy/internal/selfaddr"
)

// Lease groups: media that needs neighbouring ports (RTP on an even port,
// RTCP on the next odd one, RFC 3550 §11) acquires its keys as one step, so
// a filter never holds half a pair. netfilter's RTSP and SIP NAT helpers
// walk the port pairs and undo the first expectation when the second
// fails; AcquireGroup does the same with the keys' turns held.
//
// Deadlocks: a group takes its keys' turns in one canonical order (sorted
// keys, see compareKeys) and gives them back in reverse. Every goroutine
// that holds more than one turn took them in that order, and nothing that
// holds a turn waits for another key's turn out of order (eviction only
// tries a turn, tryEvict), so no cycle of waiters can form. A try-lock with
// backoff would also avoid the deadlock, but it needs timers to back off on
// and can starve a group behind single acquires; ordered waiting is fair
// (each turn is a FIFO-ish channel send) and bounded by ctx like Acquire.

// maxGroupSize bounds the keys of one group: a filter needs two (RTP and
// RTCP), a few more for several streams; a request for hundreds of
// consecutive ports is a mistake or an attack on the port range.
const maxGroupSize = 16

// GroupRequest describes what an AcquireGroup wants.
type GroupRequest struct {
	// Members are the holders' requests, one per key in the keys' order:
	// Kind, Deliver, DeliverTo and Session as for Acquire. WantPort and
	// ExactPort must be zero: the group picks its ports as a whole.
	Members []Request
	// EvenFirst makes the first external port even, so that a pair gets
	// RTP on an even port and RTCP on the next odd one.
	EvenFirst bool
	// ExactPorts fails with ErrPortTaken (ErrPortOutOfRange for ports
	// outside the range, ErrGroupLayout for keys whose own ports are not
	// consecutive or break EvenFirst) instead of falling back to other ports
	// when the keys' own ports cannot be had.
	ExactPorts bool
}

// Group is the result of AcquireGroup: one holder per key, on consecutive
// external ports. Its methods are safe for concurrent use.
type Group struct {
	m        *Manager
	holders  []*Holder // in the request's key order
	released atomic.Bool
}

// Len is the number of members.
func (g *Group) Len() int { return len(g.holders) }

// Holder is the holder of the i-th key of the request.
func (g *Group) Holder(i int) *Holder { return g.holders[i] }

// Holders lists the members' holders in the request's key order.
func (g *Group) Holders() []*Holder { return slices.Clone(g.holders) }

// Ports lists the members' external ports, in the request's key order:
// consecutive, the first one even when EvenFirst was asked.
func (g *Group) Ports() []uint16 {
	out := make([]uint16, len(g.holders))
	for i, h := range g.holders {
		out[i] = h.Port()
	}
	return out
}

// Release releases every member still held, with all their turns held at
// once, so that the group starts lingering (or closes, with Linger 0) as
// one: a concurrent AcquireGroup of the same keys sees all of it released
// or none. Members released on their own before are skipped. It is
// idempotent and must not be called from a DeliverFunc.
func (g *Group) Release() {
	if !g.released.CompareAndSwap(false, true) {
		return
	}
	var hs []*Holder
	for _, h := range g.holders {
		if h.released.CompareAndSwap(false, true) {
			hs = append(hs, h)
		}
	}
	if len(hs) == 0 {
		return
	}
	m := g.m
	if !m.enter() {
		return
	}
	defer m.wg.Done()
	keys := make([]Key, len(hs))
	for i, h := range hs {
		keys[i] = h.l.key
	}
	order := canonicalOrder(keys)
	slots, err := m.lockKeys(context.Background(), keys, order)
	if err != nil {
		return // Close is tearing everything down anyway
	}
	defer m.unlockKeys(keys, order, slots)
	for i, h := range hs {
		m.releaseWithTurn(slots[i], h)
	}
}

// AcquireGroup acquires one holder per key on len(keys) consecutive
// external ports, all or nothing: on any failure nothing it acquired is
// left held, bound or counted against a cap.
//
// Ports: a key that already has a lease keeps its port (as with Acquire),
// and the group is laid out around it; leases that do not fit one run of
// consecutive ports (or EvenFirst) fail with ErrGroupLayout. Otherwise the
// keys' own ports are tried first when they are consecutive and fit
// EvenFirst (port preservation), then random runs, then a scan of every
// run in the range; when none binds, the oldest lingering lease and the
// lingering neighbours a run needs are evicted. A released group's leases
// linger, and acquiring the same keys again within Linger reclaims them
// all: the same ports, and each lease's buffered datagrams flushed first,
// in order, to its new holder.
//
// Errors wrap those of Acquire, and ErrGroupLayout.
func (m *Manager) AcquireGroup(ctx context.Context, keys []Key, req GroupRequest) (*Group, error) {
	keys = slices.Clone(keys)
	for i := range keys {
		keys[i].Client = keys[i].Client.Unmap()
	}
	g, err := m.acquireGroup(ctx, keys, req)
	if err != nil {
		m.obs.AcquireFailed(failReason(err))
		return nil, fmt.Errorf("leases: acquire group %s: %w", groupString(keys), err)
	}
	return g, nil
}

func groupString(keys []Key) string {
	s := make([]string, len(keys))
	for i, k := range keys {
		s[i] = k.String()
	}
	return "[" + strings.Join(s, " ") + "]"
}

func validGroup(keys []Key, req GroupRequest) error {
	if len(keys) == 0 || len(keys) > maxGroupSize || len(req.Members) != len(keys) {
		return ErrBadRequest
	}
	for i, r := range req.Members {
		if r.Deliver == nil || !r.Kind.valid() || !keys[i].Client.IsValid() || r.WantPort != 0 || r.ExactPort {
			return ErrBadRequest
		}
		for _, k := range keys[:i] {
			if k == keys[i] {
				return ErrBadRequest
			}
		}
	}
	return nil
}

func (m *Manager) acquireGroup(ctx context.Context, keys []Key, req GroupRequest) (*Group, error) {
	if err := validGroup(keys, req); err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if !m.enter() {
		return nil, ErrClosed
	}
	defer m.wg.Done()
	order := canonicalOrder(keys)
	slots, err := m.lockKeys(ctx, keys, order)
	if err != nil {
		return nil, err
	}
	defer m.unlockKeys(keys, order, slots)

	existing := make([]*lease, len(keys))
	m.mu.Lock()
	for i, s := range slots {
		existing[i] = s.lease
	}
	m.mu.Unlock()
	first, fixed, err := m.imposedFirst(existing, req.EvenFirst)
	if err != nil {
		return nil, err
	}

	// Everything that can fail happens before anything is attached: a
	// reclaim flushes a buffer, which cannot be undone.
	var reserved []Key
	unreserveAll := func() {
		for _, k := range reserved {
			m.unreserve(k)
		}
	}
	for i, l := range existing {
		if l != nil {
			continue
		}
		if err := m.reserve(ctx, keys[i]); err != nil {
			unreserveAll()
			return nil, err
		}
		reserved = append(reserved, keys[i])
	}
	var conns []*net.UDPConn
	if len(reserved) > 0 {
		conns, first, err = m.bindGroup(ctx, keys, existing, req, first, fixed)
		if err != nil {
			unreserveAll()
			return nil, err
		}
	}
	fresh, srcs, err := m.newGroupLeases(keys, existing, conns, first)
	if err != nil {
		unreserveAll()
		return nil, err
	}

	g := &Group{m: m, holders: make([]*Holder, len(keys))}
	for i, l := range fresh {
		if l == nil {
			continue
		}
		// Not in the table yet: nobody else can see l.
		l.mu.Lock()
		g.holders[i] = l.addHolderLocked(req.Members[i])
		l.mu.Unlock()
	}
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		for i, l := range fresh {
			if l != nil {
				l.conn.Close()
				m.forgetPort(uint16(first + i))
			}
		}
		unreserveAll()
		return nil, ErrClosed
	}
	for i, l := range fresh {
		if l != nil {
			slots[i].lease = l
			m.wg.Add(1) // under mu while !closed, so Close's Wait cannot miss the reader
		}
	}
	m.mu.Unlock()
	for i, l := range fresh {
		if l == nil {
			continue
		}
		l.unregister = m.self.Add(selfaddr.UDP, l.local)
		go l.runReader(srcs[i])
		m.obs.LeaseEvent(EventAcquire)
		m.log.Debug("lease acquire", "key", keys[i], "port", l.local.Port(), "kind", req.Members[i].Kind, "group", len(keys), "sid", req.Members[i].Session)
	}
	for i, l := range existing {
		if l == nil {
			continue
		}
		h, err := m.attach(l, req.Members[i])
		if err != nil {
			// Only Close moves a lease to closing while its turn is held
			// elsewhere: it closes every member anyway, so the holders
			// made so far only need to be forgotten.
			g.abandon()
			return nil, err
		}
		g.holders[i] = h
	}
	return g, nil
}

// abandon forgets the holders of a group whose acquire failed while the
// Manager closed. The caller holds the members' turns.
func (g *Group) abandon() {
	for _, h := range g.holders {
		if h == nil {
			continue
		}
		h.released.Store(true)
		h.l.mu.Lock()
		h.l.removeHolderLocked(h)
		h.l.mu.Unlock()
	}
}

// imposedFirst is the first port the keys' existing leases impose on the
// group; fixed is false when no key has a lease.
func (m *Manager) imposedFirst(existing []*lease, evenFirst bool) (first int, fixed bool, err error) {
	for i, l := range existing {
		if l == nil {
			continue
		}
		f := int(l.local.Port()) - i
		if fixed && f != first {
			return 0, false, ErrGroupLayout
		}
		first, fixed = f, true
	}
	if fixed && !m.runFits(first, len(existing), evenFirst) {
		return 0, false, ErrGroupLayout
	}
	return first, fixed, nil
}

// runFits reports whether n ports from first are inside the range and
// first has the parity asked.
func (m *Manager) runFits(first, n int, evenFirst bool) bool {
	return first >= int(m.cfg.PortMin) && first+n-1 <= int(m.cfg.PortMax) && (!evenFirst || first%2 == 0)
}

// bindGroup binds the ports of the keys without a lease; conns[i] is nil
// for a key that has one. The caller holds every key's turn and has
// reserved the new leases against the caps.
func (m *Manager) bindGroup(ctx context.Context, keys []Key, existing []*lease, req GroupRequest, first int, fixed bool) ([]*net.UDPConn, int, error) {
	n := len(keys)
	deliverTo := make([]netip.AddrPort, n)
	for i, r := range req.Members {
		deliverTo[i] = r.DeliverTo
	}
	try := func(f int) ([]*net.UDPConn, int, error) {
		conns, err := m.tryBindRun(ctx, keys, existing, f, deliverTo)
		return conns, f, err
	}
	if fixed {
		conns, f, err := try(first)
		if errors.Is(err, errPortBusy) {
			err = ErrPortTaken
		}
		return conns, f, err
	}

	own := int(keys[0].Port)
	consecutive := true
	for i, k := range keys {
		consecutive = consecutive && int(k.Port) == own+i
	}
	switch {
	case consecutive && m.runFits(own, n, req.EvenFirst):
		conns, f, err := try(own)
		if !errors.Is(err, errPortBusy) {
			return conns, f, err
		}
		if req.ExactPorts {
			return nil, 0, ErrPortTaken
		}
		m.log.Debug("wanted group ports busy, falling back", "keys", groupString(keys))
	case req.ExactPorts && (!consecutive || (req.EvenFirst && own%2 != 0)):
		return nil, 0, ErrGroupLayout
	case req.ExactPorts:
		return nil, 0, ErrPortOutOfRange
	}

	// Candidate runs start at base, base+step, ...; count of them.
	base, step := int(m.cfg.PortMin), 1
	if req.EvenFirst {
		step = 2
		base += base % 2
	}
	count := 0
	if last := int(m.cfg.PortMax) - n + 1; last >= base {
		count = (last-base)/step + 1
	}
	if count == 0 {
		return nil, 0, ErrNoPort
	}
	for range m.cfg.BindAttempts {
		conns, f, err := try(base + step*rand.IntN(count))
		if !errors.Is(err, errPortBusy) {
			return conns, f, err
		}
	}
	start := rand.IntN(count)
	for i := range count {
		if i%256 == 0 {
			if err := ctx.Err(); err != nil {
				return nil, 0, err
			}
		}
		conns, f, err := try(base + step*((start+i)%count))
		if !errors.Is(err, errPortBusy) {
			return conns, f, err
		}
	}
	return m.bindGroupEvicting(ctx, keys, existing, req.EvenFirst, deliverTo)
}

// tryBindRun binds first+i for every key i without a lease, or nothing:
// when one port is busy the ones already bound are closed again.
func (m *Manager) tryBindRun(ctx context.Context, keys []Key, existing []*lease, first int, deliverTo []netip.AddrPort) ([]*net.UDPConn, error) {
	conns := make([]*net.UDPConn, len(keys))
	for i := range keys {
		if existing[i] != nil {
			continue
		}
		c, err := m.tryBindAvoiding(ctx, keys[i], uint16(first+i), deliverTo...)
		if err != nil {
			m.unbindRun(conns, first)
			return nil, err
		}
		conns[i] = c
	}
	return conns, nil
}

// unbindRun closes the sockets tryBindRun bound and gives their ports back.
func (m *Manager) unbindRun(conns []*net.UDPConn, first int) {
	for i, c := range conns {
		if c != nil {
			c.Close()
			m.forgetPort(uint16(first + i))
		}
	}
}

// bindGroupEvicting is the last resort of bindGroup and bindEvicting: the
// range is full, so the oldest lingering lease is evicted together with
// the lingering leases of the other ports of a run through its port (never
// an active one, never one of the group's own keys). A few rounds cover
// ports that concurrent acquires took first. The caller holds every key's
// turn.
func (m *Manager) bindGroupEvicting(ctx context.Context, keys []Key, existing []*lease, evenFirst bool, deliverTo []netip.AddrPort) ([]*net.UDPConn, int, error) {
	n := len(keys)
	for range 8 {
		m.mu.Lock()
		victims := m.victimsLocked(netip.Addr{}, false)
		m.mu.Unlock()
		if len(victims) == 0 {
			break
		}
		for _, v := range victims {
			if slices.Contains(keys, v) {
				continue
			}
			m.mu.Lock()
			l, ok := m.lingering.Peek(v)
			m.mu.Unlock()
			if !ok {
				continue
			}
			p := int(l.local.Port())
			for j := range n {
				f := p - j
				if !m.runFits(f, n, evenFirst) || !m.evictRun(keys, f, n) {
					continue
				}
				conns, err := m.tryBindRun(ctx, keys, existing, f, deliverTo)
				if err == nil {
					return conns, f, nil
				}
				if !errors.Is(err, errPortBusy) {
					return nil, 0, err
				}
			}
		}
		if err := ctx.Err(); err != nil {
			return nil, 0, err
		}
	}
	if len(keys) == 1 {
		m.log.Warn("lease refused", "key", keys[0], "err", ErrNoPort)
	} else {
		m.log.Warn("lease group refused", "keys", groupString(keys), "err", ErrNoPort)
	}
	return nil, 0, ErrNoPort
}

// evictRun makes the n ports from first free in the table, evicting the
// lingering leases on them; false (having evicted nothing) when one of them
// is held by an active lease or by one of keys.
func (m *Manager) evictRun(keys []Key, first, n int) bool {
	var victims []Key
	m.mu.Lock()
	for p := first; p < first+n; p++ {
		k, taken := m.ports[uint16(p)]
		if !taken {
			continue
		}
		if _, lingering := m.lingering.Peek(k); !lingering || slices.Contains(keys, k) {
			m.mu.Unlock()
			return false
		}
		victims = append(victims, k)
	}
	m.mu.Unlock()
	for _, v := range victims {
		if _, ok := m.tryEvict(v); !ok {
			return false
		}
	}
	return true
}

// newGroupLeases wraps the group's new sockets in leases with their
// readers' sources, or closes them all on failure.
func (m *Manager) newGroupLeases(keys []Key, existing []*lease, conns []*net.UDPConn, first int) ([]*lease, []datagramSource, error) {
	fresh := make([]*lease, len(keys))
	srcs := make([]datagramSource, len(keys))
	for i := range keys {
		if existing[i] != nil {
			continue
		}
		l := newLease(m, keys[i], conns[i], uint16(first+i))
		src, err := m.newSource(conns[i], m.pool, l.flushCounts)
		if err != nil {
			m.unbindRun(conns, first)
			return nil, nil, err
		}
		fresh[i], srcs[i] = l, src
	}
	return fresh, srcs, nil
}

// canonicalOrder is the order in which a group takes its keys' turns:
// indexes into keys, sorted by compareKeys.
func canonicalOrder(keys []Key) []int {
	order := make([]int, len(keys))
	for i := range order {
		order[i] = i
	}
	slices.SortFunc(order, func(a, b int) int { return compareKeys(keys[a], keys[b]) })
	return order
}

func compareKeys(a, b Key) int {
	if c := a.Client.Compare(b.Client); c != 0 {
		return c
	}
	if c := strings.Compare(a.User, b.User); c != 0 {
		return c
	}
	return cmp.Compare(a.Port, b.Port)
}

// lockKeys takes the turns of keys in order (see canonicalOrder); slots[i]
// is keys[i]'s. On failure it gives back what it took.
func (m *Manager) lockKeys(ctx context.Context, keys []Key, order []int) ([]*keySlot, error) {
	slots := make([]*keySlot, len(keys))
	for n, i := range order {
		s, err := m.lockKey(ctx, keys[i])
		if err != nil {
			m.unlockKeys(keys, order[:n], slots)
			return nil, err
		}
		slots[i] = s
	}
	return slots, nil
}

// unlockKeys gives back the turns lockKeys took, in reverse order.
func (m *Manager) unlockKeys(keys []Key, order []int, slots []*keySlot) {
	for n := len(order) - 1; n >= 0; n-- {
		i := order[n]
		m.unlockKey(keys[i], slots[i])
	}
}

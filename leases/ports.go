package leases

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"syscall"
)

// errPortBusy means "try another port"; it never leaves the package.
var errPortBusy = errors.New("port busy")

// bind picks and binds an external port: WantPort when usable, then the
// port beside its RTP/RTCP neighbour's lease, then BindAttempts random
// ports, then a scan of the whole range from a random start; the random
// ports and the scan prefer a port whose pair partner is free.
func (m *Manager) bind(ctx context.Context, key Key, req Request) (*net.UDPConn, uint16, error) {
	lo, hi := m.cfg.PortMin, m.cfg.PortMax
	if req.WantPort != 0 {
		inRange := req.WantPort >= lo && req.WantPort <= hi
		switch {
		case inRange:
			conn, err := m.tryBind(ctx, key, req, req.WantPort)
			if err == nil {
				return conn, req.WantPort, nil
			}
			if !errors.Is(err, errPortBusy) {
				return nil, 0, err
			}
			if req.ExactPort {
				return nil, 0, ErrPortTaken
			}
			m.log.Debug("wanted port busy, falling back", "key", key, "port", req.WantPort)
		case req.ExactPort:
			return nil, 0, ErrPortOutOfRange
		}
	}
	if p, ok := m.pairPort(key); ok && p >= lo && p <= hi {
		conn, err := m.tryBind(ctx, key, req, p)
		if err == nil {
			return conn, p, nil
		}
		if !errors.Is(err, errPortBusy) {
			return nil, 0, err
		}
	}
	span := int(hi-lo) + 1
	for range m.cfg.BindAttempts {
		p := sameParity(lo+uint16(rand.IntN(span)), key.Port, lo, hi)
		if !m.partnerFree(key, p) {
			continue
		}
		conn, err := m.tryBind(ctx, key, req, p)
		if err == nil {
			return conn, p, nil
		}
		if !errors.Is(err, errPortBusy) {
			return nil, 0, err
		}
	}
	// The scan: first the ports that leave the pair's other port free,
	// then the rest.
	start := rand.IntN(span)
	for _, roomForPartner := range []bool{true, false} {
		for i := range span {
			if i%256 == 0 {
				if err := ctx.Err(); err != nil {
					return nil, 0, err
				}
			}
			p := lo + uint16((start+i)%span)
			if m.partnerFree(key, p) != roomForPartner {
				continue
			}
			conn, err := m.tryBind(ctx, key, req, p)
			if err == nil {
				return conn, p, nil
			}
			if !errors.Is(err, errPortBusy) {
				return nil, 0, err
			}
		}
	}
	return nil, 0, ErrNoPort
}

// partnerFree says whether the port that would pair with p for key's lease
// is free of leases: p+1 for a client port that is even (RTP), p-1 for an
// odd one (RTCP). A random fallback that another lease sits beside splits
// a firewall client's pair for good: its neighbour's lease cannot sit next
// to it (pairPort), and a server that ignores the second port of
// client_port and sends RTCP to RTP+1 sends it to that other lease, which
// may be another client's on the same media server. Keys without a port
// have no partner.
func (m *Manager) partnerFree(key Key, p uint16) bool {
	var q uint16
	switch {
	case key.Port == 0:
		return true
	case key.Port%2 == 0 && p < 65535:
		q = p + 1
	case key.Port%2 == 1 && p > 0:
		q = p - 1
	default:
		return true
	}
	m.mu.Lock()
	_, taken := m.ports[q]
	m.mu.Unlock()
	return !taken
}

// pairPort is the external port that keeps key's lease next to the lease
// of its RTP/RTCP neighbour (RFC 3550 §11: RTP on an even port, RTCP on the
// next one) when the client's own port could not be had. A firewall client
// binds its RTP and RTCP ports one UDP ASSOCIATE at a time, and an RTSP
// server is told both external ports as one client_port range: without
// this, taken ports would give the two associations unrelated ports and
// the server a range that is not a pair. For an odd port the neighbour is
// the key one below (its lease at E: try E+1); for an even port the one
// above (at E: try E-1). ok is false when the neighbour has no lease.
func (m *Manager) pairPort(key Key) (port uint16, ok bool) {
	if key.Port == 0 {
		return 0, false
	}
	sib := key
	if key.Port%2 == 1 {
		sib.Port = key.Port - 1
	} else if key.Port < 65535 {
		sib.Port = key.Port + 1
	}
	m.mu.Lock()
	s := m.slots[sib]
	var e uint16
	if s != nil && s.lease != nil {
		e = s.lease.local.Port()
	}
	m.mu.Unlock()
	switch {
	case e == 0:
		return 0, false
	case key.Port%2 == 1 && e < 65535:
		return e + 1, true
	case key.Port%2 == 0 && e > 1:
		return e - 1, true
	}
	return 0, false
}

// sameParity moves a random port p to the parity of the client's own port
// want (0: any), staying within lo..hi, so that a fallback for an RTP port
// is even and one for an RTCP port odd, and a later neighbour can pair
// with it (pairPort).
func sameParity(p, want, lo, hi uint16) uint16 {
	if want == 0 || p%2 == want%2 {
		return p
	}
	if p < hi {
		return p + 1
	}
	if p > lo {
		return p - 1
	}
	return p
}

// tryBind reserves port p in the table, then binds it. A port already in
// the table, or where req delivers to, is busy without a syscall.
func (m *Manager) tryBind(ctx context.Context, key Key, req Request, p uint16) (*net.UDPConn, error) {
	return m.tryBindAvoiding(ctx, key, p, req.DeliverTo)
}

// tryBindAvoiding is tryBind with every address some holder delivers to
// (Request.DeliverTo; invalid ones are ignored) treated as busy.
func (m *Manager) tryBindAvoiding(ctx context.Context, key Key, p uint16, deliverTo ...netip.AddrPort) (*net.UDPConn, error) {
	for _, d := range deliverTo {
		if d.IsValid() && netip.AddrPortFrom(m.cfg.ListenIP, p) == unmapped(d) {
			return nil, errPortBusy
		}
	}
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		return nil, ErrClosed
	}
	if _, taken := m.ports[p]; taken {
		m.mu.Unlock()
		return nil, errPortBusy
	}
	m.ports[p] = key
	m.mu.Unlock()

	conn, err := m.listen(ctx, netip.AddrPortFrom(m.cfg.ListenIP, p))
	if err == nil {
		return conn, nil
	}
	m.forgetPort(p)
	// EACCES: a privileged port in the range without the capability;
	// treat it as taken rather than failing the whole acquire.
	if errors.Is(err, syscall.EADDRINUSE) || errors.Is(err, syscall.EACCES) {
		return nil, errPortBusy
	}
	return nil, fmt.Errorf("bind port %d: %w", p, err)
}

func (m *Manager) forgetPort(p uint16) {
	m.mu.Lock()
	delete(m.ports, p)
	m.mu.Unlock()
}

// unmapped is ap with an IPv4-mapped address unmapped and no zone, the one
// spelling the table and the set of own addresses use.
func unmapped(ap netip.AddrPort) netip.AddrPort {
	return netip.AddrPortFrom(ap.Addr().Unmap().WithZone(""), ap.Port())
}

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

// bind picks and binds an external port: WantPort when usable, then
// BindAttempts random ports, then a scan of the whole range from a random
// start.
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
	span := int(hi-lo) + 1
	for range m.cfg.BindAttempts {
		p := lo + uint16(rand.IntN(span))
		conn, err := m.tryBind(ctx, key, req, p)
		if err == nil {
			return conn, p, nil
		}
		if !errors.Is(err, errPortBusy) {
			return nil, 0, err
		}
	}
	start := rand.IntN(span)
	for i := range span {
		if i%256 == 0 {
			if err := ctx.Err(); err != nil {
				return nil, 0, err
			}
		}
		p := lo + uint16((start+i)%span)
		conn, err := m.tryBind(ctx, key, req, p)
		if err == nil {
			return conn, p, nil
		}
		if !errors.Is(err, errPortBusy) {
			return nil, 0, err
		}
	}
	return nil, 0, ErrNoPort
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

// Package selfaddr keeps the set of local socket addresses the proxy itself
// listens on, so that no client request and no relayed datagram is ever
// addressed to one of them.
//
// A firewall proxy that can be told to connect to its own SOCKS listener
// nests sessions inside itself without bound (each hop takes a session slot
// and relays the same bytes again), and a lease that delivers to its own
// socket loops one datagram for ever. Both are closed by one question asked
// before every connect and every send: is this destination one of ours?
//
// Sockets bound to a specific address match that address and port only: a
// socket on 127.0.0.1:P is not reached through 127.0.0.2:P. Sockets bound
// to the unspecified address (0.0.0.0 or ::) are reached through every
// address of the host, so they match any local address at their port. The
// unspecified address as a destination means "this host" to Linux, so it
// matches every registered port.
package selfaddr

import (
	"net"
	"net/netip"
	"sync"
	"time"
)

// localRefresh bounds how stale the host's interface addresses may be when
// a wildcard-bound socket has to be matched against them. Only that case
// reads them, never the hot path of a destination that matches no port.
const localRefresh = 5 * time.Second

// Set is a concurrent multiset of socket addresses. The zero value is not
// usable; call New. A nil *Set contains nothing, so code that is handed no
// set (a unit test, a tool) needs no special case.
type Set struct {
	mu sync.RWMutex
	// exact counts sockets bound to a specific address (unmapped).
	exact map[netip.AddrPort]int
	// wildcard counts sockets bound to 0.0.0.0 or :: by port.
	wildcard map[uint16]int
	// ports counts every registered socket by port, for the unspecified
	// destination and as the fast negative answer.
	ports map[uint16]int

	// localMu guards local and localAt.
	localMu sync.Mutex
	local   []netip.Addr
	localAt time.Time
	// interfaceAddrs lists the host's addresses; replaced in tests.
	interfaceAddrs func() ([]netip.Addr, error)
}

// New returns an empty set.
func New() *Set {
	return &Set{
		exact:          make(map[netip.AddrPort]int),
		wildcard:       make(map[uint16]int),
		ports:          make(map[uint16]int),
		interfaceAddrs: hostAddrs,
	}
}

// Add registers a socket bound at ap and returns the function that removes
// it again; call it when the socket is closed. Removing twice is harmless.
// An invalid ap or port 0 registers nothing.
func (s *Set) Add(ap netip.AddrPort) (remove func()) {
	if s == nil || !ap.IsValid() || ap.Port() == 0 {
		return func() {}
	}
	ap = normalise(ap)
	s.mu.Lock()
	s.addLocked(ap, 1)
	s.mu.Unlock()
	var once sync.Once
	return func() {
		once.Do(func() {
			s.mu.Lock()
			s.addLocked(ap, -1)
			s.mu.Unlock()
		})
	}
}

// AddAddr registers the address of a bound socket (a *net.TCPAddr or
// *net.UDPAddr, as from Listener.Addr or UDPConn.LocalAddr); see Add.
func (s *Set) AddAddr(a net.Addr) (remove func()) {
	return s.Add(AddrPortOf(a))
}

func (s *Set) addLocked(ap netip.AddrPort, d int) {
	bump(s.ports, ap.Port(), d)
	if ap.Addr().IsUnspecified() {
		bump(s.wildcard, ap.Port(), d)
		return
	}
	bump(s.exact, ap, d)
}

func bump[K comparable](m map[K]int, k K, d int) {
	if n := m[k] + d; n > 0 {
		m[k] = n
	} else {
		delete(m, k)
	}
}

// Contains reports whether a connection or datagram to dst would reach one
// of the registered sockets. dst is judged unmapped (::ffff:a.b.c.d is
// a.b.c.d). It does not allocate.
func (s *Set) Contains(dst netip.AddrPort) bool {
	if s == nil || !dst.IsValid() {
		return false
	}
	dst = normalise(dst)
	s.mu.RLock()
	if s.ports[dst.Port()] == 0 {
		s.mu.RUnlock()
		return false
	}
	if dst.Addr().IsUnspecified() || s.exact[dst] > 0 {
		s.mu.RUnlock()
		return true
	}
	wild := s.wildcard[dst.Port()] > 0
	s.mu.RUnlock()
	return wild && s.isLocal(dst.Addr())
}

// isLocal reports whether ip is an address of this host.
func (s *Set) isLocal(ip netip.Addr) bool {
	if ip.IsLoopback() {
		return true
	}
	s.localMu.Lock()
	defer s.localMu.Unlock()
	if now := time.Now(); s.local == nil || now.Sub(s.localAt) > localRefresh {
		if addrs, err := s.interfaceAddrs(); err == nil {
			s.local, s.localAt = addrs, now
		}
	}
	for _, a := range s.local {
		if a == ip {
			return true
		}
	}
	return false
}

// Len reports how many sockets are registered.
func (s *Set) Len() int {
	if s == nil {
		return 0
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	n := 0
	for _, c := range s.ports {
		n += c
	}
	return n
}

// AddrPortOf returns the address of a TCP or UDP net.Addr, unmapped; the
// zero AddrPort for anything else.
func AddrPortOf(a net.Addr) netip.AddrPort {
	switch a := a.(type) {
	case *net.TCPAddr:
		return normalise(a.AddrPort())
	case *net.UDPAddr:
		return normalise(a.AddrPort())
	}
	return netip.AddrPort{}
}

// normalise unmaps an IPv4-mapped address and drops the zone, so that each
// socket and each destination has one spelling.
func normalise(ap netip.AddrPort) netip.AddrPort {
	return netip.AddrPortFrom(ap.Addr().Unmap().WithZone(""), ap.Port())
}

func hostAddrs() ([]netip.Addr, error) {
	ifas, err := net.InterfaceAddrs()
	if err != nil {
		return nil, err
	}
	out := make([]netip.Addr, 0, len(ifas))
	for _, a := range ifas {
		if pn, ok := a.(*net.IPNet); ok {
			if ip, ok := netip.AddrFromSlice(pn.IP); ok {
				out = append(out, ip.Unmap())
			}
		}
	}
	return out, nil
}

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
// A socket matches only traffic of its own transport: a TCP connection to
// port P does not reach the proxy's UDP socket on P, nor a datagram its
// TCP listener, so a media server's TCP port that happens to equal a
// lease's UDP port is not refused as the proxy's own.
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
	"sync/atomic"
	"time"
)

// localRefresh bounds how stale the host's interface addresses may be when
// a wildcard-bound socket has to be matched against them. Only that case
// reads them, never the hot path of a destination that matches no port.
const localRefresh = 5 * time.Second

// Proto is the transport of a socket and of the traffic asked about.
type Proto uint8

const (
	TCP Proto = iota + 1
	UDP
)

// sockKey is a socket bound to a specific address; portKey one bound to
// the unspecified address, or any socket by its port.
type sockKey struct {
	proto Proto
	ap    netip.AddrPort
}

type portKey struct {
	proto Proto
	port  uint16
}

// Set is a concurrent multiset of socket addresses. The zero value is not
// usable; call New. A nil *Set contains nothing, so code that is handed no
// set (a unit test, a tool) needs no special case.
type Set struct {
	mu sync.RWMutex
	// exact counts sockets bound to a specific address (unmapped).
	exact map[sockKey]int
	// wildcard counts sockets bound to 0.0.0.0 or :: by port.
	wildcard map[portKey]int
	// ports counts every registered socket by port, for the unspecified
	// destination and as the fast negative answer.
	ports map[portKey]int

	// host is the latest snapshot of the host's addresses, read without a
	// lock because the UDP relay asks for every datagram; refreshMu lets
	// one caller at a time replace a stale snapshot while the others go on
	// with the old one.
	host      atomic.Pointer[hostSnapshot]
	refreshMu sync.Mutex
	// interfaceAddrs lists the host's interface networks; replaced in tests.
	interfaceAddrs func() ([]netip.Prefix, error)
}

// hostSnapshot is what the host's interfaces said at one moment.
type hostSnapshot struct {
	at time.Time
	// addrs are the host's own addresses (unmapped, no zone).
	addrs []netip.Addr
	// broadcast are the directed broadcast addresses of the host's IPv4
	// networks (all host bits set), for networks that have them (/30 and
	// wider: a /31 or /32 has no broadcast address).
	broadcast []netip.Addr
}

// New returns an empty set.
func New() *Set {
	return &Set{
		exact:          make(map[sockKey]int),
		wildcard:       make(map[portKey]int),
		ports:          make(map[portKey]int),
		interfaceAddrs: hostAddrs,
	}
}

// Add registers a socket of proto bound at ap and returns the function that
// removes it again; call it when the socket is closed. Removing twice is
// harmless. An invalid ap, port 0 or an unknown proto registers nothing.
func (s *Set) Add(proto Proto, ap netip.AddrPort) (remove func()) {
	if s == nil || !ap.IsValid() || ap.Port() == 0 || (proto != TCP && proto != UDP) {
		return func() {}
	}
	k := sockKey{proto, normalise(ap)}
	s.mu.Lock()
	s.addLocked(k, 1)
	s.mu.Unlock()
	var once sync.Once
	return func() {
		once.Do(func() {
			s.mu.Lock()
			s.addLocked(k, -1)
			s.mu.Unlock()
		})
	}
}

// AddAddr registers the address of a bound socket, its transport told by
// its type (a *net.TCPAddr or *net.UDPAddr, as from Listener.Addr or
// UDPConn.LocalAddr); see Add. Any other net.Addr registers nothing.
func (s *Set) AddAddr(a net.Addr) (remove func()) {
	switch a := a.(type) {
	case *net.TCPAddr:
		return s.Add(TCP, a.AddrPort())
	case *net.UDPAddr:
		return s.Add(UDP, a.AddrPort())
	}
	return func() {}
}

func (s *Set) addLocked(k sockKey, d int) {
	pk := portKey{k.proto, k.ap.Port()}
	bump(s.ports, pk, d)
	if k.ap.Addr().IsUnspecified() {
		bump(s.wildcard, pk, d)
		return
	}
	bump(s.exact, k, d)
}

func bump[K comparable](m map[K]int, k K, d int) {
	if n := m[k] + d; n > 0 {
		m[k] = n
	} else {
		delete(m, k)
	}
}

// Contains reports whether traffic of proto to dst (a TCP connection, a
// UDP datagram) would reach one of the registered sockets. dst is judged
// unmapped (::ffff:a.b.c.d is a.b.c.d). It does not allocate.
func (s *Set) Contains(proto Proto, dst netip.AddrPort) bool {
	if s == nil || !dst.IsValid() {
		return false
	}
	dst = normalise(dst)
	pk := portKey{proto, dst.Port()}
	s.mu.RLock()
	if s.ports[pk] == 0 {
		s.mu.RUnlock()
		return false
	}
	if dst.Addr().IsUnspecified() || s.exact[sockKey{proto, dst}] > 0 {
		s.mu.RUnlock()
		return true
	}
	wild := s.wildcard[pk] > 0
	s.mu.RUnlock()
	return wild && s.IsHost(dst.Addr())
}

// IsHost reports whether ip is an address of this host: loopback, the
// unspecified address (which Linux connects to the host itself), or an
// address of one of its interfaces (read at most every few seconds). ip is
// judged unmapped and without its zone. A nil set still knows loopback and
// the unspecified address. It does not allocate.
func (s *Set) IsHost(ip netip.Addr) bool {
	ip = ip.Unmap().WithZone("")
	if ip.IsLoopback() || ip.IsUnspecified() {
		return true
	}
	if s == nil {
		return false
	}
	for _, a := range s.snapshot().addrs {
		if a == ip {
			return true
		}
	}
	return false
}

// IsBroadcast reports whether ip is a broadcast address as seen from this
// host: the limited broadcast 255.255.255.255 or the directed broadcast of
// one of the host's IPv4 networks. It does not allocate.
func (s *Set) IsBroadcast(ip netip.Addr) bool {
	ip = ip.Unmap()
	if ip == limitedBroadcast {
		return true
	}
	if s == nil || !ip.Is4() {
		return false
	}
	for _, a := range s.snapshot().broadcast {
		if a == ip {
			return true
		}
	}
	return false
}

var limitedBroadcast = netip.AddrFrom4([4]byte{255, 255, 255, 255})

// snapshot returns the host's addresses, refreshed when older than
// localRefresh. A failed refresh keeps the previous snapshot.
func (s *Set) snapshot() *hostSnapshot {
	now := time.Now()
	h := s.host.Load()
	if h != nil && now.Sub(h.at) <= localRefresh {
		return h
	}
	if h != nil && !s.refreshMu.TryLock() {
		return h // another caller is refreshing; the old list will do
	}
	if h == nil {
		s.refreshMu.Lock()
		if h = s.host.Load(); h != nil {
			s.refreshMu.Unlock()
			return h
		}
	}
	defer s.refreshMu.Unlock()
	nets, err := s.interfaceAddrs()
	if err != nil {
		if h != nil {
			return h
		}
		nets = nil
	}
	fresh := &hostSnapshot{at: now}
	for _, p := range nets {
		a := p.Addr().Unmap().WithZone("")
		fresh.addrs = append(fresh.addrs, a)
		if a.Is4() && p.Bits() <= 30 {
			fresh.broadcast = append(fresh.broadcast, broadcastOf(netip.PrefixFrom(a, p.Bits())))
		}
	}
	s.host.Store(fresh)
	return fresh
}

// broadcastOf returns the IPv4 network's address with every host bit set.
func broadcastOf(p netip.Prefix) netip.Addr {
	b := p.Addr().As4()
	v := uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])
	v |= ^uint32(0) >> p.Bits()
	return netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)})
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

// hostAddrs lists the host's interface networks (address and prefix
// length).
func hostAddrs() ([]netip.Prefix, error) {
	ifas, err := net.InterfaceAddrs()
	if err != nil {
		return nil, err
	}
	out := make([]netip.Prefix, 0, len(ifas))
	for _, a := range ifas {
		pn, ok := a.(*net.IPNet)
		if !ok {
			continue
		}
		ip, ok := netip.AddrFromSlice(pn.IP)
		if !ok {
			continue
		}
		ones, _ := pn.Mask.Size()
		if ip.Is4In6() && ones >= 96 {
			ones -= 96
		}
		ip = ip.Unmap()
		if ones > ip.BitLen() {
			ones = ip.BitLen()
		}
		out = append(out, netip.PrefixFrom(ip, ones))
	}
	return out, nil
}

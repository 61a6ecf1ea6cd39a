//go:build !linux

package leases

import (
	"net"
	"net/netip"
)

// stdSource is the portable fallback: it owns one full-size buffer for the
// lease's lifetime, which costs MaxDatagramSize bytes per idle lease. Linux
// uses rawSource instead.
type stdSource struct {
	c    *net.UDPConn
	buf  []byte
	idle func()
}

func newPlatformSource(c *net.UDPConn, pool *bufPool, idle func()) (datagramSource, error) {
	// One spare byte detects datagrams larger than the pool size.
	return &stdSource{c: c, buf: make([]byte, pool.size+1), idle: idle}, nil
}

func (s *stdSource) next() ([]byte, int, netip.AddrPort, error) {
	// Without a readiness signal every datagram is its own burst.
	s.idle()
	n, from, err := s.c.ReadFromUDPAddrPort(s.buf)
	if err != nil {
		return nil, 0, netip.AddrPort{}, err
	}
	return s.buf[:min(n, len(s.buf)-1)], n, netip.AddrPortFrom(from.Addr().Unmap(), from.Port()), nil
}

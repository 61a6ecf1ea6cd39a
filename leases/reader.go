package leases

import (
	"net"
	"net/netip"
)

// datagramSource is how a lease's reader receives. It exists so that the
// memory-frugal Linux reader (reader_linux.go) and the portable fallback
// (reader_other.go) — and, later, a batched recvmmsg reader — are
// interchangeable behind readLoop.
type datagramSource interface {
	// next blocks until a datagram arrives. b is valid until the following
	// call to next and must not be retained. size is the datagram's real
	// length, larger than len(b) when it did not fit. An error ends the
	// reader; errors.Is(err, net.ErrClosed) is the normal end.
	next() (b []byte, size int, from netip.AddrPort, err error)
}

// bufPool hands out read buffers of one size. It keeps at most cap(free)
// idle buffers (surplus is left to the GC), so it never pins more memory than
// a handful of concurrently busy readers need. Buffers are cleared before
// they go back, so one client's payload never lingers in another's buffer.
type bufPool struct {
	size int
	free chan []byte
}

func newBufPool(size, keep int) *bufPool {
	return &bufPool{size: size, free: make(chan []byte, keep)}
}

// get returns a buffer of len p.size owned by the caller until put.
func (p *bufPool) get() []byte {
	select {
	case b := <-p.free:
		return b
	default:
		return make([]byte, p.size)
	}
}

// put takes back b; used is how much of it may hold payload.
func (p *bufPool) put(b []byte, used int) {
	if cap(b) != p.size {
		return
	}
	b = b[:p.size]
	clear(b[:min(used, p.size)])
	select {
	case p.free <- b:
	default:
	}
}

// sourceFunc builds a lease's datagramSource. idle is called (on the reader
// goroutine) each time the reader has drained the socket and is about to
// wait, so per-burst counters can be flushed.
type sourceFunc func(c *net.UDPConn, pool *bufPool, idle func()) (datagramSource, error)

// stdSource is the portable fallback: it blocks in ReadFromUDPAddrPort and
// so must own a full-size buffer for the lease's lifetime, MaxDatagramSize
// bytes per idle lease. Linux uses rawSource instead; BenchmarkIdleLeaseMemory
// measures both.
type stdSource struct {
	c    *net.UDPConn
	buf  []byte
	idle func()
}

func newStdSource(c *net.UDPConn, pool *bufPool, idle func()) *stdSource {
	// One spare byte detects datagrams larger than the pool size.
	return &stdSource{c: c, buf: make([]byte, pool.size+1), idle: idle}
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

package leases

import (
	"net"
	"net/netip"

	"fwproxy/internal/udpio"
)

// datagramSource is how a lease's reader receives: a udpio.Reader, behind
// the one method readLoop calls. each calls fn for every datagram until the
// socket reports an error, which it returns as it is; errors.Is(err,
// net.ErrClosed) is the normal end. b is valid only during fn and must not
// be retained. size is the datagram's real length, larger than len(b) when
// it did not fit. On Linux each reads in recvmmsg batches (udpio.Reader.Each).
type datagramSource interface {
	each(fn func(b []byte, size int, from netip.AddrPort)) error
}

// bufPool is the manager's pool of read buffers of MaxDatagramSize bytes,
// bounded and cleared on return (udpio.Pool).
type bufPool = udpio.Pool

func newBufPool(size, keep int) *bufPool { return udpio.NewPool(size, keep) }

// sourceFunc builds a lease's datagramSource. idle is called (on the reader
// goroutine) each time the reader has drained the socket and is about to
// wait, so per-burst counters can be flushed.
type sourceFunc func(c *net.UDPConn, pool *bufPool, idle func()) (datagramSource, error)

// readerPolicy is how a lease's reader holds buffers: it takes one from the
// manager's pool when the socket may be readable and gives it back as soon as
// the socket is drained, so an idle lease holds none. With thousands of
// mostly idle leases that is the difference between a few hundred bytes and
// MaxDatagramSize per lease (BenchmarkIdleLeaseMemory).
func readerPolicy(pool *bufPool, idle func()) udpio.Policy {
	return udpio.Policy{Buffers: pool, Drained: idle}
}

// newPlatformSource is the reader a lease gets: on Linux the frugal one of
// readerPolicy, elsewhere the portable one (newStdSource).
func newPlatformSource(c *net.UDPConn, pool *bufPool, idle func()) (datagramSource, error) {
	r, err := udpio.NewReader(c, readerPolicy(pool, idle))
	if err != nil {
		return nil, err
	}
	return &source{r}, nil
}

// newStdSource is the portable reader, which owns a MaxDatagramSize buffer
// for the lease's lifetime; tests and benchmarks measure it on Linux too.
func newStdSource(c *net.UDPConn, pool *bufPool, idle func()) (datagramSource, error) {
	r, err := udpio.NewPortableReader(c, readerPolicy(pool, idle))
	if err != nil {
		return nil, err
	}
	return &source{r}, nil
}

// source gives a udpio.Reader the method name readLoop calls.
type source struct{ r udpio.Reader }

func (s *source) each(fn func([]byte, int, netip.AddrPort)) error { return s.r.Each(fn) }

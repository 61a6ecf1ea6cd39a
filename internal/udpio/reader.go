package udpio

import (
	"errors"
	"net"
	"net/netip"
)

// Reader receives datagrams from one socket. It is used by one goroutine.
type Reader interface {
	// Next blocks until a datagram arrives from an IP sender. b holds it and
	// is valid until the following call to Next or Close; it must not be
	// retained. size is the datagram's real length, larger than len(b) when
	// it did not fit the buffer (b then holds its first len(b) bytes). from
	// is unmapped. An error from the socket is returned as it is and leaves
	// the reader usable; errors.Is(err, net.ErrClosed) is the normal end.
	Next() (b []byte, size int, from netip.AddrPort, err error)
	// Each calls fn for every datagram, until an error that Next would
	// return, which it returns (the reader stays usable). fn's arguments
	// are Next's; b is valid only during the call. Linux reads up to
	// BatchSize datagrams with one recvmmsg(2) and, when one returns fewer
	// than it had room for, waits without asking the kernel again: the queue
	// was empty, and a datagram that arrives later wakes the poller. Next
	// cannot save that read, because each wait of its own forgets an
	// earlier wake-up. fn runs on the calling goroutine, while the reader
	// holds the socket's read lock: it must not read the same socket.
	Each(fn DatagramFunc) error
	// Close gives back the buffer the reader holds, if any. The reader stays
	// usable; Close does not close the socket.
	Close()
}

// BatchSize is how many datagrams Each reads with one recvmmsg(2) (Linux).
// Two is what saves the empty read after a lone datagram (a short batch
// says the queue is empty) and halves the receive calls of a backlog; more
// would hold more buffers of Policy.Buffers while reading, for the rare
// burst. Pools sized for Each's readers should keep BatchSize buffers per
// busy reader.
const BatchSize = 2

// DatagramFunc receives one datagram from Each.
type DatagramFunc func(b []byte, size int, from netip.AddrPort)

// ErrNoBuffers is returned for a Policy without Buffers or with buffers of
// no room.
var ErrNoBuffers = errors.New("udpio: policy has no buffers of at least one byte")

func checkPolicy(p Policy) error {
	if p.Buffers == nil || p.Buffers.Size() < 1 {
		return ErrNoBuffers
	}
	return nil
}

// NewPortableReader returns the reader other systems than Linux use (NewReader
// returns it there). It is offered on Linux too, so that tests and
// benchmarks can measure it. It blocks in ReadFromUDPAddrPort and so owns a
// buffer of p.Buffers.Size()+1 bytes for its life, the spare byte telling a
// datagram that did not fit; without a readiness signal, every datagram is
// its own burst for p.Drained.
func NewPortableReader(c *net.UDPConn, p Policy) (Reader, error) {
	if err := checkPolicy(p); err != nil {
		return nil, err
	}
	return &portableReader{c: c, buf: make([]byte, p.Buffers.Size()+1), drained: p.Drained}, nil
}

type portableReader struct {
	c       *net.UDPConn
	buf     []byte
	drained func()
}

func (r *portableReader) Next() ([]byte, int, netip.AddrPort, error) {
	if r.drained != nil {
		r.drained()
	}
	n, from, err := r.c.ReadFromUDPAddrPort(r.buf)
	if err != nil {
		return nil, 0, netip.AddrPort{}, err
	}
	// A datagram that filled the spare byte was longer than the buffers;
	// its real size is unknown here, and len(buf) says "too large" as well.
	return r.buf[:min(n, len(r.buf)-1)], n, netip.AddrPortFrom(from.Addr().Unmap(), from.Port()), nil
}

// Each is Next in a loop: without a readiness signal there is nothing to
// batch.
func (r *portableReader) Each(fn DatagramFunc) error {
	for {
		b, size, from, err := r.Next()
		if err != nil {
			return err
		}
		fn(b, size, from)
	}
}

func (r *portableReader) Close() {}

package udpio

import (
	"errors"
	"net"
	"net/netip"
)

// Writer sends datagrams from one socket. It is used by one goroutine at a
// time.
type Writer interface {
	// WriteTo sends one datagram, head followed by payload, to to. Neither
	// slice is retained.
	WriteTo(head, payload []byte, to netip.AddrPort) error
}

var (
	// ErrFamily is a real IPv6 destination for an IPv4 socket.
	ErrFamily = errors.New("udpio: IPv6 destination for an IPv4 socket")
	// ErrNoDestination is a destination without an address.
	ErrNoDestination = errors.New("udpio: no destination address")
)

// NewPortableWriter returns the writer other systems than Linux use
// (NewWriter returns it there); it is offered on Linux too for tests and
// benchmarks. It copies head and payload into one buffer, which it keeps
// and grows as needed, and sends it with WriteToUDPAddrPort.
func NewPortableWriter(c *net.UDPConn) Writer { return &portableWriter{c: c} }

type portableWriter struct {
	c   *net.UDPConn
	buf []byte
}

func (w *portableWriter) WriteTo(head, payload []byte, to netip.AddrPort) error {
	w.buf = append(append(w.buf[:0], head...), payload...)
	_, err := w.c.WriteToUDPAddrPort(w.buf, to)
	return err
}

//go:build !linux

package proxy

import (
	"net"
	"net/netip"
	"sync"
)

// stdClientSource is the portable client reader: it blocks in
// ReadFromUDPAddrPort and so owns a full-size buffer for the association's
// life (Linux uses rawClientSource, which owns none while idle).
type stdClientSource struct {
	c   *net.UDPConn
	buf []byte
}

var _ clientSource = (*stdClientSource)(nil)

func newClientSource(c *net.UDPConn, _ *sync.Pool) (clientSource, error) {
	return &stdClientSource{c: c, buf: make([]byte, maxDatagram)}, nil
}

func (s *stdClientSource) next() ([]byte, netip.AddrPort, error) {
	n, from, err := s.c.ReadFromUDPAddrPort(s.buf)
	if err != nil {
		return nil, netip.AddrPort{}, err
	}
	return s.buf[:n], from, nil
}

func (s *stdClientSource) close() {}

// copySink is the portable clientSink: header and payload are copied into
// one buffer, allocated on the first datagram and kept.
type copySink struct {
	c   *net.UDPConn
	buf []byte
}

var _ clientSink = (*copySink)(nil)

func newClientSink(c *net.UDPConn) (clientSink, error) { return &copySink{c: c}, nil }

func (s *copySink) send(from netip.AddrPort, payload []byte, to netip.AddrPort) error {
	if s.buf == nil {
		s.buf = make([]byte, 0, maxUDPAddrHeaderLen+maxDatagram)
	}
	out := append(appendUDPHeader(s.buf[:0], from), payload...)
	_, err := s.c.WriteToUDPAddrPort(out, to)
	return err
}

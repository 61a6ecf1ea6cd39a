package socksclient

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"
)

// maxDatagram is the largest UDP payload over IPv4 or IPv6 without jumbo
// grams; a relayed datagram carries its header inside it.
const maxDatagram = 65535

// PacketConn is a UDP association: datagrams written to it go to the
// proxy's relay with the UDP request header in front, datagrams read from
// it come from the relay with the header stripped. It owns the UDP socket
// and the association's control connection; Close closes both, which ends
// the association (RFC 1928 §7).
//
// Reads and writes are safe for concurrent use, one read and one write at
// a time each; neither allocates per datagram through the AddrPort
// methods.
type PacketConn struct {
	udp     *net.UDPConn
	control net.Conn
	relay   netip.AddrPort
	bound   Addr

	rmu  sync.Mutex
	rbuf []byte
	wmu  sync.Mutex
	wbuf []byte
	// dropped counts datagrams read and discarded: not from the relay, or
	// with a header that does not parse.
	dropped atomic.Uint64
}

var _ net.PacketConn = (*PacketConn)(nil)

// Associate opens a UDP association for the datagrams of udp. client is
// the DST.ADDR:DST.PORT of the request, the address the client will send
// from; the zero value announces udp's local address. On success the
// PacketConn owns udp; on error the caller still does.
func (d *Dialer) Associate(ctx context.Context, udp *net.UDPConn, client netip.AddrPort) (*PacketConn, error) {
	if !client.IsValid() {
		la, ok := udp.LocalAddr().(*net.UDPAddr)
		if !ok {
			return nil, errors.New("socks: associate: UDP socket has no local address")
		}
		client = la.AddrPort()
	}
	c, bnd, err := d.Request(ctx, CmdUDPAssociate, AddrFromAddrPort(client))
	if err != nil {
		return nil, err
	}
	relay, ok := RelayAddr(bnd, d.Proxy)
	if !ok {
		c.Close()
		return nil, fmt.Errorf("socks: associate: no relay address in reply %v", bnd)
	}
	return &PacketConn{
		udp: udp, control: c, relay: relay, bound: bnd,
		rbuf: make([]byte, maxDatagram), wbuf: make([]byte, 0, maxDatagram),
	}, nil
}

// Control is the association's TCP connection. Closing its write side is
// how a careful client ends the association and then waits for the
// proxy's close.
func (p *PacketConn) Control() net.Conn { return p.control }

// Relay is where the datagrams go: the reply's BND, or the proxy's own
// address when BND.ADDR was unspecified.
func (p *PacketConn) Relay() netip.AddrPort { return p.relay }

// Bound is BND of the proxy's reply as sent.
func (p *PacketConn) Bound() Addr { return p.bound }

// UDP is the association's socket, for socket options.
func (p *PacketConn) UDP() *net.UDPConn { return p.udp }

// Dropped counts datagrams read and discarded (not from the relay, or a
// header that does not parse).
func (p *PacketConn) Dropped() uint64 { return p.dropped.Load() }

// ReadFromAddr reads one relayed datagram into b and returns the payload
// length and the address its header names (the peer that sent it).
// Datagrams not from the relay and malformed ones are dropped and
// counted. A payload longer than b is truncated to len(b) and reported
// with an error wrapping io.ErrShortBuffer.
func (p *PacketConn) ReadFromAddr(b []byte) (int, Addr, error) {
	p.rmu.Lock()
	defer p.rmu.Unlock()
	for {
		n, from, err := p.udp.ReadFromUDPAddrPort(p.rbuf)
		if err != nil {
			return 0, Addr{}, err
		}
		if from.Addr().Unmap() != p.relay.Addr().Unmap() || from.Port() != p.relay.Port() {
			p.dropped.Add(1)
			continue
		}
		peer, hl, err := ParseUDPHeader(p.rbuf[:n])
		if err != nil {
			p.dropped.Add(1)
			continue
		}
		m := copy(b, p.rbuf[hl:n])
		if m < n-hl {
			return m, peer, fmt.Errorf("socks udp: %d-byte payload into %d bytes: %w", n-hl, len(b), io.ErrShortBuffer)
		}
		return m, peer, nil
	}
}

// ReadFrom is ReadFromAddr as net.PacketConn has it: the address is an
// Addr.
func (p *PacketConn) ReadFrom(b []byte) (int, net.Addr, error) {
	n, a, err := p.ReadFromAddr(b)
	if err != nil && n == 0 {
		return 0, nil, err
	}
	return n, a, err
}

// WriteToAddr sends b to dst through the relay.
func (p *PacketConn) WriteToAddr(b []byte, dst Addr) (int, error) {
	p.wmu.Lock()
	defer p.wmu.Unlock()
	w, err := AppendUDPHeader(p.wbuf[:0], dst)
	if err != nil {
		return 0, fmt.Errorf("socks udp: header for %v: %w", dst, err)
	}
	if len(w)+len(b) > maxDatagram {
		return 0, fmt.Errorf("socks udp: %d-byte payload with its header exceeds a datagram", len(b))
	}
	w = append(w, b...)
	if _, err := p.udp.WriteToUDPAddrPort(w, p.relay); err != nil {
		return 0, err
	}
	return len(b), nil
}

// WriteTo sends b to addr (a *net.UDPAddr, an Addr, or anything whose
// String is host:port with an IP host) through the relay.
func (p *PacketConn) WriteTo(b []byte, addr net.Addr) (int, error) {
	switch a := addr.(type) {
	case Addr:
		return p.WriteToAddr(b, a)
	case *net.UDPAddr:
		return p.WriteToAddr(b, AddrFromAddrPort(a.AddrPort()))
	}
	ap, err := netip.ParseAddrPort(addr.String())
	if err != nil {
		return 0, fmt.Errorf("socks udp: destination %v: %w", addr, err)
	}
	return p.WriteToAddr(b, AddrFromAddrPort(ap))
}

// Close ends the association: it closes the control connection and the
// socket.
func (p *PacketConn) Close() error {
	return errors.Join(p.control.Close(), p.udp.Close())
}

func (p *PacketConn) LocalAddr() net.Addr                { return p.udp.LocalAddr() }
func (p *PacketConn) SetDeadline(t time.Time) error      { return p.udp.SetDeadline(t) }
func (p *PacketConn) SetReadDeadline(t time.Time) error  { return p.udp.SetReadDeadline(t) }
func (p *PacketConn) SetWriteDeadline(t time.Time) error { return p.udp.SetWriteDeadline(t) }

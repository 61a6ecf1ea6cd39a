package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"time"
)

// A minimal SOCKS5 client (RFC 1928), enough to drive fwproxy and danted
// the same way: no authentication, IPv4 and IPv6 addresses, CONNECT and
// UDP ASSOCIATE. Each step waits for the proxy's answer before the next,
// as curl and Dante's own client do, so neither proxy gets a pipelined
// handshake the other might not expect.

const (
	socksVersion    = 5
	cmdConnect      = 1
	cmdUDPAssociate = 3
	atypIPv4        = 1
	atypDomain      = 3
	atypIPv6        = 4
)

var errSocksReply = errors.New("socks: request refused")

// socksHandshake negotiates "no authentication" on c and sends one request
// for cmd and dst; it returns the reply's bound address. The caller owns c;
// ctx bounds the exchange through c's deadline.
func socksHandshake(ctx context.Context, c net.Conn, cmd byte, dst netip.AddrPort) (netip.AddrPort, error) {
	if d, ok := ctx.Deadline(); ok {
		c.SetDeadline(d)
		defer c.SetDeadline(time.Time{})
	}
	var buf [4 + 16 + 2]byte
	if _, err := c.Write([]byte{socksVersion, 1, 0}); err != nil {
		return netip.AddrPort{}, fmt.Errorf("socks greeting: %w", err)
	}
	if _, err := io.ReadFull(c, buf[:2]); err != nil {
		return netip.AddrPort{}, fmt.Errorf("socks method reply: %w", err)
	}
	if buf[0] != socksVersion || buf[1] != 0 {
		return netip.AddrPort{}, fmt.Errorf("socks method reply %x: no acceptable method", buf[:2])
	}
	if _, err := c.Write(appendAddr([]byte{socksVersion, cmd, 0}, dst)); err != nil {
		return netip.AddrPort{}, fmt.Errorf("socks request: %w", err)
	}
	return readReply(c)
}

// readReply reads a request reply and returns BND.ADDR:BND.PORT.
//
//	+----+-----+-------+------+----------+----------+
//	|VER | REP |  RSV  | ATYP | BND.ADDR | BND.PORT |
//	+----+-----+-------+------+----------+----------+
func readReply(r io.Reader) (netip.AddrPort, error) {
	var buf [4 + 255 + 2]byte
	if _, err := io.ReadFull(r, buf[:4]); err != nil {
		return netip.AddrPort{}, fmt.Errorf("socks reply: %w", err)
	}
	if buf[1] != 0 {
		return netip.AddrPort{}, fmt.Errorf("%w: reply code %d", errSocksReply, buf[1])
	}
	var n int
	switch buf[3] {
	case atypIPv4:
		n = 4
	case atypIPv6:
		n = 16
	case atypDomain:
		if _, err := io.ReadFull(r, buf[4:5]); err != nil {
			return netip.AddrPort{}, fmt.Errorf("socks reply: %w", err)
		}
		n = 1 + int(buf[4])
	default:
		return netip.AddrPort{}, fmt.Errorf("socks reply: address type %d", buf[3])
	}
	rest := buf[4 : 4+n+2]
	if buf[3] == atypDomain {
		rest = buf[5 : 4+n+2]
	}
	if _, err := io.ReadFull(r, rest); err != nil {
		return netip.AddrPort{}, fmt.Errorf("socks reply: %w", err)
	}
	port := uint16(buf[4+n])<<8 | uint16(buf[4+n+1])
	if buf[3] == atypDomain {
		return netip.AddrPortFrom(netip.Addr{}, port), nil
	}
	addr, _ := netip.AddrFromSlice(buf[4 : 4+n])
	return netip.AddrPortFrom(addr.Unmap(), port), nil
}

// appendAddr appends ATYP, the address and the port of a.
func appendAddr(dst []byte, a netip.AddrPort) []byte {
	if ip := a.Addr().Unmap(); ip.Is4() {
		b := ip.As4()
		dst = append(append(dst, atypIPv4), b[:]...)
	} else {
		b := ip.As16()
		dst = append(append(dst, atypIPv6), b[:]...)
	}
	return append(dst, byte(a.Port()>>8), byte(a.Port()))
}

// appendUDPHeader appends the SOCKS UDP request header for a datagram to
// dst: RSV (2), FRAG 0, then the address.
func appendUDPHeader(b []byte, dst netip.AddrPort) []byte {
	return appendAddr(append(b, 0, 0, 0), dst)
}

// udpPayload strips the SOCKS UDP header from a datagram relayed by a
// proxy and returns the payload.
func udpPayload(b []byte) ([]byte, error) {
	if len(b) < 4 {
		return nil, errors.New("socks udp: short datagram")
	}
	n := 4
	switch b[3] {
	case atypIPv4:
		n += 4
	case atypIPv6:
		n += 16
	default:
		return nil, fmt.Errorf("socks udp: address type %d", b[3])
	}
	if len(b) < n+2 {
		return nil, errors.New("socks udp: short datagram")
	}
	return b[n+2:], nil
}

// dialSocks connects to the proxy and runs a handshake for cmd and dst.
// On error nothing stays open.
func dialSocks(ctx context.Context, proxy string, cmd byte, dst netip.AddrPort) (*net.TCPConn, netip.AddrPort, error) {
	return dialSocksFrom(ctx, netip.Addr{}, proxy, cmd, dst)
}

// dialSocksFrom is dialSocks from the local address from (the kernel's
// choice when from is the zero Addr).
func dialSocksFrom(ctx context.Context, from netip.Addr, proxy string, cmd byte, dst netip.AddrPort) (*net.TCPConn, netip.AddrPort, error) {
	var d net.Dialer
	if from.IsValid() {
		d.LocalAddr = net.TCPAddrFromAddrPort(netip.AddrPortFrom(from, 0))
		d.Control = bindNoPort
	}
	c, err := d.DialContext(ctx, "tcp", proxy)
	if err != nil {
		return nil, netip.AddrPort{}, err
	}
	bound, err := socksHandshake(ctx, c, cmd, dst)
	if err != nil {
		c.Close()
		return nil, netip.AddrPort{}, err
	}
	return c.(*net.TCPConn), bound, nil
}

// relayAddr is where to send the datagrams of an association: BND as the
// proxy sent it, with the proxy's own IP when BND.ADDR is unspecified
// (RFC 1928 lets a server answer 0.0.0.0).
func relayAddr(bound netip.AddrPort, proxy string) netip.AddrPort {
	if bound.Addr().IsValid() && !bound.Addr().IsUnspecified() {
		return bound
	}
	p, err := netip.ParseAddrPort(proxy)
	if err != nil {
		return bound
	}
	return netip.AddrPortFrom(p.Addr(), bound.Port())
}

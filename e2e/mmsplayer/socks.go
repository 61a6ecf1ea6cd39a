package mmsplayer

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"time"
)

// SOCKS5 wire values (RFC 1928, RFC 1929).
const (
	socksVersion      = 0x05
	authVersion       = 0x01
	methodNone        = 0x00
	methodUserPass    = 0x02
	cmdConnect        = 0x01
	cmdUDPAssociate   = 0x03
	atypIPv4          = 0x01
	atypDomain        = 0x03
	atypIPv6          = 0x04
	replySucceeded    = 0x00
	maxSocksReplyAddr = 255
)

// SocksError is a SOCKS reply other than success; Code is the REP byte.
type SocksError struct {
	Code byte
}

func (e *SocksError) Error() string { return fmt.Sprintf("socks reply %#02x", e.Code) }

// socksClient opens SOCKS5 sessions to one proxy.
type socksClient struct {
	// open runs the calls that open a connection (Config.Sockets).
	open       func(func() error) error
	proxy      string
	user, pass string
	timeout    time.Duration
	// local is the address the connections come from: the player's
	// LocalIP, which the proxy takes for the client's identity.
	local netip.Addr
}

// request opens a connection to the proxy, authenticates and sends one
// request. It returns the connection and the reply's BND address; the
// caller owns and closes the connection.
func (s socksClient) request(ctx context.Context, cmd byte, dst netip.AddrPort) (net.Conn, netip.AddrPort, error) {
	ctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	d := net.Dialer{LocalAddr: net.TCPAddrFromAddrPort(netip.AddrPortFrom(s.local, 0))}
	var c net.Conn
	err := s.open(func() (err error) {
		c, err = d.DialContext(ctx, "tcp", s.proxy)
		return err
	})
	if err != nil {
		return nil, netip.AddrPort{}, fmt.Errorf("socks: dial %s: %w", s.proxy, err)
	}
	if dl, ok := ctx.Deadline(); ok {
		c.SetDeadline(dl)
	}
	bnd, err := s.handshake(c, cmd, dst)
	if err != nil {
		c.Close()
		return nil, netip.AddrPort{}, err
	}
	c.SetDeadline(time.Time{})
	return c, bnd, nil
}

func (s socksClient) handshake(c net.Conn, cmd byte, dst netip.AddrPort) (netip.AddrPort, error) {
	method := byte(methodNone)
	if s.user != "" {
		method = methodUserPass
	}
	if _, err := c.Write([]byte{socksVersion, 1, method}); err != nil {
		return netip.AddrPort{}, fmt.Errorf("socks: greeting: %w", err)
	}
	var sel [2]byte
	if _, err := io.ReadFull(c, sel[:]); err != nil {
		return netip.AddrPort{}, fmt.Errorf("socks: method selection: %w", err)
	}
	if sel[0] != socksVersion || sel[1] != method {
		return netip.AddrPort{}, fmt.Errorf("socks: proxy chose method %#02x (version %d)", sel[1], sel[0])
	}
	if method == methodUserPass {
		if len(s.user) > 255 || len(s.pass) > 255 {
			return netip.AddrPort{}, errors.New("socks: user or password longer than 255 bytes")
		}
		b := append([]byte{authVersion, byte(len(s.user))}, s.user...)
		b = append(append(b, byte(len(s.pass))), s.pass...)
		if _, err := c.Write(b); err != nil {
			return netip.AddrPort{}, fmt.Errorf("socks: auth: %w", err)
		}
		var st [2]byte
		if _, err := io.ReadFull(c, st[:]); err != nil {
			return netip.AddrPort{}, fmt.Errorf("socks: auth status: %w", err)
		}
		if st[1] != 0 {
			return netip.AddrPort{}, fmt.Errorf("socks: authentication refused (%#02x)", st[1])
		}
	}
	req := appendSocksAddr([]byte{socksVersion, cmd, 0}, dst)
	if _, err := c.Write(req); err != nil {
		return netip.AddrPort{}, fmt.Errorf("socks: request: %w", err)
	}
	var head [3]byte
	if _, err := io.ReadFull(c, head[:]); err != nil {
		return netip.AddrPort{}, fmt.Errorf("socks: reply: %w", err)
	}
	if head[0] != socksVersion {
		return netip.AddrPort{}, fmt.Errorf("socks: reply version %d", head[0])
	}
	bnd, err := readSocksAddr(c)
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("socks: reply address: %w", err)
	}
	if head[1] != replySucceeded {
		return netip.AddrPort{}, &SocksError{Code: head[1]}
	}
	return bnd, nil
}

// appendSocksAddr appends ATYP, address and port. IPv4 is written as
// ATYP 1 so that the proxy keys the client's port on the same family it
// sees the client connect from.
//
//	+------+----------+----------+
//	| ATYP | DST.ADDR | DST.PORT |
//	+------+----------+----------+
//	|  1   | 4 or 16  |    2     |
func appendSocksAddr(b []byte, ap netip.AddrPort) []byte {
	a := ap.Addr().Unmap()
	if a.Is4() {
		b = append(b, atypIPv4)
	} else {
		b = append(b, atypIPv6)
	}
	b = append(b, a.AsSlice()...)
	return binary.BigEndian.AppendUint16(b, ap.Port())
}

// readSocksAddr reads ATYP, address and port from a reply. A domain name
// reply (which fwproxy never sends) is read and returned as invalid.
func readSocksAddr(r io.Reader) (netip.AddrPort, error) {
	var atyp [1]byte
	if _, err := io.ReadFull(r, atyp[:]); err != nil {
		return netip.AddrPort{}, err
	}
	var n int
	switch atyp[0] {
	case atypIPv4:
		n = 4
	case atypIPv6:
		n = 16
	case atypDomain:
		var l [1]byte
		if _, err := io.ReadFull(r, l[:]); err != nil {
			return netip.AddrPort{}, err
		}
		var skip [maxSocksReplyAddr + 2]byte
		_, err := io.ReadFull(r, skip[:int(l[0])+2])
		return netip.AddrPort{}, err
	default:
		return netip.AddrPort{}, fmt.Errorf("address type %#02x", atyp[0])
	}
	var b [16 + 2]byte
	if _, err := io.ReadFull(r, b[:n+2]); err != nil {
		return netip.AddrPort{}, err
	}
	a, _ := netip.AddrFromSlice(b[:n])
	return netip.AddrPortFrom(a.Unmap(), binary.BigEndian.Uint16(b[n:])), nil
}

// parseUDPHeader parses the SOCKS UDP request header at the start of b and
// returns the source address it names and the header length. FRAG must be
// 0 (fwproxy never fragments).
//
//	+-----+------+------+----------+----------+----------+
//	| RSV | FRAG | ATYP | DST.ADDR | DST.PORT |   DATA   |
//	+-----+------+------+----------+----------+----------+
//	|  2  |  1   |  1   | Variable |    2     | Variable |
func parseUDPHeader(b []byte) (netip.AddrPort, int, error) {
	if len(b) < 4 {
		return netip.AddrPort{}, 0, errors.New("socks udp: short header")
	}
	if b[2] != 0 {
		return netip.AddrPort{}, 0, fmt.Errorf("socks udp: fragment %d", b[2])
	}
	var n int
	switch b[3] {
	case atypIPv4:
		n = 4
	case atypIPv6:
		n = 16
	case atypDomain:
		if len(b) < 5 {
			return netip.AddrPort{}, 0, errors.New("socks udp: short header")
		}
		hl := 5 + int(b[4]) + 2
		if len(b) < hl {
			return netip.AddrPort{}, 0, errors.New("socks udp: short header")
		}
		return netip.AddrPort{}, hl, nil
	default:
		return netip.AddrPort{}, 0, fmt.Errorf("socks udp: address type %#02x", b[3])
	}
	if len(b) < 4+n+2 {
		return netip.AddrPort{}, 0, errors.New("socks udp: short header")
	}
	a, _ := netip.AddrFromSlice(b[4 : 4+n])
	return netip.AddrPortFrom(a.Unmap(), binary.BigEndian.Uint16(b[4+n:])), 4 + n + 2, nil
}

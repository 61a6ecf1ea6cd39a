package proxy

import (
	"errors"
	"fmt"
	"net/netip"
)

// maxUDPHeaderLen is the longest SOCKS UDP request header: RSV, FRAG, ATYP,
// a 255-byte domain with its length byte, and the port (RFC 1928 §7).
const maxUDPHeaderLen = 2 + 1 + 1 + 1 + 255 + 2

// maxUDPAddrHeaderLen is the longest header appendUDPHeader writes: the
// sender is always an address, at most IPv6.
const maxUDPAddrHeaderLen = 2 + 1 + 1 + 16 + 2

// Errors of the UDP request header parser.
var (
	errUDPShort    = errors.New("udp header: datagram shorter than its header")
	errUDPAddrType = errors.New("udp header: unknown address type")
)

// udpHeader is a parsed SOCKS UDP request header. Domain, when set, aliases
// the datagram it was parsed from: valid only as long as that buffer is.
type udpHeader struct {
	Frag   byte
	Addr   netip.Addr // set for ATYP 1 and 4
	Domain []byte     // set for ATYP 3
	Port   uint16
}

// parseUDPHeader parses the header of a client datagram (RFC 1928 §7) and
// returns it with the header's length; the payload is b[n:]. It does not
// allocate.
//
//	+----+------+------+----------+----------+----------+
//	|RSV | FRAG | ATYP | DST.ADDR | DST.PORT |   DATA   |
//	+----+------+------+----------+----------+----------+
//	| 2  |  1   |  1   | Variable |    2     | Variable |
//	+----+------+------+----------+----------+----------+
//
// RSV is ignored, as by most servers.
func parseUDPHeader(b []byte) (udpHeader, int, error) {
	var h udpHeader
	if len(b) < 4 {
		return h, 0, errUDPShort
	}
	h.Frag = b[2]
	n := 4
	switch b[3] {
	case atypIPv4:
		if len(b) < n+4+2 {
			return h, 0, errUDPShort
		}
		h.Addr = netip.AddrFrom4([4]byte(b[n : n+4]))
		n += 4
	case atypIPv6:
		if len(b) < n+16+2 {
			return h, 0, errUDPShort
		}
		h.Addr = netip.AddrFrom16([16]byte(b[n : n+16])).Unmap()
		n += 16
	case atypDomain:
		if len(b) < n+1 {
			return h, 0, errUDPShort
		}
		l := int(b[n])
		n++
		if len(b) < n+l+2 {
			return h, 0, errUDPShort
		}
		h.Domain = b[n : n+l]
		n += l
	default:
		return h, 0, fmt.Errorf("%w %d", errUDPAddrType, b[3])
	}
	h.Port = uint16(b[n])<<8 | uint16(b[n+1])
	return h, n + 2, nil
}

// appendUDPHeader appends the header of a datagram relayed to the client:
// FRAG 0 and the sender's address, which is always an IP (RFC 1928 §7).
func appendUDPHeader(dst []byte, from netip.AddrPort) []byte {
	addr := from.Addr().Unmap()
	dst = append(dst, 0, 0, 0)
	if addr.Is4() {
		a := addr.As4()
		dst = append(dst, atypIPv4)
		dst = append(dst, a[:]...)
	} else {
		a := addr.As16()
		dst = append(dst, atypIPv6)
		dst = append(dst, a[:]...)
	}
	return append(dst, byte(from.Port()>>8), byte(from.Port()))
}

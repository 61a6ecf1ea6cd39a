package socksclient

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"strconv"
)

// Wire values of RFC 1928 and RFC 1929.
const (
	socksVersion   = 0x05
	loginVersion   = 0x01 // RFC 1929 §2
	methodNone     = 0x00
	methodLogin    = 0x02
	methodNoneOK   = 0xff // RFC 1928 §3: no acceptable methods
	atypIPv4       = 0x01
	atypDomain     = 0x03
	atypIPv6       = 0x04
	replySucceeded = 0x00
)

// Limits from the length fields of the specifications: one octet each.
const (
	// MaxNameLen is the longest domain name a SOCKS address holds
	// (RFC 1928 §5: one length octet).
	MaxNameLen = 255
	// maxCredentialLen bounds UNAME and PASSWD (RFC 1929 §2).
	maxCredentialLen = 255
	// maxAddrLen is ATYP, the longest address (a length octet and a
	// 255-octet name) and the port.
	maxAddrLen = 1 + 1 + MaxNameLen + 2
)

// Command is a request's CMD octet (RFC 1928 §4).
type Command byte

// The commands of RFC 1928 §4.
const (
	CmdConnect      Command = 0x01
	CmdBind         Command = 0x02
	CmdUDPAssociate Command = 0x03
)

func (c Command) String() string {
	switch c {
	case CmdConnect:
		return "CONNECT"
	case CmdBind:
		return "BIND"
	case CmdUDPAssociate:
		return "UDP ASSOCIATE"
	}
	return "command " + strconv.Itoa(int(c))
}

// Addr is a SOCKS address: an IP address or a domain name, with a port.
// When Name is set, IP is ignored.
type Addr struct {
	IP   netip.Addr
	Name string
	Port uint16
}

// AddrFromAddrPort is the SOCKS address of ap.
func AddrFromAddrPort(ap netip.AddrPort) Addr {
	return Addr{IP: ap.Addr(), Port: ap.Port()}
}

// AddrPort is a's IP address and port; it is invalid for a domain name.
func (a Addr) AddrPort() netip.AddrPort {
	if a.Name != "" || !a.IP.IsValid() {
		return netip.AddrPort{}
	}
	return netip.AddrPortFrom(a.IP, a.Port)
}

func (a Addr) String() string {
	if a.Name == "" {
		return netip.AddrPortFrom(a.IP, a.Port).String()
	}
	return a.Name + ":" + strconv.Itoa(int(a.Port))
}

// Network is "udp" so that Addr serves as a net.Addr of a PacketConn.
func (a Addr) Network() string { return "udp" }

var (
	errShort       = errors.New("short")
	errNoAddress   = errors.New("no address")
	errNameTooLong = fmt.Errorf("domain name longer than %d bytes", MaxNameLen)
)

// AppendAddr appends ATYP, the address and the port of a. An IPv4 address
// (also one mapped into IPv6) is written as ATYP 1, so that the proxy
// keys it on the family it sees the client connect from.
//
//	+------+----------+----------+
//	| ATYP | DST.ADDR | DST.PORT |
//	+------+----------+----------+
//	|  1   | Variable |    2     |
func AppendAddr(b []byte, a Addr) ([]byte, error) {
	switch ip := a.IP.Unmap(); {
	case a.Name != "":
		if len(a.Name) > MaxNameLen {
			return b, errNameTooLong
		}
		b = append(append(b, atypDomain, byte(len(a.Name))), a.Name...)
	case ip.Is4():
		v := ip.As4()
		b = append(append(b, atypIPv4), v[:]...)
	case ip.Is6():
		v := ip.As16()
		b = append(append(b, atypIPv6), v[:]...)
	default:
		return b, errNoAddress
	}
	return binary.BigEndian.AppendUint16(b, a.Port), nil
}

// parseAddr parses ATYP, address and port at the start of b and returns
// the address and its length. The name of a domain address is only
// converted to a string when keepName is set, so that the datagram path
// does not allocate.
func parseAddr(b []byte, keepName bool) (Addr, int, error) {
	n, err := addrLen(b)
	if err != nil {
		return Addr{}, 0, err
	}
	if len(b) < n {
		return Addr{}, 0, errShort
	}
	a := Addr{Port: binary.BigEndian.Uint16(b[n-2:])}
	switch {
	case b[0] == atypDomain:
		if keepName {
			a.Name = string(b[2 : n-2])
		}
	default:
		ip, _ := netip.AddrFromSlice(b[1 : n-2])
		a.IP = ip.Unmap()
	}
	return a, n, nil
}

// addrLen is the length of the address at the start of b, ATYP to port,
// from its first octet (two for a domain name, whose length is the
// second).
func addrLen(b []byte) (int, error) {
	if len(b) < 1 {
		return 0, errShort
	}
	switch b[0] {
	case atypIPv4:
		return 1 + 4 + 2, nil
	case atypIPv6:
		return 1 + 16 + 2, nil
	case atypDomain:
		if len(b) < 2 {
			return 0, errShort
		}
		if b[1] == 0 {
			return 0, errors.New("empty domain name")
		}
		return 2 + int(b[1]) + 2, nil
	}
	return 0, fmt.Errorf("address type %#02x", b[0])
}

// ReadReply reads one request reply (RFC 1928 §6) and returns BND. It
// reads exactly the reply's bytes, at most 4+1+255+2, so that a CONNECT
// stream's first bytes stay in r. A reply other than success is a
// *ReplyError carrying REP, returned after the whole reply was read.
//
//	+----+-----+-------+------+----------+----------+
//	|VER | REP |  RSV  | ATYP | BND.ADDR | BND.PORT |
//	+----+-----+-------+------+----------+----------+
func ReadReply(r io.Reader, cmd Command) (Addr, error) {
	var buf [3 + maxAddrLen]byte
	if _, err := io.ReadFull(r, buf[:5]); err != nil {
		return Addr{}, fmt.Errorf("socks: read reply: %w", err)
	}
	if buf[0] != socksVersion {
		return Addr{}, fmt.Errorf("socks: reply version %d", buf[0])
	}
	n, err := addrLen(buf[3:5])
	if err != nil {
		return Addr{}, fmt.Errorf("socks: reply address: %w", err)
	}
	// ATYP and the address's first octet are in already.
	if _, err := io.ReadFull(r, buf[5:3+n]); err != nil {
		return Addr{}, fmt.Errorf("socks: read reply address: %w", err)
	}
	bnd, _, err := parseAddr(buf[3:3+n], true)
	if err != nil {
		return Addr{}, fmt.Errorf("socks: reply address: %w", err)
	}
	if buf[1] != replySucceeded {
		return bnd, &ReplyError{Command: cmd, Code: Reply(buf[1])}
	}
	return bnd, nil
}

// UDPHeaderLen is the length of the UDP request header that AppendUDPHeader
// writes for a.
func UDPHeaderLen(a Addr) int {
	switch {
	case a.Name != "":
		return 3 + 2 + len(a.Name) + 2
	case a.IP.Unmap().Is4():
		return 3 + 1 + 4 + 2
	}
	return 3 + 1 + 16 + 2
}

// AppendUDPHeader appends the UDP request header for a datagram to dst
// (RFC 1928 §7): RSV, FRAG 0, then the address.
//
//	+-----+------+------+----------+----------+----------+
//	| RSV | FRAG | ATYP | DST.ADDR | DST.PORT |   DATA   |
//	+-----+------+------+----------+----------+----------+
//	|  2  |  1   |  1   | Variable |    2     | Variable |
func AppendUDPHeader(b []byte, dst Addr) ([]byte, error) {
	return AppendAddr(append(b, 0, 0, 0), dst)
}

// ParseUDPHeader parses the UDP request header at the start of a relayed
// datagram and returns the address it names and the header's length; the
// payload is b[n:]. A fragment (FRAG other than 0) is an error: a client
// that does not reassemble must drop it (RFC 1928 §7). A domain address
// comes back with its port only and an empty Name, so that this does not
// allocate; fwproxy never sends one.
func ParseUDPHeader(b []byte) (Addr, int, error) {
	if len(b) < 4 {
		return Addr{}, 0, errors.New("socks udp: short header")
	}
	if b[0] != 0 || b[1] != 0 {
		return Addr{}, 0, errors.New("socks udp: reserved octets not zero")
	}
	if b[2] != 0 {
		return Addr{}, 0, fmt.Errorf("socks udp: fragment %d", b[2])
	}
	a, n, err := parseAddr(b[3:], false)
	if err != nil {
		return Addr{}, 0, fmt.Errorf("socks udp: %w", err)
	}
	return a, 3 + n, nil
}

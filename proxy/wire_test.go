package proxy

import (
	"net"

	socks5 "github.com/armon/go-socks5"
)

// appendRequest appends a request in the layout readRequest reads (the
// client's side, which only the tests play); a destination with an IP is
// sent as an address, else as a domain name of at most 255 bytes.
func appendRequest(dst []byte, cmd Command, addr *socks5.AddrSpec) []byte {
	dst = append(dst, socksVersion, byte(cmd), 0)
	// The slice length keeps the type the address arrived with: go-socks5
	// reads IPv4 as 4 bytes and IPv6 (v4-mapped included) as 16.
	switch len(addr.IP) {
	case net.IPv4len:
		dst = append(dst, atypIPv4)
		dst = append(dst, addr.IP...)
	case net.IPv6len:
		dst = append(dst, atypIPv6)
		dst = append(dst, addr.IP...)
	default:
		dst = append(dst, atypDomain, byte(len(addr.FQDN)))
		dst = append(dst, addr.FQDN...)
	}
	return append(dst, byte(addr.Port>>8), byte(addr.Port))
}

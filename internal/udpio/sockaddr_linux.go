//go:build linux

package udpio

import (
	"encoding/binary"
	"net/netip"
	"syscall"
	"unsafe"
)

// The kernel's socket addresses, on every Linux architecture:
//
//	sockaddr_in:  family u16 (host order) | port u16 (network order) | addr [4]byte | zero [8]byte
//	sockaddr_in6: family u16 (host order) | port u16 (network order) | flowinfo u32 | addr [16]byte | scope_id u32
//
// Other systems lay them out differently (the BSDs start with a length
// byte), which is why this file and its callers are Linux's only.

// parseRawSockaddr decodes the first bytes of a sockaddr_in or sockaddr_in6,
// as long as the kernel said it is. An IPv4-mapped IPv6 sender is unmapped,
// so that peer checks compare like with like; flowinfo and scope_id are
// ignored. Anything else, or too short, is not an IP sender: false.
func parseRawSockaddr(b []byte) (netip.AddrPort, bool) {
	if len(b) < 2 {
		return netip.AddrPort{}, false
	}
	switch *(*uint16)(unsafe.Pointer(&b[0])) {
	case syscall.AF_INET:
		if len(b) < 8 {
			return netip.AddrPort{}, false
		}
		return netip.AddrPortFrom(netip.AddrFrom4([4]byte(b[4:8])), binary.BigEndian.Uint16(b[2:4])), true
	case syscall.AF_INET6:
		if len(b) < 24 {
			return netip.AddrPort{}, false
		}
		return netip.AddrPortFrom(netip.AddrFrom16([16]byte(b[8:24])).Unmap(), binary.BigEndian.Uint16(b[2:4])), true
	}
	return netip.AddrPort{}, false
}

// putRawSockaddr encodes to into sa for a socket of the given family
// (inet6: AF_INET6) and returns the length to pass to the kernel. On an
// IPv6 socket an IPv4 destination is written IPv4-mapped; on an IPv4 socket
// an IPv4-mapped destination is written as IPv4 and an IPv6 one is
// ErrFamily. An invalid destination is ErrNoDestination.
func putRawSockaddr(sa *syscall.RawSockaddrAny, to netip.AddrPort, inet6 bool) (uint32, error) {
	ip := to.Addr()
	if !ip.IsValid() {
		return 0, ErrNoDestination
	}
	*sa = syscall.RawSockaddrAny{}
	if inet6 {
		sa6 := (*syscall.RawSockaddrInet6)(unsafe.Pointer(sa))
		sa6.Family = syscall.AF_INET6
		binary.BigEndian.PutUint16((*[2]byte)(unsafe.Pointer(&sa6.Port))[:], to.Port())
		sa6.Addr = ip.As16() // maps an IPv4 address
		return syscall.SizeofSockaddrInet6, nil
	}
	if !ip.Is4() && !ip.Is4In6() {
		return 0, ErrFamily
	}
	sa4 := (*syscall.RawSockaddrInet4)(unsafe.Pointer(sa))
	sa4.Family = syscall.AF_INET
	binary.BigEndian.PutUint16((*[2]byte)(unsafe.Pointer(&sa4.Port))[:], to.Port())
	sa4.Addr = ip.As4() // unmaps an IPv4-mapped address
	return syscall.SizeofSockaddrInet4, nil
}

//go:build linux

package leases

import (
	"encoding/binary"
	"net"
	"net/netip"
	"syscall"
	"unsafe"
)

// rawSource reads through syscall.RawConn so that a parked reader owns no
// buffer: the runtime calls readFD when the socket may be readable; only then
// is a buffer taken from the pool, and it goes back as soon as the socket
// reports EAGAIN. With thousands of mostly idle leases this is the difference
// between ~64 KiB and a few hundred bytes per lease.
//
// All fields are used only by the reader goroutine.
type rawSource struct {
	rc   syscall.RawConn
	pool *bufPool
	idle func()
	// readFn is r.readFD bound once: a method value built per call would
	// allocate on every read.
	readFn func(fd uintptr) bool

	buf  []byte // non-nil only while draining
	used int    // high-water mark of buf since get, for clearing on put

	// Results of the last readFD, handed from the callback to next.
	rsa    syscall.RawSockaddrAny
	rsaLen uint32
	n      int
	err    error
}

func newPlatformSource(c *net.UDPConn, pool *bufPool, idle func()) (datagramSource, error) {
	rc, err := c.SyscallConn()
	if err != nil {
		return nil, err
	}
	s := &rawSource{rc: rc, pool: pool, idle: idle}
	s.readFn = s.readFD
	return s, nil
}

func (s *rawSource) next() ([]byte, int, netip.AddrPort, error) {
	for {
		s.err = nil
		if err := s.rc.Read(s.readFn); err != nil {
			s.drop()
			return nil, 0, netip.AddrPort{}, err
		}
		if s.err != nil {
			s.drop()
			return nil, 0, netip.AddrPort{}, s.err
		}
		from, ok := parseRawSockaddr((*[syscall.SizeofSockaddrAny]byte)(unsafe.Pointer(&s.rsa))[:min(int(s.rsaLen), syscall.SizeofSockaddrAny)])
		if !ok {
			continue // not an IP sender; cannot be a permitted peer
		}
		return s.buf[:min(s.n, len(s.buf))], s.n, from, nil
	}
}

// readFD is the RawConn callback: false means "not readable, park me".
func (s *rawSource) readFD(fd uintptr) bool {
	if s.buf == nil {
		s.buf = s.pool.get()
		s.used = 0
	}
	for {
		s.rsaLen = syscall.SizeofSockaddrAny
		// MSG_TRUNC makes the kernel return the real length of an oversized
		// datagram, so it is dropped as too_large instead of relayed cut.
		n, _, errno := syscall.Syscall6(syscall.SYS_RECVFROM, fd,
			uintptr(unsafe.Pointer(&s.buf[0])), uintptr(len(s.buf)),
			syscall.MSG_DONTWAIT|syscall.MSG_TRUNC,
			uintptr(unsafe.Pointer(&s.rsa)), uintptr(unsafe.Pointer(&s.rsaLen)))
		switch errno {
		case 0:
			s.n = int(n)
			s.used = max(s.used, min(s.n, len(s.buf)))
			return true
		case syscall.EINTR:
			continue
		case syscall.EAGAIN:
			s.drop()
			s.idle()
			return false
		default:
			s.err = errno
			return true
		}
	}
}

func (s *rawSource) drop() {
	if s.buf != nil {
		s.pool.put(s.buf, s.used)
		s.buf = nil
	}
}

// parseRawSockaddr decodes a kernel sockaddr_in or sockaddr_in6. Layout
// (Linux, all architectures):
//
//	sockaddr_in:  family u16 (host order) | port u16 (network order) | addr [4]byte | zero [8]
//	sockaddr_in6: family u16 (host order) | port u16 (network order) | flowinfo u32 | addr [16]byte | scope_id u32
//
// IPv4-mapped IPv6 senders are unmapped so peer checks compare like with like.
func parseRawSockaddr(b []byte) (netip.AddrPort, bool) {
	if len(b) < 2 {
		return netip.AddrPort{}, false
	}
	family := *(*uint16)(unsafe.Pointer(&b[0]))
	switch family {
	case syscall.AF_INET:
		if len(b) < 8 {
			return netip.AddrPort{}, false
		}
		port := binary.BigEndian.Uint16(b[2:4])
		return netip.AddrPortFrom(netip.AddrFrom4([4]byte(b[4:8])), port), true
	case syscall.AF_INET6:
		if len(b) < 24 {
			return netip.AddrPort{}, false
		}
		port := binary.BigEndian.Uint16(b[2:4])
		return netip.AddrPortFrom(netip.AddrFrom16([16]byte(b[8:24])).Unmap(), port), true
	}
	return netip.AddrPort{}, false
}

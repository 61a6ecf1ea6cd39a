package proxy

import (
	"encoding/binary"
	"errors"
	"net"
	"net/netip"
	"os"
	"sync"
	"syscall"
	"time"
	"unsafe"
)

// rawClientSource reads the client's datagrams from an association's relay
// socket through syscall.RawConn, so that an idle reader owns no buffer: a
// blocking ReadFromUDPAddrPort would pin a 64 KiB buffer to every idle
// association. Without a buffer, readFD first asks the kernel whether a
// datagram is queued (a zero-length MSG_PEEK); only then does it take one
// from the server's pool. It keeps it across datagrams, so a busy association
// does not go to the pool per datagram, until bufferHold after taking it: a
// read deadline then wakes the reader, which hands the buffer back, clears
// the deadline and goes on. So an association that falls silent holds a
// buffer for at most bufferHold.
//
// Used by the association's clientLoop goroutine only.
type rawClientSource struct {
	c  *net.UDPConn
	rc syscall.RawConn
	// readFn is s.readFD bound once: a method value made per read would
	// allocate.
	readFn func(fd uintptr) bool

	bufs  *sync.Pool         // the server's datagram buffers
	buf   *[maxDatagram]byte // from bufs; nil while idle
	taken bool               // readFD took buf: next must arm the deadline

	// The last readFD's results, handed from the callback to next.
	rsa    syscall.RawSockaddrAny
	rsaLen uint32
	n      int
	err    error
}

var _ clientSource = (*rawClientSource)(nil)

// bufferHold is how long a client reader keeps a pooled buffer.
const bufferHold = 500 * time.Millisecond

func newClientSource(c *net.UDPConn, bufs *sync.Pool) (clientSource, error) {
	rc, err := c.SyscallConn()
	if err != nil {
		return nil, err
	}
	s := &rawClientSource{c: c, rc: rc, bufs: bufs}
	s.readFn = s.readFD
	return s, nil
}

func (s *rawClientSource) next() ([]byte, netip.AddrPort, error) {
	for {
		s.err = nil
		err := s.rc.Read(s.readFn)
		if s.taken {
			s.taken = false
			s.c.SetReadDeadline(time.Now().Add(bufferHold))
		}
		if errors.Is(err, os.ErrDeadlineExceeded) {
			s.close()
			s.c.SetReadDeadline(time.Time{})
			continue
		}
		if err != nil {
			s.close()
			return nil, netip.AddrPort{}, err
		}
		if s.err != nil {
			s.close()
			return nil, netip.AddrPort{}, s.err
		}
		from, ok := sockaddrAddrPort(&s.rsa, s.rsaLen)
		if !ok {
			continue // not an IP sender: cannot be the client
		}
		return s.buf[:s.n], from, nil
	}
}

// readFD is the RawConn callback; false means "not readable, park me".
func (s *rawClientSource) readFD(fd uintptr) bool {
	if s.buf == nil {
		if !datagramQueued(fd) {
			return false
		}
		s.buf = s.bufs.Get().(*[maxDatagram]byte)
		s.taken = true
	}
	for {
		s.rsaLen = syscall.SizeofSockaddrAny
		n, _, errno := syscall.Syscall6(syscall.SYS_RECVFROM, fd,
			uintptr(unsafe.Pointer(&s.buf[0])), uintptr(len(s.buf)), syscall.MSG_DONTWAIT,
			uintptr(unsafe.Pointer(&s.rsa)), uintptr(unsafe.Pointer(&s.rsaLen)))
		switch errno {
		case 0:
			s.n = int(n)
			return true
		case syscall.EINTR:
			continue
		case syscall.EAGAIN:
			return false
		default:
			s.err = errno
			return true
		}
	}
}

// datagramQueued reports whether the socket holds a datagram (or an error
// to report), without a buffer: a zero-length peek leaves it queued.
func datagramQueued(fd uintptr) bool {
	for {
		_, _, errno := syscall.Syscall6(syscall.SYS_RECVFROM, fd, 0, 0,
			syscall.MSG_PEEK|syscall.MSG_DONTWAIT, 0, 0)
		switch errno {
		case syscall.EINTR:
			continue
		case syscall.EAGAIN:
			return false
		}
		return true
	}
}

// close gives the buffer back; the source stays usable.
func (s *rawClientSource) close() {
	if s.buf != nil {
		s.bufs.Put(s.buf)
		s.buf = nil
	}
}

// sockaddrAddrPort decodes the kernel's sockaddr_in or sockaddr_in6
// (Linux layout: family u16 in host order, port u16 in network order, then
// the IPv4 address, or flowinfo u32 and the IPv6 address).
func sockaddrAddrPort(rsa *syscall.RawSockaddrAny, n uint32) (netip.AddrPort, bool) {
	b := (*[syscall.SizeofSockaddrAny]byte)(unsafe.Pointer(rsa))[:min(int(n), syscall.SizeofSockaddrAny)]
	if len(b) < 2 {
		return netip.AddrPort{}, false
	}
	switch rsa.Addr.Family {
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

// rawClientSink sends header and payload in one sendmsg(2) with two
// iovecs: the payload is never copied. Used by deliver only, which the
// lease never calls concurrently for one holder.
type rawClientSink struct {
	rc      syscall.RawConn
	writeFn func(fd uintptr) bool // s.writeFD bound once, as readFn

	hdr [maxUDPAddrHeaderLen]byte
	iov [2]syscall.Iovec
	msg syscall.Msghdr
	sa4 syscall.RawSockaddrInet4
	sa6 syscall.RawSockaddrInet6
	// inet6 is set for an AF_INET6 socket, which takes IPv4 destinations
	// only in their IPv4-mapped form (as WriteToUDPAddrPort would send them).
	inet6 bool
	err   error
}

var _ clientSink = (*rawClientSink)(nil)

func newClientSink(c *net.UDPConn) (clientSink, error) {
	rc, err := c.SyscallConn()
	if err != nil {
		return nil, err
	}
	s := &rawClientSink{rc: rc}
	if ua, ok := c.LocalAddr().(*net.UDPAddr); ok && ua.IP.To4() == nil {
		s.inet6 = true
	}
	s.writeFn = s.writeFD
	return s, nil
}

func (s *rawClientSink) send(from netip.AddrPort, payload []byte, to netip.AddrPort) error {
	hdr := appendUDPHeader(s.hdr[:0], from)
	s.iov[0].Base = &hdr[0]
	s.iov[0].SetLen(len(hdr))
	s.iov[1].SetLen(len(payload))
	s.iov[1].Base = nil
	s.msg = syscall.Msghdr{Iov: &s.iov[0]}
	// Constants, so the assignment fits Iovlen's per-architecture type.
	s.msg.Iovlen = 1
	if len(payload) > 0 {
		s.iov[1].Base = &payload[0]
		s.msg.Iovlen = 2
	}
	if ip := to.Addr(); ip.Is4() && !s.inet6 {
		s.sa4 = syscall.RawSockaddrInet4{Family: syscall.AF_INET, Addr: ip.As4()}
		binary.BigEndian.PutUint16((*[2]byte)(unsafe.Pointer(&s.sa4.Port))[:], to.Port())
		s.msg.Name, s.msg.Namelen = (*byte)(unsafe.Pointer(&s.sa4)), syscall.SizeofSockaddrInet4
	} else {
		// As16 maps an IPv4 address.
		s.sa6 = syscall.RawSockaddrInet6{Family: syscall.AF_INET6, Addr: ip.As16()}
		binary.BigEndian.PutUint16((*[2]byte)(unsafe.Pointer(&s.sa6.Port))[:], to.Port())
		s.msg.Name, s.msg.Namelen = (*byte)(unsafe.Pointer(&s.sa6)), syscall.SizeofSockaddrInet6
	}
	s.err = nil
	err := s.rc.Write(s.writeFn)
	// Drop the references to the caller's buffers: they are only valid
	// during the call.
	s.iov = [2]syscall.Iovec{}
	if err != nil {
		return err
	}
	return s.err
}

// writeFD is the RawConn callback; false means "not writable, park me".
func (s *rawClientSink) writeFD(fd uintptr) bool {
	for {
		_, _, errno := syscall.Syscall(syscall.SYS_SENDMSG, fd, uintptr(unsafe.Pointer(&s.msg)), 0)
		switch errno {
		case 0:
			return true
		case syscall.EINTR:
			continue
		case syscall.EAGAIN:
			return false
		default:
			s.err = errno
			return true
		}
	}
}

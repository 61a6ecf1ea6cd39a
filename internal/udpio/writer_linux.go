//go:build linux

package udpio

import (
	"fmt"
	"net"
	"net/netip"
	"syscall"
	"unsafe"
)

// NewWriter returns a writer that sends head and payload with one
// sendmsg(2) and two iovecs, so neither is copied.
func NewWriter(c *net.UDPConn) (Writer, error) {
	rc, err := c.SyscallConn()
	if err != nil {
		return nil, err
	}
	// The socket's own family, not its local address, decides how a
	// destination is encoded.
	var domain int
	var serr error
	if err := rc.Control(func(fd uintptr) {
		domain, serr = syscall.GetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_DOMAIN)
	}); err != nil {
		return nil, err
	}
	if serr != nil {
		return nil, fmt.Errorf("udpio: socket family: %w", serr)
	}
	if domain != syscall.AF_INET && domain != syscall.AF_INET6 {
		return nil, fmt.Errorf("udpio: socket family %d is not IP", domain)
	}
	w := &rawWriter{rc: rc, inet6: domain == syscall.AF_INET6}
	w.writeFn = w.writeFD
	return w, nil
}

// rawWriter is Linux's Writer.
type rawWriter struct {
	rc      syscall.RawConn
	writeFn func(fd uintptr) bool // w.writeFD bound once: see rawReader.readFn
	inet6   bool                  // AF_INET6 socket

	iov [2]syscall.Iovec
	msg syscall.Msghdr
	sa  syscall.RawSockaddrAny
	err error
}

func (w *rawWriter) WriteTo(head, payload []byte, to netip.AddrPort) error {
	salen, err := putRawSockaddr(&w.sa, to, w.inet6)
	if err != nil {
		return err
	}
	w.msg = syscall.Msghdr{Name: (*byte)(unsafe.Pointer(&w.sa)), Namelen: salen, Iov: &w.iov[0]}
	parts := 0
	for _, p := range [2][]byte{head, payload} {
		if len(p) > 0 {
			w.iov[parts].Base = &p[0]
			w.iov[parts].SetLen(len(p))
			parts++
		}
	}
	// Constants, so that the assignment fits Iovlen's per-architecture type.
	switch parts {
	case 1:
		w.msg.Iovlen = 1
	case 2:
		w.msg.Iovlen = 2
	}
	w.err = nil
	err = w.rc.Write(w.writeFn)
	// Drop the references to the caller's buffers: they are only valid
	// during the call.
	w.iov = [2]syscall.Iovec{}
	if err != nil {
		return err
	}
	return w.err
}

// writeFD is the RawConn callback; false means "not writable, park me".
func (w *rawWriter) writeFD(fd uintptr) bool {
	for {
		_, _, errno := syscall.Syscall(syscall.SYS_SENDMSG, fd, uintptr(unsafe.Pointer(&w.msg)), 0)
		switch errno {
		case 0:
			return true
		case syscall.EINTR:
			continue
		case syscall.EAGAIN:
			return false
		default:
			w.err = errno
			return true
		}
	}
}

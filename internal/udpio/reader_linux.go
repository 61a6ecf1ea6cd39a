//go:build linux

package udpio

import (
	"errors"
	"net"
	"net/netip"
	"os"
	"syscall"
	"time"
	"unsafe"
)

// NewReader returns a reader that waits through syscall.RawConn and borrows
// a buffer from p.Buffers only to read, by the rule of p.Keep.
func NewReader(c *net.UDPConn, p Policy) (Reader, error) {
	if err := checkPolicy(p); err != nil {
		return nil, err
	}
	rc, err := c.SyscallConn()
	if err != nil {
		return nil, err
	}
	r := &rawReader{c: c, rc: rc, bufs: p.Buffers, keep: p.Keep, drained: p.Drained}
	r.readFn = r.readFD
	r.eachFn = r.readBatch
	return r, nil
}

// rawReader is Linux's Reader. All fields are used by the reader's goroutine
// only.
type rawReader struct {
	c       *net.UDPConn
	rc      syscall.RawConn
	bufs    Buffers
	keep    time.Duration
	drained func()
	// readFn is r.readFD bound once: a method value made per read would
	// allocate.
	readFn func(fd uintptr) bool
	// eachFn is r.readBatch bound once; fn is Each's callback while Each
	// runs, and bat the batch Each holds (with buffers), nil while none.
	eachFn func(fd uintptr) bool
	fn     DatagramFunc
	bat    *batch

	buf   []byte // from bufs; nil while the reader holds none
	used  int    // high-water mark of buf since Get, for Put
	taken bool   // readFD took buf: with Keep, Next arms the deadline

	// The last readFD's results, handed from the callback to Next.
	rsa    syscall.RawSockaddrAny
	rsaLen uint32
	n      int
	err    error
}

func (r *rawReader) Next() ([]byte, int, netip.AddrPort, error) {
	for {
		r.err = nil
		err := r.rc.Read(r.readFn)
		if r.taken {
			r.taken = false
			r.c.SetReadDeadline(time.Now().Add(r.keep))
		}
		if r.keep > 0 && errors.Is(err, os.ErrDeadlineExceeded) {
			// Keep is over: give the buffer back and wait without one.
			r.Close()
			r.c.SetReadDeadline(time.Time{})
			continue
		}
		if err != nil {
			r.Close()
			return nil, 0, netip.AddrPort{}, err
		}
		if r.err != nil {
			r.Close()
			return nil, 0, netip.AddrPort{}, r.err
		}
		from, ok := parseRawSockaddr((*[syscall.SizeofSockaddrAny]byte)(unsafe.Pointer(&r.rsa))[:min(int(r.rsaLen), syscall.SizeofSockaddrAny)])
		if !ok {
			continue // not an IP sender: no caller has a use for it
		}
		return r.buf[:min(r.n, len(r.buf))], r.n, from, nil
	}
}

// readFD is the RawConn callback; false means "not readable, park me".
func (r *rawReader) readFD(fd uintptr) bool {
	if r.buf == nil {
		if r.keep > 0 && !datagramQueued(fd) {
			r.wait()
			return false
		}
		r.buf = r.bufs.Get()
		r.used = 0
		r.taken = r.keep > 0
	}
	for {
		r.rsaLen = syscall.SizeofSockaddrAny
		// MSG_TRUNC makes the kernel return the real length of a datagram
		// larger than the buffer, so the caller can refuse it instead of
		// relaying it cut.
		n, _, errno := syscall.Syscall6(syscall.SYS_RECVFROM, fd,
			uintptr(unsafe.Pointer(&r.buf[0])), uintptr(len(r.buf)),
			syscall.MSG_DONTWAIT|syscall.MSG_TRUNC,
			uintptr(unsafe.Pointer(&r.rsa)), uintptr(unsafe.Pointer(&r.rsaLen)))
		switch errno {
		case 0:
			r.n = int(n)
			r.used = max(r.used, min(r.n, len(r.buf)))
			return true
		case syscall.EINTR:
			continue
		case syscall.EAGAIN:
			return r.park()
		default:
			r.err = errno
			return true
		}
	}
}

// park is the end of a read that found the socket empty: without Keep the
// buffer goes back at once; false tells RawConn.Read to wait.
func (r *rawReader) park() bool {
	if r.keep == 0 {
		r.Close()
	}
	r.wait()
	return false
}

// wait runs before the reader parks on an empty socket.
func (r *rawReader) wait() {
	if r.drained != nil {
		r.drained()
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

func (r *rawReader) Close() {
	r.giveBatch()
	if r.buf != nil {
		r.bufs.Put(r.buf, r.used)
		r.buf = nil
	}
}

package main

import (
	"errors"
	"fmt"
	"io"
	"net/netip"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// threadsServer runs each session on blocking system calls, as a C server
// with a thread per connection does (microsocks): the descriptors are in
// blocking mode, the Go runtime's netpoller never sees them, and the
// goroutine of a session waits in accept, read, connect or poll inside
// the kernel, holding its OS thread.
//
// The handshake timeout is the listener's SO_RCVTIMEO and SO_SNDTIMEO,
// which accepted sockets inherit on Linux: no system call per session to
// set it. They stay set during the relay, where a read comes only after
// poll said it would not block, and a write that times out waits in poll
// for room instead.
type threadsServer struct {
	cfg   config
	lfd   int
	local netip.AddrPort
	live  *sessions[*fdSession]
	bufs  sync.Pool // *[relayBufLen]byte
}

// relayBufLen is each session's copy buffer: io.Copy's size.
const relayBufLen = 32 << 10

// fdSession is one session's descriptors; target is -1 until connected.
// target is written through sessions.update, read under its lock.
type fdSession struct {
	client, target int
}

var _ server = (*threadsServer)(nil)

func newThreadsServer(cfg config) (*threadsServer, error) {
	fd, err := unix.Socket(family(cfg.listen.Addr()), unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("socket: %w", err)
	}
	tv := unix.NsecToTimeval(cfg.handshakeTimeout.Nanoseconds())
	for _, step := range []func() error{
		func() error { return unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_REUSEADDR, 1) },
		func() error { return unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv) },
		func() error { return unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_SNDTIMEO, &tv) },
		func() error { return unix.Bind(fd, sockaddr(cfg.listen)) },
		func() error { return unix.Listen(fd, unix.SOMAXCONN) },
	} {
		if err := step(); err != nil {
			unix.Close(fd)
			return nil, fmt.Errorf("listen %v: %w", cfg.listen, err)
		}
	}
	sa, err := syscall.Getsockname(fd)
	if err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("getsockname: %w", err)
	}
	return &threadsServer{cfg: cfg, lfd: fd, local: addrPort(sa), live: newSessions[*fdSession](cfg.maxSessions),
		bufs: sync.Pool{New: func() any { return new([relayBufLen]byte) }}}, nil
}

func (s *threadsServer) addr() netip.AddrPort { return s.local }

func (s *threadsServer) serve() error {
	defer unix.Close(s.lfd)
	for {
		// syscall's, not x/sys/unix's: that one asks every IPv4 address's
		// SO_PROTOCOL, a system call more per session.
		fd, _, err := syscall.Accept4(s.lfd, syscall.SOCK_CLOEXEC)
		switch {
		case err == nil:
		case s.isClosed():
			return nil
		case err == unix.EINTR, err == unix.EAGAIN, err == unix.ECONNABORTED:
			// EAGAIN: the listener's SO_RCVTIMEO ran out with nobody.
			continue
		case err == unix.EMFILE, err == unix.ENFILE, err == unix.ENOBUFS, err == unix.ENOMEM:
			time.Sleep(acceptRetryDelay)
			continue
		default:
			return fmt.Errorf("accept: %w", err)
		}
		ss := &fdSession{client: fd, target: -1}
		if !s.live.add(ss) {
			unix.Close(fd)
			continue
		}
		go s.session(ss)
	}
}

func (s *threadsServer) isClosed() bool { return !s.live.update(func() {}) }

func (s *threadsServer) close() {
	// The sessions' shutdowns wake their reads, polls and connects; the
	// listener's wakes the accept that close(2) would not, and serve, which
	// then sees the server closed, closes the listener as it returns.
	s.live.close(func(ss *fdSession) {
		unix.Shutdown(ss.client, unix.SHUT_RDWR)
		if ss.target >= 0 {
			unix.Shutdown(ss.target, unix.SHUT_RDWR)
		}
	})
	unix.Shutdown(s.lfd, unix.SHUT_RDWR)
}

// session runs one client's CONNECT; it owns ss's descriptors and closes
// them, through sessions.done.
func (s *threadsServer) session(ss *fdSession) {
	defer s.live.done(ss, func() {
		unix.Close(ss.client)
		if ss.target >= 0 {
			unix.Close(ss.target)
		}
	})
	buf := s.bufs.Get().(*[relayBufLen]byte)
	defer s.bufs.Put(buf)
	if err := s.connect(ss, buf[:]); err != nil {
		return
	}
	relayFDs(ss.client, ss.target, buf[:])
}

// connect runs the handshake on the client (in buf) and connects to the
// destination, recording its descriptor in ss, and passes on what the
// client sent early.
func (s *threadsServer) connect(ss *fdSession, buf []byte) error {
	c := fdConn(ss.client)
	dst, early, err := handshake(c, buf)
	if err != nil {
		return err
	}
	fd, err := unix.Socket(family(dst.Addr()), unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return refuse(c, repGeneralFailure)
	}
	if !s.live.update(func() { ss.target = fd }) {
		unix.Close(fd)
		return errClosed
	}
	if err := s.dial(fd, dst); err != nil {
		refuse(c, replyCode(err))
		return err
	}
	sa, err := syscall.Getsockname(fd) // syscall's, as for Accept4
	if err != nil {
		return refuse(c, repGeneralFailure)
	}
	if _, err := c.Write(appendReply(nil, repSucceeded, addrPort(sa))); err != nil {
		return err
	}
	// SO_SNDTIMEO, set for connect, bounds this write too.
	_, err = fdConn(fd).Write(early)
	return err
}

var errClosed = errors.New("server closed")

// dial connects the blocking socket fd to dst from the configured local
// address; SO_SNDTIMEO bounds connect.
func (s *threadsServer) dial(fd int, dst netip.AddrPort) error {
	tv := unix.NsecToTimeval(s.cfg.handshakeTimeout.Nanoseconds())
	if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_SNDTIMEO, &tv); err != nil {
		return err
	}
	if local := s.cfg.localFor(dst); local.IsValid() {
		if err := unix.Bind(fd, sockaddr(netip.AddrPortFrom(local, 0))); err != nil {
			return err
		}
	}
	err := unix.Connect(fd, sockaddr(dst))
	if err != unix.EINTR {
		return err
	}
	// A signal cut connect short; the connection goes on in the kernel.
	pfd := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLOUT}}
	if _, err := pollRetry(pfd, int(s.cfg.handshakeTimeout.Milliseconds())); err != nil {
		return err
	}
	if pfd[0].Revents == 0 {
		return unix.ETIMEDOUT
	}
	soerr, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_ERROR)
	if err != nil {
		return err
	}
	if soerr != 0 {
		return unix.Errno(soerr)
	}
	return nil
}

// relayFDs copies between the two blocking sockets a and b with one
// thread, as microsocks does: poll both, read what is ready, write it all
// to the other. A read of 0 (the end) half-closes the other side and
// stops polling this one; the relay ends when both ends are in, or at an
// error.
func relayFDs(a, b int, buf []byte) {
	fds := []unix.PollFd{{Fd: int32(a), Events: unix.POLLIN}, {Fd: int32(b), Events: unix.POLLIN}}
	peer := [2]int{b, a}
	for open := 2; open > 0; {
		if _, err := pollRetry(fds, -1); err != nil {
			return
		}
		for i := range fds {
			if fds[i].Fd < 0 || fds[i].Revents == 0 {
				continue
			}
			n, err := unix.Read(int(fds[i].Fd), buf)
			switch {
			case err == unix.EINTR || err == unix.EAGAIN:
			case err != nil:
				return
			case n == 0:
				unix.Shutdown(peer[i], unix.SHUT_WR)
				fds[i].Fd = -1 // poll skips a negative descriptor
				open--
			default:
				if writeAll(peer[i], buf[:n]) != nil {
					return
				}
			}
		}
	}
}

// writeAll writes b to the blocking socket fd; when SO_SNDTIMEO cuts a
// write short it waits in poll for room, without a limit, as a blocking
// write without the timeout would.
func writeAll(fd int, b []byte) error {
	for len(b) > 0 {
		n, err := unix.Write(fd, b)
		if n > 0 {
			b = b[n:]
		}
		switch {
		case err == nil, err == unix.EINTR:
		case err == unix.EAGAIN:
			if _, err := pollRetry([]unix.PollFd{{Fd: int32(fd), Events: unix.POLLOUT}}, -1); err != nil {
				return err
			}
		default:
			return err
		}
	}
	return nil
}

// pollRetry is poll(2), again after a signal.
func pollRetry(fds []unix.PollFd, timeoutMs int) (int, error) {
	for {
		n, err := unix.Poll(fds, timeoutMs)
		if err != unix.EINTR {
			return n, err
		}
	}
}

// fdConn is a blocking socket as an io.ReadWriter for the handshake: a
// read that SO_RCVTIMEO ends is a timeout, the end of the stream io.EOF.
type fdConn int

var errHandshakeTimeout = errors.New("handshake timeout")

func (c fdConn) Read(b []byte) (int, error) {
	for {
		n, err := unix.Read(int(c), b)
		switch {
		case err == unix.EINTR:
			continue
		case err == unix.EAGAIN:
			return 0, errHandshakeTimeout
		case err != nil:
			return 0, err
		case n == 0 && len(b) > 0:
			return 0, io.EOF
		}
		return n, nil
	}
}

func (c fdConn) Write(b []byte) (int, error) {
	total := len(b)
	for len(b) > 0 {
		n, err := unix.Write(int(c), b)
		if n > 0 {
			b = b[n:]
		}
		switch {
		case err == nil, err == unix.EINTR:
		case err == unix.EAGAIN:
			return total - len(b), errHandshakeTimeout
		default:
			return total - len(b), err
		}
	}
	return total, nil
}

func family(a netip.Addr) int {
	if a.Unmap().Is4() {
		return unix.AF_INET
	}
	return unix.AF_INET6
}

func sockaddr(ap netip.AddrPort) unix.Sockaddr {
	if a := ap.Addr().Unmap(); a.Is4() {
		return &unix.SockaddrInet4{Port: int(ap.Port()), Addr: a.As4()}
	}
	return &unix.SockaddrInet6{Port: int(ap.Port()), Addr: ap.Addr().As16()}
}

func addrPort(sa syscall.Sockaddr) netip.AddrPort {
	switch sa := sa.(type) {
	case *syscall.SockaddrInet4:
		return netip.AddrPortFrom(netip.AddrFrom4(sa.Addr), uint16(sa.Port))
	case *syscall.SockaddrInet6:
		return netip.AddrPortFrom(netip.AddrFrom16(sa.Addr), uint16(sa.Port))
	}
	return netip.AddrPort{}
}

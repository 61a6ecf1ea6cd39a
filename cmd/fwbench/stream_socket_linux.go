package main

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"runtime"
	"sync/atomic"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// The players' receive path is cheaper than the systems it measures, so
// that on a core of its own the driver outlasts them (-stream-pin): a
// player's socket is used through system calls of its own, never through
// the net package, so the Go netpoller does not know it and a datagram
// wakes nobody. A collector sweeps an epoll set of many players' sockets
// a few times a millisecond and takes what each holds with one recvmmsg;
// the kernel's receive time stamp (SO_TIMESTAMPNS) dates each datagram,
// so how late the sweep comes is not in the added latency.

// playerSocket is a player's UDP socket on playerIP.
type playerSocket struct {
	fd   int
	port uint16
}

func openPlayerSocket(ip netip.Addr) (*playerSocket, error) {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("socket: %w", err)
	}
	s := &playerSocket{fd: fd}
	if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_TIMESTAMPNS, 1); err != nil {
		s.close()
		return nil, fmt.Errorf("SO_TIMESTAMPNS: %w", err)
	}
	if err := unix.Bind(fd, &unix.SockaddrInet4{Addr: ip.As4()}); err != nil {
		s.close()
		return nil, fmt.Errorf("bind %v: %w", ip, err)
	}
	sa, err := unix.Getsockname(fd)
	if err != nil {
		s.close()
		return nil, fmt.Errorf("getsockname: %w", err)
	}
	s.port = uint16(sa.(*unix.SockaddrInet4).Port)
	return s, nil
}

func (s *playerSocket) close() error { return unix.Close(s.fd) }

// sendTo sends b to an IPv4 address, waiting while the send buffer is
// full.
func (s *playerSocket) sendTo(b []byte, to netip.AddrPort) error {
	sa := &unix.SockaddrInet4{Port: int(to.Port()), Addr: to.Addr().Unmap().As4()}
	for {
		err := unix.Sendto(s.fd, b, 0, sa)
		if !errors.Is(err, unix.EAGAIN) && !errors.Is(err, unix.EINTR) {
			return err
		}
		if err := s.wait(unix.POLLOUT, 100*time.Millisecond); err != nil {
			return err
		}
	}
}

// readFrom reads one datagram into b, waiting up to wait for it; after
// that it returns os.ErrDeadlineExceeded. The setups use it, not the
// collector.
func (s *playerSocket) readFrom(b []byte, wait time.Duration) (int, netip.AddrPort, error) {
	for {
		n, from, err := unix.Recvfrom(s.fd, b, unix.MSG_DONTWAIT)
		switch {
		case err == nil:
			if sa, ok := from.(*unix.SockaddrInet4); ok {
				return n, netip.AddrPortFrom(netip.AddrFrom4(sa.Addr), uint16(sa.Port)), nil
			}
			continue // not IPv4: not for us
		case errors.Is(err, unix.EINTR):
			continue
		case !errors.Is(err, unix.EAGAIN):
			return 0, netip.AddrPort{}, err
		}
		if err := s.wait(unix.POLLIN, wait); err != nil {
			return 0, netip.AddrPort{}, err
		}
	}
}

// wait polls the socket for events for up to d.
func (s *playerSocket) wait(events int16, d time.Duration) error {
	deadline := time.Now().Add(d)
	for {
		left := time.Until(deadline)
		if left <= 0 {
			return os.ErrDeadlineExceeded
		}
		fds := []unix.PollFd{{Fd: int32(s.fd), Events: events}}
		n, err := unix.Poll(fds, int(left.Milliseconds())+1)
		switch {
		case errors.Is(err, unix.EINTR):
		case err != nil:
			return fmt.Errorf("poll: %w", err)
		case n > 0:
			return nil
		}
	}
}

// collectBatch is the most datagrams one recvmmsg takes from one socket.
const collectBatch = 4

// collectGap is the pause between two sweeps that found few sockets
// ready: long enough for datagrams to gather, short beside every
// socket's buffer.
const collectGap = 500 * time.Microsecond

// collector reads the datagrams of the players registered with it.
type collector struct {
	ep      int
	players map[int32]*streamPlayer // by index, the epoll data
	msgs    [collectBatch]unix.Mmsghdr
	iovs    [collectBatch]unix.Iovec
	bufs    [collectBatch][2048]byte
	oobs    [collectBatch][64]byte
}

func newCollector() (*collector, error) {
	ep, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("epoll_create1: %w", err)
	}
	c := &collector{ep: ep, players: map[int32]*streamPlayer{}}
	for i := range c.msgs {
		c.iovs[i].Base = &c.bufs[i][0]
		c.iovs[i].SetLen(len(c.bufs[i]))
		c.msgs[i].Hdr.Iov = &c.iovs[i]
		c.msgs[i].Hdr.SetIovlen(1)
		c.msgs[i].Hdr.Control = &c.oobs[i][0]
	}
	return c, nil
}

func (c *collector) close() { unix.Close(c.ep) }

// add registers p's socket (level-triggered: what one sweep leaves, the
// next finds).
func (c *collector) add(p *streamPlayer) error {
	ev := unix.EpollEvent{Events: unix.EPOLLIN, Fd: int32(p.idx)}
	if err := unix.EpollCtl(c.ep, unix.EPOLL_CTL_ADD, p.sock.fd, &ev); err != nil {
		return fmt.Errorf("epoll_ctl: %w", err)
	}
	c.players[int32(p.idx)] = p
	return nil
}

// collect reads the datagrams of step w until stop is set; each is
// recorded at the player it arrived at. It runs on a thread of its own,
// which blocks in the kernel between sweeps.
func (c *collector) collect(w stepWindow, stop *atomic.Bool) error {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	events := make([]unix.EpollEvent, 512)
	// The kernel's stamps are wall-clock time; the sender's are since
	// epoch on the monotonic clock.
	epochWall := epoch.UnixNano()
	for !stop.Load() {
		n, err := unix.EpollWait(c.ep, events, 5)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return fmt.Errorf("epoll_wait: %w", err)
		}
		for _, ev := range events[:n] {
			p := c.players[ev.Fd]
			got, err := c.read(p.sock.fd)
			if err != nil {
				return err
			}
			for i := range got {
				at := sinceEpoch()
				if ts, ok := c.stamp(i); ok {
					at = time.Duration(ts - epochWall)
				}
				p.record(c.bufs[i][:c.msgs[i].Len], at, w)
			}
		}
		if n < len(events)/4 {
			unix.Nanosleep(&unix.Timespec{Nsec: collectGap.Nanoseconds()}, nil)
		}
	}
	return nil
}

// read takes up to collectBatch datagrams from fd without waiting.
func (c *collector) read(fd int) (int, error) {
	for i := range c.msgs {
		c.msgs[i].Hdr.SetControllen(len(c.oobs[i]))
		c.msgs[i].Hdr.Flags = 0
	}
	for {
		r, _, errno := unix.RawSyscall6(unix.SYS_RECVMMSG, uintptr(fd), uintptr(unsafe.Pointer(&c.msgs[0])), collectBatch, unix.MSG_DONTWAIT, 0, 0)
		switch errno {
		case 0:
			return int(r), nil
		case unix.EINTR:
			continue
		case unix.EAGAIN:
			return 0, nil
		}
		return 0, fmt.Errorf("recvmmsg: %w", errno)
	}
}

// stamp is the kernel's receive time of message i, in nanoseconds since
// the Unix epoch.
func (c *collector) stamp(i int) (int64, bool) {
	const hdrLen = unix.SizeofCmsghdr
	if int(c.msgs[i].Hdr.Controllen) < hdrLen+int(unsafe.Sizeof(unix.Timespec{})) {
		return 0, false
	}
	h := (*unix.Cmsghdr)(unsafe.Pointer(&c.oobs[i][0]))
	if h.Level != unix.SOL_SOCKET || h.Type != unix.SCM_TIMESTAMPNS {
		return 0, false
	}
	ts := (*unix.Timespec)(unsafe.Pointer(&c.oobs[i][unix.CmsgLen(0)]))
	return ts.Nano(), true
}

// playersPerCollector is how many players one collector sweeps: one
// recvmmsg per datagram at 1 Mbit/s is about a fifth of a core per 2,000.
const playersPerCollector = 2000

// receivers are the collectors of the scenario, each with its share of
// the players.
type receivers struct {
	cs []*collector
}

// newReceivers makes enough collectors for most players.
func newReceivers(most int) (*receivers, error) {
	r := &receivers{}
	for range max(1, (most+playersPerCollector-1)/playersPerCollector) {
		c, err := newCollector()
		if err != nil {
			r.close()
			return nil, err
		}
		r.cs = append(r.cs, c)
	}
	return r, nil
}

func (r *receivers) close() {
	for _, c := range r.cs {
		c.close()
	}
}

// add gives p to a collector.
func (r *receivers) add(p *streamPlayer) error { return r.cs[p.idx%len(r.cs)].add(p) }

// start has the collectors read step w; the function it returns stops
// them and returns the first error one met.
func (r *receivers) start(w stepWindow) func() error {
	var stop atomic.Bool
	errs := make(chan error, len(r.cs))
	for _, c := range r.cs {
		go func() { errs <- c.collect(w, &stop) }()
	}
	return func() error {
		stop.Store(true)
		var all []error
		for range r.cs {
			all = append(all, <-errs)
		}
		return errors.Join(all...)
	}
}

package main

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"runtime"
	"sync"
	"sync/atomic"
	"unsafe"

	"golang.org/x/sys/unix"
)

// playerBatch is the most datagrams one recvmmsg takes from one player's
// in socket: at 1 Mbit/s a socket rarely holds more between two sweeps,
// and a small batch keeps one busy socket from delaying the others.
const playerBatch = 8

// wakeTag is the epoll data of the eventfd that ends the loop; player
// indexes are below maxPlayers.
const wakeTag = -1

// pair is one registered player's two sockets: in, where the sender
// sends that player's stream (a proxy's lease socket), and out, connected
// to the player, from which it receives (a proxy's association relay
// socket). Its fields do not change; a new registration address is a new
// pair with the same descriptors.
type pair struct {
	in, out int
	inPort  uint16
	to      netip.AddrPort
}

// perPlayerRelay is -per-player: the cheapest relay a proxy with a socket
// per client could be. One locked thread waits in epoll on every in
// socket, on raw descriptors the Go netpoller never sees (so no goroutine
// is woken per datagram), and for each ready one moves one recvmmsg's
// datagrams with one sendmmsg on that player's out socket. It cannot
// batch across players, which is the cost it is there to show.
type perPlayerRelay struct {
	reg         *net.UDPConn // -out: registrations
	inIP, outIP netip.Addr
	ep, wake    int // epoll and the eventfd that ends the loop
	players     []atomic.Pointer[pair]
	opened      atomic.Int64 // pairs open, for the tests
	tally
	wg sync.WaitGroup
}

func newPerPlayerRelay(reg *net.UDPConn, inIP netip.Addr, players int) (*perPlayerRelay, error) {
	outIP := reg.LocalAddr().(*net.UDPAddr).AddrPort().Addr().Unmap()
	if !inIP.Is4() || !outIP.Is4() {
		return nil, errors.New("per-player mode: -in and -out must be IPv4")
	}
	ep, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("epoll_create1: %w", err)
	}
	wake, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
	if err != nil {
		unix.Close(ep)
		return nil, fmt.Errorf("eventfd: %w", err)
	}
	ev := unix.EpollEvent{Events: unix.EPOLLIN, Fd: wakeTag}
	if err := unix.EpollCtl(ep, unix.EPOLL_CTL_ADD, wake, &ev); err != nil {
		unix.Close(ep)
		unix.Close(wake)
		return nil, fmt.Errorf("epoll_ctl: %w", err)
	}
	return &perPlayerRelay{reg: reg, inIP: inIP, outIP: outIP, ep: ep, wake: wake, players: make([]atomic.Pointer[pair], players)}, nil
}

// run relays until close; when it returns both loops have ended and
// every descriptor is closed.
func (r *perPlayerRelay) run() {
	r.wg.Add(2)
	go r.registerLoop()
	go r.forwardLoop()
	r.wg.Wait()
	r.closeAll()
}

// closeAll closes every pair, the epoll set and the eventfd, once
// neither loop runs.
func (r *perPlayerRelay) closeAll() {
	for i := range r.players {
		if p := r.players[i].Load(); p != nil {
			unix.Close(p.in)
			unix.Close(p.out)
			r.opened.Add(-1)
		}
	}
	unix.Close(r.ep)
	unix.Close(r.wake)
}

// close ends both loops: the eventfd wakes the forwarding thread, closing
// the registration socket ends the other.
func (r *perPlayerRelay) close() {
	var one [8]byte
	binary.NativeEndian.PutUint64(one[:], 1)
	unix.Write(r.wake, one[:])
	r.reg.Close()
}

// registerLoop gives each new player its pair and answers every
// registration from the player's out socket: the four index bytes and the
// in socket's port, big-endian. A repeat keeps the pair (a lost answer is
// resent for); one from a new address reconnects the out socket to it.
func (r *perPlayerRelay) registerLoop() {
	defer r.wg.Done()
	var buf [16]byte
	for {
		n, from, err := r.reg.ReadFromUDPAddrPort(buf[:])
		if errors.Is(err, net.ErrClosed) {
			return
		}
		if err != nil {
			continue
		}
		i, ok := parseRegistration(buf[:n], len(r.players))
		from = netip.AddrPortFrom(from.Addr().Unmap(), from.Port())
		if !ok || !from.Addr().Is4() {
			r.refused.Add(1)
			continue
		}
		p, err := r.register(i, from)
		if err != nil {
			r.refused.Add(1)
			continue
		}
		r.registrations.Add(1)
		answer := binary.BigEndian.AppendUint16(binary.BigEndian.AppendUint32(nil, i), p.inPort)
		if _, err := unix.Write(p.out, answer); err != nil {
			r.sendErrors.Add(1)
		}
	}
}

// register returns player i's pair, opening it on first use.
func (r *perPlayerRelay) register(i uint32, from netip.AddrPort) (*pair, error) {
	slot := &r.players[i]
	if p := slot.Load(); p != nil {
		if p.to == from {
			return p, nil
		}
		if err := unix.Connect(p.out, sockaddr(from)); err != nil {
			return nil, fmt.Errorf("connect out socket: %w", err)
		}
		// A refusal still pending from the old address (its socket gone)
		// would fail the answer to the new one: reading it clears it.
		unix.GetsockoptInt(p.out, unix.SOL_SOCKET, unix.SO_ERROR)
		q := *p
		q.to = from
		slot.Store(&q)
		return &q, nil
	}
	p, err := r.openPair(from)
	if err != nil {
		return nil, err
	}
	// Stored before the in socket is watched: the loop finds every pair
	// whose socket it is told of.
	slot.Store(p)
	r.opened.Add(1)
	ev := unix.EpollEvent{Events: unix.EPOLLIN, Fd: int32(i)}
	if err := unix.EpollCtl(r.ep, unix.EPOLL_CTL_ADD, p.in, &ev); err != nil {
		// Never watched, so the loop cannot hold it: closed at once.
		slot.Store(nil)
		r.opened.Add(-1)
		unix.Close(p.in)
		unix.Close(p.out)
		return nil, fmt.Errorf("epoll_ctl: %w", err)
	}
	return p, nil
}

// openPair opens an in socket on inIP and an out socket on outIP
// connected to the player. The out socket blocks: a full send buffer
// holds the forwarding thread, as it would a proxy's, rather than drop.
func (r *perPlayerRelay) openPair(to netip.AddrPort) (*pair, error) {
	in, err := udpSocket(r.inIP, unix.SOCK_NONBLOCK)
	if err != nil {
		return nil, err
	}
	out, err := udpSocket(r.outIP, 0)
	if err != nil {
		unix.Close(in)
		return nil, err
	}
	fail := func(what string, err error) (*pair, error) {
		unix.Close(in)
		unix.Close(out)
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	sa, err := unix.Getsockname(in)
	if err != nil {
		return fail("getsockname", err)
	}
	if err := unix.Connect(out, sockaddr(to)); err != nil {
		return fail("connect out socket", err)
	}
	return &pair{in: in, out: out, inPort: uint16(sa.(*unix.SockaddrInet4).Port), to: to}, nil
}

// udpSocket is an IPv4 UDP socket bound to ip on a port of the kernel's
// choosing.
func udpSocket(ip netip.Addr, flags int) (int, error) {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC|flags, 0)
	if err != nil {
		return -1, fmt.Errorf("socket: %w", err)
	}
	if err := unix.Bind(fd, &unix.SockaddrInet4{Addr: ip.As4()}); err != nil {
		unix.Close(fd)
		return -1, fmt.Errorf("bind %v: %w", ip, err)
	}
	return fd, nil
}

func sockaddr(a netip.AddrPort) *unix.SockaddrInet4 {
	return &unix.SockaddrInet4{Addr: a.Addr().As4(), Port: int(a.Port())}
}

// playerMsgs is the forwarding thread's one set of buffers: a datagram is
// received into them and sent from them.
type playerMsgs struct {
	msgs [playerBatch]unix.Mmsghdr
	iovs [playerBatch]unix.Iovec
	bufs [playerBatch][maxDatagram]byte
}

func newPlayerMsgs() *playerMsgs {
	m := &playerMsgs{}
	for i := range m.msgs {
		m.iovs[i].Base = &m.bufs[i][0]
		m.msgs[i].Hdr.Iov = &m.iovs[i]
		m.msgs[i].Hdr.SetIovlen(1)
	}
	return m
}

// forwardLoop is the data path, on a thread of its own: epoll_wait, then
// one batch of each ready in socket (level-triggered: what a batch
// leaves, the next sweep finds). It does not pause between sweeps: a
// datagram is forwarded as soon as the thread gets to it.
func (r *perPlayerRelay) forwardLoop() {
	defer r.wg.Done()
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	events := make([]unix.EpollEvent, 256)
	m := newPlayerMsgs()
	for {
		n, err := unix.EpollWait(r.ep, events, -1)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			// Only a bad epoll descriptor fails here: nothing to go on with.
			return
		}
		for _, ev := range events[:n] {
			if ev.Fd == wakeTag {
				return
			}
			if p := r.players[ev.Fd].Load(); p != nil {
				r.forward(p, m)
			}
		}
	}
}

// forward moves what p's in socket holds, up to playerBatch datagrams, to
// the player. A datagram the kernel refuses (the player's socket gone:
// ECONNREFUSED) is counted and skipped.
func (r *perPlayerRelay) forward(p *pair, m *playerMsgs) {
	for i := range m.iovs {
		m.iovs[i].SetLen(maxDatagram)
	}
	k, err := recvmmsg(p.in, m.msgs[:])
	if err != nil || k == 0 {
		return // EAGAIN: another sweep's socket, already read
	}
	for i := range k {
		m.iovs[i].SetLen(int(m.msgs[i].Len))
	}
	tx := m.msgs[:k]
	for len(tx) > 0 {
		sent, err := sendmmsg(p.out, tx)
		r.relayed.Add(uint64(sent))
		tx = tx[sent:]
		if err != nil && len(tx) > 0 {
			r.sendErrors.Add(1)
			tx = tx[1:]
		}
	}
}

// recvmmsg takes what fd holds into msgs without waiting. It never
// blocks, so it skips the runtime's bookkeeping for a system call that
// might.
func recvmmsg(fd int, msgs []unix.Mmsghdr) (int, error) {
	for {
		n, _, errno := unix.RawSyscall6(unix.SYS_RECVMMSG, uintptr(fd), uintptr(unsafe.Pointer(&msgs[0])), uintptr(len(msgs)), unix.MSG_DONTWAIT, 0, 0)
		if errno == 0 {
			return int(n), nil
		}
		if errno != unix.EINTR {
			return 0, errno
		}
	}
}

// sendmmsg sends msgs on fd, which may block; it returns how many went
// before the first the kernel refused.
func sendmmsg(fd int, msgs []unix.Mmsghdr) (int, error) {
	for {
		n, _, errno := unix.Syscall6(unix.SYS_SENDMMSG, uintptr(fd), uintptr(unsafe.Pointer(&msgs[0])), uintptr(len(msgs)), 0, 0, 0)
		if errno == 0 {
			return int(n), nil
		}
		if errno != unix.EINTR {
			return 0, errno
		}
	}
}

package mmsplayer

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"syscall"
)

// Socket details a firewall client needs and net does not offer: a UDP
// port shared by the old and the new socket while the new association
// races ahead of the old one's close, a socket tied to its own relay, and
// reading what a socket holds without waiting.

// overlapSupported tells whether the racing orders can keep two sockets
// on one port (Linux: SO_REUSEADDR and connect on UDP).
const overlapSupported = true

// listenUDP binds addr exactly. With reuse the socket may share the port
// with another of this player's sockets that also set SO_REUSEADDR.
func listenUDP(ctx context.Context, addr netip.AddrPort, reuse bool) (*net.UDPConn, error) {
	lc := net.ListenConfig{}
	if reuse {
		lc.Control = func(_, _ string, rc syscall.RawConn) error { return setReuse(rc) }
	}
	pc, err := lc.ListenPacket(ctx, udpNetwork(addr.Addr()), addr.String())
	if err != nil {
		return nil, err
	}
	return pc.(*net.UDPConn), nil
}

// allowReuse sets SO_REUSEADDR on a bound socket, so that a later bind of
// the same port by this player (with reuse) succeeds while it is open.
func allowReuse(c *net.UDPConn) error {
	rc, err := c.SyscallConn()
	if err != nil {
		return err
	}
	return setReuse(rc)
}

func setReuse(rc syscall.RawConn) error {
	var serr error
	if err := rc.Control(func(fd uintptr) {
		serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_REUSEADDR, 1)
	}); err != nil {
		return err
	}
	if serr != nil {
		return fmt.Errorf("SO_REUSEADDR: %w", serr)
	}
	return nil
}

// connectUDP ties c to peer: the kernel then delivers to c only what comes
// from peer, and a second socket on the same port (unconnected) gets
// everything else. net.UDPConn does not know about it, which is what is
// wanted: reads still report the source, and nothing is written.
func connectUDP(c *net.UDPConn, peer netip.AddrPort) error {
	rc, err := c.SyscallConn()
	if err != nil {
		return err
	}
	var sa syscall.Sockaddr
	if peer.Addr().Is4() {
		sa = &syscall.SockaddrInet4{Port: int(peer.Port()), Addr: peer.Addr().As4()}
	} else {
		sa = &syscall.SockaddrInet6{Port: int(peer.Port()), Addr: peer.Addr().As16()}
	}
	var serr error
	if err := rc.Control(func(fd uintptr) { serr = syscall.Connect(int(fd), sa) }); err != nil {
		return err
	}
	if serr != nil {
		return fmt.Errorf("connect %v: %w", peer, serr)
	}
	return nil
}

// drainUDP reads every datagram c holds without waiting and passes each to
// fn; it returns when the queue is empty. c's read deadline must not be in
// the past.
func drainUDP(c *net.UDPConn, buf []byte, fn func(b []byte, from netip.AddrPort)) error {
	rc, err := c.SyscallConn()
	if err != nil {
		return err
	}
	for {
		var (
			n    int
			from syscall.Sockaddr
			rerr error
		)
		if err := rc.Read(func(fd uintptr) bool {
			n, from, rerr = syscall.Recvfrom(int(fd), buf, syscall.MSG_DONTWAIT)
			return true // never wait for readiness
		}); err != nil {
			return err
		}
		if rerr == syscall.EAGAIN || rerr == syscall.EWOULDBLOCK {
			return nil
		}
		if rerr != nil {
			if rerr == syscall.EINTR || rerr == syscall.ECONNREFUSED {
				continue // a queued ICMP error, not data
			}
			return rerr
		}
		var ap netip.AddrPort
		switch sa := from.(type) {
		case *syscall.SockaddrInet4:
			ap = netip.AddrPortFrom(netip.AddrFrom4(sa.Addr), uint16(sa.Port))
		case *syscall.SockaddrInet6:
			ap = netip.AddrPortFrom(netip.AddrFrom16(sa.Addr).Unmap(), uint16(sa.Port))
		}
		fn(buf[:n], ap)
	}
}

// Command udprelay-min is the simplest UDP relay that carries fwbench's
// streaming scenario: the cost of one extra hop with nothing else, as the
// physical limit fwproxy's data path is measured against. It has no SOCKS,
// no leases, no rules and no metrics.
//
// By default it receives on one socket (-in, where the media sender sends
// every player's stream) and sends on another (-out, where the players
// are), with batched system calls (recvmmsg and sendmmsg) whenever more
// than one datagram is queued. The first four bytes of each datagram name
// its player (big-endian index); a player registers its address by
// sending those four bytes to -out, and the relay answers them back as
// the acknowledgement.
//
//	udprelay-min -in 127.0.0.4:5000 -out 127.0.0.4:5001
//
// With -per-player it is instead the cheapest relay a proxy with a socket
// per client could be (a lease socket in, an association relay socket
// out), so that it cannot batch across players. A registration (the same
// four bytes to -out) gives the player two sockets of its own: an in
// socket on -in's IP (whose port must then be 0) where the sender sends
// that player's stream, and an out socket on -out's IP, connected to the
// player, from which it receives. The answer comes from the out socket:
// the four index bytes and the in socket's port, two bytes big-endian. A
// repeated registration keeps the sockets and answers the same. One
// thread waits in epoll on every in socket, on raw descriptors the Go
// runtime does not poll, and for each ready one moves one recvmmsg's
// datagrams (up to 8) with one sendmmsg from that player's out socket;
// what arrives on player i's in socket goes to player i, whatever its
// bytes. The in sockets keep the kernel's default receive buffer, as a
// proxy's lease sockets do; -rcvbuf is for the single -in socket.
//
//	udprelay-min -per-player -in 127.0.0.4:0 -out 127.0.0.4:5001
//
// In both modes IPv4 only, and -max-players bounds the player index (and
// so, with -per-player, the sockets: two per player). On SIGINT or
// SIGTERM it closes every socket, prints its counts to standard error and
// exits 0.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/signal"
	"syscall"
)

// setReadBuffer sets c's receive buffer to n bytes, past net.core.rmem_max
// when the process may (SO_RCVBUFFORCE), else as far as rmem_max allows.
func setReadBuffer(c *net.UDPConn, n int) error {
	rc, err := c.SyscallConn()
	if err != nil {
		return err
	}
	var serr error
	if err := rc.Control(func(fd uintptr) {
		serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUFFORCE, n)
	}); err != nil {
		return err
	}
	if serr != nil {
		return c.SetReadBuffer(n)
	}
	return nil
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stderr)
	stop()
	os.Exit(code)
}

func run(ctx context.Context, args []string, stderr io.Writer) int {
	fs := flag.NewFlagSet("udprelay-min", flag.ContinueOnError)
	fs.SetOutput(stderr)
	in := fs.String("in", "127.0.0.1:0", "`address` the sender sends to")
	out := fs.String("out", "127.0.0.1:0", "`address` the players register with and receive from")
	rcvbuf := fs.Int("rcvbuf", 8<<20, "receive buffer `bytes` of the -in socket (SO_RCVBUFFORCE when permitted)")
	players := fs.Int("max-players", 1<<16, "largest player index + 1 (with -per-player, the most players given sockets)")
	perPlayer := fs.Bool("per-player", false, "an in and an out socket of its own for each player, epoll over the in sockets")
	if err := fs.Parse(args); err != nil {
		if err == flag.ErrHelp {
			return 0
		}
		return 2
	}
	inAddr, err1 := netip.ParseAddrPort(*in)
	outAddr, err2 := netip.ParseAddrPort(*out)
	if err1 != nil || err2 != nil || *players <= 0 || *players > maxPlayers {
		fmt.Fprintf(stderr, "udprelay-min: -in and -out must be IP:port, -max-players 1 to %d\n", maxPlayers)
		return 2
	}
	if *perPlayer && inAddr.Port() != 0 {
		fmt.Fprintln(stderr, "udprelay-min: with -per-player, -in names only the in sockets' IP: its port must be 0")
		return 2
	}
	r, err := listen(inAddr, outAddr, *rcvbuf, *players, *perPlayer, stderr)
	if err != nil {
		fmt.Fprintln(stderr, "udprelay-min:", err)
		return 1
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		r.run()
	}()
	<-ctx.Done()
	r.close()
	<-done
	c := r.counts()
	fmt.Fprintf(stderr, "udprelay-min: relayed %d, unknown player %d, send errors %d, registrations %d, refused registrations %d\n",
		c.relayed, c.unknown, c.sendErrors, c.registrations, c.refused)
	return 0
}

// relayer is either mode.
type relayer interface {
	run() // until close; every socket is closed when it returns
	close()
	counts() counts
}

// listen opens the sockets of the mode asked for.
func listen(in, out netip.AddrPort, rcvbuf, players int, perPlayer bool, stderr io.Writer) (relayer, error) {
	outConn, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(out))
	if err != nil {
		return nil, err
	}
	if perPlayer {
		r, err := newPerPlayerRelay(outConn, in.Addr(), players)
		if err != nil {
			outConn.Close()
			return nil, err
		}
		return r, nil
	}
	inConn, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(in))
	if err != nil {
		outConn.Close()
		return nil, err
	}
	// One socket takes every player's stream: its buffer stands in for
	// the per-player sockets' buffers of a proxy.
	if err := setReadBuffer(inConn, rcvbuf); err != nil {
		fmt.Fprintln(stderr, "udprelay-min: receive buffer:", err)
	}
	return newRelay(inConn, outConn, players), nil
}

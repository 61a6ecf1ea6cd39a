// Command udprelay-min is the simplest UDP relay that carries fwbench's
// streaming scenario: the cost of one extra hop with nothing else, as the
// physical limit fwproxy's data path is measured against. It has no SOCKS,
// no leases, no rules and no metrics.
//
// It receives on one socket (-in, where the media sender sends) and sends
// on another (-out, where the players are), with batched system calls
// (recvmmsg and sendmmsg) whenever more than one datagram is queued. The
// first four bytes of each datagram name its player (big-endian index); a
// player registers its address by sending those four bytes to -out, and
// the relay answers them back as the acknowledgement.
//
//	udprelay-min -in 127.0.0.4:5000 -out 127.0.0.4:5001
//
// On SIGINT or SIGTERM it prints its counts to standard error and exits 0.
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
	players := fs.Int("max-players", 1<<16, "largest player index + 1")
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
	inConn, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(inAddr))
	if err != nil {
		fmt.Fprintln(stderr, "udprelay-min:", err)
		return 1
	}
	outConn, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(outAddr))
	if err != nil {
		inConn.Close()
		fmt.Fprintln(stderr, "udprelay-min:", err)
		return 1
	}
	// One socket takes every player's stream: its buffer stands in for
	// the per-player sockets' buffers of a proxy.
	if err := setReadBuffer(inConn, *rcvbuf); err != nil {
		fmt.Fprintln(stderr, "udprelay-min: receive buffer:", err)
	}
	r := newRelay(inConn, outConn, *players)
	done := make(chan struct{})
	go func() {
		defer close(done)
		r.run()
	}()
	<-ctx.Done()
	r.close()
	<-done
	c := r.counts()
	fmt.Fprintf(stderr, "udprelay-min: relayed %d, unknown player %d, send errors %d, registrations %d\n",
		c.relayed, c.unknown, c.sendErrors, c.registrations)
	return 0
}

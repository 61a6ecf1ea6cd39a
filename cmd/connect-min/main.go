// Command connect-min is the simplest SOCKS5 server that carries
// fwbench's CONNECT and bulk scenarios: a measured floor of the Go runtime
// for a CONNECT proxy, so that a run can say how much of fwproxy's gap to
// a C proxy (microsocks) is fwproxy's own code and how much the runtime's.
// It is never a proxy to deploy: it has no rules, no authentication, no
// logs, no metrics and no resolver.
//
// It speaks only what fwbench needs of RFC 1928: method 0x00 (no
// authentication), CONNECT to an IPv4 or IPv6 literal, and a reply with
// the address the outgoing connection is bound to. A domain name is
// answered "address type not supported", BIND and UDP ASSOCIATE "command
// not supported", and the connection closed.
//
// Two modes, the same protocol code:
//
//   - netpoll: idiomatic Go, the net package on the runtime's netpoller,
//     a goroutine per connection, io.Copy both ways with half-close
//     (splice on Linux).
//   - threads: every system call blocking (accept, read, connect, poll,
//     write on descriptors in blocking mode), so each session's goroutine
//     sleeps in the kernel on its own OS thread, as microsocks' thread per
//     connection does. Linux only.
//
// What bounds it: the handshake (greeting to reply, the connection to the
// destination included) has a deadline, and beyond -max-sessions a
// connection is accepted and closed at once. On SIGINT or SIGTERM it
// closes its listener, ends its sessions and exits 0.
//
//	connect-min -listen 127.0.0.1:1080 -bind 127.0.0.1 -mode threads
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"net/netip"
	"os"
	"os/signal"
	"syscall"
	"time"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stderr)
	stop()
	os.Exit(code)
}

// run serves until ctx ends; it prints the address it listens on to
// stderr first, so a caller that asked for port 0 learns the port.
func run(ctx context.Context, args []string, stderr io.Writer) int {
	fs := flag.NewFlagSet("connect-min", flag.ContinueOnError)
	fs.SetOutput(stderr)
	listen := fs.String("listen", "127.0.0.1:1080", "`address` (IP:port) to accept SOCKS5 clients on")
	bind := fs.String("bind", "", "local `IP` of outgoing connections to destinations of its family (empty: the kernel's choice)")
	mode := fs.String("mode", "netpoll", "netpoll (net package, goroutine per connection) or threads (blocking system calls)")
	var cfg config
	fs.DurationVar(&cfg.handshakeTimeout, "handshake-timeout", 10*time.Second, "limit on greeting, request and connecting to the destination")
	fs.IntVar(&cfg.maxSessions, "max-sessions", 1024, fmt.Sprintf("sessions open at once, 1 to %d; a connection beyond is closed", maxSessionsLimit))
	if err := fs.Parse(args); err != nil {
		if err == flag.ErrHelp {
			return 0
		}
		return 2
	}
	var err error
	if cfg.listen, err = netip.ParseAddrPort(*listen); err != nil {
		fmt.Fprintln(stderr, "connect-min: -listen:", err)
		return 2
	}
	if *bind != "" {
		if cfg.bind, err = netip.ParseAddr(*bind); err != nil {
			fmt.Fprintln(stderr, "connect-min: -bind:", err)
			return 2
		}
	}
	if *mode != "netpoll" && *mode != "threads" {
		fmt.Fprintln(stderr, "connect-min:", errMode(*mode))
		return 2
	}
	if err := cfg.validate(); err != nil {
		fmt.Fprintln(stderr, "connect-min:", err)
		return 2
	}
	s, err := newServer(*mode, cfg)
	if err != nil {
		fmt.Fprintln(stderr, "connect-min:", err)
		return 1
	}
	fmt.Fprintf(stderr, "connect-min: listening on %v (%s)\n", s.addr(), *mode)
	served := make(chan error, 1)
	go func() { served <- s.serve() }()
	select {
	case <-ctx.Done():
		s.close()
		err = <-served
	case err = <-served:
		s.close()
	}
	if err != nil {
		fmt.Fprintln(stderr, "connect-min:", err)
		return 1
	}
	return 0
}

// errMode is a -mode that is neither netpoll nor threads.
type errMode string

func (e errMode) Error() string { return fmt.Sprintf("-mode %q: want netpoll or threads", string(e)) }

// newServer listens on cfg.listen in the given mode.
func newServer(mode string, cfg config) (server, error) {
	switch mode {
	case "netpoll":
		s, err := newNetpollServer(cfg)
		if err != nil {
			return nil, err
		}
		return s, nil
	case "threads":
		s, err := newThreadsServer(cfg)
		if err != nil {
			return nil, err
		}
		return s, nil
	}
	return nil, errMode(mode)
}

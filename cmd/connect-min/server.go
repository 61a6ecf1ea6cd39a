package main

import (
	"errors"
	"fmt"
	"net/netip"
	"sync"
	"time"
)

// config is what both modes take from the command line.
type config struct {
	listen netip.AddrPort
	// bind is the local address of connections to destinations of its
	// family; the zero Addr leaves it to the kernel.
	bind netip.Addr
	// handshakeTimeout bounds the greeting, the request, the connection
	// to the destination and the reply; it must be positive.
	handshakeTimeout time.Duration
	// maxSessions is how many sessions may be open at once; a connection
	// beyond it is accepted and closed at once.
	maxSessions int
}

// maxSessionsLimit bounds -max-sessions: in threads mode each blocked
// session holds an OS thread, and the Go runtime stops the process at
// 10,000 threads.
const maxSessionsLimit = 4096

func (c config) validate() error {
	if !c.listen.IsValid() {
		return errors.New("listen address must be IP:port")
	}
	if c.handshakeTimeout <= 0 {
		return fmt.Errorf("handshake timeout %v must be positive", c.handshakeTimeout)
	}
	if c.maxSessions < 1 || c.maxSessions > maxSessionsLimit {
		return fmt.Errorf("max sessions %d must be 1 to %d", c.maxSessions, maxSessionsLimit)
	}
	return nil
}

// localFor is the address to bind a connection to dst to: c.bind when it
// is of dst's family, else the zero Addr.
func (c config) localFor(dst netip.AddrPort) netip.Addr {
	if c.bind.IsValid() && c.bind.Unmap().Is4() == dst.Addr().Unmap().Is4() {
		return c.bind.Unmap()
	}
	return netip.Addr{}
}

// server is one mode's SOCKS server.
type server interface {
	// addr is the address it listens on.
	addr() netip.AddrPort
	// serve accepts until close; it returns nil after close.
	serve() error
	// close stops accepting, ends every session and waits for them.
	// serve's caller waits for serve to return as well.
	close()
}

// sessions counts the live sessions against the cap and lets close end
// them. Each mode keys it by its own session type.
type sessions[T comparable] struct {
	max int
	wg  sync.WaitGroup

	mu sync.Mutex // guards live and closed
	// live are the sessions open now.
	live   map[T]struct{}
	closed bool
}

func newSessions[T comparable](max int) *sessions[T] {
	return &sessions[T]{max: max, live: make(map[T]struct{})}
}

// add registers s; false when the server is closed or at the cap, and
// the caller then closes s's connection itself. A true add is matched by
// one done.
func (ss *sessions[T]) add(s T) bool {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	if ss.closed || len(ss.live) >= ss.max {
		return false
	}
	ss.live[s] = struct{}{}
	ss.wg.Add(1)
	return true
}

// done removes s, then calls closeSockets, so that close never acts on a
// descriptor number reused since, and counts s as ended only after that:
// close's wait covers the sockets' close too.
func (ss *sessions[T]) done(s T, closeSockets func()) {
	ss.mu.Lock()
	delete(ss.live, s)
	ss.mu.Unlock()
	closeSockets()
	ss.wg.Done()
}

// update runs f with the lock held unless the server is closed, and says
// whether it ran: a session records a socket it opened with it, so that
// close sees the socket or the session sees the close.
func (ss *sessions[T]) update(f func()) bool {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	if ss.closed {
		return false
	}
	f()
	return true
}

// close marks the server closed, calls end on every live session (with
// the lock held: end must only unblock, not wait) and waits for them all.
func (ss *sessions[T]) close(end func(T)) {
	ss.mu.Lock()
	ss.closed = true
	for s := range ss.live {
		end(s)
	}
	ss.mu.Unlock()
	ss.wg.Wait()
}

// acceptRetryDelay is the pause after an accept error such as EMFILE,
// which would otherwise fail again at once in a busy loop.
const acceptRetryDelay = 10 * time.Millisecond

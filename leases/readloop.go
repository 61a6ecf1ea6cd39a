package leases

import (
	"errors"
	"net"
	"net/netip"
)

// runReader is the reader goroutine's launcher. It has no defers and logs
// from a function of its own, so that its frame, on the stack for the
// lease's whole life, is small: the parked reader's stack then stays below
// the quarter the GC shrinks a 4 KiB stack under, back to 2 KiB.
func (l *lease) runReader(src datagramSource) {
	if err := l.readLoop(src); err != nil {
		l.readerStopped(err)
	}
	close(l.readerDone)
	l.m.wg.Done()
}

//go:noinline
func (l *lease) readerStopped(err error) {
	l.m.log.Warn("lease reader stopped", "key", l.key, "port", l.local.Port(), "err", err)
}

// readLoop reads until the socket is closed.
func (l *lease) readLoop(src datagramSource) error {
	consecutiveErrs := 0
	received := func(b []byte, size int, from netip.AddrPort) {
		consecutiveErrs = 0
		l.handle(b, size, from)
	}
	for {
		err := src.each(received)
		l.flushCounts()
		if errors.Is(err, net.ErrClosed) {
			return nil
		}
		// Transient receive errors (a queued ICMP error, ENOMEM) are
		// survivable; a stream of them means the socket is unusable.
		consecutiveErrs++
		if consecutiveErrs >= 16 {
			return err
		}
	}
}

// handle routes one inbound datagram. b is the reader's buffer: it is copied
// only when buffered.
func (l *lease) handle(b []byte, size int, from netip.AddrPort) {
	c := &l.counts
	c.pending++
	if c.pending >= maxPendingCounts {
		defer l.flushCounts()
	}
	if size > len(b) || size > l.m.cfg.MaxDatagramSize {
		c.dropped[ReasonTooLarge].add(size)
		return
	}
	if !l.permitted(from.Addr()) {
		c.dropped[ReasonNotPermitted].add(size)
		return
	}
	l.mu.Lock()
	switch {
	case l.state.Load() == uint32(StateClosing):
		c.dropped[ReasonClosed].add(size)
	case l.activeTargetLocked() != nil:
		if l.deliverLocked(b, from) {
			c.delivered.add(size)
		} else {
			c.dropped[ReasonOwnSocket].add(size)
		}
	case l.m.cfg.Linger == 0:
		c.dropped[ReasonNoHolder].add(size)
	default:
		if r := l.bufferLocked(b, from); r != ReasonNone {
			c.dropped[r].add(size)
		} else {
			c.buffered.add(size)
		}
	}
	l.mu.Unlock()
}

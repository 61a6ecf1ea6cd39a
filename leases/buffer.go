package leases

import (
	"net/netip"
	"unsafe"
)

type buffered struct {
	data []byte
	from netip.AddrPort
}

// bufferedOverhead is what one buffered datagram costs beyond its payload,
// charged against MaxBufferedBytes and MaxBufferedBytesTotal so that the
// caps bound memory, not just payload: a flood of zero-byte datagrams costs
// memory too (issue 10 #8 measured ~80 B each, uncharged). It is:
//
//   - the buffered element in l.buf (a slice header and a netip.AddrPort,
//     56 B on 64-bit), twice: append grows the array to a size class, and
//     just after a growth it can be half empty (9 elements in an array of
//     18 is the worst case, 112 B a datagram);
//   - 16 B for the allocation rounding of a small payload's copy: Go's
//     size classes are at most 16 B apart up to 128 B.
//
// Above 128 B the classes are at most an eighth apart, which bufferedCost
// adds in proportion. TestBufferedOverheadIsHonest measures the heap per
// buffered datagram and keeps both terms within bounds of the truth.
const bufferedOverhead = 2*int(unsafe.Sizeof(buffered{})) + 16

// bufferedCost is what buffering a datagram of n payload bytes is charged:
// the payload, its allocation's rounding, and bufferedOverhead.
func bufferedCost(n int) int { return n + n/8 + bufferedOverhead }

// bufferLocked copies b into the linger buffer, or says why it cannot.
func (l *lease) bufferLocked(b []byte, from netip.AddrPort) DropReason {
	cfg := &l.m.cfg
	cost := bufferedCost(len(b))
	if (cfg.MaxBufferedDatagrams > 0 && len(l.buf) >= cfg.MaxBufferedDatagrams) ||
		(cfg.MaxBufferedBytes > 0 && l.bufBytes+cost > cfg.MaxBufferedBytes) {
		l.warnOverflowLocked(ReasonBufferFull)
		return ReasonBufferFull
	}
	if !l.m.takeBufBytes(cost) {
		l.warnOverflowLocked(ReasonTotalBufferFull)
		return ReasonTotalBufferFull
	}
	l.buf = append(l.buf, buffered{data: append([]byte(nil), b...), from: from})
	l.bufBytes += cost
	l.bufPayload += len(b)
	l.m.bufDatagrams.Add(1)
	return ReasonNone
}

func (l *lease) warnOverflowLocked(r DropReason) {
	if l.overflowWarned {
		return
	}
	l.overflowWarned = true
	l.m.log.Warn("lease buffer full, dropping", "key", l.key, "port", l.local.Port(), "reason", r,
		"datagrams", len(l.buf), "charged_bytes", l.bufBytes)
}

// takeBufBytes reserves n charged bytes of the global buffer budget.
func (m *Manager) takeBufBytes(n int) bool {
	limit := m.cfg.MaxBufferedBytesTotal
	if limit <= 0 {
		m.bufBytes.Add(int64(n))
		return true
	}
	for {
		cur := m.bufBytes.Load()
		if cur+int64(n) > limit {
			return false
		}
		if m.bufBytes.CompareAndSwap(cur, cur+int64(n)) {
			return true
		}
	}
}

// flushResult is what a flush of the linger buffer did.
type flushResult struct {
	n, bytes      int // flushed
	own, ownBytes int // refused: addressed to one of the proxy's own sockets
}

// report counts the flush; call it with no lock held.
func (f flushResult) report(obs Observer) {
	if f.n > 0 {
		obs.Datagrams(OutcomeFlushed, ReasonNone, f.n, f.bytes)
	}
	if f.own > 0 {
		obs.Datagrams(OutcomeDropped, ReasonOwnSocket, f.own, f.ownBytes)
	}
}

// flushLocked delivers the linger buffer, oldest first, to the target.
func (l *lease) flushLocked() (f flushResult) {
	if l.activeTargetLocked() == nil || len(l.buf) == 0 {
		return f
	}
	for i := range l.buf {
		d := &l.buf[i]
		if l.deliverLocked(d.data, d.from) {
			f.n++
			f.bytes += len(d.data)
		} else {
			f.own++
			f.ownBytes += len(d.data)
		}
	}
	l.discardBufferLocked()
	return f
}

// dropBufferLocked empties the linger buffer and says what was lost
// (datagrams and payload bytes).
func (l *lease) dropBufferLocked() (n, bytes int) {
	n, bytes = len(l.buf), l.bufPayload
	l.discardBufferLocked()
	return n, bytes
}

func (l *lease) discardBufferLocked() {
	l.m.bufBytes.Add(-int64(l.bufBytes))
	l.m.bufDatagrams.Add(-int64(len(l.buf)))
	// Drop the backing array: an idle lease must not keep a burst's worth
	// of slice headers alive.
	l.buf = nil
	l.bufBytes = 0
	l.bufPayload = 0
	l.overflowWarned = false
}

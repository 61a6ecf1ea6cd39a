package udpio

import "time"

// Buffers lends read buffers of one size to Readers.
type Buffers interface {
	// Size is the length of every buffer Get returns, at least 1.
	Size() int
	// Get returns a buffer of Size bytes, the caller's until Put.
	Get() []byte
	// Put takes back a buffer from Get; used is how many of its bytes may
	// hold a datagram, so an implementation can clear just those.
	Put(b []byte, used int)
}

// Policy is when a Reader holds a buffer from Buffers. The portable reader
// (other systems than Linux) ignores Keep and Buffers' lending: it owns one
// buffer of Buffers.Size()+1 bytes for its life.
type Policy struct {
	Buffers Buffers

	// Keep chooses between the two ways to give a buffer back.
	//
	// Zero: the reader takes a buffer each time the socket may be readable
	// and gives it back as soon as recvfrom reports the socket drained
	// (EAGAIN). A socket that is not read from holds no buffer, and a burst
	// holds one; the price is a Get and a Put per burst, which suits a cheap
	// bounded pool and many mostly idle sockets (the leases).
	//
	// Positive: the reader takes a buffer only once a datagram is queued (a
	// zero-length MSG_PEEK asks the kernel without a buffer), and keeps it
	// across datagrams until Keep after it took it; a read deadline then
	// wakes the reader, which gives the buffer back and goes on. A socket
	// that falls silent holds a buffer for at most Keep, and a busy one
	// touches Buffers once per Keep rather than once per burst (the
	// association relays, which share a sync.Pool). The reader owns the
	// socket's read deadline.
	Keep time.Duration

	// Each holds BatchSize buffers at once, one per datagram a recvmmsg
	// may return (see Reader.Each); Next holds one.

	// Drained, when set, is called on the reader's goroutine each time the
	// reader has found the socket empty and is about to wait, so that
	// per-burst work (flushing counters) happens once per burst. By then a
	// reader with Keep zero has given its buffer back.
	Drained func()
}

// Pool is a Buffers that keeps at most a fixed number of idle buffers
// (surplus is left to the garbage collector), so it never pins more memory
// than a few concurrently busy readers need. Buffers are cleared as far as
// they were used before they go back, so one client's payload never lingers
// in a buffer lent to another. It is safe for concurrent use.
type Pool struct {
	size int
	free chan []byte
}

var _ Buffers = (*Pool)(nil)

// NewPool returns a Pool of buffers of size bytes that keeps up to keep idle.
func NewPool(size, keep int) *Pool {
	return &Pool{size: size, free: make(chan []byte, keep)}
}

// Size is the length of the pool's buffers.
func (p *Pool) Size() int { return p.size }

// Get returns an idle buffer, or a new one when none is idle.
func (p *Pool) Get() []byte {
	select {
	case b := <-p.free:
		return b
	default:
		return make([]byte, p.size)
	}
}

// Put clears the first used bytes of b and keeps it if there is room. A
// buffer of another capacity is not the pool's and is dropped.
func (p *Pool) Put(b []byte, used int) {
	if cap(b) != p.size {
		return
	}
	b = b[:p.size]
	clear(b[:max(0, min(used, p.size))])
	select {
	case p.free <- b:
	default:
	}
}

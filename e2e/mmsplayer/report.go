package mmsplayer

import (
	"fmt"
	"math/rand/v2"
	"sync"
	"time"
)

// Report is what one player saw, per playlist entry.
type Report struct {
	Mode Mode
	// Port is the player's UDP port (0 for MMST).
	Port uint16
	// Entries lists every entry the player started, in order.
	Entries []EntryReport
	// Failures lists every bind, association, connection, timeout and
	// protocol failure, in order. A failure during a rebind ends the
	// session (as it would for a real player).
	Failures []Failure
	// Pongs is the number of server pings answered.
	Pongs int
	// Stray counts data packets that belonged to no entry or header.
	Stray int
	// Duration is the whole session, connect to close.
	Duration time.Duration
	// Err is what ended the session early; nil when the playlist played
	// to its end.
	Err error
}

// EntryReport is one playlist entry.
type EntryReport struct {
	// Index is the entry's position, from 0.
	Index int
	// Step is how the player entered this entry (zero for the first).
	Step Step
	// Expected is the packet count the entry's header announced.
	Expected int
	// Received counts distinct packets received; Duplicates the repeats;
	// Corrupt those that failed Config.Verify or were malformed.
	Received, Duplicates, Corrupt int
	// Lost are the LocationIds (packet numbers in the entry) never
	// received.
	Lost []uint32
	// HeaderRetries counts CancelReadBlock/ReadBlock retries for the
	// entry's header.
	HeaderRetries int
}

// FailureKind classifies a failure.
type FailureKind uint8

const (
	// FailBind: the UDP port could not be bound (again).
	FailBind FailureKind = iota
	// FailAssociate: the proxy refused or failed a UDP ASSOCIATE.
	FailAssociate
	// FailConnect: the control connection could not be opened.
	FailConnect
	// FailTimeout: the server or proxy did not answer in time.
	FailTimeout
	// FailHeader: an entry's header never arrived, retries included.
	FailHeader
	// FailProtocol: the server said something the player cannot follow.
	FailProtocol
)

func (k FailureKind) String() string {
	switch k {
	case FailBind:
		return "bind"
	case FailAssociate:
		return "associate"
	case FailConnect:
		return "connect"
	case FailTimeout:
		return "timeout"
	case FailHeader:
		return "header"
	case FailProtocol:
		return "protocol"
	}
	return "unknown"
}

// Failure is one failure, at the entry the player was on.
type Failure struct {
	Entry int
	Kind  FailureKind
	Err   error
}

func (f Failure) String() string { return fmt.Sprintf("entry %d: %s: %v", f.Entry, f.Kind, f.Err) }

// Expected sums the packets the entries announced.
func (r *Report) Expected() int { return r.sum(func(e EntryReport) int { return e.Expected }) }

// Received sums the distinct packets received.
func (r *Report) Received() int { return r.sum(func(e EntryReport) int { return e.Received }) }

// Lost sums the packets never received.
func (r *Report) Lost() int { return r.sum(func(e EntryReport) int { return len(e.Lost) }) }

// Duplicates sums the packets received more than once.
func (r *Report) Duplicates() int { return r.sum(func(e EntryReport) int { return e.Duplicates }) }

// Corrupt sums the packets that failed verification.
func (r *Report) Corrupt() int { return r.sum(func(e EntryReport) int { return e.Corrupt }) }

// Count returns how many failures of kind k there were.
func (r *Report) Count(k FailureKind) int {
	n := 0
	for _, f := range r.Failures {
		if f.Kind == k {
			n++
		}
	}
	return n
}

func (r *Report) sum(f func(EntryReport) int) int {
	n := 0
	for _, e := range r.Entries {
		n += f(e)
	}
	return n
}

// Ports hands out UDP ports from a range to the players of one process,
// so that no two of them ever bind the same port: a player's port is its
// own from its first bind to the end of its session, including the gaps
// in which it has no socket on it. A range below the system's ephemeral
// ports (Linux: 32768 and up) keeps the system from handing one of them
// to some other program in such a gap.
type Ports struct {
	lo, hi uint16

	// mu guards next and used.
	mu   sync.Mutex
	next uint16
	used map[uint16]bool
}

// NewPorts returns an allocator for lo..hi (inclusive), starting at a
// random port so that processes sharing a machine spread out.
func NewPorts(lo, hi uint16) *Ports {
	if hi < lo {
		lo, hi = hi, lo
	}
	return &Ports{lo: lo, hi: hi, next: lo + uint16(rand.IntN(int(hi-lo)+1)), used: make(map[uint16]bool)}
}

// take reserves a port for which bind succeeds; bind is tried on each
// free port of the range once at most.
func (p *Ports) take(bind func(port uint16) error) (uint16, error) {
	size := int(p.hi-p.lo) + 1
	var last error
	for range size {
		p.mu.Lock()
		port := p.next
		if p.next == p.hi {
			p.next = p.lo
		} else {
			p.next++
		}
		busy := p.used[port]
		if !busy {
			p.used[port] = true
		}
		p.mu.Unlock()
		if busy {
			continue
		}
		if last = bind(port); last == nil {
			return port, nil
		}
		p.put(port)
	}
	return 0, fmt.Errorf("no free port in %d-%d: %w", p.lo, p.hi, last)
}

// put gives a port back.
func (p *Ports) put(port uint16) {
	p.mu.Lock()
	delete(p.used, port)
	p.mu.Unlock()
}

package mmsplayer

import (
	"errors"
	"net"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"fwproxy/internal/socksclient"
	"fwproxy/mmsfilter"
)

// Incarnations the player uses (mmsfilter/PROTOCOL.md §2.3): a header counter
// cycling 1..8 for ReadBlock and a play counter cycling 9..0xFE for
// OpenFile and StartPlaying, as modern clients do. Data packets carry the
// incarnation of the request that caused them, so the two ranges tell
// header pieces from media, and the play incarnation tells which entry a
// media packet belongs to even when it arrives after the next entry began.
const (
	firstHeaderInc = 1
	lastHeaderInc  = 8
	firstPlayInc   = 9
	lastPlayInc    = 0xFE
	// tcpHeaderInc marks the header an MMST server sends right after
	// StreamChange ([MS-MMSP] §3.2.4).
	tcpHeaderInc = 0xFF

	headerFlagLast    = 0x0C // AFFlags of the last header piece
	headerFlagLastOld = 0x08 // the same in pre-spec servers (S5, S9)

	// maxEntryPackets bounds what an entry's header may announce: the
	// player keeps one bit per packet.
	maxEntryPackets = 1 << 20
	// maxHeaderBytes bounds the header pieces kept for one incarnation,
	// and maxHeaders the incarnations collected at once.
	maxHeaderBytes = 1 << 20
	maxHeaders     = 16
	// maxDatagram is the largest UDP payload.
	maxDatagram = 64 << 10
	// maxReadErrors: this many read errors in a row end a socket reader
	// (single ones are queued ICMP errors on a connected socket).
	maxReadErrors = 16
)

// tally accounts for every Data packet the player receives, from any
// socket or the control connection. Readers call record and never block;
// the player's goroutine reads the results.
type tally struct {
	verify func(entry int, loc uint32, payload []byte) error

	// changed gets a token when a header piece arrives or an entry
	// receives its last packet; the player re-checks what it waits for.
	changed chan struct{}

	// mu guards the fields below.
	mu      sync.Mutex
	entries []*entryTally
	byInc   map[uint8]int
	headers map[uint8]*headerTally
	stray   int
}

type entryTally struct {
	expected               int
	seen                   []bool
	received, dup, corrupt int
	headerRetries          int
	step                   Step
}

type headerTally struct {
	pieces map[uint32][]byte
	last   int64 // LocationId of the piece flagged last, -1 before it came
	bytes  int
}

func newTally(verify func(int, uint32, []byte) error) *tally {
	return &tally{
		verify:  verify,
		changed: make(chan struct{}, 1),
		byInc:   make(map[uint8]int),
		headers: make(map[uint8]*headerTally),
	}
}

func (t *tally) signalLocked() {
	select {
	case t.changed <- struct{}{}:
	default:
	}
}

// record accounts for one Data packet; payload is not retained unless it
// is a header piece (then it is copied).
func (t *tally) record(h mmsfilter.DataHeader, payload []byte) {
	t.mu.Lock()
	defer t.mu.Unlock()
	inc := h.PlayIncarnation
	if idx, ok := t.byInc[inc]; ok {
		e := t.entries[idx]
		loc := h.LocationID
		switch {
		case int64(loc) >= int64(e.expected):
			e.corrupt++
		case e.seen[loc]:
			e.dup++
		case t.verify != nil && t.verify(idx, loc, payload) != nil:
			e.corrupt++
		default:
			e.seen[loc] = true
			e.received++
			if e.received == e.expected {
				t.signalLocked()
			}
		}
		return
	}
	if (inc < firstHeaderInc || inc > lastHeaderInc) && inc != tcpHeaderInc {
		t.stray++
		return
	}
	hd := t.headers[inc]
	if hd == nil {
		if len(t.headers) >= maxHeaders {
			t.stray++
			return
		}
		hd = &headerTally{pieces: make(map[uint32][]byte), last: -1}
		t.headers[inc] = hd
	}
	if _, dup := hd.pieces[h.LocationID]; dup || hd.bytes+len(payload) > maxHeaderBytes {
		return
	}
	hd.pieces[h.LocationID] = append([]byte(nil), payload...)
	hd.bytes += len(payload)
	if h.AFFlags == headerFlagLast || h.AFFlags == headerFlagLastOld {
		hd.last = int64(h.LocationID)
	}
	t.signalLocked()
}

// header returns the header collected for inc once it is whole: every
// piece up to the one flagged last, or (for servers that flag nothing)
// pieces from 0 on adding up to want bytes. It forgets the pieces then.
func (t *tally) header(inc uint8, want int) ([]byte, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	hd := t.headers[inc]
	if hd == nil {
		return nil, false
	}
	var out []byte
	for i := uint32(0); ; i++ {
		p, ok := hd.pieces[i]
		if !ok {
			return nil, false
		}
		out = append(out, p...)
		if int64(i) == hd.last || (hd.last < 0 && want > 0 && len(out) >= want) {
			break
		}
	}
	delete(t.headers, inc)
	return out, true
}

// forgetHeader drops what was collected for inc (before it is reused).
func (t *tally) forgetHeader(inc uint8) {
	t.mu.Lock()
	delete(t.headers, inc)
	t.mu.Unlock()
}

// startEntry registers entry idx: its media carries inc, and its header
// announced expected packets. A later entry with the same incarnation
// (after 246 entries) takes the mapping over.
func (t *tally) startEntry(idx int, inc uint8, expected int, step Step, retries int) {
	t.mu.Lock()
	defer t.mu.Unlock()
	for len(t.entries) <= idx {
		t.entries = append(t.entries, &entryTally{})
	}
	t.entries[idx] = &entryTally{expected: expected, seen: make([]bool, expected), step: step, headerRetries: retries}
	t.byInc[inc] = idx
}

// complete reports whether every started entry has all its packets.
func (t *tally) complete() bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, e := range t.entries {
		if e.received < e.expected {
			return false
		}
	}
	return true
}

// fill writes the per-entry results into r.
func (t *tally) fill(r *Report) {
	t.mu.Lock()
	defer t.mu.Unlock()
	r.Stray = t.stray
	r.Entries = make([]EntryReport, len(t.entries))
	for i, e := range t.entries {
		er := EntryReport{
			Index: i, Step: e.step, Expected: e.expected,
			Received: e.received, Duplicates: e.dup, Corrupt: e.corrupt,
			HeaderRetries: e.headerRetries,
		}
		for loc, ok := range e.seen {
			if !ok {
				er.Lost = append(er.Lost, uint32(loc))
			}
		}
		r.Entries[i] = er
	}
}

// sockReader reads one UDP socket into the tally until stopped.
type sockReader struct {
	c     *net.UDPConn
	decap bool // SOCKS-encapsulated (firewall-client mode)
	t     *tally

	stopping atomic.Bool
	done     chan struct{}
	bad      atomic.Int64 // datagrams that were not Data packets
}

func startReader(c *net.UDPConn, decap bool, t *tally) *sockReader {
	r := &sockReader{c: c, decap: decap, t: t, done: make(chan struct{})}
	go r.readLoop()
	return r
}

func (r *sockReader) readLoop() {
	defer close(r.done)
	buf := make([]byte, maxDatagram)
	errs := 0
	for {
		n, _, err := r.c.ReadFromUDPAddrPort(buf)
		if err == nil {
			errs = 0
			r.handle(buf[:n], netip.AddrPort{})
			continue
		}
		switch {
		case r.stopping.Load() && errors.Is(err, os.ErrDeadlineExceeded):
			// Whatever the kernel queued before the stop is read now,
			// without waiting: the socket is about to close.
			r.c.SetReadDeadline(time.Time{})
			drainUDP(r.c, buf, r.handle)
			return
		case errors.Is(err, net.ErrClosed):
			return
		}
		if errs++; errs == maxReadErrors {
			return
		}
	}
}

func (r *sockReader) handle(b []byte, _ netip.AddrPort) {
	if r.decap {
		_, hl, err := socksclient.ParseUDPHeader(b)
		if err != nil {
			r.bad.Add(1)
			return
		}
		b = b[hl:]
	}
	h, _, err := mmsfilter.ParseDataHeader(b)
	if err != nil || int(h.PacketSize) > len(b) {
		r.bad.Add(1)
		return
	}
	r.t.record(h, b[mmsfilter.DataHeaderLen:h.PacketSize])
}

// stop reads what the socket already holds, then closes it. The caller
// makes sure nothing more is on its way to the socket (the proxy closed
// the association, or the filter holds announced delivery), so nothing is
// lost in the player's own kernel.
func (r *sockReader) stop() {
	r.stopping.Store(true)
	r.c.SetReadDeadline(time.Unix(1, 0))
	<-r.done
	r.c.Close()
}

package mmsfilter

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"sync"
)

// idleReadLen is a direction's own read buffer: a command fits (Connect,
// its answer, a funnel are a few hundred bytes), and a wait between
// packets holds nothing more.
const idleReadLen = 2 << 10

// commandBufs holds the MaxCommandLen buffers directions borrow while
// bytes flow or a command is incomplete.
var commandBufs = sync.Pool{New: func() any { return new([MaxCommandLen]byte) }}

// FunnelFunc decides where the server must send UDP data for a client's UDP
// funnel. It gets the funnel as announced and returns the address to write
// into the funnel name instead: in the proxy, its external IP and the
// external port of the UDP lease it acquired for (client, announced.Port).
// fits reports whether a rewrite to a given address would still fit the
// packet (MaxCommandLen); a FunnelFunc that takes a resource for the funnel
// (a lease) asks it first, with the longest port it could get, and gives
// up without taking anything when it says no: a funnel that is not
// rewritten must not hold a lease. fits is valid only during the call.
// An error, an invalid address or port 0 leaves the message unchanged and
// is reported as ProblemFunnelRewriteFailed with the error; a successful
// rewrite is reported as TransitionFunnelUDPRewritten, so the caller's
// Observer learns the outcome of every call. It runs on the
// client-to-server goroutine, which is blocked meanwhile, so it may block
// (honouring ctx) but should not take long: the client is waiting for the
// server's answer to this very message. It is called again for every
// later UDP funnel on the same connection.
type FunnelFunc func(ctx context.Context, announced Funnel, fits func(netip.AddrPort) bool) (netip.AddrPort, error)

// Streams filters the two directions of one MMS control connection (one
// CONNECT session). ClientToServer and ServerToClient are meant to run at
// the same time, each on its own goroutine, each called once; they share
// one Session. Neither closes anything: when one returns, the caller
// half-closes (CloseWrite on dst) and waits for the other.
//
// Each direction waits for bytes in a small buffer of its own
// (idleReadLen). It takes a buffer of MaxCommandLen bytes from a pool only
// while it needs one: an incomplete command is pending, or the last read
// filled its buffer (more is waiting). So a connection waiting between
// packets holds 2×idleReadLen, and a direction never more than
// idleReadLen plus one MaxCommandLen buffer, whatever the input.
type Streams struct {
	session *Session
	client  stream
	server  stream
}

// NewStreams returns the filter for one connection. onFunnel is called for
// every UDP funnel (nil: UDP funnels pass unchanged, each reported as
// ProblemFunnelRewriteFailed with ErrNoRewriter). obs receives every
// message, transition and problem (nil: NopObserver).
func NewStreams(onFunnel FunnelFunc, obs Observer) *Streams {
	if obs == nil {
		obs = NopObserver{}
	}
	if onFunnel == nil {
		onFunnel = noRewriter
	}
	sess := NewSession(obs)
	return &Streams{
		session: sess,
		client:  stream{dir: DirClientToServer, session: sess, obs: obs, onFunnel: onFunnel},
		server:  stream{dir: DirServerToClient, session: sess, obs: obs},
	}
}

func noRewriter(context.Context, Funnel, func(netip.AddrPort) bool) (netip.AddrPort, error) {
	return netip.AddrPort{}, ErrNoRewriter
}

// Session returns the connection's session tracker.
func (s *Streams) Session() *Session { return s.session }

// ClientToServer copies the client's commands from src to dst until src
// ends, rewriting UDP funnels through the FunnelFunc. It returns nil when
// src reports io.EOF (after writing everything received), the context's
// error if ctx is done between reads, and otherwise the first read or
// write error, wrapped. ctx does not interrupt a blocked Read: to stop a
// copy, close src or set a deadline on it.
func (s *Streams) ClientToServer(ctx context.Context, dst io.Writer, src io.Reader) error {
	return s.client.copy(ctx, dst, src)
}

// ServerToClient copies the server's commands and Data packets from src to
// dst unchanged until src ends, feeding the session. Data packets are
// forwarded as they arrive, never held back whole. Returns as
// ClientToServer.
func (s *Streams) ServerToClient(ctx context.Context, dst io.Writer, src io.Reader) error {
	return s.server.copy(ctx, dst, src)
}

// streamMode says what the bytes at the read position are.
type streamMode uint8

const (
	// modeFrame: the start of a packet (command, or Data server side).
	modeFrame streamMode = iota
	// modeData: inside a Data packet, dataLeft bytes still to forward.
	modeData
	// modeRaw: pass-through for the rest of the connection.
	modeRaw
)

// stream is the state of one direction. buf holds the bytes read and not
// yet forwarded; only an incomplete command (at most MaxCommandLen bytes)
// is ever kept across reads, everything else is written out at once.
type stream struct {
	dir      Direction
	session  *Session
	obs      Observer
	onFunnel FunnelFunc    // client side only
	logging  LoggingPolicy // client side only

	buf         []byte // small or big, the one the next read goes to
	start, end  int    // buf[start:end] is read but not yet processed
	small       [idleReadLen]byte
	big         *[MaxCommandLen]byte // borrowed from commandBufs, or nil
	mode        streamMode
	dataLeft    int
	seenCommand bool
	scratch     []byte // output of funnel rewrites, reused
}

func (s *stream) copy(ctx context.Context, dst io.Writer, src io.Reader) error {
	// A connection calls each direction once; resetting anyway lets tests
	// and benchmarks reuse one Streams without allocating again.
	s.buf, s.start, s.end, s.mode, s.dataLeft, s.seenCommand = s.small[:], 0, 0, modeFrame, 0, false
	defer s.returnBig()
	filled := false
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		s.compact()
		s.chooseBuffer(filled)
		n, rerr := src.Read(s.buf[s.end:])
		s.end += n
		filled = s.end == len(s.buf)
		if err := s.drain(ctx, dst); err != nil {
			return err
		}
		if rerr != nil {
			return s.finish(dst, rerr)
		}
	}
}

// chooseBuffer picks the buffer of the next read. Pending bytes (an
// incomplete command, shorter than the MaxCommandLen it announced) that
// may not fit the small buffer need the big one: there is always room to
// read after them there. So does a read after one that filled its buffer:
// more is likely queued, and is read in one call. Otherwise the direction
// is likely to wait, and waits on its small buffer, the big one back in
// the pool.
func (s *stream) chooseBuffer(lastFilled bool) {
	if lastFilled || !s.fitsSmall() {
		if s.big == nil {
			s.big = commandBufs.Get().(*[MaxCommandLen]byte)
			s.end = copy(s.big[:], s.buf[:s.end])
			s.buf = s.big[:]
		}
		return
	}
	if s.big != nil {
		copy(s.small[:], s.buf[:s.end])
		s.returnBig()
	}
}

// fitsSmall says whether the pending bytes and the rest of their packet
// fit the small buffer, with room to read more.
func (s *stream) fitsSmall() bool {
	if s.end == 0 {
		return true
	}
	if s.end >= len(s.small) {
		return false
	}
	// Only a packet's start is ever pending (Data and raw bytes are
	// forwarded as they come), and its length is known once its header
	// is; until then there is room to read it.
	kind, n, err := s.frame(s.buf[:s.end])
	return err != nil || kind == unitData || n <= len(s.small)
}

// returnBig gives the big buffer back; nothing is left pending in it.
func (s *stream) returnBig() {
	if s.big != nil {
		commandBufs.Put(s.big)
		s.big = nil
		s.buf = s.small[:]
	}
}

// compact moves the unprocessed bytes to the front of buf.
func (s *stream) compact() {
	if s.start == s.end {
		s.start, s.end = 0, 0
		return
	}
	if s.start > 0 {
		s.end = copy(s.buf, s.buf[s.start:s.end])
		s.start = 0
	}
}

// unitKind is what frame found at the read position.
type unitKind uint8

const (
	unitCommand unitKind = iota
	unitData
)

// frame identifies the packet starting at b and returns its total length.
// ErrShortBuffer: b is too short to tell. Any other error means the
// direction is not MMS.
func (s *stream) frame(b []byte) (unitKind, int, error) {
	if s.dir == DirServerToClient {
		if len(b) < DataHeaderLen {
			// A server's first packet must be a command; failing early on
			// its sessionId lets a short non-MMS greeting through at once.
			if !s.seenCommand && !matchLE(b, offSessionID, SessionID) {
				return 0, 0, errDataFirst
			}
			return 0, 0, ErrShortBuffer
		}
		if !isCommand(b) {
			if !s.seenCommand {
				return 0, 0, errDataFirst
			}
			h, _, err := ParseDataHeader(b)
			if err != nil {
				return 0, 0, err
			}
			return unitData, int(h.PacketSize), nil
		}
	}
	n, err := commandLen(b)
	return unitCommand, n, err
}

// drain processes buf[start:end]: whole commands are observed (and
// rewritten, client side), Data and raw bytes pass, an incomplete command
// stays for the next read. Unchanged bytes are written in as few Writes as
// possible: one per call unless a funnel was rewritten.
func (s *stream) drain(ctx context.Context, dst io.Writer) error {
	out := s.start // s.buf[out:s.start] is processed and not yet written
loop:
	for s.start < s.end {
		switch s.mode {
		case modeRaw:
			s.start = s.end
		case modeData:
			k := min(s.dataLeft, s.end-s.start)
			s.start += k
			s.dataLeft -= k
			if s.dataLeft == 0 {
				s.mode = modeFrame
			}
		case modeFrame:
			b := s.buf[s.start:s.end]
			kind, n, err := s.frame(b)
			if err == ErrShortBuffer {
				break loop
			}
			if err != nil {
				s.passThrough(err)
				continue
			}
			if kind == unitData {
				s.mode, s.dataLeft = modeData, n
				continue
			}
			if len(b) < n {
				break loop
			}
			s.seenCommand = true
			if repl := s.command(ctx, b[:n]); repl != nil {
				if err := s.write(dst, s.buf[out:s.start]); err != nil {
					return err
				}
				if err := s.write(dst, repl); err != nil {
					return err
				}
				out = s.start + n
			}
			s.start += n
		}
	}
	return s.write(dst, s.buf[out:s.start])
}

// passThrough switches the direction to raw relaying and reports why, once.
func (s *stream) passThrough(err error) {
	p := ProblemBadLength
	switch {
	case errors.Is(err, ErrSessionID):
		p = ProblemBadSessionID
	case errors.Is(err, ErrSeal):
		p = ProblemBadSeal
	case errors.Is(err, errDataFirst):
		p = ProblemDataBeforeCommand
	}
	s.mode = modeRaw
	s.obs.Problem(s.dir, p, err)
}

// command observes the framed command pkt and returns its replacement, or
// nil to forward it as it is.
func (s *stream) command(ctx context.Context, pkt []byte) []byte {
	funnels := s.observe(pkt)
	if !funnels || s.dir != DirClientToServer {
		return nil
	}
	return s.rewrite(ctx, pkt)
}

// observe reports every message of pkt to the session, hides the client's
// identity in its Logging messages (in place: they keep their size) and
// says whether one is a ConnectFunnel whose rewrite can be attempted. The walk ends after
// at most MaxCommandLen/8 steps: every message is at least 8 bytes.
func (s *stream) observe(pkt []byte) (funnels bool) {
	rest := pkt[HeaderLen:]
	for len(rest) >= messagePrefixLen {
		m, n, err := ParseMessage(rest)
		if err != nil {
			// Without whole messages a rewrite cannot keep the packet
			// consistent, so a funnel in it goes through unchanged.
			s.obs.Problem(s.dir, ProblemBadChunkLen, err)
			return false
		}
		s.session.message(s.dir, m)
		funnels = funnels || m.MID == MIDConnectFunnel
		if m.MID == MIDLogging && s.dir == DirClientToServer {
			s.editLogging(rest[:n])
		}
		rest = rest[n:]
	}
	return funnels
}

// editLogging applies the logging policy to msg, one whole Logging
// message, and reports the outcome.
func (s *stream) editLogging(msg []byte) {
	changed, err := editLogging(msg, s.logging)
	if err != nil {
		s.obs.Problem(s.dir, ProblemLoggingMalformed, err)
		return
	}
	if s.logging.Rewritten == nil {
		return
	}
	for f, c := range changed {
		if c {
			s.logging.Rewritten(LoggingField(f))
		}
	}
}

// rewrite rebuilds pkt with its UDP funnels rewritten; nil if none was. The
// result lives in s.scratch until the next rewrite.
func (s *stream) rewrite(ctx context.Context, pkt []byte) []byte {
	room := MaxCommandLen - len(pkt)
	out, changed, err := rebuildPacket(s.scratch[:0], pkt, func(dst, msg []byte) ([]byte, bool) {
		return s.editFunnel(ctx, dst, msg, &room)
	})
	if err != nil {
		// observe walked the same messages without error and editFunnel
		// keeps the size within room, so this is unreachable; forward the
		// packet unchanged all the same.
		s.obs.Problem(s.dir, ProblemFunnelRewriteFailed, err)
		return nil
	}
	s.scratch = out[:0]
	if !changed {
		return nil
	}
	return out
}

// editFunnel appends one ConnectFunnel message to dst, rewritten if it
// announces UDP and the FunnelFunc gives a replacement that fits in room
// more bytes, unchanged otherwise, and reports the outcome.
func (s *stream) editFunnel(ctx context.Context, dst, msg []byte, room *int) ([]byte, bool) {
	fn, err := parseFunnelMessage(msg)
	if err != nil {
		s.obs.Problem(s.dir, ProblemFunnelMalformed, err)
		return append(dst, msg...), false
	}
	if fn.Transport != TransportUDP {
		s.session.funnelSeen(fn.Transport, false)
		return append(dst, msg...), false
	}
	fits := func(to netip.AddrPort) bool { return rewriteLen(msg, fn, to)-len(msg) <= *room }
	to, err := s.onFunnel(ctx, fn.Funnel, fits)
	if err == nil {
		err = checkReplacement(to)
	}
	if err == nil && !fits(to) {
		err = fmt.Errorf("%w: funnel for %v", ErrRewriteTooLong, to)
	}
	if err == nil {
		before := len(dst)
		dst = appendFunnelRewrite(dst, msg, fn, to)
		*room -= len(dst) - before - len(msg)
		s.session.funnelSeen(TransportUDP, true)
		return dst, true
	}
	s.session.funnelSeen(TransportUDP, false)
	s.obs.Problem(s.dir, ProblemFunnelRewriteFailed, err)
	return append(dst, msg...), false
}

// finish handles the end of src: whatever is left unprocessed (a partial
// packet) is forwarded as it is, then a clean EOF is nil.
func (s *stream) finish(dst io.Writer, rerr error) error {
	pending := s.buf[s.start:s.end]
	if len(pending) > 0 || (s.mode == modeData && s.dataLeft > 0) {
		cause := rerr
		if rerr == io.EOF {
			cause = io.ErrUnexpectedEOF
		}
		s.obs.Problem(s.dir, ProblemTruncated, cause)
	}
	if err := s.write(dst, pending); err != nil {
		return err
	}
	s.start = s.end
	if rerr == io.EOF {
		return nil
	}
	return fmt.Errorf("mmsfilter: read %s: %w", s.dir, rerr)
}

// write writes all of p or fails; a short write without an error is
// io.ErrShortWrite, as io.Copy treats it.
func (s *stream) write(dst io.Writer, p []byte) error {
	if len(p) == 0 {
		return nil
	}
	n, err := dst.Write(p)
	if err == nil && n < len(p) {
		err = io.ErrShortWrite
	}
	if err != nil {
		return fmt.Errorf("mmsfilter: write %s: %w", s.dir, err)
	}
	return nil
}

package rtspfilter

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
)

// waitReadLen is the buffer a direction waits in between messages: most
// heads fit (an OPTIONS, a SETUP, their answers are a few hundred bytes),
// so they usually arrive in one read.
const waitReadLen = 1 << 10

// stream is one direction's reader state. It waits for the next message
// holding only wait; from the first byte until nothing read is left
// unprocessed it borrows a work set (read buffer, head buffer, copy
// buffer) from workSets. So its memory is bounded by waitReadLen,
// readBufSize, MaxHeadBytes and one copy buffer, whatever the peer sends,
// and an idle connection holds 2×waitReadLen.
type stream struct {
	dir  Direction
	in   resumed
	wait [waitReadLen]byte
	work *workSet // nil while waiting
	// seen: an RTSP message went by, so later garbage is a framing
	// error, not a stream that never was RTSP.
	seen bool
}

// workSet is what a direction needs while a message is in progress.
type workSet struct {
	br   *bufio.Reader
	head []byte // reused head buffer
	copy []byte // body and frame copy buffer
}

// maxPooledHead: a head buffer grown beyond it by a large head is not
// kept in the pool.
const maxPooledHead = 2 << 10

var workSets = sync.Pool{New: func() any {
	return &workSet{br: bufio.NewReaderSize(nil, readBufSize), head: make([]byte, 0, 1024), copy: make([]byte, 8<<10)}
}}

func newStream(dir Direction, src io.Reader) *stream {
	s := &stream{dir: dir}
	s.in.src = src
	return s
}

// await returns once the next bytes (or the end) are in s.work.br: at
// once when some are buffered, else after a read into s.wait, the work
// set given back meanwhile. An end met by the wait read itself is
// returned.
func (s *stream) await() error {
	if s.work != nil {
		if s.work.br.Buffered() > 0 || len(s.in.pending) > 0 {
			return nil
		}
		s.release()
	}
	n, err := s.in.readWait(s.wait[:])
	if n == 0 && err != nil {
		return err
	}
	s.work = workSets.Get().(*workSet)
	s.work.br.Reset(&s.in)
	return nil
}

// release gives the work set back; nothing read is left in it.
func (s *stream) release() {
	w := s.work
	if w == nil {
		return
	}
	s.work = nil
	w.br.Reset(nil)
	if cap(w.head) > maxPooledHead {
		w.head = make([]byte, 0, 1024)
	}
	workSets.Put(w)
}

// resumed is the reader a work set's bufio.Reader reads: what the wait
// read got, then the source. A read error of the source is kept and
// returned again, so an end seen by one work set is not lost when the
// next one asks.
type resumed struct {
	src     io.Reader
	pending []byte
	err     error
}

// readWait reads the source into buf (the wait buffer), keeping what it
// got for the next Read.
func (r *resumed) readWait(buf []byte) (int, error) {
	if r.err != nil {
		return 0, r.err
	}
	n, err := r.src.Read(buf)
	r.pending, r.err = buf[:n], err
	return n, err
}

func (r *resumed) Read(p []byte) (int, error) {
	if len(r.pending) > 0 {
		n := copy(p, r.pending)
		r.pending = r.pending[n:]
		return n, nil
	}
	if r.err != nil {
		return 0, r.err
	}
	n, err := r.src.Read(p)
	r.err = err
	return n, err
}

// ClientToServer filters the client's requests: SETUPs are rewritten,
// TEARDOWNs release, everything else is forwarded as it came.
func (c *Connection) ClientToServer(ctx context.Context, dst io.Writer, src io.Reader) error {
	s := newStream(DirClientToServer, src)
	defer s.release()
	for {
		done, err := c.relayOne(ctx, s, dst)
		if done || err != nil {
			return err
		}
	}
}

// ServerToClient filters the server's replies: SETUP replies get the
// client's ports back and permit the server's peers.
func (c *Connection) ServerToClient(ctx context.Context, dst io.Writer, src io.Reader) error {
	defer close(c.serverStopped)
	c.mu.Lock()
	c.toClient = &lockedWriter{w: dst, mu: &c.wmu}
	c.mu.Unlock()
	close(c.clientReady)
	s := newStream(DirServerToClient, src)
	defer s.release()
	for {
		done, err := c.relayOne(ctx, s, dst)
		if done || err != nil {
			return err
		}
	}
}

// relayOne forwards one unit (a message, an interleaved frame or a line
// break between messages); done at the end of the stream.
func (c *Connection) relayOne(ctx context.Context, s *stream, dst io.Writer) (done bool, err error) {
	if err := s.await(); err != nil {
		if errors.Is(err, io.EOF) {
			return true, nil
		}
		return true, err
	}
	w := s.work
	b, err := w.br.Peek(1)
	if err != nil {
		if errors.Is(err, io.EOF) {
			return true, nil
		}
		return true, err
	}
	switch b[0] {
	case '$':
		c.f.obs.Interleaved(s.dir, 1)
		c.lockWrite(s.dir)
		err := copyInterleaved(dst, w.br, w.copy)
		c.unlockWrite(s.dir)
		return err != nil, c.copyErr(s, err)
	case '\r', '\n':
		// Between messages (a keep-alive CRLF, RFC 7826 §20.1 allows
		// them): forwarded as they come, never held.
		buf, _ := w.br.Peek(w.br.Buffered())
		n := 0
		for n < len(buf) && (buf[n] == '\r' || buf[n] == '\n') {
			n++
		}
		c.lockWrite(s.dir)
		_, err := dst.Write(buf[:n])
		c.unlockWrite(s.dir)
		w.br.Discard(n)
		return false, err
	}
	if !s.seen {
		if first, _ := w.br.Peek(w.br.Buffered()); !plausibleStart(first) {
			err := fmt.Errorf("%w: starts %q", errNotStartLine, clip(first))
			return c.badHead(ctx, s, dst, nil, &HeadError{Problem: ProblemBadStartLine, Err: err})
		}
	}
	h, err := readHead(w.br, w.head)
	w.head = h.raw[:0]
	if err != nil {
		return c.badHead(ctx, s, dst, h.raw, err)
	}
	s.seen = true
	out := h.raw
	switch {
	case h.request && s.dir == DirClientToServer:
		c.f.obs.Request(s.dir, methodOf(h.method))
		var answer []byte
		out, answer = c.onRequest(ctx, &h)
		if answer != nil {
			if err := copyN(io.Discard, w.br, h.bodyLen, w.copy); err != nil {
				return true, c.copyErr(s, err)
			}
			return false, c.answer(ctx, answer)
		}
		c.forwarded()
	case h.request:
		c.f.obs.Request(s.dir, methodOf(h.method))
	case s.dir == DirServerToClient:
		c.f.obs.Response(s.dir, statusClassOf(h.code))
		out = c.onResponse(&h)
	default:
		c.f.obs.Response(s.dir, statusClassOf(h.code))
	}
	c.lockWrite(s.dir)
	defer c.unlockWrite(s.dir)
	if _, err := dst.Write(out); err != nil {
		return true, err
	}
	if s.dir == DirServerToClient && !h.request {
		c.responded()
	}
	err = copyN(dst, w.br, h.bodyLen, w.copy)
	return err != nil, c.copyErr(s, err)
}

// copyErr counts a stream that ended inside a frame or body; the proxy
// half-closes as after any end.
func (c *Connection) copyErr(s *stream, err error) error {
	if errors.Is(err, ErrTruncated) {
		c.f.obs.Problem(s.dir, ProblemTruncated, err)
		return nil
	}
	return err
}

// badHead handles a head that did not read or parse. A direction that
// never carried RTSP relays untouched from here on (counted not_rtsp);
// one that did is broken: the client is answered 400 and the connection
// ends (its framing is lost, and a SETUP inside must not pass
// unrewritten), the server's rest is relayed untouched.
func (c *Connection) badHead(ctx context.Context, s *stream, dst io.Writer, raw []byte, err error) (bool, error) {
	var he *HeadError
	if !errors.As(err, &he) {
		if errors.Is(err, io.EOF) {
			return true, nil
		}
		return true, err
	}
	if he.Problem == ProblemTruncated {
		c.f.obs.Problem(s.dir, ProblemTruncated, err)
		c.lockWrite(s.dir)
		_, werr := dst.Write(raw)
		c.unlockWrite(s.dir)
		return true, werr
	}
	if !s.seen && he.Problem == ProblemBadStartLine {
		c.f.obs.Problem(s.dir, ProblemNotRTSP, err)
		c.log.Debug("rtsp: not RTSP, relaying untouched", "direction", s.dir.String(), "client", c.conn.Client, "server", c.conn.Target, "err", err)
		return true, c.raw(s, dst, raw)
	}
	c.f.obs.Problem(s.dir, he.Problem, err)
	c.log.Warn("rtsp: bad message", "direction", s.dir.String(), "client", c.conn.Client, "server", c.conn.Target, "err", err)
	if s.dir == DirServerToClient {
		return true, c.raw(s, dst, raw)
	}
	if aerr := c.answer(ctx, statusMessage("RTSP/1.0", 400, "Bad Request", cseqIn(raw))); aerr != nil {
		return true, aerr
	}
	return true, fmt.Errorf("rtspfilter: client message: %w", err)
}

// raw relays the rest of the direction untouched, raw first.
func (c *Connection) raw(s *stream, dst io.Writer, raw []byte) error {
	if s.dir == DirServerToClient {
		c.mu.Lock()
		c.serverRaw = true
		c.mu.Unlock()
		c.poke()
		// Locked a write at a time, not for the rest of the stream: an
		// answer of the proxy's own must not wait for the server to end.
		dst = &lockedWriter{w: dst, mu: &c.wmu}
	} else {
		dst = &setupGuard{w: dst}
	}
	_, err := dst.Write(raw)
	if err == nil {
		_, err = io.CopyBuffer(dst, s.work.br, s.work.copy)
	}
	if errors.Is(err, ErrUnfilteredSetup) {
		c.f.obs.Problem(s.dir, ProblemUnfilteredSetup, err)
		c.log.Warn("rtsp: SETUP after bytes that are not RTSP, closing", "client", c.conn.Client, "server", c.conn.Target)
	}
	return err
}

// setupMarker begins a SETUP request line after a line end.
const setupMarker = "\nSETUP "

// setupGuard relays a client stream that did not start as RTSP, but not a
// SETUP request inside it: a server that still takes it would send UDP to
// the proxy's external address at a port the proxy did not lease for this
// client, possibly another client's lease that permits the same server.
// The write that completes "\nSETUP " fails with ErrUnfilteredSetup (what
// was written before it went on), and the connection ends.
type setupGuard struct {
	w       io.Writer
	matched int // bytes of setupMarker matched so far, across writes
}

func (g *setupGuard) Write(b []byte) (int, error) {
	for _, c := range b {
		switch {
		case c == setupMarker[g.matched]:
			g.matched++
		case c == '\n':
			g.matched = 1
		default:
			g.matched = 0
		}
		if g.matched == len(setupMarker) {
			return 0, ErrUnfilteredSetup
		}
	}
	return g.w.Write(b)
}

// lockWrite serialises writes to the client with the proxy's own
// answers; writes to the server have one writer.
func (c *Connection) lockWrite(d Direction) {
	if d == DirServerToClient {
		c.wmu.Lock()
	}
}

func (c *Connection) unlockWrite(d Direction) {
	if d == DirServerToClient {
		c.wmu.Unlock()
	}
}

// forwarded counts a request on its way to the server.
func (c *Connection) forwarded() {
	c.mu.Lock()
	c.outstanding++
	c.mu.Unlock()
}

// responded counts a response on its way to the client.
func (c *Connection) responded() {
	c.mu.Lock()
	if c.outstanding > 0 {
		c.outstanding--
	}
	c.mu.Unlock()
	c.poke()
}

func (c *Connection) poke() {
	select {
	case c.answered <- struct{}{}:
	default:
	}
}

// answer sends the proxy's own response to the client, once the server
// has answered every request before it (responses come in request order).
func (c *Connection) answer(ctx context.Context, msg []byte) error {
	select {
	case <-c.clientReady:
	case <-ctx.Done():
		return ctx.Err()
	}
	for {
		c.mu.Lock()
		ready := c.outstanding == 0 || c.serverRaw
		w := c.toClient
		c.mu.Unlock()
		if ready {
			_, err := w.Write(msg)
			return err
		}
		select {
		case <-c.answered:
		case <-c.serverStopped:
			return net.ErrClosed
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// lockedWriter writes whole messages under the connection's write lock.
type lockedWriter struct {
	w  io.Writer
	mu interface {
		Lock()
		Unlock()
	}
}

func (l *lockedWriter) Write(b []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(b)
}

// cseqIn finds the CSeq of a head that did not parse, so that the
// client can tell which request the proxy answers; "" when there is none
// that is a plain number.
func cseqIn(raw []byte) string {
	for _, line := range bytes.Split(raw, []byte("\n")) {
		name, value, ok := bytes.Cut(trimEOL(line), []byte(":"))
		if ok && equalFold(string(name), "CSeq") {
			if v := strings.TrimSpace(string(value)); isDigits(v) && len(v) <= 10 {
				return v
			}
		}
	}
	return ""
}

// statusMessage is a response of the proxy's own, with the request's
// CSeq (every response carries it, RFC 2326 §12.17).
func statusMessage(version string, code int, reason, cseq string) []byte {
	b := fmt.Appendf(nil, "%s %d %s\r\n", version, code, reason)
	if cseq != "" {
		b = fmt.Appendf(b, "CSeq: %s\r\n", cseq)
	}
	return append(b, "Content-Length: 0\r\n\r\n"...)
}

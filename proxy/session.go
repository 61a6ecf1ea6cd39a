package proxy

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"time"

	socks5 "github.com/armon/go-socks5"
)

// handshakeBufferSize holds the largest handshake message: a greeting of
// 2+255 bytes, an RFC 1929 request of 3+255+255, a request of 7+255.
const handshakeBufferSize = 1024

// session is one client connection, from accept to close.
type session struct {
	srv *Server
	// id numbers the server's sessions from 1, the "sid" of every line of
	// one session (and its leases' and filter's lines), so they can be found
	// together; log is the server's logger with it (see logger).
	id     uint64
	log    atomic.Pointer[slog.Logger]
	conn   net.Conn
	client netip.AddrPort
	start  time.Time
	br     *bufio.Reader
	// ctx is the session's context; abort cancels it, so that whatever the
	// session waits for (a password check slot, a dial) gives up with it.
	ctx    context.Context
	cancel context.CancelFunc

	// mu guards handshaking, aborted, endedBy and peers.
	mu          sync.Mutex
	handshaking bool
	aborted     bool
	// endedBy names who ended the session when it was not the session
	// itself ("drain", "drain_timeout", "shutdown"), for its log line.
	endedBy string
	// peers are further connections the session owns (the CONNECT target)
	// that abort must close too.
	peers []io.Closer

	// What the session log line and metrics report.
	user          string
	command       Command
	dest          string
	reply         Reply
	handshakeTime time.Duration
	dialTime      time.Duration
	up, down      int64
	// udp is set by a UDP association when it ends.
	udp *udpTotals
}

// udpTotals is what a UDP association relayed, for its session line.
type udpTotals struct {
	datagramsUp, datagramsDown int64
	externalPort               uint16
}

func newSession(s *Server, conn net.Conn, client netip.AddrPort) *session {
	id := s.lastSID.Add(1)
	ss := &session{
		srv: s, id: id, conn: conn, client: client, start: time.Now(),
		br:          newHandshakeReader(conn),
		handshaking: true,
		reply:       replyNone,
	}
	ss.ctx, ss.cancel = context.WithCancel(s.baseCtx)
	return ss
}

// handshakeReaders recycles the sessions' handshake readers: each is 1 KiB,
// and a server that sets up thousands of sessions a second would otherwise
// allocate and clear one per session.
var handshakeReaders = sync.Pool{New: func() any { return bufio.NewReaderSize(nil, handshakeBufferSize) }}

func newHandshakeReader(conn net.Conn) *bufio.Reader {
	br := handshakeReaders.Get().(*bufio.Reader)
	br.Reset(conn)
	return br
}

// logger is the server's logger with the session's "sid", made on first
// use: most sessions log nothing but their closing line, which a server
// at level warn does not write, and a With costs the handler a copy of its
// attributes. Safe for concurrent use (an association logs from its own
// goroutines and its idle timer).
func (ss *session) logger() *slog.Logger {
	if l := ss.log.Load(); l != nil {
		return l
	}
	l := ss.srv.log.With("sid", ss.id)
	if ss.log.CompareAndSwap(nil, l) {
		return l
	}
	return ss.log.Load()
}

// run serves the session and releases everything it holds, unless the
// command handed the session's end to a goroutine of its own (errDetached),
// which then calls finish.
func (ss *session) run() {
	ss.srv.obs.SessionsChanged(1)
	err := ss.serve(ss.ctx)
	if errors.Is(err, errDetached) {
		return
	}
	ss.finish(err)
}

// errDetached is what serve returns when the session goes on after its
// goroutine has ended: a UDP association, which waits for its TCP
// connection's end on a fresh goroutine so that the session goroutine's
// stack, grown by the handshake and the association's setup, is not held
// for the association's whole (mostly idle) life.
var errDetached = errors.New("session goes on on another goroutine")

// finish releases everything the session holds and logs its line; it is
// the last thing a session does, once, on whichever goroutine ends it.
func (ss *session) finish(err error) {
	s := ss.srv
	defer s.sessionsWG.Done()
	ss.abort()
	s.untrackSession(ss)
	s.obs.SessionsChanged(-1)
	ss.logDone(err)
	// Every reader of br has returned: the command's copiers and filters
	// before serve did, an association's when it dropped br.
	if ss.br != nil {
		ss.br.Reset(nil)
		handshakeReaders.Put(ss.br)
		ss.br = nil
	}
}

// serve runs the handshake and the command.
func (ss *session) serve(ctx context.Context) error {
	s := ss.srv
	ss.conn.SetDeadline(ss.start.Add(s.cfg().HandshakeTimeout))
	req, err := ss.handshake(ctx)
	if err != nil {
		return err
	}
	ss.handshakeTime = time.Since(ss.start)
	ss.command = Command(req.Command)
	ss.dest = req.DestAddr.Address()
	if !ss.endHandshake() {
		return errors.New("server shutting down")
	}
	// Each command sets its own deadlines from here on.
	ss.conn.SetDeadline(time.Time{})

	switch ss.command {
	case CommandConnect:
		return ss.connect(ctx, req)
	case CommandAssociate:
		return ss.associate(ctx, req)
	case CommandBind:
		return ss.bind(ctx, req)
	default:
		ss.sendReply(ReplyCommandNotSupported, netip.AddrPort{})
		return fmt.Errorf("command %d not supported", req.Command)
	}
}

// handshake negotiates the method, authenticates and reads the request.
func (ss *session) handshake(ctx context.Context) (*socks5.Request, error) {
	s := ss.srv
	method, err := ss.negotiate()
	if err != nil {
		s.obs.HandshakeFailed(handshakeReason(err, "no_acceptable_method"))
		return nil, err
	}
	auth, err := ss.authenticate(ctx, method)
	if err != nil {
		s.obs.HandshakeFailed(authFailureReason(err))
		return nil, fmt.Errorf("%w: %w", ErrAuthFailed, err)
	}
	ss.user = auth.Payload["Username"]

	req, err := readRequest(ss.br)
	if err != nil {
		var re *requestError
		errors.As(err, &re)
		ss.command = re.cmd
		s.obs.HandshakeFailed(handshakeReason(err, re.reason))
		if re.reply != replyNone {
			ss.sendReply(re.reply, netip.AddrPort{})
		}
		return nil, err
	}
	req.AuthContext = auth
	req.RemoteAddr = &socks5.AddrSpec{IP: ss.client.Addr().AsSlice(), Port: int(ss.client.Port())}
	return req, nil
}

// negotiate reads the greeting and picks the first offered method the
// server accepts. When none fits it answers X'FF' as RFC 1928 §3 asks.
func (ss *session) negotiate() (uint8, error) {
	methods, err := readGreeting(ss.br)
	if err != nil {
		return 0, err
	}
	for _, m := range methods {
		if _, ok := ss.srv.methods[m]; ok {
			return m, nil
		}
	}
	ss.conn.Write([]byte{socksVersion, methodNoAcceptable})
	return 0, fmt.Errorf("%w: client offered %v", ErrNoAcceptableMethod, methods)
}

// handshakeReason names why a handshake failed; fallback names a failure
// that is not about the connection itself.
func handshakeReason(err error, fallback string) string {
	var ne net.Error
	switch {
	case errors.Is(err, os.ErrDeadlineExceeded), errors.As(err, &ne) && ne.Timeout():
		return "timeout"
	case errors.Is(err, ErrBadVersion):
		return "bad_version"
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, net.ErrClosed):
		return "truncated"
	}
	return fallback
}

func methodName(m uint8) string {
	if m == methodUserPass {
		return "username_password"
	}
	return "no_auth"
}

// sendReply writes one reply under a write deadline, records it, and
// reports the request to the observer.
func (ss *session) sendReply(rep Reply, bound netip.AddrPort) error {
	ss.reply = rep
	ss.srv.obs.Request(ss.command.String(), rep.String(), ss.handshakeTime, ss.dialTime)
	return ss.writeReply(rep, bound)
}

// writeReply writes a reply without reporting it (BIND's second reply).
func (ss *session) writeReply(rep Reply, bound netip.AddrPort) error {
	var buf [22]byte
	ss.conn.SetWriteDeadline(time.Now().Add(ss.srv.cfg().HandshakeTimeout))
	_, err := ss.conn.Write(appendReply(buf[:0], rep, bound))
	ss.conn.SetWriteDeadline(time.Time{})
	if err != nil {
		return fmt.Errorf("write reply: %w", err)
	}
	return nil
}

// endHandshake marks the session established, so Shutdown lets it finish;
// false when the session was aborted meanwhile.
func (ss *session) endHandshake() bool {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	ss.handshaking = false
	return !ss.aborted
}

// own makes abort close c too; false (and c closed) when already aborted.
func (ss *session) own(c io.Closer) bool {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	if ss.aborted {
		c.Close()
		return false
	}
	ss.peers = append(ss.peers, c)
	return true
}

// closeIfHandshaking aborts a session that has not yet been answered: a
// draining server has no reason to start new work.
func (ss *session) closeIfHandshaking() {
	ss.mu.Lock()
	h := ss.handshaking
	ss.mu.Unlock()
	if h {
		ss.abortBy(endedByDrain)
	}
}

// Who ended a session, when it was not the session itself.
const (
	endedByDrain        = "drain"         // closed in its handshake when the drain began
	endedByDrainTimeout = "drain_timeout" // still running when drain_timeout ran out
	endedByShutdown     = "shutdown"      // the server closed without a drain
)

// abort closes the client connection and every connection the session
// owns, which unblocks all of its I/O. Safe to call more than once.
func (ss *session) abort() { ss.abortBy("") }

// abortBy is abort by someone other than the session: cause is kept for the
// session's log line if this is the first abort.
func (ss *session) abortBy(cause string) {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	if ss.aborted {
		return
	}
	ss.aborted = true
	ss.cancel()
	ss.endedBy = cause
	ss.conn.Close()
	for _, c := range ss.peers {
		c.Close()
	}
}

func (ss *session) logDone(err error) {
	if !ss.srv.log.Enabled(context.Background(), slog.LevelInfo) {
		return
	}
	attrs := []any{
		"client", ss.client,
		"command", ss.command.String(),
		"destination", ss.dest,
		"reply", ss.reply.String(),
		"bytes_up", ss.up,
		"bytes_down", ss.down,
		"duration", time.Since(ss.start).Round(time.Millisecond),
	}
	if u := ss.udp; u != nil {
		attrs = append(attrs, "datagrams_up", u.datagramsUp, "datagrams_down", u.datagramsDown, "external_port", u.externalPort)
	}
	if ss.user != "" {
		attrs = append(attrs, "user", ss.user)
	}
	ss.mu.Lock()
	endedBy := ss.endedBy
	ss.mu.Unlock()
	if endedBy != "" {
		attrs = append(attrs, "ended_by", endedBy)
	}
	if err != nil && !errors.Is(err, io.EOF) {
		attrs = append(attrs, "err", err)
	}
	ss.logger().Info("session", attrs...)
}

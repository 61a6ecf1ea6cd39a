package proxy

import (
	"context"
	"errors"
	"io"
	"math"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"
)

// relay runs the two directions of an established CONNECT through fs until
// both have ended, half-closing each side as its source ends (RFC 1928
// leaves this to the proxy; players and HTTP clients rely on it).
//
// With no filter and two TCP connections the bytes never enter user space:
// each direction is a loop of io.CopyN between the raw *net.TCPConns, which
// Linux serves with splice(2). Such a copy reports only when it returns, so
// metrics and the idle clock advance per chunk (spliceChunk), and the idle
// timer, before it calls a session idle, interrupts both copies with a read
// deadline so that they report what they moved (see checkIdle).
func (ss *session) relay(ctx context.Context, target net.Conn, fs FilterSession) error {
	r := &relay{ss: ss, target: target, fs: fs}
	if _, plain := fs.(passThrough); plain {
		cc, ok1 := rawTCPConn(ss.conn)
		tc, ok2 := target.(*net.TCPConn)
		if ok1 && ok2 {
			r.clientTCP, r.targetTCP = cc, tc
		}
	}
	r.lastActive.Store(time.Now().UnixNano())
	if idle := ss.srv.cfg().IdleTimeout; idle > 0 {
		// Armed only after the field is set, so checkIdle always sees it.
		r.idleTimer = time.AfterFunc(time.Duration(math.MaxInt64), r.checkIdle)
		r.idleTimer.Reset(idle)
	}
	// The target's direction runs on the session's own goroutine, which
	// would otherwise only wait: one goroutine start and one hand-off
	// fewer per session.
	var wg sync.WaitGroup
	wg.Add(2)
	go r.clientToTarget(ctx, &wg)
	r.targetToClient(ctx, &wg)
	wg.Wait()
	r.done.Store(true)
	if r.idleTimer != nil {
		r.idleTimer.Stop()
	}
	ss.up, ss.down = r.up.Load(), r.down.Load()
	if r.idled.Load() {
		return errIdle
	}
	return errors.Join(r.errUp, r.errDown)
}

var errIdle = errors.New("idle timeout")

// spliceChunk is how much a spliced direction moves between two reports
// to the metrics and the idle clock. Large enough that the per-chunk cost
// (a pipe from the pool, a LimitedReader) vanishes, small enough that a
// busy stream's byte counters move every few milliseconds.
const spliceChunk = 1 << 20

// relay is the state of one established CONNECT session's byte streams.
type relay struct {
	ss     *session
	target net.Conn
	fs     FilterSession
	// clientTCP and targetTCP are set when the session is spliced: no
	// filter and TCP on both sides.
	clientTCP, targetTCP *net.TCPConn

	up, down   atomic.Int64
	lastActive atomic.Int64 // unix nanoseconds of the last byte reported either way
	idled      atomic.Bool
	done       atomic.Bool // both copiers returned; the idle timer must not re-arm
	probing    atomic.Bool // checkIdle interrupted the spliced copies and waits for their reports
	idleTimer  *time.Timer

	// errUp and errDown are written by their copier before wg.Done.
	errUp, errDown error
}

// clientToTarget copies the client's bytes (those buffered after the request
// first) to the target.
func (r *relay) clientToTarget(ctx context.Context, wg *sync.WaitGroup) {
	defer wg.Done()
	if r.clientTCP != nil {
		r.errUp = r.finish(r.spliceClientToTarget(), r.target)
		return
	}
	src := &meteredReader{r: r.ss.br, n: &r.up, last: &r.lastActive, obs: r.ss.srv.obs, dir: DirClientToTarget}
	r.errUp = r.finish(r.fs.ClientToServer(ctx, r.target, src), r.target)
}

// targetToClient copies the target's bytes to the client.
func (r *relay) targetToClient(ctx context.Context, wg *sync.WaitGroup) {
	defer wg.Done()
	if r.clientTCP != nil {
		r.errDown = r.finish(r.splice(r.clientTCP, r.targetTCP, &r.down, DirTargetToClient), r.ss.conn)
		return
	}
	src := &meteredReader{r: r.target, n: &r.down, last: &r.lastActive, obs: r.ss.srv.obs, dir: DirTargetToClient}
	r.errDown = r.finish(r.fs.ServerToClient(ctx, r.ss.conn, src), r.ss.conn)
}

// spliceClientToTarget first writes what the handshake reader buffered
// beyond the request (a fast client's first bytes), then splices.
func (r *relay) spliceClientToTarget() error {
	if n := r.ss.br.Buffered(); n > 0 {
		early, _ := r.ss.br.Peek(n)
		w, err := r.target.Write(early)
		r.report(&r.up, DirClientToTarget, int64(w))
		if err != nil {
			return err
		}
		r.ss.br.Discard(n)
	}
	return r.splice(r.targetTCP, r.clientTCP, &r.up, DirClientToTarget)
}

// splice copies src to dst in spliceChunk steps until src ends (nil) or
// fails. A read-deadline error is checkIdle's interruption: the copy
// reports what it moved, clears the deadline and goes on.
func (r *relay) splice(dst, src *net.TCPConn, n *atomic.Int64, dir string) error {
	for {
		w, err := io.CopyN(dst, src, spliceChunk)
		r.report(n, dir, w)
		switch {
		case err == nil:
		case errors.Is(err, io.EOF):
			return nil
		case errors.Is(err, os.ErrDeadlineExceeded) && !r.done.Load():
			src.SetReadDeadline(time.Time{})
		default:
			return err
		}
	}
}

// report counts w bytes moved in direction dir and marks activity.
func (r *relay) report(n *atomic.Int64, dir string, w int64) {
	if w <= 0 {
		return
	}
	n.Add(w)
	r.lastActive.Store(time.Now().UnixNano())
	r.ss.srv.obs.Relayed(dir, int(w))
}

// finish ends one direction: a clean end half-closes dst so the peer sees
// EOF and the other direction goes on; a failure closes everything.
func (r *relay) finish(err error, dst net.Conn) error {
	if err == nil {
		if cw, ok := dst.(closeWriter); ok {
			if cerr := cw.CloseWrite(); cerr == nil {
				return nil
			}
		}
	}
	r.ss.abort()
	if errors.Is(err, net.ErrClosed) {
		// The other direction (or shutdown) closed the connections; its
		// error is the one to report.
		return nil
	}
	return err
}

// checkIdle runs on the idle timer: it aborts the session when neither
// direction has moved a byte for IdleTimeout, else waits for the rest.
//
// A spliced copy reports only at the end of a chunk, so a slow stream can
// be busy while lastActive looks old. Before calling such a session idle,
// checkIdle sets a read deadline in the past on both connections, which
// makes each copy return and report what it moved, and looks again after
// a short grace. A copy blocked writing to a peer that does not read
// reports nothing, and the session is idle, as it is for the metered path.
func (r *relay) checkIdle() {
	if r.done.Load() {
		return
	}
	idle := r.ss.srv.cfg().IdleTimeout
	since := time.Since(time.Unix(0, r.lastActive.Load()))
	if since < idle {
		r.probing.Store(false)
		r.idleTimer.Reset(idle - since)
		return
	}
	if r.clientTCP != nil && !r.probing.Load() {
		r.probing.Store(true)
		now := time.Now()
		r.clientTCP.SetReadDeadline(now)
		r.targetTCP.SetReadDeadline(now)
		r.idleTimer.Reset(min(max(idle/10, time.Millisecond), time.Second))
		return
	}
	r.idled.Store(true)
	r.ss.abort()
}

// meteredReader counts what passes and marks activity for the idle timer.
type meteredReader struct {
	r    io.Reader
	n    *atomic.Int64
	last *atomic.Int64
	obs  Observer
	dir  string
}

func (m *meteredReader) Read(p []byte) (int, error) {
	n, err := m.r.Read(p)
	if n > 0 {
		m.n.Add(int64(n))
		m.last.Store(time.Now().UnixNano())
		m.obs.Relayed(m.dir, n)
	}
	return n, err
}

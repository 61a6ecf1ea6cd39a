package proxy

import (
	"context"
	"errors"
	"io"
	"math"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// relay runs the two directions of an established CONNECT through fs until
// both have ended, half-closing each side as its source ends (RFC 1928
// leaves this to the proxy; players and HTTP clients rely on it).
func (ss *session) relay(ctx context.Context, target net.Conn, fs FilterSession) error {
	r := &relay{ss: ss, target: target, fs: fs}
	r.lastActive.Store(time.Now().UnixNano())
	if idle := ss.srv.cfg.IdleTimeout; idle > 0 {
		// Armed only after the field is set, so checkIdle always sees it.
		r.idleTimer = time.AfterFunc(time.Duration(math.MaxInt64), r.checkIdle)
		r.idleTimer.Reset(idle)
	}
	var wg sync.WaitGroup
	wg.Add(2)
	go r.clientToTarget(ctx, &wg)
	go r.targetToClient(ctx, &wg)
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

// relay is the state of one established CONNECT session's byte streams.
type relay struct {
	ss     *session
	target net.Conn
	fs     FilterSession

	up, down   atomic.Int64
	lastActive atomic.Int64 // unix nanoseconds of the last byte read either way
	idled      atomic.Bool
	done       atomic.Bool // both copiers returned; the idle timer must not re-arm
	idleTimer  *time.Timer

	// errUp and errDown are written by their copier before wg.Done.
	errUp, errDown error
}

// clientToTarget copies the client's bytes (those buffered after the request
// first) to the target.
func (r *relay) clientToTarget(ctx context.Context, wg *sync.WaitGroup) {
	defer wg.Done()
	src := &meteredReader{r: r.ss.br, n: &r.up, last: &r.lastActive, obs: r.ss.srv.obs, dir: DirClientToTarget}
	r.errUp = r.finish(r.fs.ClientToServer(ctx, r.target, src), r.target)
}

// targetToClient copies the target's bytes to the client.
func (r *relay) targetToClient(ctx context.Context, wg *sync.WaitGroup) {
	defer wg.Done()
	src := &meteredReader{r: r.target, n: &r.down, last: &r.lastActive, obs: r.ss.srv.obs, dir: DirTargetToClient}
	r.errDown = r.finish(r.fs.ServerToClient(ctx, r.ss.conn, src), r.ss.conn)
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
// direction has read a byte for IdleTimeout, else waits for the rest.
func (r *relay) checkIdle() {
	if r.done.Load() {
		return
	}
	idle := r.ss.srv.cfg.IdleTimeout
	since := time.Since(time.Unix(0, r.lastActive.Load()))
	if since >= idle {
		r.idled.Store(true)
		r.ss.abort()
		return
	}
	r.idleTimer.Reset(idle - since)
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

package mmsfilter

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"fwproxy/leases"
	"fwproxy/proxy"
)

// Leaser hands out UDP leases; *leases.Manager is one.
type Leaser interface {
	Acquire(ctx context.Context, key leases.Key, req leases.Request) (*leases.Holder, error)
}

var _ Leaser = (*leases.Manager)(nil)

// LeaseMode says how a UDP funnel got its external port.
type LeaseMode uint8

const (
	// LeaseJoined: the client holds a UDP association for the announced
	// port (firewall-client mode); the funnel joined that lease and data
	// reaches the client through its association.
	LeaseJoined LeaseMode = iota
	// LeaseAnnounced: no association (a player that tunnels only TCP); the
	// lease relays the server's datagrams unwrapped to the client.
	LeaseAnnounced
	// LeaseFailed: no lease could be had; the funnel passed unchanged.
	LeaseFailed
	NumLeaseModes
)

func (m LeaseMode) String() string {
	switch m {
	case LeaseJoined:
		return "association"
	case LeaseAnnounced:
		return "announced"
	case LeaseFailed:
		return "failed"
	}
	return "unknown"
}

// FilterObserver receives the filter's events: Observer's per-message ones
// and the filter's own. Metrics implement it.
type FilterObserver interface {
	Observer
	// SessionsChanged adds delta to the count of filtered connections.
	SessionsChanged(delta int)
	// FunnelLeased counts one UDP funnel by how its port was leased.
	FunnelLeased(mode LeaseMode)
}

type nopFilterObserver struct{ NopObserver }

func (nopFilterObserver) SessionsChanged(int)    {}
func (nopFilterObserver) FunnelLeased(LeaseMode) {}

// Config holds the filter's settings.
type Config struct {
	// ExternalIP is the address written into rewritten funnels. Unset
	// means the proxy's local address on its connection to the server,
	// which is where a spec-following server sends UDP anyway (it ignores
	// the funnel's IP and uses the TCP peer's, [MS-MMSP] §3.2.5.5).
	ExternalIP netip.Addr
	// AcquireTimeout bounds getting a lease for a funnel; the client waits
	// for the server's answer meanwhile. Must be > 0.
	AcquireTimeout time.Duration
}

// DefaultConfig returns working settings.
func DefaultConfig() Config {
	return Config{AcquireTimeout: 5 * time.Second}
}

// Validate reports a setting that cannot work.
func (c Config) Validate() error {
	if c.AcquireTimeout <= 0 {
		return fmt.Errorf("mmsfilter config: acquire timeout %v must be > 0", c.AcquireTimeout)
	}
	if c.ExternalIP.IsValid() && c.ExternalIP.IsUnspecified() {
		return fmt.Errorf("mmsfilter config: external IP %v must be a real address", c.ExternalIP)
	}
	return nil
}

// Deps are the filter's collaborators. Leases is required.
type Deps struct {
	Leases   Leaser
	Logger   *slog.Logger
	Observer FilterObserver
}

// Filter is the MMS application filter: one per proxy, one Connection per
// control connection.
type Filter struct {
	cfg    Config
	leases Leaser
	log    *slog.Logger
	obs    FilterObserver
}

// New validates cfg and returns the filter.
func New(cfg Config, deps Deps) (*Filter, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if deps.Leases == nil {
		return nil, errors.New("mmsfilter: no lease manager")
	}
	f := &Filter{cfg: cfg, leases: deps.Leases, log: deps.Logger, obs: deps.Observer}
	if f.log == nil {
		f.log = slog.New(slog.DiscardHandler)
	}
	if f.obs == nil {
		f.obs = nopFilterObserver{}
	}
	return f, nil
}

// Connection filters one control connection: the proxy runs ClientToServer
// and ServerToClient at once and calls Close after both returned. The
// session holds the UDP lease of the connection's latest UDP funnel for the
// connection's whole life, across playlist entries, so the player's own
// close and bind-again of its UDP port never loses the lease.
type Connection struct {
	f *Filter
	// conn is the CONNECT session: Client and User (with the announced
	// port) key the lease, so a funnel meets the client's own UDP
	// association; Target is the media server; Local the proxy's address
	// towards it.
	conn    proxy.SessionInfo
	log     *slog.Logger // the filter's, with the session id
	streams *Streams
	obs     sessionObserver

	// mu guards target, pending and closed. The FunnelFunc (client-to-server
	// goroutine), the funnel transitions and problems (same goroutine) and
	// Close (after both copiers) take it; deliveries never do.
	mu     sync.Mutex
	target *announcedTarget
	// pending is what the FunnelFunc got for the funnel being rewritten,
	// until the stream reports the outcome on the same goroutine: the
	// rewrite (TransitionFunnelUDPRewritten) makes it the target, a failure
	// (ProblemFunnelRewriteFailed) releases it. So a funnel that is not
	// rewritten never holds a lease, and is counted failed, not leased.
	pending *pendingFunnel
	closed  bool
}

// pendingFunnel is a lease acquired for a funnel whose rewrite is not yet
// done; t is nil when the funnel reuses the current target's lease.
type pendingFunnel struct {
	t    *announcedTarget
	mode LeaseMode
	ext  netip.AddrPort
	port uint16 // announced
}

// announcedTarget is one lease the session holds, with where announced-mode
// data goes. holder is set once Acquire returned: a delivery during
// Acquire (only a flush, which an announced-only lease never has) finds it
// unset and is dropped.
type announcedTarget struct {
	holder atomic.Pointer[leases.Holder]
	to     netip.AddrPort // control connection's peer IP, announced port
}

var (
	_ proxy.Filter        = (*Filter)(nil)
	_ proxy.FilterSession = (*Connection)(nil)
)

// Name is the filter's name in the proxy's logs and registration errors.
func (f *Filter) Name() string { return "mms" }

// NewSession starts filtering one control connection; it never fails.
func (f *Filter) NewSession(_ context.Context, info proxy.SessionInfo) (proxy.FilterSession, error) {
	return f.NewConnection(info), nil
}

// NewConnection is NewSession with its concrete type.
func (f *Filter) NewConnection(conn proxy.SessionInfo) *Connection {
	c := &Connection{f: f, conn: conn, log: f.log}
	if conn.Session != 0 {
		c.log = f.log.With("sid", conn.Session)
	}
	c.obs = sessionObserver{FilterObserver: f.obs, s: c}
	c.streams = NewStreams(c.onFunnel, c.obs)
	f.obs.SessionsChanged(1)
	return c
}

// ClientToServer filters the client's commands; see Streams.
func (s *Connection) ClientToServer(ctx context.Context, dst io.Writer, src io.Reader) error {
	return s.streams.ClientToServer(ctx, dst, src)
}

// ServerToClient filters the server's commands and data; see Streams.
func (s *Connection) ServerToClient(ctx context.Context, dst io.Writer, src io.Reader) error {
	return s.streams.ServerToClient(ctx, dst, src)
}

// State is the session's protocol state.
func (s *Connection) State() State { return s.streams.Session().State() }

// Close releases the session's lease. Safe to call more than once.
func (s *Connection) Close() error {
	s.mu.Lock()
	t, p := s.target, s.pending
	s.target, s.pending = nil, nil
	first := !s.closed
	s.closed = true
	s.mu.Unlock()
	if t != nil {
		t.holder.Load().Release()
	}
	if p != nil && p.t != nil {
		p.t.holder.Load().Release()
	}
	if first {
		s.f.obs.SessionsChanged(-1)
	}
	return nil
}

// onFunnel leases the external port for a UDP funnel. The lease key is the
// client's identity and the announced port; the announced IP is never used
// (data goes only to the address the control connection came from). A
// later funnel for another port moves the session to that port's lease,
// once the rewrite is done (commitFunnel). A funnel that could not be
// rewritten even with the longest port takes no lease at all.
func (s *Connection) onFunnel(ctx context.Context, announced Funnel, fits func(netip.AddrPort) bool) (netip.AddrPort, error) {
	key := leases.Key{Client: s.conn.Client.Addr().Unmap(), User: s.conn.User, Port: announced.Port}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.pending = nil
	if s.closed {
		return netip.AddrPort{}, errors.New("session closed")
	}
	if t := s.target; t != nil && t.holder.Load().Key() == key {
		ext := s.externalLocked(t.holder.Load())
		s.pending = &pendingFunnel{ext: ext, port: key.Port}
		return ext, nil
	}
	if longest := netip.AddrPortFrom(s.externalIPLocked(), 65535); !fits(longest) {
		return netip.AddrPort{}, fmt.Errorf("%w: no room to rewrite the funnel for port %d, no lease taken", ErrRewriteTooLong, key.Port)
	}
	t := &announcedTarget{to: netip.AddrPortFrom(key.Client, key.Port)}
	actx, cancel := context.WithTimeout(ctx, s.f.cfg.AcquireTimeout)
	defer cancel()
	h, err := s.f.leases.Acquire(actx, key, leases.Request{
		Kind:     leases.KindAnnounced,
		WantPort: key.Port,
		// With the client on the external IP, port preservation would
		// otherwise give the lease the very port the client announced:
		// every delivery to the client would reach the lease itself, and
		// the client could never bind its port (issue 10 #4).
		DeliverTo: t.to,
		Deliver:   t.deliver,
		Session:   s.conn.Session,
	})
	if err != nil {
		s.log.Warn("mms: no lease for funnel, passed unchanged", "client", s.conn.Client, "server", s.conn.Target, "port", key.Port, "err", err)
		return netip.AddrPort{}, fmt.Errorf("lease for %v: %w", key, err)
	}
	t.holder.Store(h)
	// The media server may send from any UDP source port ([MS-MMSP] leaves it
	// open), so its IP is what is permitted.
	h.AllowPeer(s.conn.Target.Addr().Unmap())
	mode := LeaseAnnounced
	if h.HasAssociation() {
		mode = LeaseJoined
	}
	ext := s.externalLocked(h)
	s.pending = &pendingFunnel{t: t, mode: mode, ext: ext, port: key.Port}
	return ext, nil
}

// commitFunnel: the funnel onFunnel answered was rewritten, so its lease
// becomes the session's and the previous one is released.
func (s *Connection) commitFunnel() {
	s.mu.Lock()
	p := s.pending
	s.pending = nil
	if p == nil || p.t == nil {
		s.mu.Unlock()
		return
	}
	old := s.target
	s.target = p.t
	s.mu.Unlock()
	if old != nil {
		old.holder.Load().Release()
	}
	s.f.obs.FunnelLeased(p.mode)
	s.log.Info("mms funnel", "client", s.conn.Client, "server", s.conn.Target, "announced_port", p.port, "external", p.ext, "mode", p.mode.String())
}

// failFunnel: a UDP funnel was not rewritten (no lease, no room, or any
// other failure): whatever was acquired for it is released, and it counts
// as failed.
func (s *Connection) failFunnel() {
	s.mu.Lock()
	p := s.pending
	s.pending = nil
	s.mu.Unlock()
	if p != nil && p.t != nil {
		p.t.holder.Load().Release()
	}
	s.f.obs.FunnelLeased(LeaseFailed)
}

func (s *Connection) externalLocked(h *leases.Holder) netip.AddrPort {
	return netip.AddrPortFrom(s.externalIPLocked(), h.Port())
}

// externalIPLocked is the address rewritten funnels name.
func (s *Connection) externalIPLocked() netip.Addr {
	if ip := s.f.cfg.ExternalIP; ip.IsValid() {
		return ip
	}
	return s.conn.Local.Addr()
}

// releaseForTCP drops the lease when the connection switches to a TCP
// funnel (MMSU refused, MMST fallback): data now flows on the control
// connection itself.
func (s *Connection) releaseForTCP() {
	s.mu.Lock()
	t := s.target
	s.target = nil
	s.mu.Unlock()
	if t != nil {
		t.holder.Load().Release()
	}
}

// deliver is an announced lease's DeliverFunc: the datagram goes unwrapped
// to the client's announced port, from the lease's own socket. A send
// error (the player's port closed while it binds again: ICMP port
// unreachable) is not the session's end; the lease counted the datagram.
func (t *announcedTarget) deliver(b []byte, _ netip.AddrPort) {
	if h := t.holder.Load(); h != nil {
		h.WriteTo(b, t.to)
	}
}

// sessionObserver passes events on and acts on the ones the connection
// cares about: a TCP funnel releases the lease; a stream change holds
// announced-mode delivery until the client's next ReadBlock, and is logged.
type sessionObserver struct {
	FilterObserver
	s *Connection
}

func (o sessionObserver) Transition(t Transition) {
	o.FilterObserver.Transition(t)
	switch t {
	case TransitionFunnelUDPRewritten:
		o.s.commitFunnel()
	case TransitionFunnelTCP:
		o.s.releaseForTCP()
	case TransitionStreamChange:
		// The player closes its UDP port on this message and binds it
		// again before it asks for the next header with ReadBlock
		// ([MS-MMSP] §3.1.5.19, KB 319381). A player behind its own association
		// announces that itself; one that only tunnels TCP does not, so
		// its datagrams wait in the lease meanwhile (leases.Holder.Hold).
		// The hold is set before the message reaches the player. Not
		// earlier, at EndOfStream: a player that stops at the end of an
		// entry (VLC) would never ask to resume and lose its entry's tail.
		o.s.hold()
		// DEBUG: a playlist changes entry every few minutes per player,
		// which would make these most of an INFO log.
		o.s.log.Debug("mms playlist transition", "client", o.s.conn.Client, "server", o.s.conn.Target)
	case TransitionPlaylistEnd:
		o.s.log.Debug("mms playlist end", "client", o.s.conn.Client, "server", o.s.conn.Target)
	}
}

func (o sessionObserver) Problem(d Direction, p Problem, err error) {
	o.FilterObserver.Problem(d, p, err)
	if p == ProblemFunnelRewriteFailed && d == DirClientToServer {
		o.s.failFunnel()
	}
}

func (o sessionObserver) Message(d Direction, mid MID) {
	o.FilterObserver.Message(d, mid)
	if d == DirClientToServer && (mid == MIDReadBlock || mid == MIDStartPlaying || mid == MIDCloseFile) {
		o.s.resume()
	}
}

// hold pauses announced-mode delivery; resume ends the pause and delivers
// what waited, in order.
func (s *Connection) hold() {
	if h := s.holder(); h != nil {
		h.Hold()
	}
}

func (s *Connection) resume() {
	if h := s.holder(); h != nil {
		h.Resume()
	}
}

func (s *Connection) holder() *leases.Holder {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.target == nil {
		return nil
	}
	return s.target.holder.Load()
}

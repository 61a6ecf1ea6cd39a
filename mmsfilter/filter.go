package mmsfilter

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"sync"
	"time"

	"fwproxy/internal/expect"
	"fwproxy/leases"
	"fwproxy/proxy"
)

// Leaser hands out UDP leases; *leases.Manager is one.
type Leaser = expect.Leaser

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
	// LoggingRewritten counts one field of a client Logging message that
	// named the inside host and was overwritten.
	LoggingRewritten(field LoggingField)
}

type nopFilterObserver struct{ NopObserver }

func (nopFilterObserver) SessionsChanged(int)           {}
func (nopFilterObserver) FunnelLeased(LeaseMode)        {}
func (nopFilterObserver) LoggingRewritten(LoggingField) {}

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
	// ScrubComputerName replaces the client's host name in its Logging
	// messages with "-" (LoggingPolicy). The client's IPv4 address there
	// is always replaced by the external one: a firewall does not show
	// inside addresses. The name is an option because a server operator
	// may know the inside hosts by name; it is on by default, the safe
	// choice for a firewall.
	ScrubComputerName bool
}

// DefaultConfig returns working settings.
func DefaultConfig() Config {
	return Config{AcquireTimeout: 5 * time.Second, ScrubComputerName: true}
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
// session holds the UDP expectation of the connection's latest UDP funnel
// for the connection's whole life, across playlist entries, so the
// player's own close and bind-again of its UDP port never loses the lease.
type Connection struct {
	f *Filter
	// conn is the CONNECT session: Client and User (with the announced
	// port) key the lease, so a funnel meets the client's own UDP
	// association; Target is the media server; Local the proxy's address
	// towards it.
	conn    proxy.SessionInfo
	log     *slog.Logger // the filter's, with the session id
	streams *Streams

	// mu guards udp, pending and closed. The FunnelFunc and the session
	// hooks (both stream goroutines) and Close (after both copiers) take
	// it; deliveries never do.
	mu  sync.Mutex
	udp *expect.UDP
	// pending is what the FunnelFunc got for the funnel being rewritten,
	// until the stream reports the outcome on the same goroutine (the
	// funnel hook): the rewrite makes it the connection's expectation, a
	// failure releases it. So a funnel that is not rewritten never holds
	// a lease, and is counted failed, not leased.
	pending *pendingFunnel
	closed  bool
}

// pendingFunnel is an expectation taken for a funnel whose rewrite is not
// yet done; udp is nil when the funnel reuses the connection's current one.
type pendingFunnel struct {
	udp  *expect.UDP
	mode LeaseMode
	ext  netip.AddrPort
	port uint16 // announced
}

var (
	_ proxy.Filter        = (*Filter)(nil)
	_ proxy.FilterSession = (*Connection)(nil)
	_ sessionHooks        = (*Connection)(nil)
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
	c.streams = NewStreams(c.onFunnel, f.obs)
	// Before either stream runs: the hooks are the connection's own
	// state machine, the observer only counts.
	c.streams.session.hooks = c
	c.streams.SetLogging(LoggingPolicy{
		HideAddress:       true,
		Address:           c.externalIPLocked(), // reads only what never changes
		ScrubComputerName: f.cfg.ScrubComputerName,
		Rewritten:         f.obs.LoggingRewritten,
	})
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

// Close releases the session's expectation. Safe to call more than once.
func (s *Connection) Close() error {
	s.mu.Lock()
	u, p := s.udp, s.pending
	s.udp, s.pending = nil, nil
	first := !s.closed
	s.closed = true
	s.mu.Unlock()
	if u != nil {
		u.Release()
	}
	if p != nil && p.udp != nil {
		p.udp.Release()
	}
	if first {
		s.f.obs.SessionsChanged(-1)
	}
	return nil
}

// onFunnel expects the UDP of a funnel. The lease key is the client's
// identity and the announced port; the announced IP is never used (data
// goes only to the address the control connection came from). A later
// funnel for another port moves the session to that port's expectation,
// once the rewrite is done (funnel hook). A funnel that could not be
// rewritten even with the longest port takes nothing.
func (s *Connection) onFunnel(ctx context.Context, announced Funnel, fits func(netip.AddrPort) bool) (netip.AddrPort, error) {
	client := s.conn.Client.Addr().Unmap()
	key := leases.Key{Client: client, User: s.conn.User, Port: announced.Port}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.pending = nil
	if s.closed {
		return netip.AddrPort{}, errors.New("session closed")
	}
	if u := s.udp; u != nil && u.Key() == key {
		ext := s.externalLocked(u)
		s.pending = &pendingFunnel{ext: ext, port: key.Port}
		return ext, nil
	}
	if longest := netip.AddrPortFrom(s.externalIPLocked(), 65535); !fits(longest) {
		return netip.AddrPort{}, fmt.Errorf("%w: no room to rewrite the funnel for port %d, no lease taken", ErrRewriteTooLong, key.Port)
	}
	actx, cancel := context.WithTimeout(ctx, s.f.cfg.AcquireTimeout)
	defer cancel()
	// The media server may send from any UDP source port ([MS-MMSP] leaves
	// it open), so its IP is what is permitted.
	u, err := expect.ExpectUDP(actx, s.f.leases, expect.Want{
		Client: client, User: s.conn.User, Port: announced.Port,
		Peer: s.conn.Target.Addr(), Session: s.conn.Session,
	})
	if err != nil {
		s.log.Warn("mms: no lease for funnel, passed unchanged", "client", s.conn.Client, "server", s.conn.Target, "port", key.Port, "err", err)
		return netip.AddrPort{}, err
	}
	mode := LeaseAnnounced
	if u.Mode() == expect.Joined {
		mode = LeaseJoined
	}
	ext := s.externalLocked(u)
	s.pending = &pendingFunnel{udp: u, mode: mode, ext: ext, port: key.Port}
	return ext, nil
}

func (s *Connection) externalLocked(u *expect.UDP) netip.AddrPort {
	return netip.AddrPortFrom(s.externalIPLocked(), u.Port())
}

// externalIPLocked is the address rewritten funnels name.
func (s *Connection) externalIPLocked() netip.Addr {
	if ip := s.f.cfg.ExternalIP; ip.IsValid() {
		return ip
	}
	return s.conn.Local.Addr()
}

// funnel is the session hook for each funnel the client sent. A rewritten
// UDP funnel makes its expectation the session's and releases the
// previous one; a UDP funnel that was not rewritten (no lease, no room,
// or any other failure) releases whatever was taken for it and counts as
// failed; a TCP funnel (MMSU refused, MMST fallback) releases the
// expectation, as data now flows on the control connection itself.
func (s *Connection) funnel(mode Transport, rewritten bool) {
	s.mu.Lock()
	p := s.pending
	s.pending = nil
	var drop *expect.UDP
	switch {
	case mode == TransportTCP:
		drop, s.udp = s.udp, nil
	case mode == TransportUDP && rewritten && p != nil && p.udp != nil:
		drop, s.udp = s.udp, p.udp
	case mode == TransportUDP && !rewritten && p != nil:
		drop = p.udp
	}
	s.mu.Unlock()
	if drop != nil {
		drop.Release()
	}
	if mode != TransportUDP {
		return
	}
	if !rewritten {
		s.f.obs.FunnelLeased(LeaseFailed)
		return
	}
	if p != nil && p.udp != nil {
		s.f.obs.FunnelLeased(p.mode)
		s.log.Info("mms funnel", "client", s.conn.Client, "server", s.conn.Target, "announced_port", p.port, "external", p.ext, "mode", p.mode.String())
	}
}

// message is the session hook for each message: a stream change holds
// announced-mode delivery until the client's next ReadBlock, StartPlaying
// or CloseFile resumes it.
func (s *Connection) message(dir Direction, m Message, t Transition, moved bool) {
	switch {
	case moved && t == TransitionStreamChange:
		// The player closes its UDP port on this message and binds it
		// again before it asks for the next header with ReadBlock
		// ([MS-MMSP] §3.1.5.19, KB 319381). A player behind its own
		// association announces that itself; one that only tunnels TCP
		// does not, so its datagrams wait in the lease meanwhile. The
		// hold is set before the message reaches the player. Not earlier,
		// at EndOfStream: a player that stops at the end of an entry
		// (VLC) would never ask to resume and lose its entry's tail.
		if u := s.expectation(); u != nil {
			u.Hold()
		}
		// DEBUG: a playlist changes entry every few minutes per player,
		// which would make these most of an INFO log.
		s.log.Debug("mms playlist transition", "client", s.conn.Client, "server", s.conn.Target)
	case moved && t == TransitionRedirected && dir == DirServerToClient:
		s.followRedirect(m)
	case moved && t == TransitionPlaylistEnd:
		s.log.Debug("mms playlist end", "client", s.conn.Client, "server", s.conn.Target)
	case dir == DirClientToServer && (m.MID == MIDReadBlock || m.MID == MIDStartPlaying || m.MID == MIDCloseFile):
		if u := s.expectation(); u != nil {
			u.Resume()
		}
	}
}

// followRedirect keeps the filter on the connection a redirect sends the
// client to: a ReportRedirect to another port of the same server makes the
// proxy expect the client's next CONNECT there ([MS-MMSP] §3.1.5.7: the
// client closes this connection and opens one to the URL's host and port),
// even when that port is not one of the filter's. What is not followed
// (another server, another proxy, not an MMS URL, a malformed message)
// still reaches the client unchanged.
func (s *Connection) followRedirect(m Message) {
	r, err := ParseRedirect(m)
	var dst netip.AddrPort
	if err == nil {
		dst, err = redirectDestination(r, s.conn.Target.Addr())
	}
	if err == nil && s.conn.Connects == nil {
		err = errors.New("no proxy to expect the connection")
	}
	if err == nil {
		err = s.conn.Connects.ExpectConnect(dst)
	}
	if err != nil {
		// DEBUG: the server decides how often this happens.
		s.log.Debug("mms redirect not followed", "client", s.conn.Client, "server", s.conn.Target, "location", r.Location, "err", err)
		return
	}
	s.log.Info("mms redirect followed", "client", s.conn.Client, "server", s.conn.Target, "to", dst)
}

func (s *Connection) expectation() *expect.UDP {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.udp
}

package proxy

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	socks5 "github.com/armon/go-socks5"
	lru "github.com/hashicorp/golang-lru/v2"

	"fwproxy/internal/selfaddr"
)

// Deps are the server's collaborators; nil fields get working defaults.
type Deps struct {
	Logger   *slog.Logger
	Observer Observer
	// Credentials, when set, makes username/password (RFC 1929) the only
	// accepted method; when nil, only "no authentication" is accepted.
	Credentials socks5.CredentialStore
	// RuleSet judges each request after its destination is resolved; nil
	// uses Config.Rules.
	RuleSet socks5.RuleSet
	// Resolve turns a destination name into addresses, in the order to try
	// them; nil uses the system resolver (which reads /etc/hosts first).
	Resolve func(ctx context.Context, name string) ([]netip.Addr, error)
	// Dial connects to CONNECT destinations; nil uses net.Dialer.
	Dial func(ctx context.Context, network, address string) (net.Conn, error)
	// Filters is the table of application filters by destination port
	// (nil: none); New takes a copy.
	Filters *Filters
	// Leases provides UDP ASSOCIATE's external ports; nil refuses UDP
	// ASSOCIATE with "command not supported".
	Leases Leaser
	// Self is the set of the proxy's own socket addresses, refused as
	// destinations. The server adds its listeners, BIND listeners and relay
	// sockets while they are open; the daemon adds the metrics listener and
	// the lease manager its lease sockets. nil: the server keeps its own.
	Self *selfaddr.Set
}

// nameCacheSize and nameCacheTTL bound the cache of names that UDP clients
// send to: a media stream sends thousands of datagrams to one name.
const (
	nameCacheSize = 1024
	nameCacheTTL  = time.Minute
)

// cachedName is a resolved name and when to look it up again.
type cachedName struct {
	ip netip.Addr
	// others are the name's further addresses, judged too; shared by every
	// reader of the entry and never changed.
	others  []netip.Addr
	expires time.Time
}

// Server is a SOCKS5 server. Create it with New, run it with Serve, stop it
// with Shutdown or Close.
type Server struct {
	// live holds the settings Reconfigure replaces; read it through cfg()
	// and filter() (reload.go).
	live    atomic.Pointer[liveConfig]
	log     *slog.Logger
	obs     Observer
	methods map[uint8]socks5.Authenticator
	rules   socks5.RuleSet
	resolve func(ctx context.Context, name string) ([]netip.Addr, error)
	dial    func(ctx context.Context, network, address string) (net.Conn, error)
	leases  Leaser
	self    *selfaddr.Set
	udp     *udpCounters
	// expects are the CONNECTs filters expect (expectconnect.go).
	expects *connectExpects
	names   *lru.Cache[string, cachedName]
	// datagramBufs lends UDP ASSOCIATE's client readers their buffers.
	datagramBufs *sync.Pool

	// logins runs username/password authentication (nil without
	// credentials; its entry in methods is nil, as it needs the session's
	// source and deadline).
	logins *logins

	// baseCtx is the parent of every session's context; cancelled by Close.
	baseCtx context.Context
	cancel  context.CancelFunc

	// active counts open sessions against Config.MaxSessions (takeSlot).
	active atomic.Int64
	// sessionsWG counts session goroutines; Close waits for it.
	sessionsWG sync.WaitGroup
	// lastSID is the id of the newest session.
	lastSID atomic.Uint64

	// mu guards listeners, sessions, perClient and closing, and serialises
	// Reconfigure.
	mu        sync.Mutex
	listeners map[net.Listener]func()
	sessions  map[*session]struct{}
	// perClient counts open sessions by client IP (MaxSessionsPerClient);
	// an IP with none has no entry.
	perClient map[netip.Addr]int
	closing   bool

	// sessionLimitLog and clientLimitLog keep a flood of refused
	// connections from writing one warning each.
	sessionLimitLog, clientLimitLog, clientDeniedLog, bindPeerLog warnLimiter
	// drained is closed when closing is set and the last session ends.
	drained chan struct{}
}

// New validates cfg and returns a server that is not yet serving.
func New(cfg Config, deps Deps) (*Server, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	filters := deps.Filters.clone()
	s := &Server{
		log:       deps.Logger,
		obs:       deps.Observer,
		rules:     deps.RuleSet,
		resolve:   deps.Resolve,
		dial:      deps.Dial,
		leases:    deps.Leases,
		self:      deps.Self,
		listeners: make(map[net.Listener]func()),
		sessions:  make(map[*session]struct{}),
		perClient: make(map[netip.Addr]int),
		drained:   make(chan struct{}),
	}
	cfg.Rules = cfg.Rules.normalised()
	s.live.Store(&liveConfig{cfg: cfg, filters: filters})
	if s.self == nil {
		s.self = selfaddr.New()
	}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	if s.obs == nil {
		s.obs = nopObserver{}
	}
	s.udp = newUDPCounters(s.obs)
	s.expects = newConnectExpects(s.obs, time.Now)
	s.datagramBufs = newDatagramBufs()
	// The plain LRU, not the expirable one: that one starts a goroutine
	// nothing can stop. Entries carry their own expiry instead.
	s.names, _ = lru.New[string, cachedName](nameCacheSize)
	if s.rules == nil {
		s.rules = liveRules{s}
	}
	if s.resolve == nil {
		s.resolve = resolveSystem
	}
	if s.dial == nil {
		s.dial = s.dialFromExternal
	}
	if deps.Credentials != nil {
		s.methods = map[uint8]socks5.Authenticator{methodUserPass: nil}
		s.logins = newLogins(cfg, deps.Credentials, s.log, s.obs)
	} else {
		s.methods = map[uint8]socks5.Authenticator{methodNoAuth: socks5.NoAuthAuthenticator{}}
	}
	s.baseCtx, s.cancel = context.WithCancel(context.Background())
	return s, nil
}

// dialFromExternal connects from ExternalIP when it can reach the
// destination (same family, and not loopback towards a non-loopback
// host). A media server sends its UDP data to the address the control
// connection came from (MS-MMSP §3.2.5.5), so that address must be the one
// the lease sockets listen on.
func (s *Server) dialFromExternal(ctx context.Context, network, address string) (net.Conn, error) {
	d := net.Dialer{KeepAlive: KeepAlivePeriod(s.cfg().TCPKeepAlive)}
	ext := s.cfg().ExternalIP
	if dst, err := netip.ParseAddrPort(address); err == nil && ext.IsValid() &&
		ext.Is4() == dst.Addr().Unmap().Is4() && (!ext.IsLoopback() || dst.Addr().IsLoopback()) {
		d.LocalAddr = net.TCPAddrFromAddrPort(netip.AddrPortFrom(ext, 0))
		d.Control = bindNoPort
	}
	return d.DialContext(ctx, network, address)
}

func resolveSystem(ctx context.Context, name string) ([]netip.Addr, error) {
	return net.DefaultResolver.LookupNetIP(ctx, "ip", name)
}

// Serve accepts connections on ln until Shutdown or Close, and always
// returns a non-nil error: ErrServerClosed after those. Serve owns ln and
// closes it when it returns.
func (s *Server) Serve(ln net.Listener) error {
	if !s.trackListener(ln) {
		ln.Close()
		return ErrServerClosed
	}
	defer s.untrackListener(ln)
	var backoff time.Duration
	for {
		conn, err := ln.Accept()
		if err != nil {
			if s.isClosing() {
				return ErrServerClosed
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() || errors.Is(err, syscall.EMFILE) || errors.Is(err, syscall.ENFILE) {
				// Out of descriptors or a transient failure: wait rather
				// than spin, as net/http does.
				backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
				s.log.Warn("accept failed, retrying", "err", err, "retry_in", backoff)
				select {
				case <-time.After(backoff):
				case <-s.baseCtx.Done():
					return ErrServerClosed
				}
				continue
			}
			return fmt.Errorf("proxy: accept: %w", err)
		}
		backoff = 0
		s.admit(conn)
	}
}

// admit starts a session for conn, or closes it when the client is not
// allowed, the session limit is reached or the client holds its share.
func (s *Server) admit(conn net.Conn) {
	client := addrPortOf(conn.RemoteAddr())
	if !s.cfg().Rules.ClientAllowed(client.Addr()) {
		s.obs.ConnectionRejected("client_not_allowed")
		if n, ok := s.clientDeniedLog.allow(time.Now()); ok {
			s.log.Warn("client not allowed", "client", client, "refused_since_last_warning", n)
		}
		conn.Close()
		return
	}
	if !s.takeSlot() {
		s.obs.ConnectionRejected("session_limit")
		if n, ok := s.sessionLimitLog.allow(time.Now()); ok {
			s.log.Warn("session limit reached, connection closed", "client", client, "max_sessions", s.cfg().MaxSessions, "refused_since_last_warning", n)
		}
		conn.Close()
		return
	}
	sess := newSession(s, conn, client)
	switch s.trackSession(sess) {
	case trackedOK:
		s.sessionsWG.Add(1)
		go sess.run()
		return
	case trackedClientLimit:
		s.obs.ConnectionRejected("client_session_limit")
		if n, ok := s.clientLimitLog.allow(time.Now()); ok {
			s.log.Warn("client session limit reached, connection closed", "client", client, "max_sessions_per_client", s.cfg().MaxSessionsPerClient, "refused_since_last_warning", n)
		}
	}
	// The session never ran: end its context, which would otherwise stay
	// registered with the server's for the server's whole life.
	sess.cancel()
	s.releaseSlot()
	conn.Close()
}

// Shutdown stops accepting, closes sessions that are still in their
// handshake, and waits for established sessions to finish until ctx is
// done; then it closes what is left. It returns ctx's error when it had to
// cut sessions short.
func (s *Server) Shutdown(ctx context.Context) error {
	s.stopAccepting((*session).closeIfHandshaking)
	var err error
	select {
	case <-s.drained:
	case <-ctx.Done():
		err = fmt.Errorf("proxy: shutdown: %w", ctx.Err())
		s.closeAll(endedByDrainTimeout)
	}
	s.Close()
	return err
}

// Close stops accepting, ends every session at once and waits for their
// goroutines. It is safe to call more than once.
func (s *Server) Close() error {
	s.closeAll(endedByShutdown)
	return nil
}

// closeAll is Close, with cause as the ended sessions' ended_by.
func (s *Server) closeAll(cause string) {
	s.stopAccepting(func(ss *session) { ss.abortBy(cause) })
	s.cancel()
	s.sessionsWG.Wait()
}

// stopAccepting marks the server closing, closes its listeners and applies
// end to every session. drained closes when the last session is gone.
func (s *Server) stopAccepting(end func(*session)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	first := !s.closing
	s.closing = true
	for ln := range s.listeners {
		ln.Close()
	}
	for sess := range s.sessions {
		end(sess)
	}
	if first && len(s.sessions) == 0 {
		close(s.drained)
	}
}

func (s *Server) isClosing() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.closing
}

// trackListener records ln and makes its address one of the proxy's own,
// refused as a destination while it is open.
func (s *Server) trackListener(ln net.Listener) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closing {
		return false
	}
	s.listeners[ln] = s.self.AddAddr(ln.Addr())
	return true
}

func (s *Server) untrackListener(ln net.Listener) {
	s.mu.Lock()
	remove := s.listeners[ln]
	delete(s.listeners, ln)
	s.mu.Unlock()
	ln.Close()
	if remove != nil {
		remove()
	}
}

type trackResult uint8

const (
	trackedOK trackResult = iota
	trackedClosing
	trackedClientLimit
)

// trackSession records sess, unless the server is closing or the client
// already holds MaxSessionsPerClient sessions.
func (s *Server) trackSession(sess *session) trackResult {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closing {
		return trackedClosing
	}
	ip := sess.client.Addr()
	if limit := s.cfg().MaxSessionsPerClient; limit > 0 && s.perClient[ip] >= limit {
		return trackedClientLimit
	}
	s.perClient[ip]++
	s.sessions[sess] = struct{}{}
	return trackedOK
}

func (s *Server) untrackSession(sess *session) {
	s.mu.Lock()
	delete(s.sessions, sess)
	if ip := sess.client.Addr(); s.perClient[ip] <= 1 {
		delete(s.perClient, ip)
	} else {
		s.perClient[ip]--
	}
	if s.closing && len(s.sessions) == 0 {
		select {
		case <-s.drained:
		default:
			close(s.drained)
		}
	}
	s.mu.Unlock()
	s.releaseSlot()
}

// warnInterval is how often a limit that refuses connections under a flood
// logs its warning; in between it only counts.
const warnInterval = 10 * time.Second

// warnLimiter lets a warning through at most once per warnInterval and
// counts what it held back, so a flood of refusals writes a few lines that
// say how many there were, not one line each.
type warnLimiter struct {
	mu         sync.Mutex
	last       time.Time
	suppressed int
}

// allow reports whether to log now and how many warnings were held back
// since the last one that was logged.
func (w *warnLimiter) allow(now time.Time) (suppressed int, ok bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.last.IsZero() && now.Sub(w.last) < warnInterval {
		w.suppressed++
		return 0, false
	}
	n := w.suppressed
	w.last, w.suppressed = now, 0
	return n, true
}

// addrPortOf returns the address of a TCP or UDP net.Addr, unmapped.
func addrPortOf(a net.Addr) netip.AddrPort {
	var ap netip.AddrPort
	switch a := a.(type) {
	case *net.TCPAddr:
		ap = a.AddrPort()
	case *net.UDPAddr:
		ap = a.AddrPort()
	}
	return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
}

package proxy

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"syscall"
	"time"

	socks5 "github.com/armon/go-socks5"
	lru "github.com/hashicorp/golang-lru/v2"
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
	// Filters maps destination ports to application filters.
	Filters map[uint16]Filter
	// Leases provides UDP ASSOCIATE's external ports; nil refuses UDP
	// ASSOCIATE with "command not supported".
	Leases Leaser
}

// nameCacheSize and nameCacheTTL bound the cache of names that UDP clients
// send to: a media stream sends thousands of datagrams to one name.
const (
	nameCacheSize = 1024
	nameCacheTTL  = time.Minute
)

// cachedName is a resolved name and when to look it up again.
type cachedName struct {
	ip      netip.Addr
	expires time.Time
}

// Server is a SOCKS5 server. Create it with New, run it with Serve, stop it
// with Shutdown or Close.
type Server struct {
	cfg     Config
	log     *slog.Logger
	obs     Observer
	methods map[uint8]socks5.Authenticator
	rules   socks5.RuleSet
	resolve func(ctx context.Context, name string) ([]netip.Addr, error)
	dial    func(ctx context.Context, network, address string) (net.Conn, error)
	filters map[uint16]Filter
	leases  Leaser
	udp     *udpCounters
	names   *lru.Cache[string, cachedName]
	// datagramBufs lends UDP ASSOCIATE's client readers their buffers.
	datagramBufs *sync.Pool

	// baseCtx is the parent of every session's context; cancelled by Close.
	baseCtx context.Context
	cancel  context.CancelFunc

	// slots holds one token per open session (Config.MaxSessions).
	slots chan struct{}
	// sessionsWG counts session goroutines; Close waits for it.
	sessionsWG sync.WaitGroup

	// mu guards listeners, sessions and closing.
	mu        sync.Mutex
	listeners map[net.Listener]struct{}
	sessions  map[*session]struct{}
	closing   bool
	// drained is closed when closing is set and the last session ends.
	drained chan struct{}
}

// New validates cfg and returns a server that is not yet serving.
func New(cfg Config, deps Deps) (*Server, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	s := &Server{
		cfg:       cfg,
		log:       deps.Logger,
		obs:       deps.Observer,
		rules:     deps.RuleSet,
		resolve:   deps.Resolve,
		dial:      deps.Dial,
		filters:   make(map[uint16]Filter, len(deps.Filters)),
		leases:    deps.Leases,
		slots:     make(chan struct{}, cfg.MaxSessions),
		listeners: make(map[net.Listener]struct{}),
		sessions:  make(map[*session]struct{}),
		drained:   make(chan struct{}),
	}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	if s.obs == nil {
		s.obs = nopObserver{}
	}
	s.udp = newUDPCounters(s.obs)
	s.datagramBufs = newDatagramBufs()
	// The plain LRU, not the expirable one: that one starts a goroutine
	// nothing can stop. Entries carry their own expiry instead.
	s.names, _ = lru.New[string, cachedName](nameCacheSize)
	if s.rules == nil {
		s.rules = cfg.Rules
	}
	if s.resolve == nil {
		s.resolve = resolveSystem
	}
	if s.dial == nil {
		s.dial = s.dialFromExternal
	}
	if deps.Credentials != nil {
		s.methods = map[uint8]socks5.Authenticator{methodUserPass: socks5.UserPassAuthenticator{Credentials: deps.Credentials}}
	} else {
		s.methods = map[uint8]socks5.Authenticator{methodNoAuth: socks5.NoAuthAuthenticator{}}
	}
	for port, f := range deps.Filters {
		if f == nil || port == 0 {
			return nil, fmt.Errorf("proxy: filter for port %d: missing filter or port", port)
		}
		s.filters[port] = f
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
	d := net.Dialer{KeepAlive: KeepAlivePeriod(s.cfg.TCPKeepAlive)}
	ext := s.cfg.ExternalIP
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
// allowed or the session limit is reached.
func (s *Server) admit(conn net.Conn) {
	client := addrPortOf(conn.RemoteAddr())
	if !s.cfg.Rules.ClientAllowed(client.Addr()) {
		s.obs.ConnectionRejected("client_not_allowed")
		s.log.Warn("client not allowed", "client", client)
		conn.Close()
		return
	}
	select {
	case s.slots <- struct{}{}:
	default:
		s.obs.ConnectionRejected("session_limit")
		s.log.Warn("session limit reached, connection closed", "client", client, "max_sessions", s.cfg.MaxSessions)
		conn.Close()
		return
	}
	sess := newSession(s, conn, client)
	if !s.trackSession(sess) {
		<-s.slots
		conn.Close()
		return
	}
	s.sessionsWG.Add(1)
	go sess.run()
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
	}
	s.Close()
	return err
}

// Close stops accepting, ends every session at once and waits for their
// goroutines. It is safe to call more than once.
func (s *Server) Close() error {
	s.stopAccepting((*session).abort)
	s.cancel()
	s.sessionsWG.Wait()
	return nil
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

func (s *Server) trackListener(ln net.Listener) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closing {
		return false
	}
	s.listeners[ln] = struct{}{}
	return true
}

func (s *Server) untrackListener(ln net.Listener) {
	s.mu.Lock()
	delete(s.listeners, ln)
	s.mu.Unlock()
	ln.Close()
}

func (s *Server) trackSession(sess *session) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closing {
		return false
	}
	s.sessions[sess] = struct{}{}
	return true
}

func (s *Server) untrackSession(sess *session) {
	s.mu.Lock()
	delete(s.sessions, sess)
	if s.closing && len(s.sessions) == 0 {
		select {
		case <-s.drained:
		default:
			close(s.drained)
		}
	}
	s.mu.Unlock()
	<-s.slots
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

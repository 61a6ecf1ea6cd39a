package rtspfilter

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
	"fwproxy/proxy"
)

// Leaser hands out lease groups; *leases.Manager is one.
type Leaser = expect.GroupLeaser

// Config holds the filter's settings.
type Config struct {
	// ExternalIP is what a SETUP's destination parameter is rewritten
	// to. Unset: the proxy's local address on its connection to the
	// server, where the lease sockets are in the usual setup.
	ExternalIP netip.Addr
	// AcquireTimeout bounds getting the lease group of one transport
	// spec; the SETUP waits meanwhile. Must be > 0.
	AcquireTimeout time.Duration
	// MaxGroups bounds the lease groups one control connection holds
	// (one per UDP transport offered or set up: an audio and a video
	// track hold two). Must be > 0.
	MaxGroups int
	// MaxSessions bounds the RTSP sessions holding leases on one control
	// connection. Must be > 0.
	MaxSessions int
}

// DefaultConfig returns working settings.
func DefaultConfig() Config {
	return Config{AcquireTimeout: 5 * time.Second, MaxGroups: 16, MaxSessions: 8}
}

// Validate reports a setting that cannot work.
func (c Config) Validate() error {
	switch {
	case c.AcquireTimeout <= 0:
		return fmt.Errorf("rtspfilter config: acquire timeout %v must be > 0", c.AcquireTimeout)
	case c.MaxGroups <= 0:
		return fmt.Errorf("rtspfilter config: max groups %d must be > 0", c.MaxGroups)
	case c.MaxSessions <= 0:
		return fmt.Errorf("rtspfilter config: max sessions %d must be > 0", c.MaxSessions)
	case c.ExternalIP.IsValid() && c.ExternalIP.IsUnspecified():
		return fmt.Errorf("rtspfilter config: external IP %v must be a real address", c.ExternalIP)
	}
	return nil
}

// Deps are the filter's collaborators. Leases is required.
type Deps struct {
	Leases   Leaser
	Logger   *slog.Logger
	Observer Observer
}

// Filter is the RTSP application filter: one per proxy, one Connection
// per control connection.
type Filter struct {
	cfg    Config
	leases Leaser
	log    *slog.Logger
	obs    Observer
}

var (
	_ proxy.Filter        = (*Filter)(nil)
	_ proxy.FilterSession = (*Connection)(nil)
)

// New validates cfg and returns the filter.
func New(cfg Config, deps Deps) (*Filter, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if deps.Leases == nil {
		return nil, errors.New("rtspfilter: no lease manager")
	}
	f := &Filter{cfg: cfg, leases: deps.Leases, log: deps.Logger, obs: deps.Observer}
	if f.log == nil {
		f.log = slog.New(slog.DiscardHandler)
	}
	if f.obs == nil {
		f.obs = NopObserver{}
	}
	return f, nil
}

// Name is the filter's name in the proxy's logs and registration errors.
func (f *Filter) Name() string { return "rtsp" }

// NewSession starts filtering one control connection; it never fails.
func (f *Filter) NewSession(_ context.Context, info proxy.SessionInfo) (proxy.FilterSession, error) {
	return f.NewConnection(info), nil
}

// NewConnection is NewSession with its concrete type.
func (f *Filter) NewConnection(info proxy.SessionInfo) *Connection {
	c := &Connection{
		f: f, conn: info, log: f.log,
		sessions:      make(map[string][]streamGroup),
		clientReady:   make(chan struct{}),
		answered:      make(chan struct{}, 1),
		serverStopped: make(chan struct{}),
	}
	if info.Session != 0 {
		c.log = f.log.With("sid", info.Session)
	}
	f.obs.ConnectionsChanged(1)
	return c
}

// Connection filters one control connection. ClientToServer and
// ServerToClient run at once; Close runs after both returned.
type Connection struct {
	f    *Filter
	conn proxy.SessionInfo
	log  *slog.Logger

	// mu guards everything below up to toClient.
	mu sync.Mutex
	// pending are the SETUPs forwarded and not yet answered, oldest
	// first.
	pending []*pendingSetup
	// sessions are the answered SETUPs' groups, by RTSP session id ("":
	// a server that sent none).
	sessions map[string][]streamGroup
	// groups counts the groups held, pending ones included, against
	// MaxGroups; reserving is counted before the lease is taken.
	groups int
	// outstanding counts requests forwarded to the server and not yet
	// answered, so that an answer of the proxy's own goes to the client
	// in its place in the pipeline.
	outstanding int
	// serverRaw: the server direction relays untouched, so responses
	// are no longer counted.
	serverRaw bool
	closed    bool

	// refusals counts the SETUPs the proxy answered itself; only the
	// first is logged at warning level (the rest at debug, all counted),
	// so a client that loops on a refused SETUP cannot flood the log.
	// Only the client-to-server goroutine touches it.
	refusals int

	// toClient is the client's writer, set when ServerToClient starts
	// (clientReady closed); wmu serialises writes to it from both
	// directions, whole messages at a time.
	toClient      io.Writer
	wmu           sync.Mutex
	clientReady   chan struct{}
	answered      chan struct{} // poked after each response
	serverStopped chan struct{} // closed when ServerToClient returns
}

// Close releases every group the connection holds; they linger, so the
// client's next control connection can reclaim them. Safe to call more
// than once.
func (c *Connection) Close() error {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return nil
	}
	c.closed = true
	pending, sessions := c.pending, c.sessions
	c.pending, c.sessions = nil, nil
	c.mu.Unlock()
	for _, p := range pending {
		p.release()
		c.f.obs.Setup(p.mode, OutcomeUnanswered)
	}
	for _, gs := range sessions {
		for _, sg := range gs {
			sg.group.Release()
		}
	}
	c.f.obs.ConnectionsChanged(-1)
	return nil
}

// externalIP is what destination parameters become.
func (c *Connection) externalIP() netip.Addr {
	if ip := c.f.cfg.ExternalIP; ip.IsValid() {
		return ip
	}
	return c.conn.Local.Addr().Unmap()
}

package metrics

import (
	"context"
	"log/slog"
	"net/http"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// maxScrapesInFlight bounds concurrent scrapes; a scrape is cheap, so more
// than a few at once means something is hammering the endpoint.
const maxScrapesInFlight = 4

// ServerConfig bounds what one connection to the metrics listener may hold:
// without these, a client that opens connections and never finishes (or
// never closes) a request keeps a descriptor and a goroutine each, for ever.
type ServerConfig struct {
	// ReadHeaderTimeout limits reading a request's headers (slowloris).
	ReadHeaderTimeout time.Duration
	// ReadTimeout limits reading a whole request.
	ReadTimeout time.Duration
	// WriteTimeout limits the time from the end of the request headers to
	// the end of the response; a scrape must fit in it.
	WriteTimeout time.Duration
	// IdleTimeout closes a keep-alive connection that waits this long for
	// its next request.
	IdleTimeout time.Duration
	// MaxHeaderBytes caps a request's headers (net/http adds 4 KiB of slack).
	MaxHeaderBytes int
}

// DefaultServerConfig returns limits generous for Prometheus (which scrapes
// every few seconds on one keep-alive connection) and tight for anyone else.
func DefaultServerConfig() ServerConfig {
	return ServerConfig{
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       10 * time.Second,
		WriteTimeout:      30 * time.Second,
		IdleTimeout:       90 * time.Second,
		MaxHeaderBytes:    8 << 10,
	}
}

// NewServer returns the metrics listener's server for h with cfg's limits.
// Every limit must be positive: a zero would mean "none" to net/http.
func NewServer(h http.Handler, cfg ServerConfig, log *slog.Logger) *http.Server {
	return &http.Server{
		Handler:           h,
		ReadHeaderTimeout: cfg.ReadHeaderTimeout,
		ReadTimeout:       cfg.ReadTimeout,
		WriteTimeout:      cfg.WriteTimeout,
		IdleTimeout:       cfg.IdleTimeout,
		MaxHeaderBytes:    cfg.MaxHeaderBytes,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
}

// Health is the daemon's lifecycle as /healthz and /readyz report it. The
// zero value is "starting": alive but not ready.
type Health struct {
	ready    atomic.Bool
	draining atomic.Bool
}

// SetReady marks the listeners up: /readyz answers 200.
func (h *Health) SetReady() { h.ready.Store(true) }

// SetDraining marks the start of shutdown: from then on /healthz and
// /readyz answer 503 "draining", so a load balancer stops sending new
// clients while the established sessions finish.
func (h *Health) SetDraining() { h.draining.Store(true) }

func (h *Health) healthz(w http.ResponseWriter, _ *http.Request) {
	if h.draining.Load() {
		plain(w, http.StatusServiceUnavailable, "draining\n")
		return
	}
	plain(w, http.StatusOK, "ok\n")
}

func (h *Health) readyz(w http.ResponseWriter, _ *http.Request) {
	switch {
	case h.draining.Load():
		plain(w, http.StatusServiceUnavailable, "draining\n")
	case !h.ready.Load():
		plain(w, http.StatusServiceUnavailable, "starting\n")
	default:
		plain(w, http.StatusOK, "ready\n")
	}
}

func plain(w http.ResponseWriter, status int, body string) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.WriteHeader(status)
	w.Write([]byte(body))
}

// HandlerOptions are Handler's optional parts.
type HandlerOptions struct {
	// Log receives the scrape errors; nil discards them.
	Log *slog.Logger
	// Health answers /healthz and /readyz; nil is a Health already ready.
	Health *Health
	// Users, when set, requires HTTP basic authentication on /metrics and
	// every Extra route. /healthz and /readyz stay open: they say nothing
	// but the daemon's state, and the probes that read them (systemd,
	// load balancers, orchestrators) seldom carry credentials.
	Users Credentials
	// Extra are more routes (for example /debug/leases), GET only.
	Extra map[string]http.Handler
}

// Handler serves /metrics from g, /healthz, /readyz, and opts.Extra.
func Handler(g prometheus.Gatherer, opts HandlerOptions) http.Handler {
	log := opts.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	health := opts.Health
	if health == nil {
		health = &Health{}
		health.SetReady()
	}
	guard := func(h http.Handler) http.Handler { return h }
	if opts.Users != nil {
		guard = newBasicAuth(opts.Users, log).wrap
	}
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", guard(promhttp.HandlerFor(g, promhttp.HandlerOpts{
		ErrorLog:            slog.NewLogLogger(log.Handler(), slog.LevelError),
		ErrorHandling:       promhttp.ContinueOnError,
		MaxRequestsInFlight: maxScrapesInFlight,
	})))
	mux.HandleFunc("GET /healthz", health.healthz)
	mux.HandleFunc("GET /readyz", health.readyz)
	for path, h := range opts.Extra {
		mux.Handle("GET "+path, guard(h))
	}
	return mux
}

// Credentials checks a user name and password; *proxy.Users is one.
type Credentials interface {
	Valid(user, password string) bool
}

// maxConcurrentAuth bounds the bcrypt checks running at once on the
// metrics listener, so that a flood of wrong passwords costs at most this
// many cores, whatever the number of connections.
const maxConcurrentAuth = 1

// basicAuth is HTTP basic authentication (RFC 7617) against Credentials.
type basicAuth struct {
	users Credentials
	log   *slog.Logger
	// slots holds one token per bcrypt check in progress.
	slots chan struct{}
}

func newBasicAuth(users Credentials, log *slog.Logger) *basicAuth {
	return &basicAuth{users: users, log: log, slots: make(chan struct{}, maxConcurrentAuth)}
}

func (a *basicAuth) wrap(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		user, password, ok := r.BasicAuth()
		if ok && a.valid(r.Context(), user, password) {
			next.ServeHTTP(w, r)
			return
		}
		if ok {
			a.log.Warn("metrics: authentication failed", "source", r.RemoteAddr, "user", user)
		}
		w.Header().Set("WWW-Authenticate", `Basic realm="fwproxy metrics", charset="UTF-8"`)
		plain(w, http.StatusUnauthorized, "unauthorized\n")
	})
}

// valid runs the check in a slot; false when ctx ends first.
func (a *basicAuth) valid(ctx context.Context, user, password string) bool {
	select {
	case a.slots <- struct{}{}:
	case <-ctx.Done():
		return false
	}
	defer func() { <-a.slots }()
	return a.users.Valid(user, password)
}

// Command fwproxy is the SOCKS5 firewall proxy daemon for media clients.
//
// It reads an optional YAML file (-config), applies flags over it, and
// serves SOCKS5 on -listen and Prometheus metrics on -metrics-listen until
// SIGINT or SIGTERM, when it drains sessions for -drain-timeout and exits 0.
// SIGHUP reloads the configuration file (reload.go).
package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.yaml.in/yaml/v3"

	"fwproxy/internal/selfaddr"
	"fwproxy/leases"
	"fwproxy/metrics"
	"fwproxy/mmsfilter"
	"fwproxy/proxy"
	"fwproxy/rtspfilter"
)

func main() {
	// Signals first, before any slow start-up work (the users file's
	// bcrypt): a SIGHUP that arrives before its handler would kill the
	// daemon. One that arrives early waits in the channel and is served as
	// a reload once the daemon runs.
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], hup, os.Stdin, os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// run is the whole daemon; it returns the exit code: 0 after a clean stop,
// 1 when the configuration is invalid or the daemon could not start or
// failed, 2 for bad usage. Each value on hup reloads the configuration.
func run(ctx context.Context, args []string, hup <-chan os.Signal, stdin io.Reader, stdout, stderr io.Writer) int {
	inv, err := parseArgs(args, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		fmt.Fprintln(stderr, "fwproxy:", err)
		return 2
	}
	switch inv.action {
	case actionVersion:
		b := buildInfo()
		fmt.Fprintf(stdout, "fwproxy %s (commit %s, %s)\n", b.Version, b.Commit, b.GoVersion)
		return 0
	case actionHashPassword:
		return hashPassword(inv.user, stdin, stdout, stderr)
	}

	s, warns, errs := inv.settings()
	if len(errs) > 0 {
		for _, e := range errs {
			fmt.Fprintln(stderr, e)
		}
		fmt.Fprintf(stderr, "fwproxy: the configuration has %d %s\n", len(errs), plural(len(errs), "error"))
		return 1
	}
	if inv.action == actionPrintConfig || inv.action == actionCheckConfig {
		for _, w := range warns {
			fmt.Fprintln(stderr, "warning:", w)
		}
		out, err := yaml.Marshal(s.cfg)
		if err != nil {
			fmt.Fprintln(stderr, "fwproxy: print config:", err)
			return 1
		}
		stdout.Write(out)
		if inv.action == actionCheckConfig {
			fmt.Fprintln(stderr, "fwproxy: the configuration is valid")
		}
		return 0
	}

	level := new(slog.LevelVar)
	level.Set(s.level)
	log, err := newLogger(stderr, s.cfg.LogFormat, level)
	if err != nil {
		fmt.Fprintln(stderr, "fwproxy:", err)
		return 1
	}
	for _, w := range warns {
		log.Warn(w.Error())
	}
	if err := serve(ctx, inv, s, log, level, hup); err != nil {
		log.Error("fwproxy stopped", "err", err)
		return 1
	}
	return 0
}

// settings loads and checks the configuration the invocation names.
func (inv invocation) settings() (settings, configErrors, configErrors) {
	cfg, origin, errs := inv.load()
	s, rerrs, warns := resolve(cfg, origin)
	errs = append(errs, rerrs...)
	errs.sort()
	warns.sort()
	return s, warns, errs
}

func plural(n int, word string) string {
	if n == 1 {
		return word
	}
	return word + "s"
}

// serve runs the proxy and the metrics endpoint until ctx is done.
func serve(ctx context.Context, inv invocation, s settings, log *slog.Logger, level *slog.LevelVar, hup <-chan os.Signal) error {
	reg := metrics.NewRegistry(buildInfo())
	d := &daemon{inv: inv, cur: s, log: log, level: level, reloads: metrics.NewConfigReloads(reg, time.Now())}
	c := &components{reg: reg}
	defer c.close()
	if err := c.build(d, s); err != nil {
		return err
	}
	return c.run(ctx, d, s, hup)
}

// components are what the daemon builds before it listens; close releases
// them in the reverse order.
type components struct {
	reg  *prometheus.Registry
	self *selfaddr.Set
	obs  proxy.Observer
	lm   *leases.Manager
	srv  *proxy.Server
}

// build makes the proxy and what it depends on: the metrics, the lease
// manager, the MMS and RTSP filters and the users.
func (c *components) build(d *daemon, s settings) error {
	log, reg := d.log, c.reg
	// self holds the addresses of the proxy's own sockets, which are never
	// destinations: the SOCKS listener (the server adds it), BIND and relay
	// sockets, lease sockets, and the metrics listener (added below).
	self := selfaddr.New()
	deps := proxy.Deps{Logger: log, Self: self}
	if s.users != nil {
		d.users = proxy.NewReloadableUsers(s.users)
		deps.Credentials = d.users
	}

	deps.Observer = metrics.NewSocks(reg)
	leaseObs := metrics.NewLeases(reg, nil)
	lm, err := leases.New(s.leases, leases.Deps{Logger: log.With("component", "leases"), Observer: leaseObs, Self: self})
	if err != nil {
		return err
	}
	c.lm = lm
	reg.MustRegister(metrics.LeaseTable(lm.Stats))
	d.setLimits = metrics.NewLimits(reg, limitsOf(s))
	deps.Leases = lm
	// The filters exist even when no port uses them, so that a reload
	// can turn them on.
	mf, err := mmsfilter.New(s.mms, mmsfilter.Deps{Leases: lm, Logger: log.With("component", "mms"), Observer: metrics.NewMMS(reg)})
	if err != nil {
		return err
	}
	rf, err := rtspfilter.New(s.rtsp, rtspfilter.Deps{Leases: lm, Logger: log.With("component", "rtsp"), Observer: metrics.NewRTSP(reg)})
	if err != nil {
		return err
	}
	d.filters = []configuredFilter{
		{filter: mf, key: "mms_ports", ports: func(c Config) []uint16 { return c.MMSPorts }},
		{filter: rf, key: "rtsp_ports", ports: func(c Config) []uint16 { return c.RTSPPorts }},
	}
	if deps.Filters, err = d.filterTable(s.cfg); err != nil {
		return err
	}
	srv, err := proxy.New(s.proxy, deps)
	if err != nil {
		return err
	}
	c.srv = srv
	d.srv = srv
	c.self, c.obs = self, deps.Observer
	return nil
}

func (c *components) close() {
	if c.srv != nil {
		c.srv.Close()
	}
	if c.lm != nil {
		c.lm.Close()
	}
}

// run starts the listeners, serves until ctx is done or the proxy fails,
// reloading on each value on hup, and shuts down.
func (c *components) run(ctx context.Context, d *daemon, s settings, hup <-chan os.Signal) error {
	ln, err := listenSocks(ctx, s, c.obs, d.log)
	if err != nil {
		return err
	}
	health := &metrics.Health{}
	ep, err := startMetrics(s, c.reg, c.lm, health, d.log)
	if err != nil {
		ln.Close()
		return err
	}
	if ep.ln != nil {
		defer c.self.AddAddr(ep.ln.Addr())()
	}

	serveErr := make(chan error, 1)
	go func() { serveErr <- c.srv.Serve(ln) }()
	b := buildInfo()
	health.SetReady()
	d.log.Info("listening", "socks", ln.Addr().String(), "metrics", ep.addr,
		"auth", authName(d.users), "max_sessions", s.proxy.MaxSessions,
		"external_ip", s.leases.ListenIP.String(), "udp_ports", s.cfg.UDPPorts, "relay_ports", s.proxy.RelayPorts.String(), "lease_linger", s.leases.Linger,
		"mms_ports", fmt.Sprint(s.cfg.MMSPorts), "rtsp_ports", fmt.Sprint(s.cfg.RTSPPorts), "version", b.Version, "commit", b.Commit)

	runErr := d.loop(ctx, serveErr, hup, health)
	c.shutdown(d, ep, serveErr, runErr)
	if errors.Is(runErr, proxy.ErrServerClosed) {
		return nil
	}
	return runErr
}

// listenSocks opens the SOCKS listener, behind the PROXY protocol reader
// when balancers are configured.
func listenSocks(ctx context.Context, s settings, obs proxy.Observer, log *slog.Logger) (net.Listener, error) {
	lc := net.ListenConfig{KeepAlive: proxy.KeepAlivePeriod(s.proxy.TCPKeepAlive)}
	ln, err := lc.Listen(ctx, "tcp", s.cfg.Listen)
	if err != nil {
		return nil, fmt.Errorf("listen socks: %w", err)
	}
	if len(s.proxyProto.From) > 0 {
		if ln, err = proxy.NewProxyProtoListener(ln, s.proxyProto, obs, log.With("component", "proxy_protocol")); err != nil {
			return nil, err
		}
	}
	return ln, nil
}

// metricsEndpoint is the running metrics server, or none (srv nil, done
// closed, addr "disabled").
type metricsEndpoint struct {
	srv  *http.Server
	ln   net.Listener
	addr string
	done chan struct{} // closed when Serve returned
}

// startMetrics serves the metrics endpoint when one is configured.
func startMetrics(s settings, reg *prometheus.Registry, lm *leases.Manager, health *metrics.Health, log *slog.Logger) (*metricsEndpoint, error) {
	ep := &metricsEndpoint{addr: "disabled", done: make(chan struct{})}
	if s.cfg.MetricsListen == "" {
		close(ep.done)
		return ep, nil
	}
	mln, err := net.Listen("tcp", s.cfg.MetricsListen)
	if err != nil {
		return nil, fmt.Errorf("listen metrics: %w", err)
	}
	opts := metrics.HandlerOptions{Log: log, Health: health,
		Extra: map[string]http.Handler{"/debug/leases": metrics.LeasesHandler(lm.Snapshot)}}
	if s.cfg.MetricsUsers != "" {
		users, err := proxy.LoadUsers(s.cfg.MetricsUsers)
		if err != nil {
			mln.Close()
			return nil, fmt.Errorf("metrics_users: %w", err)
		}
		opts.Users = users
	}
	ep.ln, ep.addr = mln, mln.Addr().String()
	ep.srv = metrics.NewServer(metrics.Handler(reg, opts), metrics.DefaultServerConfig(), log)
	go ep.serve()
	return ep, nil
}

func (ep *metricsEndpoint) serve() {
	defer close(ep.done)
	ep.srv.Serve(ep.ln)
}

// loop waits for the end, reloading on each value on hup. It returns the
// proxy's error when Serve ended on its own, nil when ctx ended.
func (d *daemon) loop(ctx context.Context, serveErr <-chan error, hup <-chan os.Signal, health *metrics.Health) error {
	for {
		select {
		case <-ctx.Done():
			health.SetDraining()
			d.log.Info("shutting down", "drain_timeout", d.cur.cfg.DrainTimeout)
			return nil
		case err := <-serveErr:
			health.SetDraining()
			return err
		case <-hup:
			d.reload()
		}
	}
}

// shutdown drains the sessions for the drain timeout, then closes what
// is left, and stops the metrics endpoint. runErr is loop's result: when
// nil, Serve has yet to return.
func (c *components) shutdown(d *daemon, ep *metricsEndpoint, serveErr <-chan error, runErr error) {
	drainCtx, cancel := context.WithTimeout(context.Background(), d.cur.cfg.DrainTimeout)
	defer cancel()
	if err := c.srv.Shutdown(drainCtx); err != nil {
		d.log.Warn("drain cut short, sessions closed", "err", err)
	}
	if ep.srv != nil {
		ep.srv.Shutdown(drainCtx)
		ep.srv.Close()
	}
	<-ep.done
	if runErr == nil {
		<-serveErr
	}
	d.log.Info("stopped")
}

func authName(u *proxy.ReloadableUsers) string {
	if u != nil {
		return "username_password"
	}
	return "none"
}

// hashPassword prints a users-file line for user with the password read
// from the first line of stdin.
func hashPassword(user string, stdin io.Reader, stdout, stderr io.Writer) int {
	line, err := bufio.NewReader(stdin).ReadString('\n')
	if err != nil && !errors.Is(err, io.EOF) {
		fmt.Fprintln(stderr, "fwproxy: read password:", err)
		return 1
	}
	entry, err := proxy.HashPassword(user, []byte(strings.TrimRight(line, "\r\n")))
	if err != nil {
		fmt.Fprintln(stderr, "fwproxy:", err)
		return 1
	}
	fmt.Fprintln(stdout, entry)
	return 0
}

// limitsOf is what the fwproxy_limit_* gauges export of s.
func limitsOf(s settings) metrics.Limits {
	p, l := s.proxy, s.leases
	return metrics.Limits{
		MaxSessions: p.MaxSessions, MaxLeases: l.MaxLeases, MaxLeasesPerClient: l.MaxLeasesPerClient,
		MaxBufferedDatagrams: l.MaxBufferedDatagrams, MaxBufferedBytes: l.MaxBufferedBytes,
		MaxBufferedBytesTotal: l.MaxBufferedBytesTotal, PortRangeSize: int(l.PortMax) - int(l.PortMin) + 1,
	}
}

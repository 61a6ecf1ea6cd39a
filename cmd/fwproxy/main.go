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

	"go.yaml.in/yaml/v3"

	"fwproxy/internal/selfaddr"
	"fwproxy/leases"
	"fwproxy/metrics"
	"fwproxy/mmsfilter"
	"fwproxy/proxy"
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
	defer lm.Close()
	reg.MustRegister(metrics.LeaseTable(lm.Stats))
	d.setLimits = metrics.NewLimits(reg, limitsOf(s))
	deps.Leases = lm
	// The MMS filter exists even when no port uses it, so that a reload
	// can turn it on.
	mf, err := mmsfilter.New(s.mms, mmsfilter.Deps{Leases: lm, Logger: log.With("component", "mms"), Observer: metrics.NewMMS(reg)})
	if err != nil {
		return err
	}
	d.filters = []configuredFilter{{filter: mf, key: "mms_ports", ports: func(c Config) []uint16 { return c.MMSPorts }}}
	if deps.Filters, err = d.filterTable(s.cfg); err != nil {
		return err
	}
	srv, err := proxy.New(s.proxy, deps)
	if err != nil {
		return err
	}
	defer srv.Close()
	d.srv = srv

	lc := net.ListenConfig{KeepAlive: proxy.KeepAlivePeriod(s.proxy.TCPKeepAlive)}
	ln, err := lc.Listen(ctx, "tcp", s.cfg.Listen)
	if err != nil {
		return fmt.Errorf("listen socks: %w", err)
	}
	if len(s.proxyProto.From) > 0 {
		if ln, err = proxy.NewProxyProtoListener(ln, s.proxyProto, deps.Observer, log.With("component", "proxy_protocol")); err != nil {
			return err
		}
	}
	var metricsSrv *http.Server
	health := &metrics.Health{}
	metricsDone := make(chan struct{}) // closed when the metrics server's Serve returned
	metricsAddr := "disabled"
	if s.cfg.MetricsListen != "" {
		mln, err := net.Listen("tcp", s.cfg.MetricsListen)
		if err != nil {
			ln.Close()
			return fmt.Errorf("listen metrics: %w", err)
		}
		metricsAddr = mln.Addr().String()
		defer self.AddAddr(mln.Addr())()
		opts := metrics.HandlerOptions{Log: log, Health: health,
			Extra: map[string]http.Handler{"/debug/leases": metrics.LeasesHandler(lm.Snapshot)}}
		if s.cfg.MetricsUsers != "" {
			users, err := proxy.LoadUsers(s.cfg.MetricsUsers)
			if err != nil {
				ln.Close()
				mln.Close()
				return fmt.Errorf("metrics_users: %w", err)
			}
			opts.Users = users
		}
		metricsSrv = metrics.NewServer(metrics.Handler(reg, opts), metrics.DefaultServerConfig(), log)
		go func() {
			defer close(metricsDone)
			metricsSrv.Serve(mln)
		}()
	} else {
		close(metricsDone)
	}

	serveErr := make(chan error, 1)
	go func() { serveErr <- srv.Serve(ln) }()
	b := buildInfo()
	health.SetReady()
	log.Info("listening", "socks", ln.Addr().String(), "metrics", metricsAddr,
		"auth", authName(d.users), "max_sessions", s.proxy.MaxSessions,
		"external_ip", s.leases.ListenIP.String(), "udp_ports", s.cfg.UDPPorts, "relay_ports", s.proxy.RelayPorts.String(), "lease_linger", s.leases.Linger,
		"mms_ports", fmt.Sprint(s.cfg.MMSPorts), "version", b.Version, "commit", b.Commit)

	var runErr error
wait:
	for {
		select {
		case <-ctx.Done():
			health.SetDraining()
			log.Info("shutting down", "drain_timeout", d.cur.cfg.DrainTimeout)
			break wait
		case runErr = <-serveErr:
			health.SetDraining()
			break wait
		case <-hup:
			d.reload()
		}
	}
	drainCtx, cancel := context.WithTimeout(context.Background(), d.cur.cfg.DrainTimeout)
	defer cancel()
	if err := srv.Shutdown(drainCtx); err != nil {
		log.Warn("drain cut short, sessions closed", "err", err)
	}
	if metricsSrv != nil {
		metricsSrv.Shutdown(drainCtx)
		metricsSrv.Close()
	}
	<-metricsDone
	if runErr == nil {
		<-serveErr
	}
	log.Info("stopped")
	if errors.Is(runErr, proxy.ErrServerClosed) {
		return nil
	}
	return runErr
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

// Command fwproxy is the SOCKS5 firewall proxy daemon for media clients.
//
// It reads an optional YAML file (-config), applies flags over it, and
// serves SOCKS5 on -listen and Prometheus metrics on -metrics-listen until
// SIGINT or SIGTERM, when it drains sessions for -drain-timeout and exits 0.
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
	"strconv"
	"strings"
	"syscall"
	"time"

	socks5 "github.com/armon/go-socks5"
	"gopkg.in/yaml.v3"

	"fwproxy/leases"
	"fwproxy/metrics"
	"fwproxy/mmsfilter"
	"fwproxy/proxy"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdin, os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// run is the whole daemon; it returns the exit code: 0 after a clean stop,
// 1 when it could not start or failed, 2 for bad usage.
func run(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	cfg, action, err := parseArgs(args, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		fmt.Fprintln(stderr, "fwproxy:", err)
		return 2
	}
	switch action.kind {
	case actionPrintConfig:
		out, _ := yaml.Marshal(cfg)
		stdout.Write(out)
		return 0
	case actionHashPassword:
		return hashPassword(action.user, stdin, stdout, stderr)
	}

	log, err := newLogger(stderr, cfg.LogFormat, cfg.LogLevel)
	if err != nil {
		fmt.Fprintln(stderr, "fwproxy:", err)
		return 2
	}
	if err := serve(ctx, cfg, log); err != nil {
		log.Error("fwproxy stopped", "err", err)
		return 1
	}
	return 0
}

// serve runs the proxy and the metrics endpoint until ctx is done.
func serve(ctx context.Context, cfg Config, log *slog.Logger) error {
	pcfg, err := cfg.proxyConfig()
	if err != nil {
		return err
	}
	deps := proxy.Deps{Logger: log}
	var reloadable *proxy.ReloadableUsers
	if cfg.Users != "" {
		users, err := proxy.LoadUsers(cfg.Users)
		if err != nil {
			return err
		}
		reloadable = proxy.NewReloadableUsers(users)
		deps.Credentials = reloadable
	}

	lcfg, err := cfg.leasesConfig()
	if err != nil {
		return err
	}
	reg := metrics.NewRegistry("")
	deps.Observer = metrics.NewSocks(reg)
	leaseObs := metrics.NewLeases(reg, nil)
	lm, err := leases.New(lcfg, leases.Deps{Logger: log.With("component", "leases"), Observer: leaseObs})
	if err != nil {
		return err
	}
	defer lm.Close()
	reg.MustRegister(metrics.LeaseTable(lm.Stats))
	deps.Leases = lm
	if len(cfg.MMSPorts) > 0 {
		mcfg := mmsfilter.DefaultConfig()
		mcfg.ExternalIP = lcfg.ListenIP
		mf, err := mmsfilter.New(mcfg, mmsfilter.Deps{Leases: lm, Logger: log.With("component", "mms"), Observer: metrics.NewMMS(reg)})
		if err != nil {
			return err
		}
		deps.Filters = make(map[uint16]proxy.Filter, len(cfg.MMSPorts))
		for _, p := range cfg.MMSPorts {
			deps.Filters[p] = mmsFilter{mf}
		}
	}
	srv, err := proxy.New(pcfg, deps)
	if err != nil {
		return err
	}
	defer srv.Close()

	lc := net.ListenConfig{KeepAlive: proxy.KeepAlivePeriod(cfg.TCPKeepAlive)}
	ln, err := lc.Listen(ctx, "tcp", cfg.Listen)
	if err != nil {
		return fmt.Errorf("listen socks: %w", err)
	}
	var metricsSrv *http.Server
	metricsDone := make(chan struct{}) // closed when the metrics server's Serve returned
	metricsAddr := "disabled"
	if cfg.MetricsListen != "" {
		mln, err := net.Listen("tcp", cfg.MetricsListen)
		if err != nil {
			ln.Close()
			return fmt.Errorf("listen metrics: %w", err)
		}
		metricsAddr = mln.Addr().String()
		metricsSrv = &http.Server{
			Handler:           metrics.Handler(reg, log, map[string]http.Handler{"/debug/leases": metrics.LeasesHandler(lm.Snapshot)}),
			ReadHeaderTimeout: 5 * time.Second,
			ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
		}
		go func() {
			defer close(metricsDone)
			metricsSrv.Serve(mln)
		}()
	} else {
		close(metricsDone)
	}

	serveErr := make(chan error, 1)
	go func() { serveErr <- srv.Serve(ln) }()
	log.Info("listening", "socks", ln.Addr().String(), "metrics", metricsAddr,
		"auth", authName(deps.Credentials), "max_sessions", pcfg.MaxSessions,
		"external_ip", lcfg.ListenIP.String(), "udp_ports", cfg.UDPPorts, "lease_linger", lcfg.Linger,
		"mms_ports", fmt.Sprint(cfg.MMSPorts))
	if lcfg.ListenIP.IsLoopback() && !addrIsLoopback(ln.Addr()) {
		log.Warn("external_ip is a loopback address: UDP relays cannot reach media servers elsewhere; set -external-ip")
	}

	// SIGHUP reloads the users file; a file that does not load leaves the
	// current users in place.
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)

	var runErr error
wait:
	for {
		select {
		case <-ctx.Done():
			log.Info("shutting down", "drain_timeout", cfg.DrainTimeout)
			break wait
		case runErr = <-serveErr:
			break wait
		case <-hup:
			reloadUsers(log, cfg.Users, reloadable)
		}
	}
	drainCtx, cancel := context.WithTimeout(context.Background(), cfg.DrainTimeout)
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

// reloadUsers loads path into users, or logs why it keeps the old ones.
func reloadUsers(log *slog.Logger, path string, users *proxy.ReloadableUsers) {
	if users == nil {
		log.Info("SIGHUP: no users file to reload")
		return
	}
	u, err := proxy.LoadUsers(path)
	if err != nil {
		log.Error("SIGHUP: users not reloaded, keeping the current ones", "err", err)
		return
	}
	users.Replace(u)
	log.Info("SIGHUP: users reloaded", "path", path, "users", u.Len())
}

func addrIsLoopback(a net.Addr) bool {
	ta, ok := a.(*net.TCPAddr)
	return ok && ta.IP.IsLoopback()
}

func authName(c socks5.CredentialStore) string {
	if c != nil {
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

type actionKind int

const (
	actionServe actionKind = iota
	actionPrintConfig
	actionHashPassword
)

type action struct {
	kind actionKind
	user string
}

// parseArgs builds the effective configuration: defaults, then the
// -config file, then every flag given on the command line.
func parseArgs(args []string, usageOut io.Writer) (Config, action, error) {
	fs := flag.NewFlagSet("fwproxy", flag.ContinueOnError)
	fs.SetOutput(usageOut)
	configPath := fs.String("config", "", "YAML configuration `file`; flags override it")
	printConfig := fs.Bool("print-config", false, "print the effective configuration as YAML and exit")
	hashUser := fs.String("hash-password", "", "print a users-file line for `USER` with the password read from standard input, and exit")

	// Flags are applied after the file, in command-line order.
	var overrides []func(*Config)
	str := func(name, usage string, set func(*Config, string)) {
		fs.Func(name, usage, func(v string) error {
			overrides = append(overrides, func(c *Config) { set(c, v) })
			return nil
		})
	}
	dur := func(name, usage string, set func(*Config, time.Duration)) {
		fs.Func(name, usage, func(v string) error {
			d, err := time.ParseDuration(v)
			if err != nil {
				return err
			}
			overrides = append(overrides, func(c *Config) { set(c, d) })
			return nil
		})
	}
	def := DefaultConfig()
	str("listen", "SOCKS5 listen `ADDR` (default "+def.Listen+")", func(c *Config, v string) { c.Listen = v })
	str("metrics-listen", "metrics listen `ADDR`, empty to disable (default "+def.MetricsListen+")", func(c *Config, v string) { c.MetricsListen = v })
	str("users", "users `PATH` (name:bcrypt-hash lines); requires username/password", func(c *Config, v string) { c.Users = v })
	str("log-format", "log format: text or json (default text)", func(c *Config, v string) { c.LogFormat = v })
	str("log-level", "log level: debug, info, warn, error (default info)", func(c *Config, v string) { c.LogLevel = v })
	dur("handshake-timeout", "time limit from accept to request answered (default 10s)", func(c *Config, d time.Duration) { c.HandshakeTimeout = d })
	dur("dial-timeout", "time limit to reach a CONNECT destination (default 10s)", func(c *Config, d time.Duration) { c.DialTimeout = d })
	dur("idle-timeout", "close a TCP session idle this long both ways; 0 never (default 5m)", func(c *Config, d time.Duration) { c.IdleTimeout = d })
	dur("tcp-keepalive", "TCP keep-alive probe period of sessions; 0 sends none (default 0)", func(c *Config, d time.Duration) { c.TCPKeepAlive = d })
	str("external-ip", "the proxy's `IP` towards media servers: lease sockets and BIND listen there (default 127.0.0.1)", func(c *Config, v string) { c.ExternalIP = v })
	str("advertise-ip", "`IP` sent as BND.ADDR of UDP ASSOCIATE and BIND (default: the address the client connected to)", func(c *Config, v string) { c.AdvertiseIP = v })
	str("udp-ports", "external UDP port range `LO-HI` of leases (default 1024-65535)", func(c *Config, v string) { c.UDPPorts = v })
	dur("lease-linger", "keep a released UDP lease open and buffering this long; 0 closes at once (default 10s)", func(c *Config, d time.Duration) { c.LeaseLinger = d })
	dur("udp-idle-timeout", "end a UDP association idle this long; 0 never (default 5m)", func(c *Config, d time.Duration) { c.UDPIdleTimeout = d })
	dur("bind-timeout", "how long BIND waits for the incoming connection (default 2m)", func(c *Config, d time.Duration) { c.BindTimeout = d })
	dur("drain-timeout", "how long shutdown waits for sessions (default 10s)", func(c *Config, d time.Duration) { c.DrainTimeout = d })
	fs.Func("mms-ports", "comma-separated TCP `PORTS` whose sessions run through the MMS filter; empty disables it (default 1755)", func(v string) error {
		ports, err := parsePortList(v)
		if err != nil {
			return err
		}
		overrides = append(overrides, func(c *Config) { c.MMSPorts = ports })
		return nil
	})
	fs.Func("max-sessions", "cap on concurrent client connections (default 1024)", func(v string) error {
		n, err := strconv.Atoi(v)
		if err != nil {
			return err
		}
		overrides = append(overrides, func(c *Config) { c.MaxSessions = n })
		return nil
	})

	if err := fs.Parse(args); err != nil {
		return Config{}, action{}, err
	}
	if fs.NArg() > 0 {
		return Config{}, action{}, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	if *hashUser != "" {
		return Config{}, action{kind: actionHashPassword, user: *hashUser}, nil
	}
	cfg := DefaultConfig()
	if *configPath != "" {
		if err := loadConfigFile(*configPath, &cfg); err != nil {
			return Config{}, action{}, err
		}
	}
	for _, o := range overrides {
		o(&cfg)
	}
	if _, err := cfg.proxyConfig(); err != nil {
		return Config{}, action{}, err
	}
	if _, err := cfg.leasesConfig(); err != nil {
		return Config{}, action{}, err
	}
	if *printConfig {
		return cfg, action{kind: actionPrintConfig}, nil
	}
	return cfg, action{kind: actionServe}, nil
}

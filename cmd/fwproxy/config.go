package main

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"

	"fwproxy/leases"
	"fwproxy/mmsfilter"
	"fwproxy/proxy"
	"fwproxy/rtspfilter"
)

// maxConfigSize bounds the config file read; real ones are a few KiB.
const maxConfigSize = 1 << 20

// Config is the daemon's configuration: the YAML file's schema, and what
// -print-config prints. Flags override the file; the file overrides the
// defaults of DefaultConfig.
//
// Adding a setting (see README "Configuration"):
//  1. a field here with its yaml tag, and `reload:"restart"` when a running
//     daemon cannot apply it (SIGHUP then keeps the old value and says so);
//  2. its default in DefaultConfig;
//  3. its check and its copy into the package's Config in resolve;
//  4. optionally a flag in the flags table (flags.go).
//
// The decoder (decode.go) and the flags parse every field by its Go type,
// so durations, ports and lists need no parsing code of their own.
type Config struct {
	// Listen is the SOCKS5 listen address.
	Listen string `yaml:"listen" reload:"restart"`
	// MetricsListen serves /metrics, /healthz and /readyz; "" disables it.
	MetricsListen string `yaml:"metrics_listen" reload:"restart"`
	// MetricsUsers, when set, is a users file (the format of Users) whose
	// users alone may read /metrics and /debug/leases (HTTP basic auth).
	MetricsUsers string `yaml:"metrics_users" reload:"restart"`
	// Users is the users file (name:bcrypt-hash lines); when set,
	// username/password authentication is required. SIGHUP rereads it;
	// turning authentication on or off needs a restart.
	Users string `yaml:"users"`
	// AuthFailuresPerMinute, AuthFailureBurst and AuthConcurrency limit
	// password checking (see proxy.Config): failed logins a source may make
	// a minute once it has made AuthFailureBurst in a row (0: no limit), and
	// bcrypt checks at once (0: one per CPU).
	AuthFailuresPerMinute int `yaml:"auth_failures_per_minute" reload:"restart"`
	AuthFailureBurst      int `yaml:"auth_failure_burst" reload:"restart"`
	AuthConcurrency       int `yaml:"auth_concurrency" reload:"restart"`
	// LogFormat is text or json; LogLevel is debug, info, warn or error.
	LogFormat string `yaml:"log_format" reload:"restart"`
	LogLevel  string `yaml:"log_level"`

	// HandshakeTimeout, DialTimeout and IdleTimeout: see README.
	HandshakeTimeout time.Duration `yaml:"handshake_timeout"`
	DialTimeout      time.Duration `yaml:"dial_timeout"`
	IdleTimeout      time.Duration `yaml:"idle_timeout"`
	// TCPKeepAlive is the keep-alive probe period of TCP sessions; 0 off.
	TCPKeepAlive time.Duration `yaml:"tcp_keepalive" reload:"restart"`
	// DrainTimeout is how long a SIGINT/SIGTERM waits for sessions.
	DrainTimeout time.Duration `yaml:"drain_timeout"`
	MaxSessions  int           `yaml:"max_sessions"`
	// MaxSessionsPerClient caps one client IP's concurrent connections; 0
	// disables the cap.
	MaxSessionsPerClient int `yaml:"max_sessions_per_client"`

	// ExternalIP is the proxy's address towards media servers: lease
	// sockets and BIND listeners bind there.
	ExternalIP string `yaml:"external_ip" reload:"restart"`
	// AdvertiseIP, when set, is the BND.ADDR of UDP ASSOCIATE and BIND.
	AdvertiseIP string `yaml:"advertise_ip"`
	// UDPPorts is the external port range "LO-HI" of leases.
	UDPPorts string `yaml:"udp_ports" reload:"restart"`
	// LeaseLinger keeps a released lease's port open and buffering; 0
	// closes at once (the old, datagram-losing behaviour).
	LeaseLinger    time.Duration `yaml:"lease_linger" reload:"restart"`
	UDPIdleTimeout time.Duration `yaml:"udp_idle_timeout"`
	BindTimeout    time.Duration `yaml:"bind_timeout"`
	// BindPorts is the port range "LO-HI" BIND listens on.
	BindPorts string      `yaml:"bind_ports"`
	Leases    LeaseLimits `yaml:"leases" reload:"restart"`
	// MMSPorts are the TCP ports whose CONNECT sessions run through the MMS
	// filter; empty disables it.
	MMSPorts []uint16 `yaml:"mms_ports"`
	// MMSScrubComputerName replaces the client's host name in its MMS
	// Logging messages with "-". Its IPv4 address there is replaced by
	// external_ip whatever this says.
	MMSScrubComputerName bool `yaml:"mms_scrub_computer_name" reload:"restart"`
	// RTSPPorts are the TCP ports whose CONNECT sessions run through the
	// RTSP filter; empty disables it.
	RTSPPorts []uint16 `yaml:"rtsp_ports"`

	Rules RulesConfig `yaml:"rules"`

	// ProxyProtocolFrom lists the balancer networks whose connections
	// carry a PROXY protocol header (v1 or v2) naming the client; empty
	// accepts no header from anyone.
	ProxyProtocolFrom []string `yaml:"proxy_protocol_from" reload:"restart"`
	// RelayPorts is the port range "LO-HI" of associations' client-facing
	// UDP relay sockets, on the inside address; "" takes ephemeral ports.
	RelayPorts string `yaml:"relay_ports"`
}

// LeaseLimits bound the lease table; 0 means no cap (see leases.Config).
type LeaseLimits struct {
	MaxLeases             int   `yaml:"max_leases"`
	MaxLeasesPerClient    int   `yaml:"max_leases_per_client"`
	MaxBufferedDatagrams  int   `yaml:"max_buffered_datagrams"`
	MaxBufferedBytes      int   `yaml:"max_buffered_bytes"`
	MaxBufferedBytesTotal int64 `yaml:"max_buffered_bytes_total"`
}

// RulesConfig is the YAML form of proxy.Rules.
type RulesConfig struct {
	Clients  []string       `yaml:"clients"`
	Commands []string       `yaml:"commands"`
	Allow    []DestRuleYAML `yaml:"allow"`
	Deny     []DestRuleYAML `yaml:"deny"`
}

// DestRuleYAML is one destination rule: a network and optional ports
// ("1755", "1024-65535"; empty means every port).
type DestRuleYAML struct {
	Network string `yaml:"network"`
	Ports   string `yaml:"ports,omitempty"`
}

// DefaultConfig is the built-in configuration `make run` uses: loopback
// only, no authentication.
func DefaultConfig() Config {
	p := proxy.DefaultConfig()
	l := leases.DefaultConfig()
	return Config{
		ExternalIP:     l.ListenIP.String(),
		MMSPorts:       []uint16{1755},
		RTSPPorts:      []uint16{554, 8554},
		UDPPorts:       fmt.Sprintf("%d-%d", l.PortMin, l.PortMax),
		LeaseLinger:    l.Linger,
		UDPIdleTimeout: p.UDPIdleTimeout,
		BindTimeout:    p.BindTimeout,
		BindPorts:      fmt.Sprintf("%d-%d", p.BindPortMin, p.BindPortMax),
		Leases: LeaseLimits{
			MaxLeases:             l.MaxLeases,
			MaxLeasesPerClient:    l.MaxLeasesPerClient,
			MaxBufferedDatagrams:  l.MaxBufferedDatagrams,
			MaxBufferedBytes:      l.MaxBufferedBytes,
			MaxBufferedBytesTotal: l.MaxBufferedBytesTotal,
		},
		AuthFailuresPerMinute: p.AuthFailuresPerMinute,
		AuthFailureBurst:      p.AuthFailureBurst,
		AuthConcurrency:       p.AuthConcurrency,

		Listen:               "127.0.0.1:1080",
		MetricsListen:        "127.0.0.1:9480",
		LogFormat:            "text",
		LogLevel:             "info",
		HandshakeTimeout:     p.HandshakeTimeout,
		DialTimeout:          p.DialTimeout,
		IdleTimeout:          p.IdleTimeout,
		DrainTimeout:         10 * time.Second,
		MaxSessions:          p.MaxSessions,
		MaxSessionsPerClient: p.MaxSessionsPerClient,
		Rules: RulesConfig{
			Clients:  []string{"127.0.0.0/8", "::1/128"},
			Commands: []string{"connect", "bind", "udp_associate"},
		},

		ProxyProtocolFrom: []string{},
		// A firewall shows no inside host names unless told to.
		MMSScrubComputerName: true,
	}
}

// readConfigFile reads the YAML file at path, bounded.
func readConfigFile(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, maxConfigSize+1))
	if err != nil {
		return nil, err
	}
	if len(data) > maxConfigSize {
		return nil, fmt.Errorf("larger than %d bytes", maxConfigSize)
	}
	return data, nil
}

// settings is a Config checked and turned into what each part of the
// daemon takes.
type settings struct {
	cfg    Config
	proxy  proxy.Config
	leases leases.Config
	mms    mmsfilter.Config
	rtsp   rtspfilter.Config
	level  slog.Level
	// users is the loaded users file; nil when authentication is off.
	users *proxy.Users
	// proxyProto is the PROXY protocol listener's configuration; its From
	// is empty when ProxyProtocolFrom is.
	proxyProto proxy.ProxyProtoConfig
}

// checker collects every problem of a Config, each located by origin.
type checker struct {
	origin      origins
	errs, warns configErrors
}

func (ck *checker) bad(key, format string, args ...any) {
	ck.errs = append(ck.errs, configError{Where: ck.origin.of(key), Key: key, Msg: fmt.Sprintf(format, args...)})
}

func (ck *checker) warn(key, format string, args ...any) {
	ck.warns = append(ck.warns, configError{Where: ck.origin.of(key), Key: key, Msg: fmt.Sprintf(format, args...)})
}

// positive and notNegative check a duration or a count.
func positive[T int | int64 | time.Duration](ck *checker, key string, v T) {
	if v <= 0 {
		ck.bad(key, "%v must be more than 0", v)
	}
}

func notNegative[T int | int64 | time.Duration](ck *checker, key string, v T, zero string) {
	if v < 0 {
		ck.bad(key, "%v must not be negative (0 %s)", v, zero)
	}
}

// resolve checks everything a start needs, loading the users file, and
// returns every error and warning found, not only the first.
func resolve(c Config, origin origins) (settings, configErrors, configErrors) {
	ck := &checker{origin: origin}
	s := settings{cfg: c, proxy: proxy.DefaultConfig(), leases: leases.DefaultConfig()}

	checkListen(ck, "listen", c.Listen, false)
	checkListen(ck, "metrics_listen", c.MetricsListen, true)
	if _, port, _ := net.SplitHostPort(c.Listen); c.MetricsListen != "" && c.MetricsListen == c.Listen && port != "0" {
		ck.bad("metrics_listen", "%s is also the SOCKS listen address", quote(c.MetricsListen))
	}
	if err := s.level.UnmarshalText([]byte(c.LogLevel)); err != nil {
		ck.bad("log_level", "%s is not a log level (debug, info, warn, error)", quote(c.LogLevel))
	}
	if c.LogFormat != "text" && c.LogFormat != "json" {
		ck.bad("log_format", "%s is not a log format (text, json)", quote(c.LogFormat))
	}

	checkFilterPorts(ck, c)

	p := &s.proxy
	positive(ck, "handshake_timeout", c.HandshakeTimeout)
	positive(ck, "dial_timeout", c.DialTimeout)
	notNegative(ck, "idle_timeout", c.IdleTimeout, "turns it off")
	notNegative(ck, "tcp_keepalive", c.TCPKeepAlive, "sends no keep-alive probes")
	p.TCPKeepAlive = c.TCPKeepAlive
	notNegative(ck, "drain_timeout", c.DrainTimeout, "closes sessions at once")
	notNegative(ck, "udp_idle_timeout", c.UDPIdleTimeout, "turns it off")
	positive(ck, "bind_timeout", c.BindTimeout)
	positive(ck, "max_sessions", c.MaxSessions)
	notNegative(ck, "max_sessions_per_client", c.MaxSessionsPerClient, "means no cap")
	p.MaxSessionsPerClient = c.MaxSessionsPerClient
	notNegative(ck, "auth_failures_per_minute", c.AuthFailuresPerMinute, "means no limit")
	if c.AuthFailuresPerMinute > 0 && c.AuthFailureBurst <= 0 {
		ck.bad("auth_failure_burst", "%d must be more than 0 while auth_failures_per_minute is on", c.AuthFailureBurst)
	}
	notNegative(ck, "auth_concurrency", c.AuthConcurrency, "means one per CPU")
	p.AuthFailuresPerMinute, p.AuthFailureBurst, p.AuthConcurrency = c.AuthFailuresPerMinute, c.AuthFailureBurst, c.AuthConcurrency
	if lo, hi, msg := parsePortRange(c.BindPorts); msg != "" {
		ck.bad("bind_ports", "%s", msg)
	} else {
		p.BindPortMin, p.BindPortMax = lo, hi
	}
	p.HandshakeTimeout, p.DialTimeout, p.IdleTimeout = c.HandshakeTimeout, c.DialTimeout, c.IdleTimeout
	p.UDPIdleTimeout, p.BindTimeout, p.MaxSessions = c.UDPIdleTimeout, c.BindTimeout, c.MaxSessions
	p.ExternalIP = checkExternalIP(ck, c.ExternalIP)
	if c.AdvertiseIP != "" {
		a, err := netip.ParseAddr(c.AdvertiseIP)
		switch {
		case err != nil:
			ck.bad("advertise_ip", "%q is not an IP address", c.AdvertiseIP)
		case a.IsUnspecified() || a.IsMulticast():
			ck.bad("advertise_ip", "%s must be a specific address (the one clients reach the proxy at)", a)
		}
		p.AdvertiseIP = a
	}
	p.Rules = checkRules(ck, c.Rules)
	if c.RelayPorts != "" {
		if lo, hi, msg := parsePortRange(c.RelayPorts); msg != "" {
			ck.bad("relay_ports", "%s", msg)
		} else {
			p.RelayPorts = proxy.PortRange{Min: lo, Max: hi}
		}
	}
	if len(c.ProxyProtocolFrom) > 0 {
		s.proxyProto = proxy.DefaultProxyProtoConfig()
		for i, n := range c.ProxyProtocolFrom {
			pfx, ok := parsePrefix(n)
			if !ok {
				ck.bad(fmt.Sprintf("proxy_protocol_from[%d]", i), "%q is not a CIDR network or an IP address", n)
				continue
			}
			s.proxyProto.From = append(s.proxyProto.From, pfx)
		}
		if err := s.proxyProto.Validate(); err != nil && len(ck.errs) == 0 {
			ck.bad("proxy_protocol_from", "%v", err)
		}
	}

	l := &s.leases
	l.ListenIP = p.ExternalIP
	if lo, hi, msg := parsePortRange(c.UDPPorts); msg != "" {
		ck.bad("udp_ports", "%s", msg)
	} else {
		l.PortMin, l.PortMax = lo, hi
	}
	notNegative(ck, "lease_linger", c.LeaseLinger, "closes a released lease at once")
	for _, f := range []struct {
		key string
		v   int64
	}{
		{"leases.max_leases", int64(c.Leases.MaxLeases)},
		{"leases.max_leases_per_client", int64(c.Leases.MaxLeasesPerClient)},
		{"leases.max_buffered_datagrams", int64(c.Leases.MaxBufferedDatagrams)},
		{"leases.max_buffered_bytes", int64(c.Leases.MaxBufferedBytes)},
		{"leases.max_buffered_bytes_total", c.Leases.MaxBufferedBytesTotal},
	} {
		notNegative(ck, f.key, f.v, "means no cap")
	}
	if c.LeaseLinger > 0 && c.Leases.MaxBufferedDatagrams == 0 && c.Leases.MaxBufferedBytes == 0 && c.Leases.MaxBufferedBytesTotal == 0 {
		ck.bad("lease_linger", "%v needs a buffer cap: set leases.max_buffered_datagrams, max_buffered_bytes or max_buffered_bytes_total above 0", c.LeaseLinger)
	}
	l.Linger = c.LeaseLinger
	l.MaxLeases = c.Leases.MaxLeases
	l.MaxLeasesPerClient = c.Leases.MaxLeasesPerClient
	l.MaxBufferedDatagrams = c.Leases.MaxBufferedDatagrams
	l.MaxBufferedBytes = c.Leases.MaxBufferedBytes
	l.MaxBufferedBytesTotal = c.Leases.MaxBufferedBytesTotal

	s.mms = mmsfilter.DefaultConfig()
	s.mms.ExternalIP = l.ListenIP
	s.mms.ScrubComputerName = c.MMSScrubComputerName
	s.rtsp = rtspfilter.DefaultConfig()
	s.rtsp.ExternalIP = l.ListenIP

	if len(ck.errs) == 0 {
		// What the packages themselves refuse, in case a check above is
		// missing; their messages use Go names, so they come last.
		if err := p.Validate(); err != nil {
			ck.bad("", "%v", err)
		}
		if err := l.Validate(); err != nil {
			ck.bad("", "%v", err)
		}
		if err := s.mms.Validate(); err != nil {
			ck.bad("", "%v", err)
		}
		if err := s.rtsp.Validate(); err != nil {
			ck.bad("", "%v", err)
		}
	}
	if c.Users != "" {
		u, err := proxy.LoadUsers(c.Users)
		if err != nil {
			ck.bad("users", "%v", err)
		}
		s.users = u
	}
	if len(ck.errs) == 0 && l.ListenIP.IsLoopback() && !hostIsLoopback(c.Listen) {
		ck.warn("external_ip", "%s is a loopback address: UDP relays cannot reach media servers elsewhere", l.ListenIP)
	}
	return s, ck.errs, ck.warns
}

// checkFilterPorts refuses a port that two filters' keys list, or one key
// twice: a port has at most one filter. -check-config says so before a
// start would fail on it (the filter table refuses it too).
func checkFilterPorts(ck *checker, c Config) {
	owner := map[uint16]string{}
	for _, f := range []struct {
		key   string
		ports []uint16
	}{{"mms_ports", c.MMSPorts}, {"rtsp_ports", c.RTSPPorts}} {
		for _, p := range f.ports {
			switch prev, ok := owner[p]; {
			case ok && prev == f.key:
				ck.bad(f.key, "port %d is listed twice", p)
			case ok:
				ck.bad(f.key, "port %d is also in %s; a port has at most one filter", p, prev)
			default:
				owner[p] = f.key
			}
		}
	}
}

// checkListen checks a listen address: HOST:PORT with a numeric port
// (0 picks a free one) and a host that is an address or resolves.
func checkListen(ck *checker, key, addr string, optional bool) {
	if addr == "" {
		if !optional {
			ck.bad(key, `is empty; want HOST:PORT such as 127.0.0.1:1080`)
		}
		return
	}
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		ck.bad(key, "%q is not HOST:PORT (such as 127.0.0.1:1080 or [::1]:1080)", addr)
		return
	}
	if n, err := strconv.ParseUint(port, 10, 16); err != nil || n > 65535 {
		ck.bad(key, "%q: %q is not a port (0-65535)", addr, port)
		return
	}
	if host == "" {
		return // every address
	}
	if _, err := netip.ParseAddr(host); err == nil {
		return
	}
	if _, err := net.ResolveTCPAddr("tcp", addr); err != nil {
		ck.bad(key, "%q: host %q does not resolve", addr, host)
	}
}

// checkExternalIP parses external_ip; an address that is not this host's
// is only a warning, so a configuration can be checked before it is
// deployed on the host that has the address.
func checkExternalIP(ck *checker, s string) netip.Addr {
	a, err := netip.ParseAddr(s)
	switch {
	case err != nil:
		ck.bad("external_ip", "%q is not an IP address", s)
		return netip.Addr{}
	case a.IsUnspecified():
		ck.bad("external_ip", "%s must be a specific address (the proxy's address towards media servers, not a wildcard)", a)
		return a
	case a.IsMulticast():
		ck.bad("external_ip", "%s is a multicast address", a)
		return a
	case a.Zone() != "":
		ck.bad("external_ip", "%s: an address with a zone cannot be used", a)
		return a
	}
	if !isLocalAddr(a) {
		ck.warn("external_ip", "%s is not an address of this host: lease sockets and BIND listeners cannot bind until it is", a)
	}
	return a
}

// isLocalAddr reports whether a UDP socket can bind a.
func isLocalAddr(a netip.Addr) bool {
	c, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.AddrPortFrom(a, 0)))
	if err != nil {
		return !errors.Is(err, syscall.EADDRNOTAVAIL)
	}
	c.Close()
	return true
}

func checkRules(ck *checker, r RulesConfig) proxy.Rules {
	var out proxy.Rules
	for i, s := range r.Clients {
		key := fmt.Sprintf("rules.clients[%d]", i)
		if p, ok := parsePrefix(s); ok {
			out.Clients = append(out.Clients, p)
			if p.Bits() == 0 {
				ck.warn(key, "%s admits every source; it is not taken as an inside network, so destinations in it are not refused as client_network (list them in rules.deny)", p)
			}
		} else {
			ck.bad(key, "%q is not a CIDR network or an IP address", s)
		}
	}
	if len(r.Clients) == 0 {
		ck.warn("rules.clients", "is empty: every client is refused")
	}
	for i, c := range r.Commands {
		switch strings.ToLower(c) {
		case "connect":
			out.Connect = true
		case "bind":
			out.Bind = true
		case "udp_associate", "associate":
			out.Associate = true
		default:
			ck.bad(fmt.Sprintf("rules.commands[%d]", i), "%q is not a command (connect, bind, udp_associate)", c)
		}
	}
	out.AllowDestinations = checkDestRules(ck, "rules.allow", r.Allow)
	out.DenyDestinations = checkDestRules(ck, "rules.deny", r.Deny)
	return out
}

func checkDestRules(ck *checker, key string, in []DestRuleYAML) []proxy.DestRule {
	var out []proxy.DestRule
	for i, d := range in {
		item := fmt.Sprintf("%s[%d]", key, i)
		p, ok := parsePrefix(d.Network)
		if !ok {
			if d.Network == "" {
				ck.bad(item+".network", "is missing; want a CIDR network such as 10.0.0.0/8")
			} else {
				ck.bad(item+".network", "%q is not a CIDR network", d.Network)
			}
			continue
		}
		rule := proxy.DestRule{Network: p}
		if d.Ports != "" {
			lo, hi, msg := parsePortRange(d.Ports)
			if msg != "" {
				ck.bad(item+".ports", "%s", msg)
				continue
			}
			rule.FirstPort, rule.LastPort = lo, hi
		}
		out = append(out, rule)
	}
	return out
}

// parseDestRuleFlag parses -allow's "NETWORK" or "NETWORK,PORTS"
// ("127.0.0.0/8", "127.0.0.1,1080", "::1/128,1024-65535"); resolve checks
// the rule like one from the file.
func parseDestRuleFlag(v string) DestRuleYAML {
	network, ports, _ := strings.Cut(v, ",")
	return DestRuleYAML{Network: strings.TrimSpace(network), Ports: strings.TrimSpace(ports)}
}

// parsePrefix accepts a network ("10.0.0.0/8") or a single address.
func parsePrefix(s string) (netip.Prefix, bool) {
	if strings.Contains(s, "/") {
		p, err := netip.ParsePrefix(s)
		return p.Masked(), err == nil
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Prefix{}, false
	}
	return netip.PrefixFrom(a, a.BitLen()), true
}

// parsePortRange parses "P" or "LO-HI" with 1 <= LO <= HI <= 65535 and
// says what is wrong otherwise.
func parsePortRange(s string) (lo, hi uint16, msg string) {
	a, b, isRange := strings.Cut(s, "-")
	if !isRange {
		b = a
	}
	for _, f := range []string{a, b} {
		if _, ok := parsePort(f); !ok {
			if _, err := strconv.Atoi(strings.TrimSpace(f)); err == nil {
				return 0, 0, fmt.Sprintf("%s is not a port (1-65535)", strings.TrimSpace(f))
			}
			return 0, 0, fmt.Sprintf("%q is not a port or a range LO-HI (such as 1755 or 40000-40999)", s)
		}
	}
	lo, _ = parsePort(a)
	hi, _ = parsePort(b)
	if lo > hi {
		return 0, 0, fmt.Sprintf("%q: the first port must not be above the last", s)
	}
	return lo, hi, ""
}

func hostIsLoopback(listen string) bool {
	host, _, err := net.SplitHostPort(listen)
	if err != nil {
		return false
	}
	a, err := netip.ParseAddr(host)
	return err == nil && a.IsLoopback() || host == "localhost"
}

// newLogger builds the slog logger the config asks for; level may be a
// *slog.LevelVar that a reload changes.
func newLogger(w io.Writer, format string, level slog.Leveler) (*slog.Logger, error) {
	opts := &slog.HandlerOptions{Level: level}
	switch format {
	case "text":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	case "json":
		opts.ReplaceAttr = jsonAttr
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	}
	return nil, fmt.Errorf("log format %q: want text or json", format)
}

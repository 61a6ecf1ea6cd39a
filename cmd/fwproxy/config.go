package main

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	"fwproxy/leases"
	"fwproxy/proxy"
)

// maxConfigSize bounds the config file read; real ones are a few KiB.
const maxConfigSize = 1 << 20

// Config is the daemon's configuration: the YAML file's schema, and what
// -print-config prints. Flags override the file; the file overrides the
// defaults of DefaultConfig.
type Config struct {
	// Listen is the SOCKS5 listen address.
	Listen string `yaml:"listen"`
	// MetricsListen serves /metrics and /healthz; "" disables it.
	MetricsListen string `yaml:"metrics_listen"`
	// Users is the users file (name:bcrypt-hash lines); when set,
	// username/password authentication is required.
	Users string `yaml:"users"`
	// LogFormat is text or json; LogLevel is debug, info, warn or error.
	LogFormat string `yaml:"log_format"`
	LogLevel  string `yaml:"log_level"`

	// HandshakeTimeout, DialTimeout and IdleTimeout: see README.
	HandshakeTimeout time.Duration `yaml:"handshake_timeout"`
	DialTimeout      time.Duration `yaml:"dial_timeout"`
	IdleTimeout      time.Duration `yaml:"idle_timeout"`
	// TCPKeepAlive is the keep-alive probe period of TCP sessions; 0 off.
	TCPKeepAlive time.Duration `yaml:"tcp_keepalive"`
	// DrainTimeout is how long a SIGINT/SIGTERM waits for sessions.
	DrainTimeout time.Duration `yaml:"drain_timeout"`
	MaxSessions  int           `yaml:"max_sessions"`

	// ExternalIP is the proxy's address towards media servers: lease
	// sockets and BIND listeners bind there.
	ExternalIP string `yaml:"external_ip"`
	// AdvertiseIP, when set, is the BND.ADDR of UDP ASSOCIATE and BIND.
	AdvertiseIP string `yaml:"advertise_ip"`
	// UDPPorts is the external port range "LO-HI" of leases.
	UDPPorts string `yaml:"udp_ports"`
	// LeaseLinger keeps a released lease's port open and buffering; 0
	// closes at once (the old, datagram-losing behaviour).
	LeaseLinger    time.Duration `yaml:"lease_linger"`
	UDPIdleTimeout time.Duration `yaml:"udp_idle_timeout"`
	BindTimeout    time.Duration `yaml:"bind_timeout"`
	Leases         LeaseLimits   `yaml:"leases"`
	// MMSPorts are the TCP ports whose CONNECT sessions run through the MMS
	// filter; empty disables it.
	MMSPorts []uint16 `yaml:"mms_ports"`

	Rules RulesConfig `yaml:"rules"`
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
		UDPPorts:       fmt.Sprintf("%d-%d", l.PortMin, l.PortMax),
		LeaseLinger:    l.Linger,
		UDPIdleTimeout: p.UDPIdleTimeout,
		BindTimeout:    p.BindTimeout,
		Leases: LeaseLimits{
			MaxLeases:             l.MaxLeases,
			MaxLeasesPerClient:    l.MaxLeasesPerClient,
			MaxBufferedDatagrams:  l.MaxBufferedDatagrams,
			MaxBufferedBytes:      l.MaxBufferedBytes,
			MaxBufferedBytesTotal: l.MaxBufferedBytesTotal,
		},
		Listen:           "127.0.0.1:1080",
		MetricsListen:    "127.0.0.1:9480",
		LogFormat:        "text",
		LogLevel:         "info",
		HandshakeTimeout: p.HandshakeTimeout,
		DialTimeout:      p.DialTimeout,
		IdleTimeout:      p.IdleTimeout,
		DrainTimeout:     10 * time.Second,
		MaxSessions:      p.MaxSessions,
		Rules: RulesConfig{
			Clients:  []string{"127.0.0.0/8", "::1/128"},
			Commands: []string{"connect", "bind", "udp_associate"},
		},
	}
}

// loadConfigFile overlays the YAML file at path on cfg. Unknown keys are
// errors: a misspelt setting must not be silently ignored.
func loadConfigFile(path string, cfg *Config) error {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("load config: %w", err)
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, maxConfigSize+1))
	if err != nil {
		return fmt.Errorf("load config %s: %w", path, err)
	}
	if len(data) > maxConfigSize {
		return fmt.Errorf("load config %s: larger than %d bytes", path, maxConfigSize)
	}
	if err := parseConfig(data, cfg); err != nil {
		return fmt.Errorf("load config %s: %w", path, err)
	}
	return nil
}

func parseConfig(data []byte, cfg *Config) error {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(cfg); err != nil && !errors.Is(err, io.EOF) {
		return err
	}
	return nil
}

// proxyConfig turns the daemon configuration into the SOCKS server's,
// validated.
func (c Config) proxyConfig() (proxy.Config, error) {
	p := proxy.Config{
		HandshakeTimeout: c.HandshakeTimeout,
		DialTimeout:      c.DialTimeout,
		IdleTimeout:      c.IdleTimeout,
		TCPKeepAlive:     c.TCPKeepAlive,
		MaxSessions:      c.MaxSessions,
		UDPIdleTimeout:   c.UDPIdleTimeout,
		BindTimeout:      c.BindTimeout,
	}
	var err error
	if p.ExternalIP, err = netip.ParseAddr(c.ExternalIP); err != nil {
		return p, fmt.Errorf("external_ip: %w", err)
	}
	if c.AdvertiseIP != "" {
		if p.AdvertiseIP, err = netip.ParseAddr(c.AdvertiseIP); err != nil {
			return p, fmt.Errorf("advertise_ip: %w", err)
		}
	}
	rules, err := c.Rules.rules()
	if err != nil {
		return p, err
	}
	p.Rules = rules
	return p, p.Validate()
}

// leasesConfig turns the daemon configuration into the lease manager's,
// validated.
func (c Config) leasesConfig() (leases.Config, error) {
	l := leases.DefaultConfig()
	var err error
	if l.ListenIP, err = netip.ParseAddr(c.ExternalIP); err != nil {
		return l, fmt.Errorf("external_ip: %w", err)
	}
	if l.PortMin, l.PortMax, err = parsePortRange(c.UDPPorts); err != nil {
		return l, fmt.Errorf("udp_ports: %w", err)
	}
	l.Linger = c.LeaseLinger
	l.MaxLeases = c.Leases.MaxLeases
	l.MaxLeasesPerClient = c.Leases.MaxLeasesPerClient
	l.MaxBufferedDatagrams = c.Leases.MaxBufferedDatagrams
	l.MaxBufferedBytes = c.Leases.MaxBufferedBytes
	l.MaxBufferedBytesTotal = c.Leases.MaxBufferedBytesTotal
	return l, l.Validate()
}

// parsePortList parses "1755,8755"; "" is the empty list.
func parsePortList(s string) ([]uint16, error) {
	var out []uint16
	for _, f := range strings.Split(s, ",") {
		if f = strings.TrimSpace(f); f == "" {
			continue
		}
		p, err := strconv.ParseUint(f, 10, 16)
		if err != nil || p == 0 {
			return nil, fmt.Errorf("port %q: want 1-65535", f)
		}
		out = append(out, uint16(p))
	}
	return out, nil
}

func (r RulesConfig) rules() (proxy.Rules, error) {
	var out proxy.Rules
	for _, s := range r.Clients {
		p, err := parsePrefix(s)
		if err != nil {
			return out, fmt.Errorf("rules.clients: %w", err)
		}
		out.Clients = append(out.Clients, p)
	}
	for _, c := range r.Commands {
		switch strings.ToLower(c) {
		case "connect":
			out.Connect = true
		case "bind":
			out.Bind = true
		case "udp_associate", "associate":
			out.Associate = true
		default:
			return out, fmt.Errorf("rules.commands: unknown command %q (want connect, bind, udp_associate)", c)
		}
	}
	var err error
	if out.AllowDestinations, err = destRules("rules.allow", r.Allow); err != nil {
		return out, err
	}
	if out.DenyDestinations, err = destRules("rules.deny", r.Deny); err != nil {
		return out, err
	}
	return out, nil
}

func destRules(field string, in []DestRuleYAML) ([]proxy.DestRule, error) {
	var out []proxy.DestRule
	for i, d := range in {
		p, err := parsePrefix(d.Network)
		if err != nil {
			return nil, fmt.Errorf("%s[%d].network: %w", field, i, err)
		}
		rule := proxy.DestRule{Network: p}
		if d.Ports != "" {
			if rule.FirstPort, rule.LastPort, err = parsePortRange(d.Ports); err != nil {
				return nil, fmt.Errorf("%s[%d].ports: %w", field, i, err)
			}
		}
		out = append(out, rule)
	}
	return out, nil
}

// parsePrefix accepts a network ("10.0.0.0/8") or a single address.
func parsePrefix(s string) (netip.Prefix, error) {
	if strings.Contains(s, "/") {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return p, err
		}
		return p.Masked(), nil
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Prefix{}, err
	}
	return netip.PrefixFrom(a, a.BitLen()), nil
}

// parsePortRange parses "P" or "LO-HI" with 1 <= LO <= HI <= 65535.
func parsePortRange(s string) (lo, hi uint16, err error) {
	a, b, isRange := strings.Cut(s, "-")
	if !isRange {
		b = a
	}
	l, err1 := strconv.ParseUint(strings.TrimSpace(a), 10, 16)
	h, err2 := strconv.ParseUint(strings.TrimSpace(b), 10, 16)
	if err := errors.Join(err1, err2); err != nil {
		return 0, 0, fmt.Errorf("port range %q: %w", s, err)
	}
	if l == 0 || l > h {
		return 0, 0, fmt.Errorf("port range %q: want 1 <= low <= high <= 65535", s)
	}
	return uint16(l), uint16(h), nil
}

// newLogger builds the slog logger the config asks for.
func newLogger(w io.Writer, format, level string) (*slog.Logger, error) {
	var lv slog.Level
	if err := lv.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("log level %q: want debug, info, warn or error", level)
	}
	opts := &slog.HandlerOptions{Level: lv}
	switch format {
	case "text":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	}
	return nil, fmt.Errorf("log format %q: want text or json", format)
}

package proxy

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"time"

	socks5 "github.com/armon/go-socks5"
)

// Config holds the server's settings. Start from DefaultConfig.
type Config struct {
	// HandshakeTimeout bounds the time from accept until the request has been
	// read and answered (method negotiation, authentication, request, rules,
	// dial). Must be > 0.
	HandshakeTimeout time.Duration
	// DialTimeout bounds resolving and connecting to a CONNECT destination.
	// Must be > 0.
	DialTimeout time.Duration
	// IdleTimeout closes a relayed TCP session after this long with no byte
	// in either direction. 0 disables it. Media control connections see a
	// ping at least every 30 s (MS-MMSP keepalive), so minutes are safe.
	IdleTimeout time.Duration
	// TCPKeepAlive turns on TCP keep-alive on CONNECT's two connections and
	// on accepted client connections: the first probe after this long idle,
	// then every 15 s (Go's default). 0, the default, sets none, which
	// saves the setsockopt calls of every CONNECT; IdleTimeout already ends
	// a silent session. Turn it on for long idle sessions through NAT or
	// stateful firewalls that forget them. Must be >= 0.
	TCPKeepAlive time.Duration
	// MaxSessions caps concurrent client connections; one more is closed at
	// once and counted. Must be > 0.
	MaxSessions int
	// MaxSessionsPerClient caps the concurrent connections of one client
	// IP, so that one source cannot hold every MaxSessions slot; one more
	// is closed at once and counted. 0 disables the cap; must be >= 0.
	MaxSessionsPerClient int
	// UDPIdleTimeout ends a UDP association that relayed no datagram either
	// way for this long (its lease then lingers). 0 disables it. The
	// association always ends when its TCP connection does (RFC 1928 §7).
	UDPIdleTimeout time.Duration
	// BindTimeout bounds how long BIND waits for the incoming connection.
	// Must be > 0.
	BindTimeout time.Duration
	// BindPortMin and BindPortMax bound the ports BIND listens on,
	// inclusive. A wanted port outside them is replaced by one inside. The
	// default keeps BIND off the privileged ports (< 1024), where a client
	// could pose as a system service of the proxy's host.
	BindPortMin, BindPortMax uint16
	// AdvertiseIP, when set, is sent as BND.ADDR in UDP ASSOCIATE and BIND
	// replies instead of the local address the control connection arrived
	// on (for a proxy reached through NAT). Never 0.0.0.0.
	AdvertiseIP netip.Addr
	// ExternalIP is the proxy's address towards the outside: BIND listens
	// there (unset: the address the control connection arrived on), and
	// CONNECT connects from there when it can reach the destination from it,
	// so that a media server's UDP comes back to the lease sockets.
	ExternalIP netip.Addr
	// AuthFailuresPerMinute is how many failed username/password logins a
	// source (an IPv4 address, an IPv6 /64) may make a minute once its
	// AuthFailureBurst is spent; a login from a source over the limit is
	// refused without checking its password, so that a password-guessing
	// flood cannot starve other logins of CPU. 0 disables the limit.
	AuthFailuresPerMinute int
	// AuthFailureBurst is how many failed logins in a row a source may make
	// before AuthFailuresPerMinute applies. Must be > 0 when the limit is on.
	AuthFailureBurst int
	// AuthConcurrency caps the password checks (bcrypt) running at once; a
	// login waits for a free slot until its handshake deadline. 0 means
	// one per CPU.
	AuthConcurrency int
	// Rules decides which clients, commands and destinations are allowed.
	Rules Rules
	// RelayPorts is where UDP ASSOCIATE's client-facing relay sockets
	// bind, on the address the control connection arrived on; the zero
	// value takes ephemeral ports.
	RelayPorts PortRange
}

// KeepAlivePeriod is d as net.Dialer and net.ListenConfig take it: a
// negative value turns keep-alive off, where their 0 would mean on at 15 s.
func KeepAlivePeriod(d time.Duration) time.Duration {
	if d <= 0 {
		return -1
	}
	return d
}

// DefaultConfig returns settings that are safe on any host: loopback
// clients only, every command, every destination except the proxy's host,
// its own sockets and the addresses that are never destinations (see
// Server.judge).
func DefaultConfig() Config {
	return Config{
		HandshakeTimeout: 10 * time.Second,
		DialTimeout:      10 * time.Second,
		IdleTimeout:      5 * time.Minute,
		MaxSessions:      1024,
		// 64 leaves a busy client (a browser's few dozen connections, a
		// player's control connection and associations) room to spare,
		// while a single source can take at most 1/16 of the default
		// MaxSessions. Clients behind one NAT share it: raise it there.
		MaxSessionsPerClient: 64,
		UDPIdleTimeout:       5 * time.Minute,
		BindTimeout:          2 * time.Minute,
		BindPortMin:          1024,
		BindPortMax:          65535,
		Rules:                DefaultRules(),

		AuthFailuresPerMinute: 10,
		AuthFailureBurst:      5,
	}
}

// Validate reports the first setting that cannot work.
func (c Config) Validate() error {
	var errs []error
	if c.HandshakeTimeout <= 0 {
		errs = append(errs, fmt.Errorf("handshake timeout %v must be > 0", c.HandshakeTimeout))
	}
	if c.DialTimeout <= 0 {
		errs = append(errs, fmt.Errorf("dial timeout %v must be > 0", c.DialTimeout))
	}
	if c.IdleTimeout < 0 {
		errs = append(errs, fmt.Errorf("idle timeout %v must be >= 0", c.IdleTimeout))
	}
	if c.TCPKeepAlive < 0 {
		errs = append(errs, fmt.Errorf("tcp keep-alive %v must be >= 0", c.TCPKeepAlive))
	}
	if c.UDPIdleTimeout < 0 {
		errs = append(errs, fmt.Errorf("udp idle timeout %v must be >= 0", c.UDPIdleTimeout))
	}
	if c.BindTimeout <= 0 {
		errs = append(errs, fmt.Errorf("bind timeout %v must be > 0", c.BindTimeout))
	}
	if c.AdvertiseIP.IsValid() && c.AdvertiseIP.IsUnspecified() {
		errs = append(errs, fmt.Errorf("advertise IP %v must be a real address", c.AdvertiseIP))
	}
	if c.MaxSessions <= 0 {
		errs = append(errs, fmt.Errorf("max sessions %d must be > 0", c.MaxSessions))
	}
	if c.MaxSessionsPerClient < 0 {
		errs = append(errs, fmt.Errorf("max sessions per client %d must be >= 0", c.MaxSessionsPerClient))
	}
	if c.BindPortMin == 0 || c.BindPortMin > c.BindPortMax {
		errs = append(errs, fmt.Errorf("bind ports %d-%d: want 1 <= low <= high <= 65535", c.BindPortMin, c.BindPortMax))
	}
	if c.AuthFailuresPerMinute < 0 {
		errs = append(errs, fmt.Errorf("auth failures per minute %d must be >= 0", c.AuthFailuresPerMinute))
	}
	if c.AuthFailuresPerMinute > 0 && c.AuthFailureBurst <= 0 {
		errs = append(errs, fmt.Errorf("auth failure burst %d must be > 0", c.AuthFailureBurst))
	}
	if c.AuthConcurrency < 0 {
		errs = append(errs, fmt.Errorf("auth concurrency %d must be >= 0", c.AuthConcurrency))
	}
	if err := c.Rules.Validate(); err != nil {
		errs = append(errs, err)
	}
	if err := c.RelayPorts.Validate(); err != nil {
		errs = append(errs, fmt.Errorf("relay ports: %w", err))
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("proxy config: %w", err)
	}
	return nil
}

// Rules are the access rules. The zero value allows nothing.
type Rules struct {
	// Clients lists the networks clients may connect from. A connection from
	// elsewhere is closed before the handshake and counted. They are also
	// the inside: not a destination unless an explicit allow rule names it
	// (a network of a whole family, 0.0.0.0/0 or ::/0, names no inside).
	Clients []netip.Prefix
	// Commands enables CONNECT, BIND and UDP ASSOCIATE.
	Connect, Bind, Associate bool
	// DenyDestinations lists destinations refused with reply 0x02; it is
	// checked first.
	DenyDestinations []DestRule
	// AllowDestinations lists the destinations allowed; empty allows every
	// destination not denied.
	AllowDestinations []DestRule
}

// DefaultRules allows loopback clients every command to every destination.
func DefaultRules() Rules {
	return Rules{
		Clients: []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8"), netip.MustParsePrefix("::1/128")},
		Connect: true, Bind: true, Associate: true,
	}
}

// Validate reports rules that cannot be right.
func (r Rules) Validate() error {
	for _, p := range r.Clients {
		if !p.IsValid() {
			return errors.New("rules: invalid client network")
		}
	}
	for _, list := range [][]DestRule{r.DenyDestinations, r.AllowDestinations} {
		for _, d := range list {
			if err := d.Validate(); err != nil {
				return err
			}
		}
	}
	return nil
}

// DestRule matches destinations by network and port range. An allow rule
// narrower than its whole address family (not 0.0.0.0/0 or ::/0) is
// explicit: it also lifts the default refusal of the proxy's host,
// multicast, broadcast and the client networks inside its network, and when it names ports (not
// every port) the refusal of the proxy's own sockets at those ports.
type DestRule struct {
	Network netip.Prefix
	// FirstPort and LastPort bound the ports, inclusive; both 0 means any.
	FirstPort, LastPort uint16
}

// Validate reports a rule that matches nothing by mistake.
func (d DestRule) Validate() error {
	if !d.Network.IsValid() {
		return errors.New("rules: destination rule without a valid network")
	}
	if d.FirstPort > d.LastPort {
		return fmt.Errorf("rules: destination port range %d-%d is reversed", d.FirstPort, d.LastPort)
	}
	return nil
}

// Matches reports whether dst is inside the rule.
func (d DestRule) Matches(dst netip.AddrPort) bool {
	if !d.Network.Contains(dst.Addr().Unmap()) {
		return false
	}
	if d.FirstPort == 0 && d.LastPort == 0 {
		return true
	}
	return dst.Port() >= d.FirstPort && dst.Port() <= d.LastPort
}

// ClientAllowed reports whether a client at ip may use the proxy.
func (r Rules) ClientAllowed(ip netip.Addr) bool {
	ip = ip.Unmap()
	for _, p := range r.Clients {
		if p.Contains(ip) {
			return true
		}
	}
	return false
}

// CommandAllowed reports whether cmd is enabled.
func (r Rules) CommandAllowed(cmd Command) bool {
	switch cmd {
	case CommandConnect:
		return r.Connect
	case CommandBind:
		return r.Bind
	case CommandAssociate:
		return r.Associate
	}
	return false
}

// DestinationAllowed reports whether the deny and allow lists let dst
// through. The server refuses more than this (the unspecified address, the
// proxy's host and own sockets, multicast, broadcast and the client
// networks; see Server.judge).
func (r Rules) DestinationAllowed(dst netip.AddrPort) bool {
	return !r.verdict(normalise(dst), false).denied
}

// Allow implements go-socks5's RuleSet: the command must be enabled and the
// destination, once resolved to an address, allowed. A request whose
// destination is still a bare name is judged again after resolution.
func (r Rules) Allow(ctx context.Context, req *socks5.Request) (context.Context, bool) {
	if !r.CommandAllowed(Command(req.Command)) {
		return ctx, false
	}
	if ip, ok := netip.AddrFromSlice(req.DestAddr.IP); ok {
		return ctx, r.DestinationAllowed(netip.AddrPortFrom(ip.Unmap(), uint16(req.DestAddr.Port)))
	}
	return ctx, true
}

var _ socks5.RuleSet = Rules{}

package mmsplayer

import (
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"time"
)

// Mode is how the player gets its data.
type Mode uint8

const (
	// ModeFirewall is MMSU as a firewall client does it: control through
	// SOCKS CONNECT, and every UDP bind of the player mirrored as a UDP
	// ASSOCIATE whose DST.PORT is the bound port; data arrives through
	// the association, SOCKS-encapsulated. Needs Proxy.
	ModeFirewall Mode = iota
	// ModeAnnounced is MMSU as a plain SOCKS client does it (VLC with
	// --socks): control through SOCKS CONNECT, UDP bound locally and
	// announced in the funnel; the proxy relays the server's datagrams to
	// it unwrapped. Without Proxy: MMSU straight to the server.
	ModeAnnounced
	// ModeTCP is MMST: data interleaved on the control connection,
	// through SOCKS CONNECT when Proxy is set.
	ModeTCP
)

func (m Mode) String() string {
	switch m {
	case ModeFirewall:
		return "firewall-client"
	case ModeAnnounced:
		return "announced"
	case ModeTCP:
		return "mmst"
	}
	return "unknown"
}

// Order is how the player closes its UDP binding and binds the same port
// again at a playlist transition (after StreamChange, before ReadBlock,
// mmsfilter/PROTOCOL.md §4.b step 5).
type Order uint8

const (
	// OrderKeep keeps the socket (and association): no rebind. What VLC
	// and MMST players do.
	OrderKeep Order = iota
	// OrderCloseFirst is the careful close, then bind again: half-close
	// the association's TCP, wait for the proxy's close (the proxy has
	// released the lease by then), read what the socket holds, close it,
	// send Logging, wait Gap, bind the port again, associate again.
	OrderCloseFirst
	// OrderNewFirst races the new association ahead of the old one's
	// close: bind the port again beside the old socket, wait Gap,
	// associate (the proxy hands the lease over), then close the old
	// association and socket, then send Logging.
	OrderNewFirst
	// OrderConcurrent binds the port again beside the old socket, waits
	// Gap, then sends the new association's request and the old one's
	// close at the same moment, on two connections, and lets the proxy
	// sort them out; then closes the old socket and sends Logging.
	OrderConcurrent
)

func (o Order) String() string {
	switch o {
	case OrderKeep:
		return "keep"
	case OrderCloseFirst:
		return "close-first"
	case OrderNewFirst:
		return "new-first"
	case OrderConcurrent:
		return "concurrent"
	}
	return "unknown"
}

// Step is what the player does at one playlist transition.
type Step struct {
	Order Order
	// Gap is the pause between the two halves of the rebind (see Order).
	Gap time.Duration
}

// Plan chooses the step for transition i (0 is the change from the first
// entry to the second). It is called from the player's goroutine only.
type Plan func(i int) Step

// Always is a Plan that does the same at every transition.
func Always(s Step) Plan { return func(int) Step { return s } }

// Config describes one player.
type Config struct {
	// Server is the media server's control address, as the proxy (or the
	// player, without Proxy) connects to it.
	Server netip.AddrPort
	// Path is the name to open (the URL path without its leading '/').
	Path string

	// Proxy is the SOCKS5 server (host:port); "" connects directly.
	Proxy string
	// User and Password, when User is set, authenticate to the proxy.
	User, Password string

	Mode Mode
	// LocalIP is the player's address: its UDP socket binds there, its
	// TCP connections (to the proxy, or to the server) come from there,
	// and the funnel announces it. Default 127.0.0.1. On a machine shared
	// with other tests, a loopback address of the players' own (say
	// 127.0.0.3) keeps the player's port out of their way while it is
	// between close and bind.
	LocalIP netip.Addr
	// Port is the UDP port. 0 takes one from Ports, or, without Ports,
	// one the system picks.
	Port uint16
	// Ports hands out ports to players that share a process, so that no
	// two of them rebind the same one. Optional.
	Ports *Ports

	// Plan decides each transition's rebind; nil keeps the socket.
	// ModeTCP always keeps; ModeAnnounced supports OrderKeep and
	// OrderCloseFirst only (it has no association to race), and the racing
	// orders need Linux.
	Plan Plan

	// StepTimeout bounds each wait for a server answer, a SOCKS exchange
	// or the proxy's close. Must be > 0.
	StepTimeout time.Duration
	// HeaderTimeout is the base of the Header timer (spec: 1 s plus the
	// header's size at the entry's bit rate). When it fires the player
	// cancels the ReadBlock and asks again, HeaderRetries times, before it
	// fails ([MS-MMSP] §3.1.2, §3.1.6). Must be > 0.
	HeaderTimeout time.Duration
	HeaderRetries int
	// LossWait is how long, after the playlist ended, the player keeps
	// waiting for packets still missing before it counts them lost. The
	// wait ends as soon as every packet is in. Must be > 0.
	LossWait time.Duration

	// Verify, when set, checks each received data packet's payload
	// (entry index, LocationId); an error counts the packet as corrupt.
	Verify func(entry int, loc uint32, payload []byte) error

	// Sockets, when set, runs each call that opens one of the player's
	// sockets (connections and UDP binds): a test puts the player on a
	// host of its own with it, a network namespace whose Do opens what f
	// opens there. nil opens them here.
	Sockets func(open func() error) error

	// Logger receives the player's steps at Debug; nil discards.
	Logger *slog.Logger
}

// open runs f, which opens a socket, where Sockets says.
func (c Config) open(f func() error) error {
	if c.Sockets == nil {
		return f()
	}
	return c.Sockets(f)
}

// DefaultConfig returns a direct MMSU player on 127.0.0.1 with the spec's
// timers; set Server and Path.
func DefaultConfig() Config {
	return Config{
		Mode:          ModeAnnounced,
		LocalIP:       netip.AddrFrom4([4]byte{127, 0, 0, 1}),
		StepTimeout:   10 * time.Second,
		HeaderTimeout: time.Second,
		HeaderRetries: 4,
		LossWait:      2 * time.Second,
	}
}

// Validate reports the settings that cannot work.
func (c Config) Validate() error {
	var errs []error
	if !c.Server.IsValid() {
		errs = append(errs, errors.New("Server is not set"))
	}
	if !c.LocalIP.IsValid() || c.LocalIP.Is4In6() || c.LocalIP.Zone() != "" {
		errs = append(errs, fmt.Errorf("LocalIP %v is not a plain IPv4 or IPv6 address", c.LocalIP))
	}
	if c.Mode > ModeTCP {
		errs = append(errs, fmt.Errorf("unknown mode %d", c.Mode))
	}
	if c.Mode == ModeFirewall && c.Proxy == "" {
		errs = append(errs, errors.New("firewall-client mode needs Proxy"))
	}
	if c.StepTimeout <= 0 || c.HeaderTimeout <= 0 || c.LossWait <= 0 {
		errs = append(errs, fmt.Errorf("timeouts must be > 0 (step %v, header %v, loss wait %v)", c.StepTimeout, c.HeaderTimeout, c.LossWait))
	}
	if c.HeaderRetries < 0 {
		errs = append(errs, fmt.Errorf("HeaderRetries %d is negative", c.HeaderRetries))
	}
	if len(errs) > 0 {
		return fmt.Errorf("mmsplayer: invalid config: %w", errors.Join(errs...))
	}
	return nil
}

// udpNetwork is the network that binds exactly a's family: "udp4" keeps an
// IPv4 socket from being a dual-stack one.
func udpNetwork(a netip.Addr) string {
	if a.Is4() {
		return "udp4"
	}
	return "udp6"
}

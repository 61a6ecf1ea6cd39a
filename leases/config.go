package leases

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"time"

	"fwproxy/internal/selfaddr"
)

// Config holds the lease manager's settings. Start from DefaultConfig and
// override; New calls Validate.
type Config struct {
	// ListenIP is the address every external socket binds to. The default,
	// 127.0.0.1, is deliberately harmless: an operator must opt in to exposing
	// ports to the outside. It must be a specific address, never unspecified
	// (0.0.0.0 or ::), because a wildcard bind would collide with every
	// specific bind on the same port and hide real conflicts.
	ListenIP netip.Addr

	// PortMin and PortMax bound the external ports (inclusive). 0 is invalid
	// for PortMin; PortMax must be >= PortMin.
	PortMin uint16
	PortMax uint16

	// BindAttempts is how many random ports are tried after WantPort could not
	// be used and before a linear scan of the whole range. 0 goes straight to
	// the scan (from a random start). Negative is invalid.
	BindAttempts int

	// Linger is how long a lease whose last holder was released keeps its
	// socket open and buffers inbound datagrams, waiting to be reclaimed.
	// 0 disables lingering: nothing is buffered and the last release closes
	// the socket at once (the historical, datagram-losing behaviour, kept so
	// tests can show it). Negative is invalid.
	Linger time.Duration

	// MaxLeases caps the number of leases (sockets) in the table. At the cap
	// the oldest lingering lease is evicted; with none, Acquire fails with
	// ErrTableFull. 0 means no cap. Negative is invalid.
	MaxLeases int

	// MaxLeasesPerClient caps the leases per client IP (all users together).
	// At the cap that client's oldest lingering lease is evicted; with none,
	// Acquire fails with ErrClientLimit. 0 means no cap. Negative is invalid.
	MaxLeasesPerClient int

	// MaxBufferedDatagrams caps the datagrams one lease buffers while it has
	// no delivery target. 0 means no count cap (the byte caps still apply).
	// Negative is invalid.
	MaxBufferedDatagrams int

	// MaxBufferedBytes caps the bytes one lease buffers, each datagram
	// charged its payload plus a fixed overhead (the memory it holds, see
	// bufferedOverhead), so zero-byte datagrams count too. 0 means no
	// per-lease byte cap. Negative is invalid.
	MaxBufferedBytes int

	// MaxBufferedBytesTotal caps the bytes buffered by all leases together,
	// charged as for MaxBufferedBytes. 0 means no global cap. Negative is invalid. With Linger > 0
	// at least one of the three buffer caps must be set.
	MaxBufferedBytesTotal int64

	// MaxPeers caps the permitted inbound peer IPs per lease. When full, the
	// oldest entry is replaced. Must be >= 1.
	MaxPeers int

	// MaxDatagramSize is the largest inbound datagram, in bytes, that is
	// relayed; larger ones are dropped (reason too_large). It is also the size
	// of the pooled read buffers. 1..65535.
	MaxDatagramSize int
}

// DefaultConfig returns settings that are safe on a shared host: loopback
// only, bounded everywhere.
func DefaultConfig() Config {
	return Config{
		ListenIP:              netip.AddrFrom4([4]byte{127, 0, 0, 1}),
		PortMin:               1024,
		PortMax:               65535,
		BindAttempts:          16,
		Linger:                10 * time.Second,
		MaxLeases:             10000,
		MaxLeasesPerClient:    64,
		MaxBufferedDatagrams:  256,
		MaxBufferedBytes:      256 << 10,
		MaxBufferedBytesTotal: 64 << 20,
		MaxPeers:              16,
		MaxDatagramSize:       65535,
	}
}

// Validate reports the first invalid setting.
func (c Config) Validate() error {
	var errs []error
	if !c.ListenIP.IsValid() {
		errs = append(errs, errors.New("ListenIP is not set"))
	} else if c.ListenIP.IsUnspecified() {
		errs = append(errs, fmt.Errorf("ListenIP %v is a wildcard address", c.ListenIP))
	} else if c.ListenIP.Zone() != "" {
		errs = append(errs, fmt.Errorf("ListenIP %v has a zone", c.ListenIP))
	}
	if c.PortMin == 0 {
		errs = append(errs, errors.New("PortMin is 0"))
	}
	if c.PortMax < c.PortMin {
		errs = append(errs, fmt.Errorf("PortMax %d < PortMin %d", c.PortMax, c.PortMin))
	}
	if c.BindAttempts < 0 {
		errs = append(errs, fmt.Errorf("BindAttempts %d is negative", c.BindAttempts))
	}
	if c.Linger < 0 {
		errs = append(errs, fmt.Errorf("Linger %v is negative", c.Linger))
	}
	for _, f := range []struct {
		name string
		v    int64
	}{
		{"MaxLeases", int64(c.MaxLeases)},
		{"MaxLeasesPerClient", int64(c.MaxLeasesPerClient)},
		{"MaxBufferedDatagrams", int64(c.MaxBufferedDatagrams)},
		{"MaxBufferedBytes", int64(c.MaxBufferedBytes)},
		{"MaxBufferedBytesTotal", c.MaxBufferedBytesTotal},
	} {
		if f.v < 0 {
			errs = append(errs, fmt.Errorf("%s %d is negative", f.name, f.v))
		}
	}
	if c.Linger > 0 && c.MaxBufferedDatagrams == 0 && c.MaxBufferedBytes == 0 && c.MaxBufferedBytesTotal == 0 {
		errs = append(errs, errors.New("Linger > 0 needs at least one buffer cap (MaxBufferedDatagrams, MaxBufferedBytes, MaxBufferedBytesTotal)"))
	}
	if c.MaxPeers < 1 {
		errs = append(errs, fmt.Errorf("MaxPeers %d < 1", c.MaxPeers))
	}
	if c.MaxDatagramSize < 1 || c.MaxDatagramSize > 65535 {
		errs = append(errs, fmt.Errorf("MaxDatagramSize %d outside 1..65535", c.MaxDatagramSize))
	}
	if len(errs) > 0 {
		return fmt.Errorf("leases: invalid config: %w", errors.Join(errs...))
	}
	return nil
}

// Clock is the time source. Tests inject a fake one; nil means the system
// clock.
type Clock interface {
	Now() time.Time
	// AfterFunc runs f once, on some goroutine, after d. The Manager stops
	// every timer it starts and tolerates f running after Stop returned false.
	AfterFunc(d time.Duration, f func()) Timer
}

// Timer is the part of *time.Timer the Manager uses.
type Timer interface {
	Stop() bool
}

type systemClock struct{}

func (systemClock) Now() time.Time { return time.Now() }

func (systemClock) AfterFunc(d time.Duration, f func()) Timer { return time.AfterFunc(d, f) }

// ListenFunc binds one external UDP socket at exactly addr. The Manager owns
// and closes the returned conn. It must not set SO_REUSEADDR/SO_REUSEPORT:
// the Manager relies on the kernel refusing a port that is in use. An
// address-in-use failure must satisfy errors.Is(err, syscall.EADDRINUSE).
type ListenFunc func(ctx context.Context, addr netip.AddrPort) (*net.UDPConn, error)

// Deps are the Manager's collaborators. Every field is optional.
type Deps struct {
	// Logger receives lease transitions at Debug and anomalies at Warn;
	// nil discards.
	Logger *slog.Logger
	// Observer receives counters; nil means NopObserver.
	Observer Observer
	// Clock drives linger deadlines and ages; nil means the system clock.
	Clock Clock
	// ListenUDP binds external sockets; nil means net.ListenConfig.
	ListenUDP ListenFunc
	// Self is the set of the proxy's own socket addresses, shared with the
	// proxy. The Manager adds every lease socket while it is bound, and
	// never sends a datagram to an address in the set: one lease
	// delivering to its own socket, or to another lease's, would loop a
	// datagram for ever. nil means a set of the Manager's own.
	Self *selfaddr.Set
}

func defaultListenUDP(ctx context.Context, addr netip.AddrPort) (*net.UDPConn, error) {
	network := "udp4"
	if addr.Addr().Is6() {
		network = "udp6"
	}
	var lc net.ListenConfig
	pc, err := lc.ListenPacket(ctx, network, addr.String())
	if err != nil {
		return nil, err
	}
	uc, ok := pc.(*net.UDPConn)
	if !ok {
		pc.Close()
		return nil, fmt.Errorf("listen %v: unexpected conn type %T", addr, pc)
	}
	return uc, nil
}

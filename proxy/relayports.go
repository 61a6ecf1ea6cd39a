package proxy

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"syscall"
)

// PortRange is an inclusive range of UDP ports; the zero value leaves the
// choice to the kernel (an ephemeral port).
type PortRange struct {
	Min, Max uint16
}

// IsZero reports whether r is the kernel's choice.
func (r PortRange) IsZero() bool { return r.Min == 0 && r.Max == 0 }

// Validate reports a range that holds no port.
func (r PortRange) Validate() error {
	if r.IsZero() {
		return nil
	}
	if r.Min == 0 || r.Min > r.Max {
		return fmt.Errorf("port range %d-%d: want 1 <= min <= max", r.Min, r.Max)
	}
	return nil
}

func (r PortRange) String() string {
	if r.IsZero() {
		return "ephemeral"
	}
	return fmt.Sprintf("%d-%d", r.Min, r.Max)
}

// ErrNoRelayPort means every port of the relay range is taken on the
// address.
var ErrNoRelayPort = errors.New("no free port in the relay port range")

// listenRelay opens a client-facing relay socket on ip, within r. It
// starts at a random port of the range, so that a port just given up is
// not the next one handed out (a late datagram of the old association
// would land in the new one), and tries each port once.
func listenRelay(ip netip.Addr, r PortRange) (*net.UDPConn, error) {
	if r.IsZero() {
		return net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.AddrPortFrom(ip, 0)))
	}
	n := int(r.Max) - int(r.Min) + 1
	start := rand.IntN(n)
	for i := range n {
		port := r.Min + uint16((start+i)%n)
		c, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.AddrPortFrom(ip, port)))
		if err == nil {
			return c, nil
		}
		if !errors.Is(err, syscall.EADDRINUSE) {
			return nil, err
		}
	}
	return nil, fmt.Errorf("%w %v on %v", ErrNoRelayPort, r, ip)
}

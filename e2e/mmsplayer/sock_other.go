//go:build !linux

package mmsplayer

import (
	"context"
	"errors"
	"net"
	"net/netip"
)

// Elsewhere the racing orders are not available (see sock_linux.go), and
// a socket is closed without a last non-blocking read.

const overlapSupported = false

var errUnsupported = errors.New("not supported on this system")

func listenUDP(ctx context.Context, addr netip.AddrPort, reuse bool) (*net.UDPConn, error) {
	if reuse {
		return nil, errUnsupported
	}
	var lc net.ListenConfig
	pc, err := lc.ListenPacket(ctx, udpNetwork(addr.Addr()), addr.String())
	if err != nil {
		return nil, err
	}
	return pc.(*net.UDPConn), nil
}

func allowReuse(*net.UDPConn) error { return errUnsupported }

func connectUDP(*net.UDPConn, netip.AddrPort) error { return errUnsupported }

func drainUDP(*net.UDPConn, []byte, func([]byte, netip.AddrPort)) error { return errUnsupported }

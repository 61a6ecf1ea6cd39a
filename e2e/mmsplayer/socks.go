package mmsplayer

import (
	"context"
	"net"
	"net/netip"

	"fwproxy/internal/socksclient"
)

// socksDialer is the player's SOCKS5 client: its connections come from
// cfg.LocalIP, which the proxy takes for the client's identity, and are
// opened through cfg.open (Config.Sockets).
func socksDialer(cfg Config) *socksclient.Dialer {
	nd := net.Dialer{LocalAddr: net.TCPAddrFromAddrPort(netip.AddrPortFrom(cfg.LocalIP, 0))}
	return &socksclient.Dialer{
		Proxy:    cfg.Proxy,
		Username: cfg.User,
		Password: cfg.Password,
		Timeout:  cfg.StepTimeout,
		Dial: func(ctx context.Context, network, address string) (c net.Conn, err error) {
			err = cfg.open(func() (err error) {
				c, err = nd.DialContext(ctx, network, address)
				return err
			})
			return c, err
		},
	}
}

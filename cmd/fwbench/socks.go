package main

import (
	"context"
	"fmt"
	"net"
	"net/netip"

	"fwproxy/internal/socksclient"
)

// The benchmark drives fwproxy and danted through the tools' one SOCKS5
// client; these helpers give its load loops the shapes they use: TCP
// connections (CloseWrite, splice) and netip addresses, with datagram
// headers built once and stripped without allocating.

const (
	cmdConnect      = socksclient.CmdConnect
	cmdUDPAssociate = socksclient.CmdUDPAssociate
)

// dialSocks connects to the proxy and runs a handshake for cmd and dst.
// On error nothing stays open.
func dialSocks(ctx context.Context, proxy string, cmd socksclient.Command, dst netip.AddrPort) (*net.TCPConn, socksclient.Addr, error) {
	return dialSocksFrom(ctx, netip.Addr{}, proxy, cmd, dst)
}

// dialSocksFrom is dialSocks from the local address from (the kernel's
// choice when from is the zero Addr).
func dialSocksFrom(ctx context.Context, from netip.Addr, proxy string, cmd socksclient.Command, dst netip.AddrPort) (*net.TCPConn, socksclient.Addr, error) {
	var nd net.Dialer
	if from.IsValid() {
		nd.LocalAddr = net.TCPAddrFromAddrPort(netip.AddrPortFrom(from, 0))
		nd.Control = bindNoPort
	}
	d := socksclient.Dialer{Proxy: proxy, Dial: nd.DialContext}
	c, bound, err := d.Request(ctx, cmd, socksclient.AddrFromAddrPort(dst))
	if err != nil {
		return nil, bound, err
	}
	tc, ok := c.(*net.TCPConn)
	if !ok {
		c.Close()
		return nil, bound, fmt.Errorf("socks: connection to %s is a %T", proxy, c)
	}
	return tc, bound, nil
}

// relayAddr is where to send the datagrams of an association (see
// socksclient.RelayAddr); the invalid AddrPort when the reply gave none.
func relayAddr(bound socksclient.Addr, proxy string) netip.AddrPort {
	ap, _ := socksclient.RelayAddr(bound, proxy)
	return ap
}

// appendUDPHeader appends the SOCKS UDP request header for a datagram to
// dst; an IP address always has one.
func appendUDPHeader(b []byte, dst netip.AddrPort) []byte {
	b, _ = socksclient.AppendUDPHeader(b, socksclient.AddrFromAddrPort(dst))
	return b
}

// udpPayload strips the SOCKS UDP header from a datagram relayed by a
// proxy and returns the payload.
func udpPayload(b []byte) ([]byte, error) {
	_, n, err := socksclient.ParseUDPHeader(b)
	if err != nil {
		return nil, err
	}
	return b[n:], nil
}

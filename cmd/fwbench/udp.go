package main

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"time"
)

// rtTimeout is how long a round trip may take before its datagram counts
// as lost.
const rtTimeout = 200 * time.Millisecond

// benchUDP measures UDP round trips through associations (or directly):
// each association keeps one datagram in flight to the echo peer.
func (b *bench) benchUDP(ctx context.Context, assocs, size int) error {
	label := fmt.Sprintf("%d association(s), %d B", assocs, size)
	key := fmt.Sprintf("udp/%d/%d", assocs, size)
	rate := b.res.fig(key+"/rate", "UDP round trips, "+label, "rt/s", higherIsBetter)
	p50 := b.res.fig(key+"/p50", "UDP round trip p50, "+label, "µs", lowerIsBetter)
	p99 := b.res.fig(key+"/p99", "UDP round trip p99, "+label, "µs", lowerIsBetter)
	loss := b.res.fig(key+"/loss", "UDP datagrams lost, "+label, "%", lowerIsBetter)
	for _, t := range b.targets {
		if t.tcpOnly {
			continue
		}
		prepare := func(ctx context.Context, _ int) (stepFunc, func(), error) {
			c, err := newRTClient(ctx, t, b.peers.echoAddr(), size)
			if err != nil {
				return nil, nil, fmt.Errorf("%s: %w", t.sys, err)
			}
			for range 20 { // warm-up: leases, peers, caches
				c.step(ctx)
			}
			return c.step, c.close, nil
		}
		s, elapsed, err := measure(ctx, assocs, b.dur, prepare)
		if err != nil {
			return err
		}
		rate.set(t.sys, perSecond(s.ok, elapsed))
		p50.set(t.sys, micros(percentile(s.lat, 0.50)))
		p99.set(t.sys, micros(percentile(s.lat, 0.99)))
		loss.set(t.sys, 100*float64(s.lost)/float64(max(s.ok+s.lost, 1)))
	}
	return nil
}

// rtClient does one round trip at a time over its own UDP socket.
type rtClient struct {
	sock *net.UDPConn
	ctl  *net.TCPConn // the association; nil when direct
	to   netip.AddrPort
	out  []byte // header (when proxied) and payload
	seq  []byte // the payload's first 8 bytes: the round trip's number
	in   []byte
	n    uint64
}

func newRTClient(ctx context.Context, t target, echo netip.AddrPort, size int) (*rtClient, error) {
	sock, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		return nil, err
	}
	c := &rtClient{sock: sock, to: echo, in: make([]byte, 64<<10)}
	if t.proxy != "" {
		ctx, cancel := context.WithTimeout(ctx, connectTimeout)
		defer cancel()
		ctl, bound, err := dialSocks(ctx, t.proxy, cmdUDPAssociate, addrPort(sock.LocalAddr()))
		if err != nil {
			sock.Close()
			return nil, fmt.Errorf("udp associate: %w", err)
		}
		c.ctl = ctl
		c.to = relayAddr(bound, t.proxy)
		c.out = appendUDPHeader(nil, echo)
	}
	hdr := len(c.out)
	c.out = append(c.out, make([]byte, max(size, 8))...)
	c.seq = c.out[hdr : hdr+8]
	return c, nil
}

func (c *rtClient) close() {
	if c.ctl != nil {
		c.ctl.Close()
	}
	c.sock.Close()
}

// step sends one numbered datagram and waits for its echo; late echoes of
// earlier (already counted as lost) datagrams are skipped.
func (c *rtClient) step(ctx context.Context) (time.Duration, error) {
	c.n++
	binary.BigEndian.PutUint64(c.seq, c.n)
	start := time.Now()
	if _, err := c.sock.WriteToUDPAddrPort(c.out, c.to); err != nil {
		return 0, err
	}
	c.sock.SetReadDeadline(start.Add(rtTimeout))
	for {
		n, _, err := c.sock.ReadFromUDPAddrPort(c.in)
		if errors.Is(err, os.ErrDeadlineExceeded) {
			return 0, fmt.Errorf("round trip %d: lost", c.n)
		}
		if err != nil {
			return 0, err
		}
		p := c.in[:n]
		if c.ctl != nil {
			if p, err = udpPayload(p); err != nil {
				continue
			}
		}
		if len(p) >= 8 && binary.BigEndian.Uint64(p) == c.n {
			return time.Since(start), nil
		}
	}
}

package proxy

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"sync"
	"time"

	socks5 "github.com/armon/go-socks5"
)

// bind serves BIND (RFC 1928 §4): listen, answer with the listening
// address, wait for one connection, answer with its address, relay.
// DST.PORT is the port the client wants (a firewall client mirroring its
// own bind); another is used when it is taken. A non-zero DST.ADDR is the
// only peer accepted; connections from anywhere else are closed and counted.
func (ss *session) bind(ctx context.Context, req *socks5.Request) error {
	s := ss.srv
	if _, ok := s.rules.Allow(ctx, &socks5.Request{Command: req.Command, DestAddr: &socks5.AddrSpec{}}); !ok {
		ss.sendReply(ReplyNotAllowed, netip.AddrPort{})
		return errors.New("bind not allowed by rules")
	}
	var peerIP netip.Addr
	if ip, ok := netip.AddrFromSlice(req.DestAddr.IP); ok && !ip.Unmap().IsUnspecified() {
		peerIP = ip.Unmap()
		if !s.cfg.Rules.DestinationAllowed(netip.AddrPortFrom(peerIP, uint16(req.DestAddr.Port))) {
			ss.sendReply(ReplyNotAllowed, netip.AddrPort{})
			return fmt.Errorf("bind for peer %v not allowed by rules", peerIP)
		}
	} else if req.DestAddr.FQDN != "" {
		addrs, err := s.resolve(ctx, req.DestAddr.FQDN)
		if err != nil || len(addrs) == 0 {
			ss.sendReply(ReplyHostUnreachable, netip.AddrPort{})
			return fmt.Errorf("bind: resolve %q: %w", req.DestAddr.FQDN, err)
		}
		peerIP = addrs[0].Unmap()
	}

	ln, err := ss.listenBind(uint16(req.DestAddr.Port))
	if err != nil {
		ss.sendReply(ReplyGeneralFailure, netip.AddrPort{})
		return err
	}
	if !ss.own(ln) {
		return errors.New("session aborted")
	}
	bound := addrPortOf(ln.Addr())
	if s.cfg.AdvertiseIP.IsValid() {
		bound = netip.AddrPortFrom(s.cfg.AdvertiseIP, bound.Port())
	}
	if err := ss.sendReply(ReplySucceeded, bound); err != nil {
		return err
	}
	s.obs.ActiveChanged("bind", 1)
	defer s.obs.ActiveChanged("bind", -1)

	peer, err := ss.acceptBind(ln, peerIP)
	ln.Close()
	if err != nil {
		rep := ReplyGeneralFailure
		if errors.Is(err, os.ErrDeadlineExceeded) {
			rep = ReplyTTLExpired
		}
		ss.writeReply(rep, netip.AddrPort{})
		return fmt.Errorf("bind: accept: %w", err)
	}
	if !ss.own(peer) {
		return errors.New("session aborted")
	}
	if err := ss.writeReply(ReplySucceeded, addrPortOf(peer.RemoteAddr())); err != nil {
		return err
	}
	return ss.relay(ctx, peer, passThrough{})
}

// listenBind listens on the external address at the wanted port, or at any
// port when that one is taken or none was asked for.
func (ss *session) listenBind(want uint16) (*net.TCPListener, error) {
	ip := ss.srv.cfg.ExternalIP
	if !ip.IsValid() {
		ip = addrPortOf(ss.conn.LocalAddr()).Addr()
	}
	if want != 0 {
		ln, err := net.ListenTCP("tcp", net.TCPAddrFromAddrPort(netip.AddrPortFrom(ip, want)))
		if err == nil {
			return ln, nil
		}
		ss.log.Debug("bind: wanted port taken, using another", "port", want, "err", err)
	}
	ln, err := net.ListenTCP("tcp", net.TCPAddrFromAddrPort(netip.AddrPortFrom(ip, 0)))
	if err != nil {
		return nil, fmt.Errorf("bind: listen on %v: %w", ip, err)
	}
	return ln, nil
}

// acceptBind waits up to BindTimeout for a connection from peerIP (any
// peer when peerIP is unset). Meanwhile it watches the control connection,
// so a client that gives up is noticed at once.
func (ss *session) acceptBind(ln *net.TCPListener, peerIP netip.Addr) (net.Conn, error) {
	ln.SetDeadline(time.Now().Add(ss.srv.cfg.BindTimeout))
	var wg sync.WaitGroup
	wg.Add(1)
	go ss.watchControl(ln, &wg)
	defer func() {
		// Stop the watcher before anything else reads the control
		// connection: a deadline in the past ends its Peek.
		ss.conn.SetReadDeadline(time.Unix(1, 0))
		wg.Wait()
		ss.conn.SetReadDeadline(time.Time{})
	}()
	for {
		c, err := ln.AcceptTCP()
		if err != nil {
			return nil, err
		}
		from := addrPortOf(c.RemoteAddr())
		if peerIP.IsValid() && from.Addr() != peerIP {
			ss.srv.obs.HandshakeFailed("bind_foreign_peer")
			ss.log.Warn("bind: connection from unexpected peer closed", "client", ss.client, "peer", from, "want", peerIP)
			c.Close()
			continue
		}
		return c, nil
	}
}

// watchControl closes ln when the client closes the control connection (or
// sends on it: nothing is expected before the second reply).
func (ss *session) watchControl(ln *net.TCPListener, wg *sync.WaitGroup) {
	defer wg.Done()
	if _, err := ss.br.Peek(1); err != nil {
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			return
		}
	}
	ln.Close()
}

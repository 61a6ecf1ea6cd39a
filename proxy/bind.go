package proxy

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"slices"
	"sync"
	"time"

	socks5 "github.com/armon/go-socks5"

	"fwproxy/internal/selfaddr"
)

// bind serves BIND (RFC 1928 §4): listen, answer with the listening
// address, wait for one connection, answer with its address, relay.
// DST.PORT is the port the client wants (a firewall client mirroring its
// own bind); another inside BindPortMin-BindPortMax is used when it is
// taken or outside them. A DST.ADDR that is an address or a name names the
// only peers accepted (every address of the name, each judged like a
// destination); 0.0.0.0 accepts any peer (RFC 1928 allows it). Whoever
// connects is judged against the destination rules too (Dante's
// bindreply), so a peer the rules refuse is closed and counted, never
// relayed.
func (ss *session) bind(ctx context.Context, req *socks5.Request) error {
	s := ss.srv
	if _, ok := s.rules.Allow(ctx, &socks5.Request{Command: req.Command, DestAddr: &socks5.AddrSpec{}}); !ok {
		ss.sendReply(ReplyNotAllowed, netip.AddrPort{})
		return errors.New("bind not allowed by rules")
	}
	peers, err := ss.bindPeers(ctx, req)
	if err != nil {
		var re *requestError
		errors.As(err, &re)
		ss.sendReply(re.reply, netip.AddrPort{})
		return err
	}

	ln, err := ss.listenBind(uint16(req.DestAddr.Port))
	if err != nil {
		ss.sendReply(ReplyGeneralFailure, netip.AddrPort{})
		return err
	}
	defer s.self.AddAddr(ln.Addr())()
	if !ss.own(ln) {
		return errors.New("session aborted")
	}
	bound := addrPortOf(ln.Addr())
	if s.cfg().AdvertiseIP.IsValid() {
		bound = netip.AddrPortFrom(s.cfg().AdvertiseIP, bound.Port())
	}
	if err := ss.sendReply(ReplySucceeded, bound); err != nil {
		return err
	}
	s.obs.ActiveChanged("bind", 1)
	defer s.obs.ActiveChanged("bind", -1)

	peer, err := ss.acceptBind(ln, peers)
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

// bindPeers turns BIND's DST.ADDR into the peers it accepts: nil for any
// (0.0.0.0 or ::), else the address or every address the name resolves to,
// each judged by address (the peer's source port is its kernel's choice).
// A failure is a *requestError with the reply the client is owed.
func (ss *session) bindPeers(ctx context.Context, req *socks5.Request) ([]netip.Addr, error) {
	s := ss.srv
	var addrs []netip.Addr
	if ip, ok := netip.AddrFromSlice(req.DestAddr.IP); ok {
		if ip.Unmap().IsUnspecified() {
			return nil, nil
		}
		addrs = []netip.Addr{ip}
	} else {
		rctx, cancel := context.WithTimeout(ctx, s.cfg().DialTimeout)
		defer cancel()
		resolved, err := s.resolve(rctx, req.DestAddr.FQDN)
		if err == nil && len(resolved) == 0 {
			err = &net.DNSError{Err: "no addresses", Name: req.DestAddr.FQDN, IsNotFound: true}
		}
		if err != nil {
			return nil, &requestError{reply: replyForDialError(err), reason: "resolve", err: fmt.Errorf("bind: resolve %q: %w", req.DestAddr.FQDN, err)}
		}
		addrs = resolved
	}
	peers := make([]netip.Addr, 0, len(addrs))
	for _, a := range addrs {
		a = a.Unmap().WithZone("")
		// As for CONNECT, one refused address refuses the name.
		if r := s.judge(netip.AddrPortFrom(a, 0), selfaddr.TCP, true); r != refusedNone {
			s.obs.DestinationRefused(r.String())
			return nil, &requestError{reply: ReplyNotAllowed, reason: r.String(), err: fmt.Errorf("bind for peer %v (%s) refused: %s", a, req.DestAddr.Address(), r)}
		}
		peers = append(peers, a)
	}
	return peers, nil
}

// listenBind listens on the external address at the wanted port when it is
// inside BindPortMin-BindPortMax and free, else at another port inside them.
func (ss *session) listenBind(want uint16) (*net.TCPListener, error) {
	cfg := ss.srv.cfg()
	ip := cfg.ExternalIP
	if !ip.IsValid() {
		ip = addrPortOf(ss.conn.LocalAddr()).Addr()
	}
	listen := func(port uint16) (*net.TCPListener, error) {
		return net.ListenTCP("tcp", net.TCPAddrFromAddrPort(netip.AddrPortFrom(ip, port)))
	}
	lo, hi := cfg.BindPortMin, cfg.BindPortMax
	if want != 0 {
		if want >= lo && want <= hi {
			ln, err := listen(want)
			if err == nil {
				return ln, nil
			}
			ss.logger().Debug("bind: wanted port taken, using another", "port", want, "err", err)
		} else {
			ss.logger().Debug("bind: wanted port outside bind_ports, using another", "port", want, "bind_ports", fmt.Sprintf("%d-%d", lo, hi))
		}
	}
	// The kernel's choice is usually inside the range (its ephemeral ports
	// are); only a narrower range needs a search.
	ln, err := listen(0)
	if err != nil {
		return nil, fmt.Errorf("bind: listen on %v: %w", ip, err)
	}
	if p := addrPortOf(ln.Addr()).Port(); p >= lo && p <= hi {
		return ln, nil
	}
	ln.Close()
	n := int(hi-lo) + 1
	first := rand.IntN(n)
	for i := range n {
		if ln, err = listen(lo + uint16((first+i)%n)); err == nil {
			return ln, nil
		}
	}
	return nil, fmt.Errorf("bind: no free port in %d-%d on %v: %w", lo, hi, ip, err)
}

// acceptBind waits up to BindTimeout for a connection from one of peers
// (any peer when peers is empty) that the rules allow. Meanwhile it watches
// the control connection, so a client that gives up is noticed at once.
func (ss *session) acceptBind(ln *net.TCPListener, peers []netip.Addr) (net.Conn, error) {
	s := ss.srv
	ln.SetDeadline(time.Now().Add(s.cfg().BindTimeout))
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
		if len(peers) > 0 && !slices.Contains(peers, from.Addr()) {
			s.obs.HandshakeFailed("bind_foreign_peer")
			if n, ok := s.bindPeerLog.allow(time.Now()); ok {
				ss.logger().Warn("bind: connection from unexpected peer closed", "client", ss.client, "peer", from, "want", peers, "refused_since_last_warning", n)
			}
			c.Close()
			continue
		}
		if r := s.judge(from, selfaddr.TCP, true); r != refusedNone {
			s.obs.HandshakeFailed("bind_peer_refused")
			s.obs.DestinationRefused(r.String())
			if n, ok := s.bindPeerLog.allow(time.Now()); ok {
				ss.logger().Warn("bind: connection from refused peer closed", "client", ss.client, "peer", from, "reason", r.String(), "refused_since_last_warning", n)
			}
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

package proxy

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"time"

	socks5 "github.com/armon/go-socks5"
)

// connect serves CONNECT (RFC 1928 §4): resolve, apply the rules, dial,
// answer with the address the proxy connected from, then relay.
func (ss *session) connect(ctx context.Context, req *socks5.Request) error {
	s := ss.srv
	dst, rep, err := ss.destination(ctx, req)
	if err != nil {
		ss.sendReply(rep, netip.AddrPort{})
		return err
	}

	dialCtx, cancel := context.WithTimeout(ctx, s.cfg.DialTimeout)
	dialStart := time.Now()
	target, err := s.dial(dialCtx, "tcp", dst.String())
	cancel()
	ss.dialTime = time.Since(dialStart)
	if err != nil {
		ss.sendReply(replyForDialError(err), netip.AddrPort{})
		return fmt.Errorf("dial %s: %w", dst, err)
	}
	if !ss.own(target) {
		return errors.New("session aborted while dialling")
	}
	local := addrPortOf(target.LocalAddr())
	if err := ss.sendReply(ReplySucceeded, local); err != nil {
		return err
	}

	fs, err := ss.filterSession(ctx, dst, local)
	if err != nil {
		return err
	}
	defer fs.Close()
	return ss.relay(ctx, target, fs)
}

// destination resolves the request's destination and applies the rules.
// On failure it returns the reply the client is owed.
func (ss *session) destination(ctx context.Context, req *socks5.Request) (netip.AddrPort, Reply, error) {
	s := ss.srv
	ip, ok := netip.AddrFromSlice(req.DestAddr.IP)
	if !ok {
		rctx, cancel := context.WithTimeout(ctx, s.cfg.DialTimeout)
		addr, err := s.resolve(rctx, req.DestAddr.FQDN)
		cancel()
		if err != nil {
			return netip.AddrPort{}, replyForDialError(err), fmt.Errorf("resolve %q: %w", req.DestAddr.FQDN, err)
		}
		ip = addr
		req.DestAddr.IP = addr.AsSlice()
	}
	dst := netip.AddrPortFrom(ip.Unmap(), uint16(req.DestAddr.Port))
	if _, ok := s.rules.Allow(ctx, req); !ok {
		return dst, ReplyNotAllowed, fmt.Errorf("%s to %s not allowed by rules", ss.command, dst)
	}
	return dst, ReplySucceeded, nil
}

// filterSession starts the registered filter for dst's port, or the plain
// pass-through.
func (ss *session) filterSession(ctx context.Context, dst, local netip.AddrPort) (FilterSession, error) {
	f := ss.srv.filters[dst.Port()]
	if f == nil {
		return passThrough{}, nil
	}
	fs, err := f.NewSession(ctx, SessionInfo{Client: ss.client, User: ss.user, Target: dst, Local: local})
	if err != nil {
		return nil, fmt.Errorf("start %s filter: %w", f.Name(), err)
	}
	return fs, nil
}

// closeWriter is a connection that can shut down its sending side alone.
type closeWriter interface{ CloseWrite() error }

var _ closeWriter = (*net.TCPConn)(nil)

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
	dialCtx, cancel := context.WithTimeout(ctx, s.cfg.DialTimeout)
	defer cancel()
	dialStart := time.Now()
	cands, err := ss.destinations(dialCtx, req)
	if err != nil {
		ss.dialTime = time.Since(dialStart)
		var re *requestError
		errors.As(err, &re)
		ss.sendReply(re.reply, netip.AddrPort{})
		return err
	}
	target, dst, err := ss.dialFirst(dialCtx, cands)
	ss.dialTime = time.Since(dialStart)
	if err != nil {
		ss.sendReply(replyForDialError(err), netip.AddrPort{})
		return err
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

// destinations resolves the request's destination and keeps the addresses
// the rules allow, in the resolver's order. A failure is a *requestError
// with the reply the client is owed.
func (ss *session) destinations(ctx context.Context, req *socks5.Request) ([]netip.AddrPort, error) {
	s := ss.srv
	port := uint16(req.DestAddr.Port)
	var addrs []netip.Addr
	if ip, ok := netip.AddrFromSlice(req.DestAddr.IP); ok {
		addrs = []netip.Addr{ip}
	} else {
		resolved, err := s.resolve(ctx, req.DestAddr.FQDN)
		if err == nil && len(resolved) == 0 {
			err = &net.DNSError{Err: "no addresses", Name: req.DestAddr.FQDN, IsNotFound: true}
		}
		if err != nil {
			return nil, &requestError{replyForDialError(err), "resolve", fmt.Errorf("resolve %q: %w", req.DestAddr.FQDN, err)}
		}
		addrs = resolved
	}
	var allowed []netip.AddrPort
	for _, a := range addrs {
		req.DestAddr.IP = a.AsSlice()
		if _, ok := s.rules.Allow(ctx, req); ok {
			allowed = append(allowed, netip.AddrPortFrom(a.Unmap(), port))
		}
	}
	if len(allowed) == 0 {
		return nil, &requestError{ReplyNotAllowed, "rules", fmt.Errorf("%s to %s not allowed by rules", ss.command, req.DestAddr)}
	}
	return allowed, nil
}

// dialFirst connects to the first candidate that answers, within ctx. It
// returns the last error when none does.
func (ss *session) dialFirst(ctx context.Context, cands []netip.AddrPort) (net.Conn, netip.AddrPort, error) {
	var lastErr error
	for _, dst := range cands {
		conn, err := ss.srv.dial(ctx, "tcp", dst.String())
		if err == nil {
			return conn, dst, nil
		}
		lastErr = fmt.Errorf("dial %s: %w", dst, err)
		if ctx.Err() != nil {
			break
		}
	}
	return nil, netip.AddrPort{}, lastErr
}

// filterSession starts the registered filter for dst's port, or the plain
// pass-through.
func (ss *session) filterSession(ctx context.Context, dst, local netip.AddrPort) (FilterSession, error) {
	f := ss.srv.filters[dst.Port()]
	if f == nil {
		return passThrough{}, nil
	}
	fs, err := f.NewSession(ctx, SessionInfo{Client: ss.client, User: ss.user, Target: dst, Local: local, Session: ss.id})
	if err != nil {
		return nil, fmt.Errorf("start %s filter: %w", f.Name(), err)
	}
	return fs, nil
}

// closeWriter is a connection that can shut down its sending side alone.
type closeWriter interface{ CloseWrite() error }

var _ closeWriter = (*net.TCPConn)(nil)

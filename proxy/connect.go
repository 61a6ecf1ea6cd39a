package proxy

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"time"

	socks5 "github.com/armon/go-socks5"

	"fwproxy/internal/selfaddr"
)

// connect serves CONNECT (RFC 1928 §4): resolve, apply the rules, dial,
// answer with the address the proxy connected from, then relay.
func (ss *session) connect(ctx context.Context, req *socks5.Request) error {
	s := ss.srv
	dialCtx, cancel := context.WithTimeout(ctx, s.cfg().DialTimeout)
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

// destinations resolves the request's destination and judges every
// address it resolves to, returning them in the resolver's order. A failure
// is a *requestError with the reply the client is owed.
//
// A name is refused when any one of its addresses is refused, not served
// through the addresses that pass. Keeping the allowed ones would let a
// name that resolves to an outside address and 127.0.0.1 (or the proxy's
// own listener) reach the refused one whenever the allowed one does not
// answer, and a name whose records an attacker controls can be made to do
// exactly that (DNS rebinding). A name that mixes allowed and refused
// addresses is a misconfiguration at best; the client can still ask for an
// allowed address by number.
func (ss *session) destinations(ctx context.Context, req *socks5.Request) ([]netip.AddrPort, error) {
	s := ss.srv
	if _, ok := s.rules.Allow(ctx, &socks5.Request{Command: req.Command, DestAddr: &socks5.AddrSpec{}}); !ok {
		return nil, &requestError{reply: ReplyNotAllowed, reason: "rules", err: fmt.Errorf("%s not allowed by rules", ss.command)}
	}
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
			return nil, &requestError{reply: replyForDialError(err), reason: "resolve", err: fmt.Errorf("resolve %q: %w", req.DestAddr.FQDN, err)}
		}
		addrs = resolved
	}
	cands := make([]netip.AddrPort, 0, len(addrs))
	for _, a := range addrs {
		dst := normalise(netip.AddrPortFrom(a, port))
		if err := ss.judgeDestination(ctx, req, dst); err != nil {
			return nil, err
		}
		cands = append(cands, dst)
	}
	return cands, nil
}

// judgeDestination judges one address of the request's destination with
// the server's judge and then the rule set, counting a refusal.
func (ss *session) judgeDestination(ctx context.Context, req *socks5.Request, dst netip.AddrPort) error {
	s := ss.srv
	r := s.judge(dst, selfaddr.TCP, false)
	if r == refusedNone {
		probe := *req
		probe.DestAddr = &socks5.AddrSpec{IP: dst.Addr().AsSlice(), Port: int(dst.Port())}
		if _, ok := s.rules.Allow(ctx, &probe); !ok {
			r = refusedRules
		}
	}
	if r == refusedNone {
		return nil
	}
	s.obs.DestinationRefused(r.String())
	what := dst.String()
	if req.DestAddr.FQDN != "" && req.DestAddr.IP == nil {
		what = fmt.Sprintf("%s (%q)", dst, req.DestAddr.FQDN)
	}
	return &requestError{reply: ReplyNotAllowed, reason: r.String(), err: fmt.Errorf("%s to %s refused: %s", ss.command, what, r)}
}

// dialFirst connects to the first candidate that answers, within ctx. It
// returns the last error when none does.
func (ss *session) dialFirst(ctx context.Context, cands []netip.AddrPort) (net.Conn, netip.AddrPort, error) {
	var lastErr error
	for _, dst := range cands {
		conn, err := ss.srv.dial(withoutDeadline{ctx}, "tcp", dst.String())
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

// withoutDeadline is a context whose Deadline is hidden; Done, Err and
// values are its own. Dialled with it, the net package still ends the dial
// when the context ends (it watches Done), but arms no deadline timer of
// its own on the socket and no second context timer: arming the socket's
// woke the Go netpoller (an eventfd write and read, and a thread wake-up)
// on every CONNECT.
type withoutDeadline struct{ context.Context }

func (withoutDeadline) Deadline() (time.Time, bool) { return time.Time{}, false }

// filterSession starts the filter that expected this CONNECT, else the
// one registered for dst's port, else the plain pass-through. An
// expectation comes first: it is the more specific (this client, this
// address), and what the protocol on the previous connection announced.
func (ss *session) filterSession(ctx context.Context, dst, local netip.AddrPort) (FilterSession, error) {
	f := ss.srv.expects.take(expectKey{client: ss.client.Addr(), user: ss.user}, dst)
	if f == nil {
		f = ss.srv.filter(dst.Port())
	}
	if f == nil {
		return passThrough{}, nil
	}
	fs, err := f.NewSession(ctx, SessionInfo{Client: ss.client, User: ss.user, Target: dst, Local: local, Session: ss.id,
		Connects: sessionExpecter{ss: ss, filter: f}})
	if err != nil {
		return nil, fmt.Errorf("start %s filter: %w", f.Name(), err)
	}
	return fs, nil
}

// closeWriter is a connection that can shut down its sending side alone.
type closeWriter interface{ CloseWrite() error }

var _ closeWriter = (*net.TCPConn)(nil)

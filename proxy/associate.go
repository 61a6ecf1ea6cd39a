package proxy

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	socks5 "github.com/armon/go-socks5"

	"fwproxy/internal/selfaddr"
	"fwproxy/leases"
)

// Leaser hands out UDP port leases; *leases.Manager is one.
type Leaser interface {
	Acquire(ctx context.Context, key leases.Key, req leases.Request) (*leases.Holder, error)
}

var _ Leaser = (*leases.Manager)(nil)

// maxDatagram is the largest UDP payload (65535 minus the IPv4 and UDP
// headers would do; a round 64 KiB keeps it simple and covers IPv6).
const maxDatagram = 64 << 10

// association is one UDP ASSOCIATE: the firewall client's remote bind of
// its UDP port P (RFC 1928 §7, ARCHITECTURE.md, UDP ASSOCIATE). The client sends
// SOCKS-encapsulated datagrams from P to the relay socket; they leave
// through the lease's external socket. What the lease receives comes back
// encapsulated from the relay socket to P.
type association struct {
	ss       *session
	relay    *net.UDPConn // client-facing socket (BND.ADDR:BND.PORT)
	clientIP netip.Addr

	// client is clientIP and P. Written by associate (P given) or by
	// clientLoop when it learns P, before the lease is acquired; read by
	// deliver, which the lease calls only after Acquire.
	client netip.AddrPort

	// mu guards holder, which clientLoop sets and end releases, and
	// externalPort, the holder's port, for the session line.
	mu           sync.Mutex
	holder       *leases.Holder
	externalPort uint16

	// What was relayed each way (client to remote: up), for the session
	// line; deliver runs on the lease's goroutine, hence atomics.
	datagramsUp, bytesUp     atomic.Int64
	datagramsDown, bytesDown atomic.Int64

	lastActive atomic.Int64 // unix ns of the last datagram either way
	idleTimer  *time.Timer
	idled      atomic.Bool
	ended      atomic.Bool

	// readerDone is the client reader (clientLoop): hold waits for it after
	// closing the relay socket.
	readerDone sync.WaitGroup

	// lastName is the association's own one-entry cache of the last
	// destination name it resolved, so that a stream to a named host does
	// not take the server-wide name cache's lock per datagram. Used by
	// clientLoop only.
	lastName cachedNameFor

	// sink writes encapsulated datagrams to the client; deliver is never
	// called concurrently for one holder, so it needs no lock.
	sink clientSink
}

// clientSink sends one datagram to the client: the SOCKS UDP header naming
// from (built in the sink's own scratch, so nothing escapes per datagram),
// then payload, without copying the payload where the platform allows
// (Linux: sendmsg with two iovecs). payload is not retained.
type clientSink interface {
	send(from netip.AddrPort, payload []byte, to netip.AddrPort) error
}

// cachedNameFor is a resolved name with the name it is for.
type cachedNameFor struct {
	name string
	cachedName
}

// newDatagramBufs returns the pool of read buffers of one maximum datagram
// for the client readers (Linux), so that an idle association holds none:
// that is what keeps 10,000 idle associations small. sync.Pool keeps a
// cache per P, so no lock is shared by all associations; a busy reader keeps
// its buffer across datagrams (see rawClientSource), so the pool is not
// touched per datagram either. Pointers to arrays: one allocation, and Put
// does not allocate. The server owns the pool.
func newDatagramBufs() *sync.Pool {
	return &sync.Pool{New: func() any { return new([maxDatagram]byte) }}
}

// associate serves UDP ASSOCIATE. DST.PORT is the port the client sends
// from; the client's IP is the control connection's, whatever DST.ADDR says
// (a client behind NAT cannot know its outside address).
func (ss *session) associate(ctx context.Context, req *socks5.Request) error {
	s := ss.srv
	if s.leases == nil {
		ss.sendReply(ReplyCommandNotSupported, netip.AddrPort{})
		return errors.New("udp associate: no lease manager configured")
	}
	if _, ok := s.rules.Allow(ctx, &socks5.Request{Command: req.Command, DestAddr: &socks5.AddrSpec{}}); !ok {
		ss.sendReply(ReplyNotAllowed, netip.AddrPort{})
		return errors.New("udp associate not allowed by rules")
	}
	local := addrPortOf(ss.conn.LocalAddr())
	relay, err := listenRelay(local.Addr(), s.cfg().RelayPorts)
	if err != nil {
		ss.sendReply(ReplyGeneralFailure, netip.AddrPort{})
		return fmt.Errorf("udp associate: open relay socket: %w", err)
	}
	// The relay socket is one of the proxy's own: a datagram relayed to it
	// would come back in as a client's and go round again.
	unregister := s.self.AddAddr(relay.LocalAddr())
	a, err := ss.startAssociation(ctx, req, relay)
	if err != nil {
		unregister()
		return err
	}
	// From here on the association is two fresh goroutines (the client
	// reader and hold) and its lease's reader; this goroutine, whose stack
	// the handshake and the setup grew, ends (errDetached).
	go a.hold(unregister)
	return errDetached
}

// startAssociation answers the request with the relay socket's address,
// with the lease already acquired when DST.PORT names the client's port,
// and starts the client reader.
func (ss *session) startAssociation(ctx context.Context, req *socks5.Request, relay *net.UDPConn) (*association, error) {
	s := ss.srv
	if !ss.own(relay) {
		return nil, errors.New("session aborted")
	}
	sink, err := newClientSink(relay)
	if err != nil {
		ss.sendReply(ReplyGeneralFailure, netip.AddrPort{})
		return nil, fmt.Errorf("udp associate: relay socket: %w", err)
	}
	a := &association{ss: ss, relay: relay, clientIP: ss.client.Addr(), sink: sink}
	a.lastActive.Store(time.Now().UnixNano())
	if p := uint16(req.DestAddr.Port); p != 0 {
		a.client = netip.AddrPortFrom(a.clientIP, p)
		if err := a.acquire(ctx); err != nil {
			ss.sendReply(ReplyGeneralFailure, netip.AddrPort{})
			return nil, err
		}
	}
	bound := addrPortOf(relay.LocalAddr())
	if s.cfg().AdvertiseIP.IsValid() {
		bound = netip.AddrPortFrom(s.cfg().AdvertiseIP, bound.Port())
	}
	if err := ss.sendReply(ReplySucceeded, bound); err != nil {
		a.release()
		return nil, err
	}
	s.obs.ActiveChanged("udp_associate", 1)
	ss.logger().Debug("udp association", "client", ss.client, "client_port", a.client.Port(), "relay", bound)

	if idle := s.cfg().UDPIdleTimeout; idle > 0 {
		a.idleTimer = time.AfterFunc(time.Duration(math.MaxInt64), a.checkIdle)
		a.idleTimer.Reset(idle)
	}
	a.readerDone.Add(1)
	go a.clientLoop(ctx, &a.readerDone)
	return a, nil
}

// hold is the association's life after its reply: it waits for the end of
// the TCP connection (RFC 1928 §7: the association lives as long as it),
// ends the association, then the session. unregister takes the relay
// socket out of the proxy's own sockets.
func (a *association) hold(unregister func()) {
	ss, s := a.ss, a.ss.srv
	err := a.waitControl()
	a.report()
	s.obs.ActiveChanged("udp_associate", -1)
	unregister()
	ss.finish(err)
}

// waitControl reads the control connection until it ends, then ends the
// association: nil for the client's close, errIdle for the idle timeout.
func (a *association) waitControl() error {
	ss := a.ss
	// Bytes the client sends on the connection mean nothing; they are read
	// and dropped through a small array rather than io.Discard, which would
	// hold an 8 KiB buffer for the whole (usually silent) life of the
	// association. What the handshake reader holds is dropped first, and
	// the reader with it, so that its buffer is not held either.
	br := ss.br
	ss.br = nil
	br.Discard(br.Buffered())
	br.Reset(nil)
	handshakeReaders.Put(br)
	ctlErr := discardUntilEOF(ss.conn)

	// Release first, while the relay socket still delivers: from here on
	// the lease buffers. Only then close the relay, and (in finish) the
	// TCP connection, which tells a careful client it may close its UDP
	// socket without losing a datagram.
	a.ended.Store(true)
	if a.idleTimer != nil {
		a.idleTimer.Stop()
	}
	a.release()
	a.relay.Close()
	a.readerDone.Wait()
	if a.idled.Load() {
		return errIdle
	}
	if errors.Is(ctlErr, net.ErrClosed) {
		return nil
	}
	return ctlErr
}

// discardUntilEOF reads r until it ends; nil at EOF.
func discardUntilEOF(r io.Reader) error {
	var junk [64]byte
	for {
		if _, err := r.Read(junk[:]); err != nil {
			if errors.Is(err, io.EOF) {
				return nil
			}
			return err
		}
	}
}

// acquire takes the lease for (client, P), asking for external port P.
func (a *association) acquire(ctx context.Context) error {
	s := a.ss.srv
	key := leases.Key{Client: a.clientIP, User: a.ss.user, Port: a.client.Port()}
	actx, cancel := context.WithTimeout(ctx, s.cfg().HandshakeTimeout)
	defer cancel()
	h, err := s.leases.Acquire(actx, key, leases.Request{
		Kind:     leases.KindAssociation,
		WantPort: key.Port,
		// The relay delivers to the client's port: a lease bound there
		// (a client on the external IP announcing a port it has not
		// bound) would receive its own deliveries for ever.
		DeliverTo: a.client,
		Deliver:   a.deliver,
		Session:   a.ss.id,
	})
	if err != nil {
		return fmt.Errorf("udp associate: lease %v: %w", key, err)
	}
	a.mu.Lock()
	a.holder = h
	a.externalPort = h.Port()
	a.mu.Unlock()
	return nil
}

// report hands what the association relayed to its session's log line.
func (a *association) report() {
	a.mu.Lock()
	port := a.externalPort
	a.mu.Unlock()
	a.ss.up, a.ss.down = a.bytesUp.Load(), a.bytesDown.Load()
	a.ss.udp = &udpTotals{datagramsUp: a.datagramsUp.Load(), datagramsDown: a.datagramsDown.Load(), externalPort: port}
}

func (a *association) release() {
	a.mu.Lock()
	h := a.holder
	a.holder = nil
	a.mu.Unlock()
	if h != nil {
		h.Release()
	}
}

func (a *association) currentHolder() *leases.Holder {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.holder
}

// clientLoop relays the client's datagrams out through the lease. It ends
// when the relay socket is closed.
func (a *association) clientLoop(ctx context.Context, wg *sync.WaitGroup) {
	defer wg.Done()
	if err := a.readClient(ctx); err != nil && !errors.Is(err, net.ErrClosed) {
		a.ss.logger().Warn("udp association relay failed", "client", a.ss.client, "err", err)
		a.ss.abort()
	}
}

func (a *association) readClient(ctx context.Context) error {
	src, err := newClientSource(a.relay, a.ss.srv.datagramBufs)
	if err != nil {
		return err
	}
	defer src.close()
	var h *leases.Holder
	for {
		buf, from, err := src.next()
		if err != nil {
			return err
		}
		if err := a.fromClient(ctx, buf, from, &h); err != nil {
			return err
		}
	}
}

// fromClient relays one datagram from the client, learning the client's
// port and acquiring the lease (*h) on the first one when DST.PORT was 0.
// It is a function of its own so that readClient's frame, which is on the
// stack while the reader waits, stays small: a parked association's stack
// then fits the smallest size the runtime shrinks it back to.
func (a *association) fromClient(ctx context.Context, buf []byte, from netip.AddrPort, h **leases.Holder) error {
	s := a.ss.srv
	n := len(buf)
	from = netip.AddrPortFrom(from.Addr().Unmap(), from.Port())
	if from.Addr() != a.clientIP || (a.client.Port() != 0 && from.Port() != a.client.Port()) {
		s.udp.count(udpOut, udpForeignSource, n)
		return nil
	}
	a.lastActive.Store(time.Now().UnixNano())
	if *h == nil {
		if *h = a.currentHolder(); *h == nil {
			// DST.PORT was 0: the first datagram names the port.
			a.client = from
			if err := a.acquire(ctx); err != nil {
				s.udp.count(udpOut, udpNoLease, n)
				return err
			}
			*h = a.currentHolder()
		}
	}
	hdr, hn, err := parseUDPHeader(buf[:n])
	switch {
	case err != nil:
		s.udp.count(udpOut, udpBadHeader, n)
		return nil
	case hdr.Frag != 0:
		s.udp.count(udpOut, udpFragmented, n-hn)
		return nil
	}
	dst, others, err := a.destination(ctx, hdr)
	if err != nil {
		s.udp.count(udpOut, udpUnresolved, n-hn)
		return nil
	}
	// A name is judged on every address it resolves to, as CONNECT's are
	// (see destinations), though the datagram goes to the first.
	r := s.judge(dst, selfaddr.UDP, false)
	for i := 0; r == refusedNone && i < len(others); i++ {
		r = s.judge(netip.AddrPortFrom(others[i], dst.Port()), selfaddr.UDP, false)
	}
	if r != refusedNone {
		s.udp.count(udpOut, udpRefusalOutcome[r], n-hn)
		return nil
	}
	if err := (*h).Send(buf[hn:n], dst); err != nil {
		switch {
		case errors.Is(err, leases.ErrOwnSocket):
			// The lease's own socket set refused what the judge let
			// through (an allow rule naming the port, or a socket opened
			// since): one refusal, counted by its reason, not a failure.
			s.udp.count(udpOut, udpOwnSocket, n-hn)
		case errors.Is(err, leases.ErrReleased):
			s.udp.count(udpOut, udpSendFailed, n-hn)
			return net.ErrClosed
		default:
			s.udp.count(udpOut, udpSendFailed, n-hn)
		}
		return nil
	}
	s.udp.count(udpOut, udpRelayed, n-hn)
	a.datagramsUp.Add(1)
	a.bytesUp.Add(int64(n - hn))
	return nil
}

// clientSource is how clientLoop receives the client's datagrams: next
// blocks until one arrives; b is valid until the following call (or close)
// and must not be retained. close releases what the source holds.
type clientSource interface {
	next() (b []byte, from netip.AddrPort, err error)
	close()
}

// destination resolves a datagram's destination, names through a cache so
// that a stream to a named host costs one lookup. For a name, others are
// the further addresses it resolved to (not to be retained or changed).
func (a *association) destination(ctx context.Context, hdr udpHeader) (dst netip.AddrPort, others []netip.Addr, err error) {
	if hdr.Addr.IsValid() {
		return netip.AddrPortFrom(hdr.Addr, hdr.Port), nil, nil
	}
	s := a.ss.srv
	// The comparison with the []byte conversion does not allocate.
	if c := &a.lastName; c.name != "" && c.name == string(hdr.Domain) && time.Now().Before(c.expires) {
		return netip.AddrPortFrom(c.ip, hdr.Port), c.others, nil
	}
	name := string(hdr.Domain)
	if ip, err := netip.ParseAddr(name); err == nil {
		return netip.AddrPortFrom(ip.Unmap(), hdr.Port), nil, nil
	}
	if c, ok := s.names.Get(name); ok && time.Now().Before(c.expires) {
		a.lastName = cachedNameFor{name: name, cachedName: c}
		return netip.AddrPortFrom(c.ip, hdr.Port), c.others, nil
	}
	if err := checkDomain(name); err != nil {
		return netip.AddrPort{}, nil, err
	}
	rctx, cancel := context.WithTimeout(ctx, s.cfg().DialTimeout)
	defer cancel()
	addrs, err := s.resolve(rctx, name)
	if err != nil || len(addrs) == 0 {
		return netip.AddrPort{}, nil, fmt.Errorf("resolve %q: %w", name, err)
	}
	all := make([]netip.Addr, len(addrs))
	for i, ad := range addrs {
		all[i] = ad.Unmap().WithZone("")
	}
	c := cachedName{ip: all[0], others: all[1:], expires: time.Now().Add(nameCacheTTL)}
	s.names.Add(name, c)
	a.lastName = cachedNameFor{name: name, cachedName: c}
	return netip.AddrPortFrom(c.ip, hdr.Port), c.others, nil
}

// deliver is the lease's DeliverFunc: one inbound datagram, encapsulated,
// to the client's port. b is not retained.
func (a *association) deliver(b []byte, from netip.AddrPort) {
	s := a.ss.srv
	if err := a.sink.send(from, b, a.client); err != nil {
		s.udp.count(udpIn, udpSendFailed, len(b))
		return
	}
	a.lastActive.Store(time.Now().UnixNano())
	s.udp.count(udpIn, udpRelayed, len(b))
	a.datagramsDown.Add(1)
	a.bytesDown.Add(int64(len(b)))
}

// checkIdle ends an association that relayed nothing for UDPIdleTimeout.
func (a *association) checkIdle() {
	if a.ended.Load() {
		return
	}
	idle := a.ss.srv.cfg().UDPIdleTimeout
	since := time.Since(time.Unix(0, a.lastActive.Load()))
	if since >= idle {
		a.idled.Store(true)
		a.ss.logger().Info("udp association idle, closing", slog.Any("client", a.ss.client), slog.Duration("idle", since))
		a.ss.abort()
		return
	}
	a.idleTimer.Reset(idle - since)
}

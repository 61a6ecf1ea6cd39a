package proxy

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"syscall"
	"time"

	"github.com/pires/go-proxyproto"
)

// The PROXY protocol (HAProxy's proxy-protocol.txt, versions 1 and 2) lets
// a TCP balancer in front of several proxies tell each one who the client
// is. fwproxy accepts it from the balancers' networks only, and requires
// it there: a header from anyone else would let a client choose its own
// identity, and a balancer's connection without one would make every
// client the balancer.

// Reasons of Observer.ConnectionRejected for PROXY protocol refusals.
const (
	// RejectProxyHeaderUntrusted: a connection from outside the balancer
	// networks began with a PROXY header.
	RejectProxyHeaderUntrusted = "proxy_header_untrusted"
	// RejectProxyHeaderMissing: a balancer's connection sent no header (or
	// not within the header timeout).
	RejectProxyHeaderMissing = "proxy_header_missing"
	// RejectProxyHeaderInvalid: a balancer's header did not parse, or
	// named no TCP client.
	RejectProxyHeaderInvalid = "proxy_header_invalid"
)

// PROXY protocol sizes (proxy-protocol.txt §2.1, §2.2).
const (
	// proxyV1MaxLen is the longest version 1 line, CRLF included.
	proxyV1MaxLen = 107
	// proxyV1MinLen is the shortest: "PROXY UNKNOWN\r\n".
	proxyV1MinLen = 15
	// proxyV2FixedLen is version 2's signature, version/command, family
	// and length.
	proxyV2FixedLen = 16
	// proxyV2MaxBody bounds the addresses and TLVs we read. Addresses take
	// at most 216 bytes (AF_UNIX); balancers add a few small TLVs.
	proxyV2MaxBody = 2048
)

var (
	proxyV1Sig = []byte("PROXY ")
	proxyV2Sig = []byte("\r\n\r\n\x00\r\nQUIT\n")
)

// ProxyProtoConfig configures ProxyProtoListener.
type ProxyProtoConfig struct {
	// From lists the balancer networks. A connection from one of them must
	// begin with a PROXY header, whose source becomes the client's
	// address; a connection from elsewhere must not. Must not be empty.
	From []netip.Prefix
	// HeaderTimeout bounds the wait for a balancer's header and for
	// another client's first byte. Must be > 0.
	HeaderTimeout time.Duration
	// MaxPending caps the connections whose first bytes are awaited at
	// once. A balancer's connection beyond it waits (the kernel's backlog
	// holds it); another's is handed on unexamined. Must be > 0.
	MaxPending int
}

// DefaultProxyProtoConfig returns the timeouts and bounds; set From.
func DefaultProxyProtoConfig() ProxyProtoConfig {
	return ProxyProtoConfig{HeaderTimeout: 5 * time.Second, MaxPending: 256}
}

// Validate reports settings that cannot work.
func (c ProxyProtoConfig) Validate() error {
	var errs []error
	if len(c.From) == 0 {
		errs = append(errs, errors.New("no balancer networks"))
	}
	for _, p := range c.From {
		if !p.IsValid() {
			errs = append(errs, errors.New("invalid balancer network"))
		}
	}
	if c.HeaderTimeout <= 0 {
		errs = append(errs, fmt.Errorf("header timeout %v must be > 0", c.HeaderTimeout))
	}
	if c.MaxPending <= 0 {
		errs = append(errs, fmt.Errorf("max pending %d must be > 0", c.MaxPending))
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("proxy protocol config: %w", err)
	}
	return nil
}

// ProxyProtoListener is a listener whose connections from balancers report
// the PROXY header's client as their RemoteAddr. Headers are read by a
// goroutine per connection, so one slow balancer connection never holds
// up Accept. Serve it with Server.Serve; Close ends its goroutines.
type ProxyProtoListener struct {
	ln  net.Listener
	cfg ProxyProtoConfig
	obs Observer
	log *slog.Logger

	ready chan net.Conn
	slots chan struct{}
	// closed is closed, and ctx cancelled, by shut.
	closed   chan struct{}
	ctx      context.Context
	cancel   context.CancelFunc
	shutOnce sync.Once
	wg       sync.WaitGroup
	// errMu guards acceptErr, the inner listener's final error.
	errMu     sync.Mutex
	acceptErr error
	// peekMu guards peeking: connections from each address outside the
	// balancer networks whose first byte is awaited.
	peekMu  sync.Mutex
	peeking map[netip.Addr]int
}

// NewProxyProtoListener wraps ln, which it owns from now on: Close closes
// it. obs counts refusals (nil: not counted), log logs them (nil: not
// logged).
func NewProxyProtoListener(ln net.Listener, cfg ProxyProtoConfig, obs Observer, log *slog.Logger) (*ProxyProtoListener, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if obs == nil {
		obs = nopObserver{}
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	l := &ProxyProtoListener{ln: ln, cfg: cfg, obs: obs, log: log,
		ready: make(chan net.Conn), slots: make(chan struct{}, cfg.MaxPending), closed: make(chan struct{}),
		peeking: map[netip.Addr]int{}}
	l.ctx, l.cancel = context.WithCancel(context.Background())
	l.wg.Add(1)
	go l.acceptLoop()
	return l, nil
}

// maxPeeksPerSource bounds the connections of one address outside the
// balancer networks whose first byte is awaited at once. Beyond it (or
// beyond MaxPending) such a connection goes to the server unexamined: a
// header on it then fails the SOCKS handshake (bad_version) instead of
// being counted here, and no client can hold up the listener.
const maxPeeksPerSource = 4

// acceptLoop accepts until the inner listener fails or closes. A balancer
// connection waits for one of the MaxPending header readers (the balancer
// is trusted to pace itself); any other is examined by a reader when one
// is free and its address has few enough in examination, else handed on.
func (l *ProxyProtoListener) acceptLoop() {
	defer l.wg.Done()
	var backoff time.Duration
	for {
		conn, err := l.ln.Accept()
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() || errors.Is(err, syscall.EMFILE) || errors.Is(err, syscall.ENFILE) {
				backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
				select {
				case <-time.After(backoff):
					continue
				case <-l.closed:
					return
				}
			}
			l.errMu.Lock()
			l.acceptErr = err
			l.errMu.Unlock()
			l.shut()
			return
		}
		backoff = 0
		peer := addrPortOf(conn.RemoteAddr())
		l.wg.Add(1)
		switch {
		case l.fromBalancer(peer.Addr()):
			select {
			case l.slots <- struct{}{}:
			case <-l.closed:
				conn.Close()
				l.wg.Done()
				return
			}
			go l.admit(conn, peer, nil)
		case l.reservePeek(peer.Addr()):
			go l.admit(conn, peer, func() { l.releasePeek(peer.Addr()) })
		default:
			go l.handOn(conn)
		}
	}
}

// reservePeek takes a reader for a connection from ip outside the
// balancer networks, if one is free and ip has few enough.
func (l *ProxyProtoListener) reservePeek(ip netip.Addr) bool {
	l.peekMu.Lock()
	defer l.peekMu.Unlock()
	if l.peeking[ip] >= maxPeeksPerSource {
		return false
	}
	select {
	case l.slots <- struct{}{}:
	default:
		return false
	}
	l.peeking[ip]++
	return true
}

func (l *ProxyProtoListener) releasePeek(ip netip.Addr) {
	l.peekMu.Lock()
	defer l.peekMu.Unlock()
	if l.peeking[ip]--; l.peeking[ip] <= 0 {
		delete(l.peeking, ip)
	}
}

// admit reads conn's first bytes and hands it to Accept, or closes it.
// It gives back its reader slot, and calls release (if set), when done.
func (l *ProxyProtoListener) admit(conn net.Conn, peer netip.AddrPort, release func()) {
	defer l.wg.Done()
	defer func() {
		<-l.slots
		if release != nil {
			release()
		}
	}()
	// Close unblocks the read; the deadline set in identify bounds it.
	stop := context.AfterFunc(l.ctx, func() { conn.SetReadDeadline(time.Unix(1, 0)) })
	got, reason, err := l.identify(conn, peer)
	if !stop() {
		// Closing: whatever identify saw, the connection is not handed on.
		conn.Close()
		return
	}
	if reason != "" {
		l.obs.ConnectionRejected(reason)
		l.log.Warn("connection refused: PROXY protocol", "peer", peer, "reason", reason, "err", err)
		conn.Close()
		return
	}
	l.deliver(got)
}

// handOn gives conn to Accept unexamined.
func (l *ProxyProtoListener) handOn(conn net.Conn) {
	defer l.wg.Done()
	l.deliver(conn)
}

// deliver hands conn to Accept, or closes it when the listener closes
// first.
func (l *ProxyProtoListener) deliver(conn net.Conn) {
	select {
	case l.ready <- conn:
	case <-l.closed:
		conn.Close()
	}
}

// identify applies the rules to conn from peer: the connection to hand on,
// or the refusal reason and why.
func (l *ProxyProtoListener) identify(conn net.Conn, peer netip.AddrPort) (net.Conn, string, error) {
	if err := conn.SetReadDeadline(time.Now().Add(l.cfg.HeaderTimeout)); err != nil {
		return nil, RejectProxyHeaderMissing, err
	}
	if !l.fromBalancer(peer.Addr()) {
		first, err := peekFirstByte(conn)
		if err != nil && !errors.Is(err, errNoPeek) {
			// Nothing came in time, or the client left: the session would
			// fail its handshake; let it, and count it there.
			first = 0
		}
		if first == proxyV1Sig[0] || first == proxyV2Sig[0] {
			return nil, RejectProxyHeaderUntrusted, fmt.Errorf("PROXY header from %v, not a balancer network", peer.Addr())
		}
		conn.SetReadDeadline(time.Time{})
		return conn, "", nil
	}
	raw, reason, err := readProxyHeader(conn)
	if reason != "" {
		return nil, reason, err
	}
	h, err := proxyproto.Read(bufio.NewReader(bytes.NewReader(raw)))
	if err != nil {
		return nil, RejectProxyHeaderInvalid, err
	}
	conn.SetReadDeadline(time.Time{})
	if h.Command.IsLocal() {
		// The balancer speaking for itself (a health check): it is the
		// client.
		return conn, "", nil
	}
	src, _, ok := h.TCPAddrs()
	if !ok {
		return nil, RejectProxyHeaderInvalid, fmt.Errorf("header names no TCP client (%v)", h.TransportProtocol)
	}
	return &proxiedConn{Conn: conn, remote: net.TCPAddrFromAddrPort(netip.AddrPortFrom(src.AddrPort().Addr().Unmap(), src.AddrPort().Port()))}, "", nil
}

func (l *ProxyProtoListener) fromBalancer(ip netip.Addr) bool {
	ip = ip.Unmap()
	for _, p := range l.cfg.From {
		if p.Contains(ip) {
			return true
		}
	}
	return false
}

// readProxyHeader reads exactly one PROXY header from c, never a byte of
// what follows it (the SOCKS greeting, which the session reads itself
// from the raw connection).
func readProxyHeader(c io.Reader) ([]byte, string, error) {
	buf := make([]byte, proxyV1MinLen, proxyV2FixedLen+proxyV2MaxBody)
	if _, err := io.ReadFull(c, buf); err != nil {
		return nil, RejectProxyHeaderMissing, fmt.Errorf("read header: %w", err)
	}
	switch {
	case bytes.HasPrefix(buf, proxyV2Sig):
		buf = buf[:proxyV2FixedLen]
		if _, err := io.ReadFull(c, buf[proxyV1MinLen:]); err != nil {
			return nil, RejectProxyHeaderInvalid, fmt.Errorf("read header: %w", err)
		}
		n := int(binary.BigEndian.Uint16(buf[14:16]))
		if n > proxyV2MaxBody {
			return nil, RejectProxyHeaderInvalid, fmt.Errorf("version 2 header of %d bytes, more than %d", n, proxyV2MaxBody)
		}
		buf = buf[:proxyV2FixedLen+n]
		if _, err := io.ReadFull(c, buf[proxyV2FixedLen:]); err != nil {
			return nil, RejectProxyHeaderInvalid, fmt.Errorf("read header: %w", err)
		}
		return buf, "", nil
	case bytes.HasPrefix(buf, proxyV1Sig):
		// A line up to CRLF; byte by byte, so that nothing past it is
		// consumed. Balancers send it in one segment, so this costs only
		// system calls.
		one := make([]byte, 1)
		for !bytes.HasSuffix(buf, []byte("\r\n")) {
			if len(buf) >= proxyV1MaxLen {
				return nil, RejectProxyHeaderInvalid, fmt.Errorf("version 1 header longer than %d bytes", proxyV1MaxLen)
			}
			if _, err := io.ReadFull(c, one); err != nil {
				return nil, RejectProxyHeaderInvalid, fmt.Errorf("read header: %w", err)
			}
			buf = append(buf, one[0])
		}
		return buf, "", nil
	}
	return nil, RejectProxyHeaderMissing, errors.New("no PROXY header from a balancer network")
}

var errNoPeek = errors.New("connection cannot be peeked")

// peekFirstByte returns c's first byte without consuming it, waiting for
// it until c's read deadline.
func peekFirstByte(c net.Conn) (byte, error) {
	sc, ok := c.(syscall.Conn)
	if !ok {
		return 0, errNoPeek
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return 0, err
	}
	var (
		b    [1]byte
		n    int
		rerr error
	)
	err = rc.Read(func(fd uintptr) bool {
		n, _, rerr = syscall.Recvfrom(int(fd), b[:], syscall.MSG_PEEK)
		return rerr != syscall.EAGAIN
	})
	if err != nil {
		return 0, err
	}
	if rerr != nil {
		return 0, rerr
	}
	if n == 0 {
		return 0, io.EOF
	}
	return b[0], nil
}

// Accept returns the next connection that passed the rules.
func (l *ProxyProtoListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.ready:
		return c, nil
	case <-l.closed:
		l.errMu.Lock()
		defer l.errMu.Unlock()
		if l.acceptErr != nil {
			return nil, l.acceptErr
		}
		return nil, net.ErrClosed
	}
}

// Close closes the inner listener and every connection still being read,
// and waits for the goroutines. It is safe to call more than once.
func (l *ProxyProtoListener) Close() error {
	err := l.shut()
	l.wg.Wait()
	return err
}

// shut stops accepting and unblocks the header readers, once.
func (l *ProxyProtoListener) shut() error {
	var err error
	l.shutOnce.Do(func() {
		close(l.closed)
		l.cancel()
		err = l.ln.Close()
	})
	return err
}

// Addr is the inner listener's address.
func (l *ProxyProtoListener) Addr() net.Addr { return l.ln.Addr() }

var _ net.Listener = (*ProxyProtoListener)(nil)

// proxiedConn is a balancer's connection: the client is the header's.
type proxiedConn struct {
	net.Conn
	remote net.Addr
}

// RemoteAddr is the client's address from the PROXY header.
func (c *proxiedConn) RemoteAddr() net.Addr { return c.remote }

// CloseWrite half-closes the balancer connection (relay needs it).
func (c *proxiedConn) CloseWrite() error {
	if cw, ok := c.Conn.(closeWriter); ok {
		return cw.CloseWrite()
	}
	return c.Conn.Close()
}

// rawTCPConn is the *net.TCPConn under c (a proxiedConn's too), for
// splicing: the header is consumed by then, so the raw bytes are the
// client's.
func rawTCPConn(c net.Conn) (*net.TCPConn, bool) {
	if pc, ok := c.(*proxiedConn); ok {
		c = pc.Conn
	}
	tc, ok := c.(*net.TCPConn)
	return tc, ok
}

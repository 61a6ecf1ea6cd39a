package main

import (
	"context"
	"errors"
	"io"
	"net"
	"net/netip"
	"time"
)

// netpollServer is idiomatic Go: the net package on the runtime's
// netpoller, a goroutine per connection, io.Copy both ways (splice on
// Linux) with half-close.
type netpollServer struct {
	cfg    config
	ln     *net.TCPListener
	ctx    context.Context // ends at close: bounds dials
	cancel context.CancelFunc
	live   *sessions[*net.TCPConn]
}

var _ server = (*netpollServer)(nil)

func newNetpollServer(cfg config) (*netpollServer, error) {
	// No keep-alive (KeepAlive -1) on either connection: fwproxy's default,
	// and it saves the set-up's setsockopt calls.
	lc := net.ListenConfig{KeepAlive: -1}
	ln, err := lc.Listen(context.Background(), "tcp", cfg.listen.String())
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	return &netpollServer{cfg: cfg, ln: ln.(*net.TCPListener), ctx: ctx, cancel: cancel,
		live: newSessions[*net.TCPConn](cfg.maxSessions)}, nil
}

func (s *netpollServer) addr() netip.AddrPort { return s.ln.Addr().(*net.TCPAddr).AddrPort() }

func (s *netpollServer) serve() error {
	for {
		c, err := s.ln.AcceptTCP()
		if errors.Is(err, net.ErrClosed) {
			return nil
		}
		if err != nil {
			select {
			case <-s.ctx.Done():
				return nil
			case <-time.After(acceptRetryDelay):
			}
			continue
		}
		if !s.live.add(c) {
			c.Close()
			continue
		}
		go s.session(c)
	}
}

func (s *netpollServer) close() {
	s.cancel()
	s.ln.Close()
	// Closing the client's connection ends the handshake's reads, and in
	// the relay the copier's error closes the destination's too.
	s.live.close(func(c *net.TCPConn) { c.Close() })
}

// session runs one client's CONNECT; it owns c and closes it.
func (s *netpollServer) session(c *net.TCPConn) {
	defer s.live.done(c, func() { c.Close() })
	t, err := s.connect(c)
	if err != nil {
		return
	}
	defer t.Close()
	done := make(chan struct{})
	go pipeTCP(t, c, done)
	pipeTCP(c, t, nil)
	<-done
}

// connect runs the handshake on c and connects to the destination, all
// within the handshake timeout; it returns the destination's connection,
// with what the client sent early already passed on.
func (s *netpollServer) connect(c *net.TCPConn) (*net.TCPConn, error) {
	deadline := time.Now().Add(s.cfg.handshakeTimeout)
	c.SetDeadline(deadline)
	var buf [handshakeBufLen]byte
	dst, early, err := handshake(c, buf[:])
	if err != nil {
		return nil, err
	}
	d := net.Dialer{KeepAlive: -1}
	if local := s.cfg.localFor(dst); local.IsValid() {
		d.LocalAddr = &net.TCPAddr{IP: local.AsSlice()}
	}
	ctx, cancel := context.WithDeadline(s.ctx, deadline)
	defer cancel()
	tc, err := d.DialContext(ctx, "tcp", dst.String())
	if err != nil {
		refuse(c, replyCode(err))
		return nil, err
	}
	t := tc.(*net.TCPConn)
	bound := t.LocalAddr().(*net.TCPAddr).AddrPort()
	if _, err := c.Write(appendReply(nil, repSucceeded, bound)); err != nil {
		t.Close()
		return nil, err
	}
	if len(early) > 0 {
		t.SetWriteDeadline(deadline)
		if _, err := t.Write(early); err != nil {
			t.Close()
			return nil, err
		}
		t.SetWriteDeadline(time.Time{})
	}
	c.SetDeadline(time.Time{})
	return t, nil
}

// pipeTCP copies src to dst until src's end, then half-closes dst; on an
// error it closes both, so the other direction ends too. done, when not
// nil, is closed at the end.
func pipeTCP(dst, src *net.TCPConn, done chan<- struct{}) {
	if done != nil {
		defer close(done)
	}
	if _, err := io.Copy(dst, src); err != nil {
		dst.Close()
		src.Close()
		return
	}
	dst.CloseWrite()
}

package mmsserver

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
)

// listenAttempts bounds the search for a port free on both TCP and UDP
// when Listen is asked for port 0.
const listenAttempts = 16

// Server is a running emulated media server: MMS control on TCP, and a UDP
// socket on the same address and port (the spec's server port for resend
// requests, [MS-MMSP] §3.2.5.11.1) that it also sends MMSU data from.
type Server struct {
	cfg Config
	log *slog.Logger
	ln  *net.TCPListener
	udp *net.UDPConn

	stats counters
	ids   atomic.Uint32 // client IDs for ReportFunnelInfo

	// mu guards sessions and closed.
	mu       sync.Mutex
	sessions map[*session]struct{}
	closed   bool

	closeOnce sync.Once
	wg        sync.WaitGroup // accept loop, UDP loop, sessions
}

// Stats counts what the server did, over its whole life.
type Stats struct {
	// Sessions is the number of control connections accepted; Active of
	// them are open.
	Sessions, Active int64
	// DataPackets is media Data packets sent, TailPackets of them after
	// their entry's StreamChange; TailsDropped counts held-back packets the
	// connection ended before.
	DataPackets, TailPackets, TailsDropped int64
	// HeaderPackets is stream header pieces sent.
	HeaderPackets int64
	// StreamChanges and PlaylistEnds count EndOfStream hr 1 (each with a
	// StreamChange) and hr 0 sent.
	StreamChanges, PlaylistEnds int64
	// Pings sent and Pongs received.
	Pings, Pongs int64
	// Loggings is Logging messages received.
	Loggings int64
	// Datagrams is UDP datagrams received from clients (resend requests).
	Datagrams int64
	// SendErrors counts UDP sends that failed (the player's port closed).
	SendErrors int64
}

type counters struct {
	sessions, active, data, tail, tailDropped, header, changes, ends atomic.Int64
	pings, pongs, loggings, datagrams, sendErrors                    atomic.Int64
}

// Listen starts a server on addr ("127.0.0.1:0" picks a port free for both
// TCP and UDP). log may be nil. Close stops it.
func Listen(addr string, cfg Config, log *slog.Logger) (*Server, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	ap, err := netip.ParseAddrPort(addr)
	if err != nil {
		return nil, fmt.Errorf("mmsserver: listen address: %w", err)
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	var (
		ln  *net.TCPListener
		udp *net.UDPConn
	)
	for attempt := 0; ; attempt++ {
		ln, err = net.ListenTCP("tcp", net.TCPAddrFromAddrPort(ap))
		if err != nil {
			return nil, fmt.Errorf("mmsserver: listen tcp %v: %w", ap, err)
		}
		got := ln.Addr().(*net.TCPAddr).AddrPort()
		udp, err = net.ListenUDP("udp", net.UDPAddrFromAddrPort(got))
		if err == nil {
			break
		}
		ln.Close()
		if ap.Port() != 0 || attempt+1 == listenAttempts {
			return nil, fmt.Errorf("mmsserver: listen udp %v: %w", got, err)
		}
	}
	s := &Server{cfg: cfg, log: log, ln: ln, udp: udp, sessions: make(map[*session]struct{})}
	s.wg.Add(2)
	go s.acceptLoop()
	go s.udpLoop()
	return s, nil
}

// Addr is the server's address, the same for TCP and UDP.
func (s *Server) Addr() netip.AddrPort {
	a := s.ln.Addr().(*net.TCPAddr).AddrPort()
	return netip.AddrPortFrom(a.Addr().Unmap(), a.Port())
}

// Stats returns the counters.
func (s *Server) Stats() Stats {
	c := &s.stats
	return Stats{
		Sessions: c.sessions.Load(), Active: c.active.Load(),
		DataPackets: c.data.Load(), TailPackets: c.tail.Load(), TailsDropped: c.tailDropped.Load(),
		HeaderPackets: c.header.Load(), StreamChanges: c.changes.Load(), PlaylistEnds: c.ends.Load(),
		Pings: c.pings.Load(), Pongs: c.pongs.Load(), Loggings: c.loggings.Load(),
		Datagrams: c.datagrams.Load(), SendErrors: c.sendErrors.Load(),
	}
}

// Close stops accepting, ends every session and waits for all of them.
// Safe to call more than once.
func (s *Server) Close() error {
	s.closeOnce.Do(func() {
		s.ln.Close()
		s.udp.Close()
		s.mu.Lock()
		s.closed = true
		for ss := range s.sessions {
			ss.conn.Close()
		}
		s.mu.Unlock()
	})
	s.wg.Wait()
	return nil
}

func (s *Server) acceptLoop() {
	defer s.wg.Done()
	for {
		c, err := s.ln.AcceptTCP()
		if err != nil {
			if !errors.Is(err, net.ErrClosed) {
				s.log.Warn("mmsserver: accept", "err", err)
			}
			return
		}
		ss := newSession(s, c)
		s.mu.Lock()
		if s.closed {
			s.mu.Unlock()
			c.Close()
			return
		}
		s.sessions[ss] = struct{}{}
		s.wg.Add(1)
		s.mu.Unlock()
		go s.serveSession(ss)
	}
}

func (s *Server) serveSession(ss *session) {
	defer s.wg.Done()
	s.stats.sessions.Add(1)
	s.stats.active.Add(1)
	err := ss.run()
	s.stats.active.Add(-1)
	s.mu.Lock()
	delete(s.sessions, ss)
	s.mu.Unlock()
	if err != nil {
		s.log.Debug("mmsserver: session ended", "peer", ss.peer, "err", err)
	} else {
		s.log.Debug("mmsserver: session closed", "peer", ss.peer)
	}
}

// udpLoop counts what clients send over UDP (only RequestPacketListResend
// exists, [MS-MMSP] §2.2.5); the emulator does not resend.
func (s *Server) udpLoop() {
	defer s.wg.Done()
	buf := make([]byte, 64<<10)
	for {
		_, _, err := s.udp.ReadFromUDPAddrPort(buf)
		if errors.Is(err, net.ErrClosed) {
			return
		}
		if err == nil {
			s.stats.datagrams.Add(1)
		}
	}
}

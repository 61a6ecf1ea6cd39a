package main

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"sync"
	"time"

	"fwproxy/mmsfilter"
)

// Announced mode: each player opens an MMS control connection through the
// proxy (a CONNECT to mmsStub, on a port the proxy filters) and announces
// its UDP port in a ConnectFunnel. The proxy leases an external port for
// it and rewrites the funnel to announce that; the stub reads the rewritten
// funnel and so learns where the sender, on the stub's IP, must send. No
// more of MMS is needed: the lease delivers whatever arrives from the
// server's IP to the player's announced port.

// funnelMessage is a ConnectFunnel announcing \\ip\UDP\port, with the
// player's index after the name's NUL: the filter keeps every byte after
// the port, so the stub can tell the players apart.
func funnelMessage(f mmsfilter.Funnel, idx uint32) []byte {
	var body []byte
	// The fields before the name, with the values VLC sends (MS-MMSP
	// 2.2.4.18): playIncarnation, maxBlockBytes, maxLatency, maxBitRate,
	// funnelMode.
	for _, v := range []uint32{0, 0xFFFFFFFF, 0, 0x00989680, 2} {
		body = binary.LittleEndian.AppendUint32(body, v)
	}
	body = mmsfilter.AppendFunnelName(body, f)
	body = append(body, 0, 0)
	body = binary.BigEndian.AppendUint32(body, idx)
	return mmsfilter.AppendCommand(nil, 0, mmsfilter.Message{MID: mmsfilter.MIDConnectFunnel, Body: body})
}

// funnelNameOffset is where the funnel name starts in a ConnectFunnel's
// body (absolute offset 60, the body starting at 40).
const funnelNameOffset = 20

// parseFunnelCommand reads a command packet holding a ConnectFunnel made
// by funnelMessage (and maybe rewritten): the funnel and the index.
func parseFunnelCommand(pkt []byte) (mmsfilter.Funnel, uint32, error) {
	p, _, err := mmsfilter.ParsePacket(pkt)
	if err != nil {
		return mmsfilter.Funnel{}, 0, err
	}
	m, _, err := mmsfilter.ParseMessage(p.Messages)
	if err != nil {
		return mmsfilter.Funnel{}, 0, err
	}
	if len(m.Body) < funnelNameOffset {
		return mmsfilter.Funnel{}, 0, errors.New("funnel: short body")
	}
	f, n, err := mmsfilter.ParseFunnelName(m.Body[funnelNameOffset:])
	if err != nil {
		return mmsfilter.Funnel{}, 0, err
	}
	rest := m.Body[funnelNameOffset+n:]
	if len(rest) < 6 {
		return mmsfilter.Funnel{}, 0, errors.New("funnel: no player index after the name")
	}
	return f, binary.BigEndian.Uint32(rest[2:6]), nil
}

// mmsStub is the media server's control side: it accepts control
// connections, reports each funnel, and holds the connection until the
// player closes it. Close ends everything it started.
type mmsStub struct {
	ln      net.Listener
	funnels chan funnelReport

	wg     sync.WaitGroup
	mu     sync.Mutex // guards conns and closed
	conns  map[net.Conn]struct{}
	closed bool
}

type funnelReport struct {
	idx uint32
	ext netip.AddrPort // what the proxy announced: its lease
}

func startMMSStub() (*mmsStub, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	s := &mmsStub{ln: ln, funnels: make(chan funnelReport, 1024), conns: make(map[net.Conn]struct{})}
	s.wg.Add(1)
	go s.acceptLoop()
	return s, nil
}

func (s *mmsStub) addr() netip.AddrPort { return addrPort(s.ln.Addr()) }

func (s *mmsStub) Close() {
	s.mu.Lock()
	s.closed = true
	for c := range s.conns {
		c.Close()
	}
	s.mu.Unlock()
	s.ln.Close()
	s.wg.Wait()
}

func (s *mmsStub) acceptLoop() {
	defer s.wg.Done()
	for {
		c, err := s.ln.Accept()
		if err != nil {
			return
		}
		s.mu.Lock()
		if s.closed {
			s.mu.Unlock()
			c.Close()
			return
		}
		s.conns[c] = struct{}{}
		s.mu.Unlock()
		s.wg.Add(1)
		go s.serve(c)
	}
}

// serve reads one funnel, reports it, then reads until the player's close.
func (s *mmsStub) serve(c net.Conn) {
	defer s.wg.Done()
	defer func() {
		s.mu.Lock()
		delete(s.conns, c)
		s.mu.Unlock()
		c.Close()
	}()
	c.SetReadDeadline(time.Now().Add(setupTimeout))
	head := make([]byte, mmsfilter.HeaderLen)
	if _, err := io.ReadFull(c, head); err != nil {
		return
	}
	h, _, err := mmsfilter.ParseHeader(head)
	if err != nil || h.Len() > mmsfilter.MaxCommandLen {
		return
	}
	pkt := append(head, make([]byte, h.Len()-mmsfilter.HeaderLen)...)
	if _, err := io.ReadFull(c, pkt[mmsfilter.HeaderLen:]); err != nil {
		return
	}
	f, idx, err := parseFunnelCommand(pkt)
	if err != nil {
		return
	}
	report := time.NewTimer(setupTimeout)
	select {
	case s.funnels <- funnelReport{idx: idx, ext: netip.AddrPortFrom(f.Addr, f.Port)}:
	case <-report.C: // nobody is collecting: a player of an abandoned setup
	}
	report.Stop()
	c.SetReadDeadline(time.Now().Add(maxConnLife))
	var sink [64]byte
	for {
		if _, err := c.Read(sink[:]); err != nil {
			return
		}
	}
}

// setupAnnounced opens every player's control connection through proxy to
// the stub and waits for the stub to have seen every funnel.
func setupAnnounced(ctx context.Context, ps []*streamPlayer, proxy string, stub *mmsStub) error {
	// Reports of an earlier, failed setup.
	for len(stub.funnels) > 0 {
		<-stub.funnels
	}
	byIdx := make(map[uint32]*streamPlayer, len(ps))
	for _, p := range ps {
		byIdx[uint32(p.idx)] = p
		p.dest, p.wrapped = netip.AddrPort{}, false
	}
	collected := make(chan error, 1)
	go func() {
		deadline := time.NewTimer(setupTimeout + time.Duration(len(ps))*time.Millisecond)
		defer deadline.Stop()
		for got := 0; got < len(ps); {
			select {
			case r := <-stub.funnels:
				if p, ok := byIdx[r.idx]; ok && !p.dest.IsValid() {
					p.dest = r.ext
					got++
				}
			case <-deadline.C:
				collected <- fmt.Errorf("announced mode: %d of %d funnels reached the server", got, len(ps))
				return
			case <-ctx.Done():
				collected <- ctx.Err()
				return
			}
		}
		collected <- nil
	}()
	// The collector alone writes p.dest until it has sent its result.
	err := parallel(ctx, ps, func(ctx context.Context, p *streamPlayer) error {
		ctx, cancel := context.WithTimeout(ctx, connectTimeout)
		defer cancel()
		ctl, _, err := dialSocksFrom(ctx, playerIP, proxy, cmdConnect, stub.addr())
		if err != nil {
			return fmt.Errorf("player %d: control connection: %w", p.idx, err)
		}
		p.ctl = ctl
		f := mmsfilter.Funnel{Addr: playerIP, Transport: mmsfilter.TransportUDP, Port: p.sock.port}
		if _, err := ctl.Write(funnelMessage(f, uint32(p.idx))); err != nil {
			return fmt.Errorf("player %d: funnel: %w", p.idx, err)
		}
		return nil
	})
	cerr := <-collected
	if err != nil {
		return err
	}
	return cerr
}

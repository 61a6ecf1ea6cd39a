package main

import (
	"encoding/binary"
	"errors"
	"io"
	"net"
	"net/netip"
	"sync"
	"time"
)

// peers are the loopback servers the clients reach, directly or through a
// proxy: a CONNECT target that closes first, a bulk source/sink, a UDP
// echo. Close stops them all and waits for their goroutines.
type peers struct {
	hello net.Listener // writes one byte and closes: CONNECT setup target
	bulk  net.Listener // 'd': sends until the client closes; 'u': sinks a framed upload, then answers the count
	echo  *net.UDPConn

	wg     sync.WaitGroup
	mu     sync.Mutex // guards conns and closed
	conns  map[net.Conn]struct{}
	closed bool
}

// maxConnLife bounds every bulk connection, so a stuck client cannot keep
// a server goroutine alive for ever.
const maxConnLife = 2 * time.Minute

func startPeers() (*peers, error) {
	p := &peers{conns: make(map[net.Conn]struct{})}
	var err error
	if p.hello, err = net.Listen("tcp", "127.0.0.1:0"); err != nil {
		return nil, err
	}
	if p.bulk, err = net.Listen("tcp", "127.0.0.1:0"); err != nil {
		p.hello.Close()
		return nil, err
	}
	if p.echo, err = net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)}); err != nil {
		p.hello.Close()
		p.bulk.Close()
		return nil, err
	}
	p.wg.Add(4)
	go p.helloLoop()
	go p.bulkLoop()
	// Two echo goroutines: one reads while the other writes.
	go p.echoLoop()
	go p.echoLoop()
	return p, nil
}

func (p *peers) helloAddr() netip.AddrPort { return addrPort(p.hello.Addr()) }
func (p *peers) bulkAddr() netip.AddrPort  { return addrPort(p.bulk.Addr()) }
func (p *peers) echoAddr() netip.AddrPort  { return addrPort(p.echo.LocalAddr()) }

// Close stops every server and waits for its goroutines.
func (p *peers) Close() {
	p.mu.Lock()
	p.closed = true
	for c := range p.conns {
		c.Close()
	}
	p.mu.Unlock()
	p.hello.Close()
	p.bulk.Close()
	p.echo.Close()
	p.wg.Wait()
}

// helloLoop answers each connection with one byte and closes it at once,
// so the target closes first (its side keeps the TIME_WAIT, not the
// client's or the proxy's ephemeral ports).
func (p *peers) helloLoop() {
	defer p.wg.Done()
	one := []byte{'h'}
	for {
		c, err := p.hello.Accept()
		if err != nil {
			return
		}
		c.Write(one)
		c.Close()
	}
}

func (p *peers) bulkLoop() {
	defer p.wg.Done()
	for {
		c, err := p.bulk.Accept()
		if err != nil {
			return
		}
		if !p.track(c) {
			c.Close()
			return
		}
		p.wg.Add(1)
		go p.bulkConn(c)
	}
}

func (p *peers) track(c net.Conn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return false
	}
	p.conns[c] = struct{}{}
	return true
}

// bulkConn serves one bulk stream: the first byte picks the direction.
func (p *peers) bulkConn(c net.Conn) {
	defer p.wg.Done()
	defer func() {
		p.mu.Lock()
		delete(p.conns, c)
		p.mu.Unlock()
		c.Close()
	}()
	c.SetDeadline(time.Now().Add(maxConnLife))
	var mode [1]byte
	if _, err := io.ReadFull(c, mode[:]); err != nil {
		return
	}
	switch mode[0] {
	case 'd':
		buf := make([]byte, bulkChunk)
		for {
			if _, err := c.Write(buf); err != nil {
				return
			}
		}
	case 'u':
		// Large reads keep the sink's own cost small beside the proxy's.
		// The upload is framed (see bulkStream): a 'c' and a chunk, …,
		// an 'e'.
		buf := make([]byte, 1+bulkChunk)
		var n int64
		for {
			if _, err := io.ReadFull(c, buf[:1]); err != nil {
				return
			}
			if buf[0] == uploadEnd {
				break
			}
			if buf[0] != uploadChunk {
				return
			}
			k, err := io.ReadFull(c, buf[1:])
			n += int64(k)
			if err != nil {
				return
			}
		}
		var count [8]byte
		binary.BigEndian.PutUint64(count[:], uint64(n))
		c.Write(count[:])
	}
}

// echoLoop sends every datagram back to its sender.
func (p *peers) echoLoop() {
	defer p.wg.Done()
	buf := make([]byte, 64<<10)
	for {
		n, from, err := p.echo.ReadFromUDPAddrPort(buf)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			continue
		}
		p.echo.WriteToUDPAddrPort(buf[:n], from)
	}
}

// bulkChunk is the write size of the bulk streams.
const bulkChunk = 256 << 10

// addrPort returns a TCP or UDP address as a netip.AddrPort, unmapped.
func addrPort(a net.Addr) netip.AddrPort {
	var ap netip.AddrPort
	switch a := a.(type) {
	case *net.TCPAddr:
		ap = a.AddrPort()
	case *net.UDPAddr:
		ap = a.AddrPort()
	}
	return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
}

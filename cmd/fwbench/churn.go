package main

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"sync"
	"syscall"
	"time"
)

// churnConfig shapes the playlist-churn scenario.
type churnConfig struct {
	clients  int           // players, each churning its own port
	interval time.Duration // the sender's gap between datagrams to one port
	dwell    time.Duration // how long a player reads between rebinds
}

// benchChurn is the playlist churn: every player closes its association
// the careful way (half-close, wait for the proxy's close, read what its
// socket holds, close it) and associates the same port again, in a loop,
// while a sender streams numbered datagrams to each player's external port.
// Every datagram must arrive exactly once.
func (b *bench) benchChurn(ctx context.Context, sys system, proxy string, cc churnConfig) error {
	sender, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		return err
	}
	defer sender.Close()
	players := make([]*player, 0, cc.clients)
	defer func() {
		for _, p := range players {
			p.close()
		}
	}()
	for i := range cc.clients {
		p, err := newPlayer(ctx, proxy, i)
		if err != nil {
			return fmt.Errorf("churn player %d: %w", i, err)
		}
		players = append(players, p)
	}
	ext, err := learnExternalPorts(ctx, sender, players)
	if err != nil {
		return err
	}

	start := time.Now()
	end := start.Add(b.dur)
	var wg sync.WaitGroup
	errs := make([]error, len(players))
	for i, p := range players {
		wg.Add(1)
		go p.churn(ctx, proxy, end, cc.dwell, &errs[i], &wg)
	}
	sent := stream(ctx, sender, ext, cc.interval, end)
	wg.Wait()
	elapsed := time.Since(start)
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("churn: %w", err)
	}
	// The last datagrams may still be on their way through the proxy.
	var rebinds sample
	var closes, assocs []time.Duration
	lost, dups, received := 0, 0, 0
	for i, p := range players {
		p.drainFor(300 * time.Millisecond)
		got := p.unique()
		lost += sent[i] - got
		dups += p.dups
		received += got
		rebinds.merge(p.rebinds)
		closes = append(closes, p.closes...)
		assocs = append(assocs, p.assocs...)
	}
	b.log.Info("churn", "players", len(players), "sent", sumInts(sent), "received", received, "duplicates", dups, "rebinds", rebinds.ok)
	key, label := fmt.Sprintf("churn/%d", len(players)), fmt.Sprintf("churn, %d players", len(players))
	b.res.fig(key+"/rate", label+": rebinds", "rebinds/s", higherIsBetter).set(sys, perSecond(rebinds.ok, elapsed))
	b.res.fig(key+"/p50", label+": rebind time p50", "µs", lowerIsBetter).set(sys, micros(percentile(rebinds.lat, 0.50)))
	b.res.fig(key+"/p99", label+": rebind time p99", "µs", lowerIsBetter).set(sys, micros(percentile(rebinds.lat, 0.99)))
	b.res.fig(key+"/close/p99", label+": half-close to the proxy's close, p99", "µs", lowerIsBetter).set(sys, micros(percentile(closes, 0.99)))
	b.res.fig(key+"/assoc/p99", label+": new association (dial to reply), p99", "µs", lowerIsBetter).set(sys, micros(percentile(assocs, 0.99)))
	sentFig := b.res.fig(key+"/sent", label+": datagrams sent, all rounds", "count", higherIsBetter)
	lostFig := b.res.fig(key+"/lost", label+": datagrams lost or duplicated, all rounds (must be 0)", "count", lowerIsBetter)
	sentFig.total, lostFig.total = true, true
	sentFig.set(sys, float64(sumInts(sent)))
	lostFig.set(sys, float64(lost+dups))
	return nil
}

// playerIP is the players' address, for their UDP ports and their control
// connections (the proxy takes a client's IP from the latter). fwproxy's
// relay sockets bind 127.0.0.1 and its leases 127.0.0.2, so nothing else
// can take a player's port in the gap between its close and its bind.
var playerIP = netip.MustParseAddr("127.0.0.3")

// player is one media client churning one UDP port.
type player struct {
	idx     int
	port    uint16
	sock    *net.UDPConn
	ctl     *net.TCPConn
	relay   netip.AddrPort
	seen    []bool // by sequence number
	dups    int
	rebinds sample
	// closes and assocs split each rebind: the half-close until the
	// proxy's close, and the new association's dial until its reply.
	closes, assocs []time.Duration
	buf            []byte
}

func newPlayer(ctx context.Context, proxy string, idx int) (*player, error) {
	sock, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.AddrPortFrom(playerIP, 0)))
	if err != nil {
		return nil, err
	}
	p := &player{idx: idx, sock: sock, port: addrPort(sock.LocalAddr()).Port(), buf: make([]byte, 2048)}
	if err := p.associate(ctx, proxy); err != nil {
		sock.Close()
		return nil, err
	}
	return p, nil
}

// associate opens the association for p.port: DST.PORT is the port.
func (p *player) associate(ctx context.Context, proxy string) error {
	ctx, cancel := context.WithTimeout(ctx, connectTimeout)
	defer cancel()
	ctl, bound, err := dialSocksFrom(ctx, playerIP, proxy, cmdUDPAssociate, netip.AddrPortFrom(playerIP, p.port))
	if err != nil {
		return fmt.Errorf("udp associate port %d: %w", p.port, err)
	}
	p.ctl, p.relay = ctl, relayAddr(bound, proxy)
	return nil
}

func (p *player) close() {
	if p.ctl != nil {
		p.ctl.Close()
	}
	if p.sock != nil {
		p.sock.Close()
	}
}

// learnExternalPorts has every player send one datagram through its
// association to the sender. That permits the sender as a peer of the
// lease (permissions survive reclaims) and shows the sender each lease's
// external address.
func learnExternalPorts(ctx context.Context, sender *net.UDPConn, players []*player) ([]netip.AddrPort, error) {
	ext := make([]netip.AddrPort, len(players))
	to := addrPort(sender.LocalAddr())
	buf := make([]byte, 64)
	for _, p := range players {
		msg := binary.BigEndian.AppendUint32(appendUDPHeader(nil, to), uint32(p.idx))
		deadline := time.Now().Add(5 * time.Second)
		for !ext[p.idx].IsValid() {
			if time.Now().After(deadline) || ctx.Err() != nil {
				return nil, fmt.Errorf("churn: player %d's hello never reached the sender", p.idx)
			}
			if _, err := p.sock.WriteToUDPAddrPort(msg, p.relay); err != nil {
				return nil, err
			}
			sender.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
			n, from, err := sender.ReadFromUDPAddrPort(buf)
			if err == nil && n == 4 {
				if i := int(binary.BigEndian.Uint32(buf)); i < len(ext) {
					ext[i] = from
				}
			}
		}
	}
	sender.SetReadDeadline(time.Time{})
	return ext, nil
}

// stream sends numbered datagrams round robin to every external address,
// one per address per interval, until end; it returns how many went to
// each.
func stream(ctx context.Context, sender *net.UDPConn, ext []netip.AddrPort, interval time.Duration, end time.Time) []int {
	sent := make([]int, len(ext))
	msg := make([]byte, 200)
	next := time.Now()
	for n := 0; n < maxStepsPerWorker && ctx.Err() == nil && time.Now().Before(end); n++ {
		for i, to := range ext {
			binary.BigEndian.PutUint64(msg, uint64(sent[i]))
			if _, err := sender.WriteToUDPAddrPort(msg, to); err == nil {
				sent[i]++
			}
		}
		next = next.Add(interval)
		if d := time.Until(next); d > 0 {
			time.Sleep(d)
		}
	}
	return sent
}

// churn reads for dwell, then closes and re-associates, until end.
func (p *player) churn(ctx context.Context, proxy string, end time.Time, dwell time.Duration, errp *error, wg *sync.WaitGroup) {
	defer wg.Done()
	p.rebinds.lat = make([]time.Duration, 0, 1<<14)
	for range maxStepsPerWorker {
		if ctx.Err() != nil || !time.Now().Before(end) {
			return
		}
		p.readFor(dwell)
		start := time.Now()
		if err := p.rebind(ctx, proxy); err != nil {
			*errp = fmt.Errorf("player %d rebind: %w", p.idx, err)
			return
		}
		p.rebinds.ok++
		p.rebinds.lat = append(p.rebinds.lat, time.Since(start))
	}
}

// rebind is the careful client's close and bind-again of its port.
func (p *player) rebind(ctx context.Context, proxy string) error {
	start := time.Now()
	p.ctl.CloseWrite()
	p.ctl.SetReadDeadline(time.Now().Add(connectTimeout))
	if _, err := io.Copy(io.Discard, p.ctl); err != nil {
		return fmt.Errorf("waiting for the proxy's close: %w", err)
	}
	p.ctl.Close()
	p.ctl = nil
	p.closes = append(p.closes, time.Since(start))
	// The lease was released before the proxy closed: everything still on
	// its way to this socket is already queued in it.
	p.drainQueued()
	p.sock.Close()
	sock, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.AddrPortFrom(playerIP, p.port)))
	if err != nil {
		p.sock = nil
		return fmt.Errorf("bind port %d again: %w", p.port, err)
	}
	p.sock = sock
	assocStart := time.Now()
	if err := p.associate(ctx, proxy); err != nil {
		return err
	}
	p.assocs = append(p.assocs, time.Since(assocStart))
	return nil
}

// readFor reads datagrams until d has passed.
func (p *player) readFor(d time.Duration) {
	p.sock.SetReadDeadline(time.Now().Add(d))
	for {
		n, _, err := p.sock.ReadFromUDPAddrPort(p.buf)
		if err != nil {
			return
		}
		p.record(p.buf[:n])
	}
}

// drainFor reads until no datagram has come for quiet.
func (p *player) drainFor(quiet time.Duration) {
	for range maxStepsPerWorker {
		p.sock.SetReadDeadline(time.Now().Add(quiet))
		n, _, err := p.sock.ReadFromUDPAddrPort(p.buf)
		if errors.Is(err, os.ErrDeadlineExceeded) || err != nil {
			return
		}
		p.record(p.buf[:n])
	}
}

// drainQueued reads what the socket already holds without waiting.
func (p *player) drainQueued() {
	rc, err := p.sock.SyscallConn()
	if err != nil {
		return
	}
	// RawConn.Read honours the read deadline: a past one (readFor's) would
	// return before the callback runs.
	p.sock.SetReadDeadline(time.Time{})
	rc.Read(func(fd uintptr) bool {
		for {
			n, err := syscall.Read(int(fd), p.buf)
			if err != nil || n < 0 {
				return true // EAGAIN: empty
			}
			p.record(p.buf[:n])
		}
	})
}

// record notes one relayed datagram's sequence number.
func (p *player) record(d []byte) {
	payload, err := udpPayload(d)
	if err != nil || len(payload) < 8 {
		return
	}
	seq := binary.BigEndian.Uint64(payload)
	if seq >= 1<<24 {
		return
	}
	for uint64(len(p.seen)) <= seq {
		p.seen = append(p.seen, false)
	}
	if p.seen[seq] {
		p.dups++
	}
	p.seen[seq] = true
}

func (p *player) unique() int {
	n := 0
	for _, s := range p.seen {
		if s {
			n++
		}
	}
	return n
}

func sumInts(v []int) int {
	n := 0
	for _, x := range v {
		n += x
	}
	return n
}

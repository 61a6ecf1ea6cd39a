package main

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"time"
)

// streamPlayer is one receiving player: a UDP socket on playerIP that it
// keeps for the whole scenario, and, for the system being measured, its
// association or MMS control connection.
type streamPlayer struct {
	idx  int
	sock *playerSocket

	ctl     *net.TCPConn   // association or control connection; nil when none
	dest    netip.AddrPort // where the sender sends this player's stream
	wrapped bool           // datagrams arrive with a SOCKS UDP header

	rx recvStats
}

// recvStats is one step's reception at one player.
type recvStats struct {
	seen     []uint64 // bit per sequence number
	received int      // distinct datagrams of the step
	dups     int
	// sent and lat are each distinct datagram's send time (since epoch)
	// and its delay from send to receive, for the window's figures.
	sent, lat []time.Duration
}

func newStreamPlayer(idx int) (*streamPlayer, error) {
	sock, err := openPlayerSocket(playerIP)
	if err != nil {
		return nil, fmt.Errorf("stream player %d: %w", idx, err)
	}
	return &streamPlayer{idx: idx, sock: sock}, nil
}

func (p *streamPlayer) addr() netip.AddrPort { return netip.AddrPortFrom(playerIP, p.sock.port) }

// closeControl ends the player's association or control connection.
func (p *streamPlayer) closeControl() {
	if p.ctl != nil {
		p.ctl.Close()
		p.ctl = nil
	}
}

func (p *streamPlayer) close() {
	p.closeControl()
	p.sock.close()
}

// stepWindow is what a receiver needs to know of its step.
type stepWindow struct {
	gen       uint32
	perPlayer int           // sequence numbers a player can get
	received  *atomic.Int64 // all players' distinct datagrams, for the drain
}

// reset readies p's reception for step w.
func (p *streamPlayer) reset(w stepWindow) {
	p.rx = recvStats{seen: make([]uint64, (w.perPlayer+63)/64), sent: make([]time.Duration, 0, w.perPlayer), lat: make([]time.Duration, 0, w.perPlayer)}
}

// record notes one datagram received at now.
func (p *streamPlayer) record(b []byte, now time.Duration, w stepWindow) {
	if p.wrapped {
		var err error
		if b, err = udpPayload(b); err != nil {
			return
		}
	}
	d, ok := parseStreamHeader(b)
	if !ok || d.gen != w.gen || int(d.idx) != p.idx || d.seq >= uint64(w.perPlayer) {
		return // another step's, or not ours
	}
	word, bit := d.seq/64, uint64(1)<<(d.seq%64)
	if p.rx.seen[word]&bit != 0 {
		p.rx.dups++
		return
	}
	p.rx.seen[word] |= bit
	p.rx.received++
	w.received.Add(1)
	p.rx.sent = append(p.rx.sent, d.sent)
	p.rx.lat = append(p.rx.lat, now-d.sent)
}

// Setting up each way of reaching the players. Each returns when every
// player in ps has its dest, or with an error; the caller closes the
// control connections with closeControl either way.

// setupDirect: the sender sends to the players' own sockets.
func setupDirect(ps []*streamPlayer) {
	for _, p := range ps {
		p.dest, p.wrapped = p.addr(), false
	}
}

// setupRelay registers every player with the minimal relay and has the
// sender send to its in socket.
func setupRelay(ctx context.Context, ps []*streamPlayer, in, out netip.AddrPort) error {
	buf := make([]byte, 2048)
	for _, p := range ps {
		idx := binary.BigEndian.AppendUint32(nil, uint32(p.idx))
		if err := untilAnswered(ctx, func() error {
			return p.sock.sendTo(idx, out)
		}, func(wait time.Duration) (bool, error) {
			n, from, err := p.sock.readFrom(buf, wait)
			return err == nil && from == out && n == 4 && string(buf[:4]) == string(idx), err
		}); err != nil {
			return fmt.Errorf("relay registration of player %d: %w", p.idx, err)
		}
		p.dest, p.wrapped = in, false
	}
	return nil
}

// setupRelayPerPlayer registers every player with the minimal relay in
// per-player mode: the answer, from the player's own out socket on out's
// IP, is its index and the port of its own in socket on inIP, where the
// sender sends its stream.
func setupRelayPerPlayer(ctx context.Context, ps []*streamPlayer, inIP netip.Addr, out netip.AddrPort) error {
	buf := make([]byte, 2048)
	for _, p := range ps {
		idx := binary.BigEndian.AppendUint32(nil, uint32(p.idx))
		var port uint16
		if err := untilAnswered(ctx, func() error {
			return p.sock.sendTo(idx, out)
		}, func(wait time.Duration) (bool, error) {
			n, from, err := p.sock.readFrom(buf, wait)
			if err != nil || from.Addr() != out.Addr() || n != 6 || string(buf[:4]) != string(idx) {
				return false, err
			}
			port = binary.BigEndian.Uint16(buf[4:6])
			return port != 0, nil
		}); err != nil {
			return fmt.Errorf("per-player relay registration of player %d: %w", p.idx, err)
		}
		p.dest, p.wrapped = netip.AddrPortFrom(inIP, port), false
	}
	return nil
}

// setupTimeout bounds each player's setup (an association, a registration,
// a funnel).
const setupTimeout = 10 * time.Second

// untilAnswered sends with send and reads with answer until answer says
// done, resending every 100 ms (a datagram on a loaded machine may be
// lost), for up to setupTimeout. answer reads one datagram, waiting up to
// the time it is given, and returns its read error (os.ErrDeadlineExceeded
// when none came); a datagram that is not the answer (a previous step's)
// reads on.
func untilAnswered(ctx context.Context, send func() error, answer func(wait time.Duration) (bool, error)) error {
	deadline := time.Now().Add(setupTimeout)
	for time.Now().Before(deadline) && ctx.Err() == nil {
		if err := send(); err != nil {
			return err
		}
		resend := time.Now().Add(100 * time.Millisecond)
		for range maxStepsPerWorker {
			done, err := answer(time.Until(resend))
			if done {
				return nil
			}
			if errors.Is(err, os.ErrDeadlineExceeded) {
				break
			}
			if err != nil {
				return err
			}
		}
	}
	if ctx.Err() != nil {
		return ctx.Err()
	}
	return errors.New("no answer")
}

// setupWorkers is how many players set up at once.
const setupWorkers = 8

// parallel runs f for every player, setupWorkers at a time, and returns
// the first error.
func parallel(ctx context.Context, ps []*streamPlayer, f func(ctx context.Context, p *streamPlayer) error) error {
	errs := make([]error, setupWorkers)
	var wg sync.WaitGroup
	for w := range setupWorkers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; i < len(ps) && ctx.Err() == nil; i += setupWorkers {
				if err := f(ctx, ps[i]); err != nil {
					errs[w] = err
					return
				}
			}
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return err
	}
	return ctx.Err()
}

// setupAssociations gives every player a UDP association through proxy
// for its own address and has each send one datagram through it to the
// sender, which permits the sender as a peer and shows it each
// association's external address.
func setupAssociations(ctx context.Context, ps []*streamPlayer, proxy string, sender *net.UDPConn) error {
	err := parallel(ctx, ps, func(ctx context.Context, p *streamPlayer) error {
		ctx, cancel := context.WithTimeout(ctx, connectTimeout)
		defer cancel()
		ctl, bound, err := dialSocksFrom(ctx, playerIP, proxy, cmdUDPAssociate, p.addr())
		if err != nil {
			return fmt.Errorf("player %d: udp associate: %w", p.idx, err)
		}
		p.ctl, p.dest, p.wrapped = ctl, relayAddr(bound, proxy), true
		return nil
	})
	if err != nil {
		return err
	}
	to := addrPort(sender.LocalAddr())
	buf := make([]byte, 64)
	defer sender.SetReadDeadline(time.Time{})
	for _, p := range ps {
		relay := p.dest
		hello := binary.BigEndian.AppendUint32(appendUDPHeader(nil, to), uint32(p.idx))
		var ext netip.AddrPort
		if err := untilAnswered(ctx, func() error {
			return p.sock.sendTo(hello, relay)
		}, func(wait time.Duration) (bool, error) {
			sender.SetReadDeadline(time.Now().Add(max(wait, 0)))
			n, from, err := sender.ReadFromUDPAddrPort(buf)
			if err == nil && n == 4 && binary.BigEndian.Uint32(buf) == uint32(p.idx) {
				ext = from
				return true, nil
			}
			return false, err
		}); err != nil {
			return fmt.Errorf("player %d: hello through the association: %w", p.idx, err)
		}
		p.dest = ext
	}
	return nil
}

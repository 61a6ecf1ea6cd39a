package main

import (
	"encoding/binary"
	"errors"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"

	"golang.org/x/net/ipv4"
)

const (
	// batch is the most datagrams one recvmmsg or sendmmsg moves.
	batch = 64
	// maxDatagram is the largest datagram relayed whole.
	maxDatagram = 2048
	// maxPlayers bounds the player table (4 bytes of index on the wire,
	// but a table the relay allocates up front).
	maxPlayers = 1 << 20
)

// relay forwards datagrams from in to the player each one names, out of
// out. Players register on out.
type relay struct {
	in, out *net.UDPConn
	inPC    *ipv4.PacketConn
	outPC   *ipv4.PacketConn

	// players[i] is player i's address; the registration goroutine writes
	// it, the data path reads it.
	mu      sync.RWMutex
	players []netip.AddrPort

	tally
	wg sync.WaitGroup
}

// tally is what a relay counts, printed at exit.
type tally struct {
	relayed, unknown, sendErrors, registrations, refused atomic.Uint64
}

type counts struct{ relayed, unknown, sendErrors, registrations, refused uint64 }

func (t *tally) counts() counts {
	return counts{t.relayed.Load(), t.unknown.Load(), t.sendErrors.Load(), t.registrations.Load(), t.refused.Load()}
}

// parseRegistration is the player index a registration names: exactly
// four bytes, big-endian, below players.
func parseRegistration(b []byte, players int) (uint32, bool) {
	if len(b) != 4 {
		return 0, false
	}
	i := binary.BigEndian.Uint32(b)
	return i, uint64(i) < uint64(players)
}

func newRelay(in, out *net.UDPConn, players int) *relay {
	return &relay{in: in, out: out, inPC: ipv4.NewPacketConn(in), outPC: ipv4.NewPacketConn(out), players: make([]netip.AddrPort, players)}
}

// run relays until close; it returns once both loops have ended.
func (r *relay) run() {
	r.wg.Add(2)
	go r.registerLoop()
	go r.forwardLoop()
	r.wg.Wait()
}

// close ends both loops by closing the sockets.
func (r *relay) close() {
	r.in.Close()
	r.out.Close()
}

// registerLoop records each player's address and acknowledges it.
func (r *relay) registerLoop() {
	defer r.wg.Done()
	var buf [16]byte
	for {
		n, from, err := r.out.ReadFromUDPAddrPort(buf[:])
		if errors.Is(err, net.ErrClosed) {
			return
		}
		if err != nil {
			continue
		}
		i, ok := parseRegistration(buf[:n], len(r.players))
		if !ok {
			r.refused.Add(1)
			continue
		}
		r.mu.Lock()
		r.players[i] = from
		r.mu.Unlock()
		r.registrations.Add(1)
		r.out.WriteToUDPAddrPort(buf[:4], from)
	}
}

// forwardLoop is the data path: one recvmmsg takes what is queued (up to
// batch), one sendmmsg passes it on. Nothing is allocated per datagram.
func (r *relay) forwardLoop() {
	defer r.wg.Done()
	rx := make([]ipv4.Message, batch)
	tx := make([]ipv4.Message, batch)
	addrs := make([]net.UDPAddr, batch)
	ips := make([][4]byte, batch)
	for i := range rx {
		rx[i].Buffers = [][]byte{make([]byte, maxDatagram)}
		tx[i].Buffers = [][]byte{nil}
	}
	for {
		n, err := r.inPC.ReadBatch(rx, 0)
		if errors.Is(err, net.ErrClosed) {
			return
		}
		if err != nil {
			continue
		}
		k := 0
		r.mu.RLock()
		for _, m := range rx[:n] {
			b := m.Buffers[0][:m.N]
			to, ok := r.route(b)
			if !ok {
				r.unknown.Add(1)
				continue
			}
			ips[k] = to.Addr().As4()
			addrs[k] = net.UDPAddr{IP: ips[k][:], Port: int(to.Port())}
			tx[k].Buffers[0] = b
			tx[k].Addr = &addrs[k]
			k++
		}
		r.mu.RUnlock()
		r.send(tx[:k])
	}
}

// route is the registered address of the player b names; b must hold
// the index, and the player must have registered.
func (r *relay) route(b []byte) (netip.AddrPort, bool) {
	if len(b) < 4 {
		return netip.AddrPort{}, false
	}
	i := binary.BigEndian.Uint32(b)
	if int(i) >= len(r.players) || !r.players[i].IsValid() || !r.players[i].Addr().Is4() {
		return netip.AddrPort{}, false
	}
	return r.players[i], true
}

// send writes every message of tx, resuming after a partial sendmmsg; a
// datagram the kernel refuses is counted and skipped.
func (r *relay) send(tx []ipv4.Message) {
	for len(tx) > 0 {
		n, err := r.outPC.WriteBatch(tx, 0)
		r.relayed.Add(uint64(max(n, 0)))
		tx = tx[max(n, 0):]
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			r.sendErrors.Add(1)
			if len(tx) > 0 {
				tx = tx[1:]
			}
		}
	}
}

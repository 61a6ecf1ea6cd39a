package main

import (
	"context"
	"encoding/binary"
	"errors"
	"net"
	"net/netip"
	"time"

	"golang.org/x/net/ipv4"
)

// A streamed datagram begins with its player, the step's generation, its
// sequence number and the sender's time stamp; the rest is padding up to
// the configured size.
//
//	0      4      8              16             24
//	| idx  | gen  | seq          | sent at (ns) | padding … |
const streamHeaderLen = 24

// streamDatagram is one decoded header.
type streamDatagram struct {
	idx, gen uint32
	seq      uint64
	sent     time.Duration // since epoch
}

func putStreamHeader(b []byte, d streamDatagram) {
	binary.BigEndian.PutUint32(b[0:], d.idx)
	binary.BigEndian.PutUint32(b[4:], d.gen)
	binary.BigEndian.PutUint64(b[8:], d.seq)
	binary.BigEndian.PutUint64(b[16:], uint64(d.sent))
}

func parseStreamHeader(b []byte) (streamDatagram, bool) {
	if len(b) < streamHeaderLen {
		return streamDatagram{}, false
	}
	return streamDatagram{
		idx:  binary.BigEndian.Uint32(b[0:]),
		gen:  binary.BigEndian.Uint32(b[4:]),
		seq:  binary.BigEndian.Uint64(b[8:]),
		sent: time.Duration(binary.BigEndian.Uint64(b[16:])),
	}, true
}

// epoch is the zero of every time stamp: one monotonic clock for the
// sender and the players, which share this process.
var epoch = time.Now()

func sinceEpoch() time.Duration { return time.Since(epoch) }

// schedule is when the sender sends what. Every player gets one datagram
// per interval, and the players are spread evenly over the interval: slot
// j goes to player j mod players, due at start + j × interval / players.
type schedule struct {
	start    time.Duration // since epoch
	interval time.Duration
	players  int
	slots    int // slots before the end
}

func newSchedule(start, length, interval time.Duration, players int) schedule {
	s := schedule{start: start, interval: interval, players: players}
	// Slots due before start+length.
	s.slots = int((int64(length)*int64(players) + int64(interval) - 1) / int64(interval))
	return s
}

func (s schedule) due(j int) time.Duration {
	return s.start + time.Duration(int64(j)*int64(s.interval)/int64(s.players))
}

func (s schedule) player(j int) int { return j % s.players }

// perPlayer is the most slots any one player gets.
func (s schedule) perPlayer() int { return (s.slots + s.players - 1) / s.players }

// senderStats is what the sender did.
type senderStats struct {
	sent       []int           // per player
	errors     int             // datagrams the kernel refused
	late       []time.Duration // how far behind its slot each datagram of the window went
	sentInWin  int
	wallActual time.Duration
}

// senderBatch is the most datagrams one sendmmsg carries.
const senderBatch = 64

// sendStreams sends every slot of sch to dests (one per player) from conn,
// at its due time or as soon after as it can, batching what is due
// together into one sendmmsg. The time stamp in each datagram is taken
// just before its system call, so the players measure the delay after
// the send and not the sender's own lateness, which is recorded apart
// for the datagrams due in [winStart, winEnd).
func sendStreams(ctx context.Context, conn *net.UDPConn, dests []netip.AddrPort, sch schedule, gen uint32, size int, winStart, winEnd time.Duration) senderStats {
	st := senderStats{sent: make([]int, len(dests)), late: make([]time.Duration, 0, sch.slots)}
	pc := ipv4.NewPacketConn(conn)
	addrs := make([]net.UDPAddr, len(dests))
	for i, d := range dests {
		addrs[i] = *net.UDPAddrFromAddrPort(d)
	}
	msgs := make([]ipv4.Message, senderBatch)
	slotOf := make([]int, senderBatch)
	for i := range msgs {
		msgs[i].Buffers = [][]byte{make([]byte, max(size, streamHeaderLen))}
	}
	seq := make([]uint64, len(dests))
	begin := sinceEpoch()
	for j := 0; j < sch.slots && ctx.Err() == nil; {
		now := sinceEpoch()
		k := 0
		for ; j < sch.slots && k < senderBatch && sch.due(j) <= now; j, k = j+1, k+1 {
			p := sch.player(j)
			putStreamHeader(msgs[k].Buffers[0], streamDatagram{idx: uint32(p), gen: gen, seq: seq[p], sent: now})
			seq[p]++
			msgs[k].Addr = &addrs[p]
			slotOf[k] = j
			if d := sch.due(j); d >= winStart && d < winEnd {
				st.late = append(st.late, now-d)
			}
		}
		if k == 0 {
			// Nothing due: wait for the next slot. The runtime's timers
			// may wake late; the lateness is measured, not hidden.
			time.Sleep(sch.due(j) - now)
			continue
		}
		batch := msgs[:k]
		slots := slotOf[:k]
		for len(batch) > 0 {
			n, err := pc.WriteBatch(batch, 0)
			n = max(n, 0)
			for _, s := range slots[:n] {
				st.sent[sch.player(s)]++
				if d := sch.due(s); d >= winStart && d < winEnd {
					st.sentInWin++
				}
			}
			batch, slots = batch[n:], slots[n:]
			if err != nil {
				if errors.Is(err, net.ErrClosed) {
					return st
				}
				// The datagram at the head was refused: count it, go on.
				st.errors++
				if len(batch) > 0 {
					batch, slots = batch[1:], slots[1:]
				}
			}
		}
	}
	st.wallActual = sinceEpoch() - begin
	return st
}

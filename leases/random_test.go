package leases

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// TestRandomizedInterleavings drives many keys through random acquire,
// handover, release, reclaim and expiry while a sender per key never stops
// sending sequence-numbered datagrams. With lingering, every datagram sent
// while the key's lease existed must arrive exactly once and in order; with
// Linger 0 the same schedule must lose datagrams, which proves the check can
// fail. Reproduce a run with LEASES_SEED=<seed>.
func TestRandomizedInterleavings(t *testing.T) {
	seed := uint64(time.Now().UnixNano())
	if s := os.Getenv("LEASES_SEED"); s != "" {
		v, err := strconv.ParseUint(s, 10, 64)
		require.NoError(t, err)
		seed = v
	}
	tests := []struct {
		name     string
		linger   time.Duration
		wantLoss bool
	}{
		{"linger", 10 * time.Second, false},
		{"linger 0 loses datagrams", 0, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Logf("seed %d (LEASES_SEED=%d to reproduce)", seed, seed)
			runRandomized(t, seed, tt.linger, tt.wantLoss)
		})
	}
}

const (
	randKeys    = 6
	randSteps   = 500
	sendPace    = time.Millisecond
	payloadSize = 9 // key u8 | epoch u32 | seq u32
)

// rtarget is where a key's sender currently sends: the lease's external
// address during model epoch epoch.
type rtarget struct {
	epoch int
	addr  netip.AddrPort
}

// rkey is one client port binding: the driver's model of it, its sender and
// what its holders received.
type rkey struct {
	idx  int
	key  Key
	want uint16
	conn *net.UDPConn

	target   atomic.Pointer[rtarget]
	wake     chan struct{} // the sender waits here while there is no target
	sent     atomic.Int64
	sentPoke chan struct{}

	// Driver-only model. An epoch is the logical life of the key's lease:
	// from an acquire with no lease to the expiry of its linger. Releases
	// and reclaims in between do not end it — that is the point.
	epoch     int
	holders   []*Holder
	lingering bool
	deadline  time.Time

	mu       sync.Mutex
	firstSeq map[int]uint32   // first seq the sender sent in an epoch
	lastSent map[int]uint32   // last seq the sender sent in an epoch
	got      map[int][]uint32 // seqs delivered, by the epoch of the receiving holder
	strays   int              // datagrams sent for an earlier epoch that met a newer lease
}

func (rk *rkey) deliverFor(epoch int) DeliverFunc {
	return func(b []byte, _ netip.AddrPort) {
		if len(b) != payloadSize || int(b[0]) != rk.idx {
			rk.mu.Lock()
			rk.strays++ // another key's old port reused; not this key's data
			rk.mu.Unlock()
			return
		}
		tag := int(binary.BigEndian.Uint32(b[1:5]))
		s := binary.BigEndian.Uint32(b[5:9])
		rk.mu.Lock()
		if tag == epoch {
			rk.got[epoch] = append(rk.got[epoch], s)
		} else {
			rk.strays++
		}
		rk.mu.Unlock()
	}
}

// senderLoop is the media server for one key: it keeps sending across
// releases and rebinds, pausing only while the key has no lease at all.
func (rk *rkey) senderLoop(ctx context.Context) {
	tick := time.NewTicker(sendPace)
	defer tick.Stop()
	var seq uint32
	lastEpoch := 0
	buf := make([]byte, payloadSize)
	buf[0] = byte(rk.idx)
	for {
		tg := rk.target.Load()
		if tg == nil {
			select {
			case <-rk.wake:
				continue
			case <-ctx.Done():
				return
			}
		}
		select {
		case <-tick.C:
		case <-ctx.Done():
			return
		}
		seq++
		rk.mu.Lock()
		if tg.epoch != lastEpoch {
			rk.firstSeq[tg.epoch] = seq
			lastEpoch = tg.epoch
		}
		rk.lastSent[tg.epoch] = seq
		rk.mu.Unlock()
		binary.BigEndian.PutUint32(buf[1:5], uint32(tg.epoch))
		binary.BigEndian.PutUint32(buf[5:9], seq)
		// Errors (nobody listening) are the loss under test, not a failure.
		rk.conn.WriteToUDPAddrPort(buf, tg.addr)
		rk.sent.Add(1)
		select {
		case rk.sentPoke <- struct{}{}:
		default:
		}
	}
}

// waitSent waits until the sender has sent n more datagrams.
func (rk *rkey) waitSent(t *testing.T, n int64) {
	t.Helper()
	goal := rk.sent.Load() + n
	deadline := time.NewTimer(waitLimit)
	defer deadline.Stop()
	for rk.sent.Load() < goal {
		select {
		case <-rk.sentPoke:
		case <-deadline.C:
			t.Fatalf("sender %d stalled", rk.idx)
		}
	}
}

// verify counts gaps (lost datagrams) and duplicates or reorderings.
func (rk *rkey) verify() (delivered, gaps, disorder int, detail string) {
	rk.mu.Lock()
	defer rk.mu.Unlock()
	for e, seqs := range rk.got {
		expect := rk.firstSeq[e]
		for _, s := range seqs {
			delivered++
			switch {
			case s == expect:
				expect++
			case s > expect:
				if detail == "" {
					detail = fmt.Sprintf("key %d epoch %d: expected seq %d, got %d", rk.idx, e, expect, s)
				}
				gaps += int(s - expect)
				expect = s + 1
			default:
				disorder++
				if detail == "" {
					detail = fmt.Sprintf("key %d epoch %d: seq %d again or out of order (expected %d)", rk.idx, e, s, expect)
				}
			}
		}
	}
	return delivered, gaps, disorder, detail
}

func runRandomized(t *testing.T, seed uint64, linger time.Duration, wantLoss bool) {
	rng := rand.New(rand.NewPCG(seed, uint64(linger)))
	// Open and close a socket first so the runtime's poller descriptors
	// exist before the baseline is taken.
	warm, err := net.ListenUDP("udp4", net.UDPAddrFromAddrPort(netip.AddrPortFrom(loopback, 0)))
	require.NoError(t, err)
	warm.Close()
	baseFDs := countFDs(t)

	clock := newFakeClock()
	rec := newRecorder()
	cfg := testConfig()
	cfg.Linger = linger // fake time: only the driver's Advance expires
	cfg.MaxBufferedDatagrams = 1 << 14
	m, err := New(cfg, Deps{Observer: rec, Clock: clock})
	require.NoError(t, err)
	t.Cleanup(func() { m.Close() }) // on failure paths; Close is idempotent
	modelLinger := 10 * time.Second

	ctx, cancel := context.WithCancel(context.Background())
	var senders sync.WaitGroup
	keys := make([]*rkey, randKeys)
	for i := range keys {
		c, err := net.ListenUDP("udp4", net.UDPAddrFromAddrPort(netip.AddrPortFrom(loopback, 0)))
		require.NoError(t, err)
		keys[i] = &rkey{
			idx:      i,
			key:      Key{Client: netip.AddrFrom4([4]byte{10, 1, 0, byte(i)}), User: "u", Port: uint16(5000 + i)},
			want:     freePort(t),
			conn:     c,
			wake:     make(chan struct{}, 1),
			sentPoke: make(chan struct{}, 1),
			firstSeq: map[int]uint32{},
			lastSent: map[int]uint32{},
			got:      map[int][]uint32{},
		}
		senders.Add(1)
		go func(rk *rkey) { defer senders.Done(); rk.senderLoop(ctx) }(keys[i])
	}
	stopSenders := func() {
		cancel()
		senders.Wait()
	}
	defer stopSenders()

	acquire := func(rk *rkey, kind Kind) {
		newEpoch := rk.epoch == 0
		if newEpoch {
			rk.epoch = epochCounter(keys) + 1
		}
		h, err := m.Acquire(ctx, rk.key, Request{Kind: kind, WantPort: rk.want, Deliver: rk.deliverFor(rk.epoch)})
		require.NoError(t, err, "acquire must never fail here")
		require.False(t, errors.Is(err, syscall.EADDRINUSE))
		h.AllowPeer(loopback)
		rk.holders = append(rk.holders, h)
		rk.lingering = false
		if tg := rk.target.Load(); tg == nil || tg.addr != h.LocalAddr() || tg.epoch != rk.epoch {
			rk.target.Store(&rtarget{epoch: rk.epoch, addr: h.LocalAddr()})
			select {
			case rk.wake <- struct{}{}:
			default:
			}
		}
	}
	release := func(rk *rkey) {
		i := rng.IntN(len(rk.holders))
		rk.holders[i].Release()
		rk.holders = append(rk.holders[:i], rk.holders[i+1:]...)
		if len(rk.holders) == 0 {
			rk.lingering = true
			rk.deadline = clock.Now().Add(modelLinger)
		}
	}
	expire := func(rk *rkey) {
		// Advancing fake time expires every lingering key due by then.
		d := rk.deadline.Sub(clock.Now())
		clock.Advance(d)
		for _, o := range keys {
			if o.epoch != 0 && o.lingering && !o.deadline.After(clock.Now()) {
				o.target.Store(nil)
				o.epoch = 0
				o.lingering = false
			}
		}
	}

	randomKind := func() Kind {
		if rng.IntN(5) == 0 {
			return KindAnnounced
		}
		return KindAssociation
	}
	ops := map[string]int{}
	for step := 0; step < randSteps; step++ {
		rk := keys[rng.IntN(len(keys))]
		switch {
		case rk.epoch == 0:
			acquire(rk, randomKind())
			ops["acquire"]++
		case rk.lingering:
			switch r := rng.IntN(4); {
			case r < 2:
				// The client rebinds after a gap the server keeps sending in.
				rk.waitSent(t, 2)
				acquire(rk, randomKind())
				ops["reclaim"]++
			case r == 2:
				expire(rk)
				ops["expire"]++
			default:
				ops["idle"]++
			}
		default:
			switch r := rng.IntN(10); {
			case r < 3:
				acquire(rk, randomKind()) // handover or join: the new bind beat the old release
				ops["handover"]++
			case r < 8:
				release(rk)
				ops["release"]++
			default:
				rk.waitSent(t, 3)
				ops["traffic"]++
			}
		}
		if linger > 0 && rng.IntN(10) == 0 {
			checkModel(t, m, keys)
		}
	}

	// Let every live key end with an association holder (an announced-only
	// holder does not get data on a lease that once had an association) and
	// fresh traffic, then stop the senders and wait until each key's last
	// datagram has arrived.
	for _, rk := range keys {
		if rk.epoch != 0 {
			rk.waitSent(t, 2)
			acquire(rk, KindAssociation)
		}
	}
	for _, rk := range keys {
		if rk.epoch != 0 {
			rk.waitSent(t, 3)
		}
	}
	stopSenders()
	for _, rk := range keys {
		if rk.epoch == 0 {
			continue
		}
		rk.mu.Lock()
		last := rk.lastSent[rk.epoch]
		rk.mu.Unlock()
		arrived := func() bool {
			rk.mu.Lock()
			defer rk.mu.Unlock()
			got := rk.got[rk.epoch]
			return len(got) > 0 && got[len(got)-1] == last
		}
		waitUntil(t, fmt.Sprintf("key %d's last datagram %d", rk.idx, last), arrived)
	}

	totalDelivered, totalGaps, totalDisorder, strays := 0, 0, 0, 0
	var details []string
	for _, rk := range keys {
		d, g, o, detail := rk.verify()
		totalDelivered += d
		totalGaps += g
		totalDisorder += o
		strays += rk.strays
		if detail != "" {
			details = append(details, detail)
		}
	}
	t.Logf("ops %v; delivered %d, lost %d, out of order/duplicate %d, stray %d; flushed %d",
		ops, totalDelivered, totalGaps, totalDisorder, strays, rec.outcome(OutcomeFlushed))
	require.Zero(t, totalDisorder, "duplicates or reordering: %v", details)
	if wantLoss {
		require.NotZero(t, totalGaps, "Linger 0 must lose the datagrams sent between release and rebind")
		require.NotZero(t, rec.event(EventClose))
	} else {
		require.Zero(t, totalGaps, "datagrams lost: %v", details)
		require.NotZero(t, totalDelivered)
		require.NotZero(t, rec.outcome(OutcomeFlushed), "the schedule exercised reclaim with a buffer")
	}

	require.NoError(t, m.Close())
	for _, rk := range keys {
		rk.conn.Close()
	}
	requireNoLeakedGoroutines(t)
	require.Equal(t, baseFDs, countFDs(t), "file descriptors left after Close")
	require.Zero(t, clock.pending(), "timers left after Close")
}

// epochCounter returns the highest epoch in use, so epochs are unique
// across keys (a stray from another key can never match).
func epochCounter(keys []*rkey) int {
	n := 0
	for _, rk := range keys {
		rk.mu.Lock()
		for e := range rk.firstSeq {
			n = max(n, e)
		}
		for e := range rk.got {
			n = max(n, e)
		}
		rk.mu.Unlock()
		n = max(n, rk.epoch)
	}
	return n + rand.IntN(3)
}

// checkModel compares the Manager's table with the driver's model.
func checkModel(t *testing.T, m *Manager, keys []*rkey) {
	t.Helper()
	snap := map[Key]LeaseInfo{}
	for _, in := range m.Snapshot() {
		snap[in.Key] = in
	}
	for _, rk := range keys {
		in, ok := snap[rk.key]
		if rk.epoch == 0 {
			require.False(t, ok, "key %d: lease exists but the model expired it", rk.idx)
			continue
		}
		require.True(t, ok, "key %d: lease missing", rk.idx)
		if rk.lingering {
			require.Equal(t, StateLingering, in.State, "key %d", rk.idx)
		} else {
			require.Equal(t, StateActive, in.State, "key %d", rk.idx)
			require.Equal(t, len(rk.holders), in.Associations+in.Announced, "key %d", rk.idx)
		}
	}
}

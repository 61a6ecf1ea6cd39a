package leases

import (
	"context"
	"net/netip"
	"runtime"
	"testing"
	"time"
)

func benchManager(b *testing.B, mutate func(*Config)) *Manager {
	b.Helper()
	cfg := testConfig()
	cfg.MaxLeases = 0
	cfg.MaxLeasesPerClient = 0
	if mutate != nil {
		mutate(&cfg)
	}
	// A fake clock keeps linger timers from firing mid-benchmark.
	m, err := New(cfg, Deps{Clock: newFakeClock()})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { m.Close() })
	return m
}

func nopDeliver([]byte, netip.AddrPort) {}

var benchReq = Request{Kind: KindAssociation, Deliver: nopDeliver}

// BenchmarkAcquireNew is a first bind: reservation, port choice, socket,
// reader goroutine — and, to keep the table from growing, the close of the
// socket by a Linger-0 release.
func BenchmarkAcquireNew(b *testing.B) {
	m := benchManager(b, func(c *Config) { c.Linger = 0 })
	ctx := context.Background()
	var acq, rel time.Duration
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		t0 := time.Now()
		h, err := m.Acquire(ctx, key(uint16(i)), benchReq)
		if err != nil {
			b.Fatal(err)
		}
		t1 := time.Now()
		h.Release()
		acq += t1.Sub(t0)
		rel += time.Since(t1)
	}
	b.ReportMetric(float64(acq.Nanoseconds())/float64(b.N), "acquire-ns/op")
	b.ReportMetric(float64(rel.Nanoseconds())/float64(b.N), "close-ns/op")
}

// BenchmarkReclaim is the playlist step: the last holder releases (linger
// starts) and the client binds again (reclaim of the same socket).
func BenchmarkReclaim(b *testing.B) {
	m := benchManager(b, nil)
	ctx := context.Background()
	h, err := m.Acquire(ctx, key(1), benchReq)
	if err != nil {
		b.Fatal(err)
	}
	var rel, acq time.Duration
	b.ReportAllocs()
	for b.Loop() {
		t0 := time.Now()
		h.Release()
		t1 := time.Now()
		h, err = m.Acquire(ctx, key(1), benchReq)
		if err != nil {
			b.Fatal(err)
		}
		rel += t1.Sub(t0)
		acq += time.Since(t1)
	}
	b.ReportMetric(float64(rel.Nanoseconds())/float64(b.N), "release-ns/op")
	b.ReportMetric(float64(acq.Nanoseconds())/float64(b.N), "reclaim-ns/op")
}

// BenchmarkHandover is the other order: the new bind arrives before the old
// release, whose late release is then a no-op.
func BenchmarkHandover(b *testing.B) {
	m := benchManager(b, nil)
	ctx := context.Background()
	old, err := m.Acquire(ctx, key(1), benchReq)
	if err != nil {
		b.Fatal(err)
	}
	var acq, rel time.Duration
	b.ReportAllocs()
	for b.Loop() {
		t0 := time.Now()
		h, err := m.Acquire(ctx, key(1), benchReq)
		if err != nil {
			b.Fatal(err)
		}
		t1 := time.Now()
		old.Release()
		acq += t1.Sub(t0)
		rel += time.Since(t1)
		old = h
	}
	b.ReportMetric(float64(acq.Nanoseconds())/float64(b.N), "handover-ns/op")
	b.ReportMetric(float64(rel.Nanoseconds())/float64(b.N), "stale-release-ns/op")
}

// BenchmarkInbound is the per-datagram work after the read: peer check and
// delivery under the lease's lock.
func BenchmarkInbound(b *testing.B) {
	m := benchManager(b, nil)
	l := bareLease(b, m)
	l.mu.Lock()
	l.addHolderLocked(benchReq)
	l.mu.Unlock()
	for i := range m.cfg.MaxPeers {
		l.permit(netip.AddrFrom4([4]byte{192, 0, 2, byte(i)}))
	}
	from := netip.AddrPortFrom(netip.AddrFrom4([4]byte{192, 0, 2, 3}), 1755)
	buf := make([]byte, 1200)
	b.ReportAllocs()
	b.SetBytes(int64(len(buf)))
	for b.Loop() {
		l.handle(buf, len(buf), from)
	}
}

// BenchmarkSocketToDeliver is one datagram from a loopback peer through the
// lease's socket to its DeliverFunc and the wake-up of the waiting sender:
// two syscalls and two goroutine switches dominate.
func BenchmarkSocketToDeliver(b *testing.B) {
	m := benchManager(b, nil)
	got := make(chan struct{}, 1)
	h, err := m.Acquire(context.Background(), key(1), Request{Kind: KindAssociation, Deliver: func([]byte, netip.AddrPort) {
		got <- struct{}{}
	}})
	if err != nil {
		b.Fatal(err)
	}
	h.AllowPeer(loopback)
	srv := newPeer(b)
	dst := h.LocalAddr()
	buf := make([]byte, 1200)
	b.ReportAllocs()
	b.SetBytes(int64(len(buf)))
	for b.Loop() {
		if _, err := srv.c.WriteToUDPAddrPort(buf, dst); err != nil {
			b.Fatal(err)
		}
		<-got
	}
}

// BenchmarkSend is Holder.Send to a permitted peer (one sendto).
func BenchmarkSend(b *testing.B) {
	m := benchManager(b, nil)
	h, err := m.Acquire(context.Background(), key(1), benchReq)
	if err != nil {
		b.Fatal(err)
	}
	srv := newPeer(b)
	buf := make([]byte, 1200)
	b.ReportAllocs()
	b.SetBytes(int64(len(buf)))
	for b.Loop() {
		if err := h.Send(buf, srv.addr()); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkIdleLeaseMemory holds 10,000 idle leases (a holder each, no
// traffic) and reports the Go heap plus goroutine stacks they cost. Kernel
// socket memory is not included.
func BenchmarkIdleLeaseMemory(b *testing.B) {
	b.Run("reader=platform", func(b *testing.B) { benchIdleMemory(b, 10000, nil) })
	// The portable reader owns a MaxDatagramSize buffer per lease; fewer
	// leases keep the run short, the per-lease figure is what matters.
	b.Run("reader=portable", func(b *testing.B) {
		benchIdleMemory(b, 2000, newStdSource)
	})
}

func benchIdleMemory(b *testing.B, n int, src sourceFunc) {
	for b.Loop() {
		m := benchManager(b, nil)
		if src != nil {
			m.newSource = src
		}
		before := memInUse()
		hs := make([]*Holder, 0, n)
		for i := range n {
			k := Key{Client: netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)}), Port: 7000}
			h, err := m.Acquire(context.Background(), k, benchReq)
			if err != nil {
				b.Fatal(err)
			}
			h.AllowPeer(netip.MustParseAddr("192.0.2.1"))
			hs = append(hs, h)
		}
		after := memInUse()
		b.ReportMetric(float64(after-before)/float64(n), "bytes/lease")
		runtime.KeepAlive(hs)
		m.Close()
	}
}

func memInUse() int64 {
	// Two cycles: the first may leave stacks to be shrunk by the second.
	runtime.GC()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return int64(ms.HeapAlloc + ms.StackInuse)
}

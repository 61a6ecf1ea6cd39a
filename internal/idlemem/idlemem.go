// Package idlemem measures what an application filter costs per control
// connection held idle: the Go heap and goroutine stacks of its two
// copying directions, after one exchange has gone through each, over real
// loopback TCP connections. It is for tests and benchmarks only: it runs
// the garbage collector and reads the runtime's memory statistics.
// Settle and Snapshot are its two steps on their own, for idle-memory
// tests of other things (the proxy's UDP associations).
package idlemem

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"runtime"
	"sync"
	"testing"
	"time"
)

// Relay is one filtered connection's two directions, as a
// proxy.FilterSession runs them: each copies src to dst until src ends.
type Relay interface {
	ClientToServer(ctx context.Context, dst io.Writer, src io.Reader) error
	ServerToClient(ctx context.Context, dst io.Writer, src io.Reader) error
}

// Exchange sends one request from client and its answer from server
// through a running relay and reads both at their far ends, so that each
// direction has read once and then waits for more.
type Exchange func(tb testing.TB, client, server net.Conn)

// Pass writes b to from and reads it back, unchanged, at to: one message
// of an Exchange through the relay.
func Pass(tb testing.TB, from, to net.Conn, b []byte) {
	tb.Helper()
	if _, err := from.Write(b); err != nil {
		tb.Fatalf("idlemem: write: %v", err)
	}
	got := make([]byte, len(b))
	if _, err := io.ReadFull(to, got); err != nil {
		tb.Fatalf("idlemem: read: %v", err)
	}
	if !bytes.Equal(b, got) {
		tb.Fatalf("idlemem: relayed %q, want %q", got, b)
	}
}

// Footprint is the cost of one idle connection.
type Footprint struct {
	Goroutines float64
	StackBytes float64
	HeapBytes  float64
}

// Bytes is the heap and stacks together.
func (f Footprint) Bytes() float64 { return f.StackBytes + f.HeapBytes }

// Report adds f to b's metrics.
func (f Footprint) Report(b *testing.B) {
	b.ReportMetric(f.Goroutines, "goroutines/conn")
	b.ReportMetric(f.StackBytes, "stack-B/conn")
	b.ReportMetric(f.HeapBytes, "heap-B/conn")
	b.ReportMetric(f.Bytes(), "B/conn")
}

// settleLimit bounds the wait for n connections' goroutines to park.
const settleLimit = 20 * time.Second

// Measure holds n relays, each between its own client and server TCP
// connections on loopback, runs ex through each, and returns what one
// costs once idle. The sockets are open before the first figure is
// taken, so their own memory is not counted; the relays' goroutines,
// buffers and state are. Everything is closed before it returns.
func Measure(tb testing.TB, n int, newRelay func() Relay, ex Exchange) Footprint {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatalf("idlemem: listen: %v", err)
	}
	defer ln.Close()
	type conn struct{ client, relayClient, relayServer, server net.Conn }
	conns := make([]conn, 0, n)
	closeAll := func() {
		for _, c := range conns {
			for _, x := range []net.Conn{c.client, c.relayClient, c.relayServer, c.server} {
				x.Close()
			}
		}
	}
	defer closeAll()
	for range n {
		a, b := pair(tb, ln)
		c, d := pair(tb, ln)
		conns = append(conns, conn{client: a, relayClient: b, relayServer: c, server: d})
	}

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	g0, s0, h0 := Snapshot()
	var wg sync.WaitGroup
	relays := make([]Relay, 0, n) // kept reachable until the figure is taken
	for _, c := range conns {
		r := newRelay()
		relays = append(relays, r)
		wg.Go(func() { r.ClientToServer(ctx, c.relayServer, c.relayClient) })
		wg.Go(func() { r.ServerToClient(ctx, c.relayClient, c.relayServer) })
	}
	for _, c := range conns {
		deadline := time.Now().Add(settleLimit)
		c.client.SetDeadline(deadline)
		c.server.SetDeadline(deadline)
		ex(tb, c.client, c.server)
	}
	Settle(tb)
	g1, s1, h1 := Snapshot()
	runtime.KeepAlive(relays)

	closeAll()
	conns = nil
	wg.Wait()
	f := float64(n)
	return Footprint{
		Goroutines: float64(g1-g0) / f,
		StackBytes: (float64(s1) - float64(s0)) / f,
		HeapBytes:  (float64(h1) - float64(h0)) / f,
	}
}

// pair is a connected loopback TCP pair: the dialled end and the
// accepted one.
func pair(tb testing.TB, ln net.Listener) (net.Conn, net.Conn) {
	tb.Helper()
	type accepted struct {
		c   net.Conn
		err error
	}
	ch := make(chan accepted, 1)
	go func() {
		c, err := ln.Accept()
		ch <- accepted{c, err}
	}()
	d, err := net.Dial("tcp", ln.Addr().String())
	a := <-ch
	if err = errors.Join(err, a.err); err != nil {
		tb.Fatalf("idlemem: connect: %v", err)
	}
	return d, a.c
}

// Settle waits until the goroutine count has stayed for a few polls: the
// exchanges are done, so every goroutine measured is parked in its read.
func Settle(tb testing.TB) {
	tb.Helper()
	deadline := time.Now().Add(settleLimit)
	last, still := -1, 0
	for still < 5 {
		if time.Now().After(deadline) {
			tb.Fatalf("idlemem: goroutine count still moving after %v", settleLimit)
		}
		if n := runtime.NumGoroutine(); n == last {
			still++
		} else {
			last, still = n, 0
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// Snapshot is the process's goroutine count, stack bytes in use and heap
// bytes in use, after two collections (the first may leave stacks to
// shrink).
func Snapshot() (goroutines int, stacks, heap uint64) {
	runtime.GC()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return runtime.NumGoroutine(), ms.StackInuse, ms.HeapAlloc
}

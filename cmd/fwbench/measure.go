package main

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"sync"
	"time"
)

// stepFunc performs one operation (a CONNECT, a round trip) and returns how
// long it took; an error counts the operation as lost.
type stepFunc func(ctx context.Context) (time.Duration, error)

// prepareFunc sets up worker i (sockets, associations, warm-up) untimed. It
// returns the step to repeat and a cleanup that closes what it opened.
type prepareFunc func(ctx context.Context, i int) (stepFunc, func(), error)

// maxStepsPerWorker bounds every load loop in count as well as in time.
const maxStepsPerWorker = 5_000_000

// measure prepares n workers, starts them together, and has each repeat its
// step until dur has passed (or ctx ends). It returns every step's sample
// and the time from the common start to the last worker's end.
func measure(ctx context.Context, n int, dur time.Duration, prepare prepareFunc) (sample, time.Duration, error) {
	steps := make([]stepFunc, n)
	var cleanups []func()
	defer func() {
		for _, c := range cleanups {
			c()
		}
	}()
	for i := range n {
		step, cleanup, err := prepare(ctx, i)
		if err != nil {
			return sample{}, 0, err
		}
		steps[i] = step
		cleanups = append(cleanups, cleanup)
	}

	samples := make([]sample, n)
	var wg sync.WaitGroup
	start := time.Now()
	end := start.Add(dur)
	runCtx, cancel := context.WithDeadline(ctx, end.Add(10*time.Second))
	defer cancel()
	for i := range n {
		wg.Add(1)
		go runWorker(runCtx, end, steps[i], &samples[i], &wg)
	}
	wg.Wait()
	elapsed := time.Since(start)
	var all sample
	for _, s := range samples {
		all.merge(s)
	}
	if err := ctx.Err(); err != nil {
		return all, elapsed, err
	}
	return all, elapsed, nil
}

// runWorker repeats step until end, recording into s.
func runWorker(ctx context.Context, end time.Time, step stepFunc, s *sample, wg *sync.WaitGroup) {
	defer wg.Done()
	s.lat = make([]time.Duration, 0, 1<<14)
	for range maxStepsPerWorker {
		if ctx.Err() != nil || !time.Now().Before(end) {
			return
		}
		d, err := step(ctx)
		if err != nil {
			s.lost++
			if errors.Is(err, net.ErrClosed) || ctx.Err() != nil {
				return
			}
			continue
		}
		s.ok++
		s.lat = append(s.lat, d)
	}
}

// target is how a client reaches the loopback peers on one system: directly
// (proxy empty) or through a SOCKS5 proxy.
type target struct {
	sys   system
	proxy string
	// tcpOnly: the proxy has no UDP ASSOCIATE (microsocks, connect-min).
	tcpOnly bool
	// server is the proxy's process, for its CPU time; nil for direct.
	server *proc
}

// serverCPU is the CPU time the target's server process group has used so
// far, exited threads included (groupCPUTicks); false for direct or when
// /proc cannot be read.
func (t target) serverCPU() (time.Duration, bool) {
	if t.server == nil {
		return 0, false
	}
	d, err := groupCPUTicks(t.server.cmd.Process.Pid)
	return d, err == nil
}

// dialTCP opens a TCP stream to dst, through the proxy when there is one.
func (t target) dialTCP(ctx context.Context, dst netip.AddrPort) (*net.TCPConn, error) {
	if t.proxy == "" {
		var d net.Dialer
		c, err := d.DialContext(ctx, "tcp", dst.String())
		if err != nil {
			return nil, err
		}
		return c.(*net.TCPConn), nil
	}
	c, _, err := dialSocks(ctx, t.proxy, cmdConnect, dst)
	return c, err
}

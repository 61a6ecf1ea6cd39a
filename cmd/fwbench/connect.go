package main

import (
	"context"
	"fmt"
	"io"
	"time"
)

// connectTimeout bounds one CONNECT, handshake to close.
const connectTimeout = 5 * time.Second

// benchConnect measures CONNECT setup with the given number of concurrent
// clients: connect (through the proxy), read the target's one byte, see the
// target's close, close. Setup time is from the dial to the first byte;
// the rate counts whole cycles.
func (b *bench) benchConnect(ctx context.Context, clients int) error {
	rate := b.res.fig(fmt.Sprintf("connect/%d/rate", clients), fmt.Sprintf("CONNECT setups, %d client(s)", clients), "conn/s", higherIsBetter)
	p50 := b.res.fig(fmt.Sprintf("connect/%d/p50", clients), fmt.Sprintf("CONNECT setup p50, %d client(s)", clients), "µs", lowerIsBetter)
	p99 := b.res.fig(fmt.Sprintf("connect/%d/p99", clients), fmt.Sprintf("CONNECT setup p99, %d client(s)", clients), "µs", lowerIsBetter)
	// The server's CPU per CONNECT: what a change to the proxy's own work
	// moves, much less exposed to the rest of the machine's load than the
	// rate (the client, the target and the neighbours' work are not in it).
	cpu := b.res.fig(fmt.Sprintf("connect/%d/cpu", clients), fmt.Sprintf("CONNECT server CPU per setup, %d client(s)", clients), "µs", lowerIsBetter)
	dst := b.peers.helloAddr()
	for _, t := range b.targets {
		step := func(ctx context.Context) (time.Duration, error) {
			ctx, cancel := context.WithTimeout(ctx, connectTimeout)
			defer cancel()
			start := time.Now()
			c, err := t.dialTCP(ctx, dst)
			if err != nil {
				return 0, err
			}
			defer c.Close()
			c.SetDeadline(time.Now().Add(connectTimeout))
			var one [1]byte
			if _, err := io.ReadFull(c, one[:]); err != nil {
				return 0, fmt.Errorf("first byte: %w", err)
			}
			setup := time.Since(start)
			if n, err := c.Read(one[:]); n != 0 || err != io.EOF {
				return 0, fmt.Errorf("want the target's close, got %d bytes, %v", n, err)
			}
			return setup, nil
		}
		prepare := func(ctx context.Context, _ int) (stepFunc, func(), error) {
			// Warm-up: one untimed cycle per client.
			if _, err := step(ctx); err != nil {
				return nil, nil, fmt.Errorf("%s: warm-up connect: %w", t.sys, err)
			}
			return step, func() {}, nil
		}
		c0, ok0 := t.serverCPU()
		s, elapsed, err := measure(ctx, clients, b.dur, prepare)
		if err != nil {
			return err
		}
		// The warm-up cycles (one per client) ran inside measure too.
		if c1, ok1 := t.serverCPU(); ok0 && ok1 && s.ok > 0 {
			cpu.set(t.sys, micros((c1-c0)/time.Duration(s.ok+clients)))
		}
		b.noteLost(t.sys, "CONNECT", s)
		rate.set(t.sys, perSecond(s.ok, elapsed))
		p50.set(t.sys, micros(percentile(s.lat, 0.50)))
		p99.set(t.sys, micros(percentile(s.lat, 0.99)))
	}
	return nil
}

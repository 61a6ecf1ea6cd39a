package proxy

import (
	"io"
	"net"
	"net/netip"
	"testing"
	"time"

	socks5 "github.com/armon/go-socks5"
	"github.com/stretchr/testify/require"
)

// The benchmarks time the same work once through fwproxy and once directly
// on loopback in the same run, and report the ratio; absolute times on a
// shared machine mean little.

// BenchmarkConnectSetup: connect, one request/response byte, close.
func BenchmarkConnectSetup(b *testing.B) {
	target := benchTarget(b, func(c net.Conn) {
		var one [1]byte
		if _, err := io.ReadFull(c, one[:]); err == nil {
			c.Write(one[:])
		}
	})
	srv := benchServer(b)

	direct := func() {
		c, err := net.Dial("tcp", target)
		require.NoError(b, err)
		c.Write([]byte{1})
		io.ReadFull(c, make([]byte, 1))
		c.Close()
	}
	proxied := func() {
		c, err := net.Dial("tcp", srv)
		require.NoError(b, err)
		// Greeting, request and the first byte in one write, as fast
		// clients do; then the two replies and the echo.
		msg := append([]byte{5, 1, 0}, appendRequest(nil, CommandConnect, specOf(b, target))...)
		c.Write(append(msg, 1))
		_, err = io.ReadFull(c, make([]byte, 2+10+1))
		require.NoError(b, err)
		c.Close()
	}
	reportRatio(b, direct, proxied)
}

// BenchmarkRelayBulk: one stream of 1 MiB per op, target to client.
func BenchmarkRelayBulk(b *testing.B) {
	const chunk = 1 << 20
	payload := make([]byte, chunk)
	target := benchTarget(b, func(c net.Conn) {
		var one [1]byte
		for {
			if _, err := io.ReadFull(c, one[:]); err != nil {
				return
			}
			if _, err := c.Write(payload); err != nil {
				return
			}
		}
	})
	srv := benchServer(b)

	pull := func(c net.Conn) func() {
		buf := make([]byte, chunk)
		return func() {
			c.Write([]byte{1})
			_, err := io.ReadFull(c, buf)
			require.NoError(b, err)
		}
	}
	dc, err := net.Dial("tcp", target)
	require.NoError(b, err)
	defer dc.Close()
	pc, err := net.Dial("tcp", srv)
	require.NoError(b, err)
	defer pc.Close()
	pc.Write(append([]byte{5, 1, 0}, appendRequest(nil, CommandConnect, specOf(b, target))...))
	_, err = io.ReadFull(pc, make([]byte, 12))
	require.NoError(b, err)

	b.SetBytes(chunk)
	reportRatio(b, pull(dc), pull(pc))
}

// reportRatio runs direct b.N times untimed-by-the-framework, then proxied
// b.N times as the benchmark's own ns/op, and reports both and the ratio.
func reportRatio(b *testing.B, direct, proxied func()) {
	b.Helper()
	b.StopTimer()
	start := time.Now()
	for range b.N {
		direct()
	}
	directNs := float64(time.Since(start).Nanoseconds()) / float64(b.N)
	b.StartTimer()
	start = time.Now()
	for range b.N {
		proxied()
	}
	proxiedNs := float64(time.Since(start).Nanoseconds()) / float64(b.N)
	b.ReportMetric(directNs, "direct-ns/op")
	b.ReportMetric(proxiedNs/directNs, "x-direct-time")
}

func benchServer(b *testing.B) string {
	b.Helper()
	cfg := DefaultConfig()
	allowLoopback(&cfg)
	srv, err := New(cfg, Deps{})
	require.NoError(b, err)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(b, err)
	go srv.Serve(ln)
	b.Cleanup(func() { srv.Close() })
	return ln.Addr().String()
}

func benchTarget(b *testing.B, handle func(net.Conn)) string {
	b.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(b, err)
	b.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				handle(c)
			}()
		}
	}()
	return ln.Addr().String()
}

func specOf(b *testing.B, addr string) *socks5.AddrSpec {
	b.Helper()
	ap, err := netip.ParseAddrPort(addr)
	require.NoError(b, err)
	return spec(ap)
}

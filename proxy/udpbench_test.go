package proxy

import (
	"fmt"
	"io"
	"net"
	"net/netip"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// udpEchoServer echoes datagrams until the test ends.
func udpEchoServer(tb testing.TB) netip.AddrPort {
	tb.Helper()
	c, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	require.NoError(tb, err)
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, maxDatagram)
		for {
			n, from, err := c.ReadFromUDPAddrPort(buf)
			if err != nil {
				return
			}
			c.WriteToUDPAddrPort(buf[:n], from)
		}
	}()
	tb.Cleanup(func() {
		c.Close()
		<-done
	})
	return addrPortOf(c.LocalAddr())
}

// rtClient does one round trip at a time, without allocating: to the echo
// server directly, or through an association (header prepended).
type rtClient struct {
	sock *net.UDPConn
	to   netip.AddrPort
	out  []byte
	in   []byte
}

func (c *rtClient) roundTrip() error {
	if _, err := c.sock.WriteToUDPAddrPort(c.out, c.to); err != nil {
		return err
	}
	_, _, err := c.sock.ReadFromUDPAddrPort(c.in)
	return err
}

func newDirectClient(tb testing.TB, echo netip.AddrPort, size int) *rtClient {
	tb.Helper()
	sock, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	require.NoError(tb, err)
	tb.Cleanup(func() { sock.Close() })
	return &rtClient{sock: sock, to: echo, out: make([]byte, size), in: make([]byte, maxDatagram)}
}

func newProxiedClient(tb testing.TB, srvAddr string, echo netip.AddrPort, size int) *rtClient {
	tb.Helper()
	sock, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	require.NoError(tb, err)
	tb.Cleanup(func() { sock.Close() })
	ctl, err := net.Dial("tcp", srvAddr)
	require.NoError(tb, err)
	tb.Cleanup(func() { ctl.Close() })
	port := addrPortOf(sock.LocalAddr()).Port()
	req := append([]byte{5, 1, 0}, appendRequest(nil, CommandAssociate, spec(netip.AddrPortFrom(netip.IPv4Unspecified(), port)))...)
	_, err = ctl.Write(req)
	require.NoError(tb, err)
	reply := make([]byte, 2+10)
	_, err = io.ReadFull(ctl, reply)
	require.NoError(tb, err)
	require.Equal(tb, byte(ReplySucceeded), reply[3])
	relay := netip.AddrPortFrom(netip.AddrFrom4([4]byte(reply[6:10])), uint16(reply[10])<<8|uint16(reply[11]))
	out := append(appendUDPHeader(nil, echo), make([]byte, size)...)
	return &rtClient{sock: sock, to: relay, out: out, in: make([]byte, maxDatagram)}
}

// runRoundTrips spreads n round trips over the clients, one goroutine each,
// and returns the elapsed time and every round trip's duration.
func runRoundTrips(tb testing.TB, clients []*rtClient, n int) (time.Duration, []time.Duration) {
	per := max(n/len(clients), 1)
	lat := make([][]time.Duration, len(clients))
	var wg sync.WaitGroup
	start := time.Now()
	for i, c := range clients {
		lat[i] = make([]time.Duration, 0, per)
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range per {
				t0 := time.Now()
				if err := c.roundTrip(); err != nil {
					tb.Error(err)
					return
				}
				lat[i] = append(lat[i], time.Since(t0))
			}
		}()
	}
	wg.Wait()
	return time.Since(start), slices.Concat(lat...)
}

func percentile(d []time.Duration, p float64) time.Duration {
	if len(d) == 0 {
		return 0
	}
	slices.Sort(d)
	return d[min(int(float64(len(d))*p), len(d)-1)]
}

// BenchmarkUDPRoundTrip measures round trips per second and p50/p99 round
// trip time through fwproxy's UDP ASSOCIATE, against a direct loopback echo
// measured in the same run, for 1 and 16 associations and two sizes.
func BenchmarkUDPRoundTrip(b *testing.B) {
	echo := udpEchoServer(b)
	cfg := DefaultConfig()
	allowLoopback(&cfg)
	srv, err := New(cfg, Deps{Leases: newLeases(b, nil)})
	require.NoError(b, err)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(b, err)
	go srv.Serve(ln)
	b.Cleanup(func() { srv.Close() })

	for _, assocs := range []int{1, 16} {
		for _, size := range []int{100, 1200} {
			b.Run(fmt.Sprintf("assocs=%d/size=%d", assocs, size), func(b *testing.B) {
				direct := make([]*rtClient, assocs)
				proxied := make([]*rtClient, assocs)
				for i := range assocs {
					direct[i] = newDirectClient(b, echo, size)
					proxied[i] = newProxiedClient(b, ln.Addr().String(), echo, size)
				}
				// Warm up both paths (leases, peers, caches).
				runRoundTrips(b, proxied, assocs)
				runRoundTrips(b, direct, assocs)

				b.ReportAllocs()
				b.ResetTimer()
				elapsed, lat := runRoundTrips(b, proxied, b.N)
				b.StopTimer()
				dElapsed, dLat := runRoundTrips(b, direct, b.N)

				rate := float64(len(lat)) / elapsed.Seconds()
				dRate := float64(len(dLat)) / dElapsed.Seconds()
				b.ReportMetric(rate, "rt/s")
				b.ReportMetric(float64(percentile(lat, 0.50).Microseconds()), "p50-µs")
				b.ReportMetric(float64(percentile(lat, 0.99).Microseconds()), "p99-µs")
				b.ReportMetric(dRate, "direct-rt/s")
				b.ReportMetric(float64(percentile(dLat, 0.99).Microseconds()), "direct-p99-µs")
				b.ReportMetric(rate/dRate, "x-direct-rate")
			})
		}
	}
}

// TestUDPRelayAllocatesNothing: the datagram path of an association, both
// ways, allocates nothing per datagram (the whole process is counted: the
// relay and lease goroutines included).
func TestUDPRelayAllocatesNothing(t *testing.T) {
	echo := udpEchoServer(t)
	ts := startServer(t, testConfig(), Deps{Leases: newLeases(t, nil)})
	c := newProxiedClient(t, ts.addr, echo, 1200)
	for range 10 {
		require.NoError(t, c.roundTrip())
	}
	allocs := testing.AllocsPerRun(500, func() {
		if err := c.roundTrip(); err != nil {
			t.Fatal(err)
		}
	})
	assert.Zero(t, allocs, "allocations per relayed round trip")
}

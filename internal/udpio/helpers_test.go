package udpio

import (
	"net"
	"net/netip"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// testTimeout bounds every wait of a test.
const testTimeout = 10 * time.Second

// listen opens a UDP socket on ip:0 for network ("udp4", "udp6", or "udp"
// with "::" for a dual-stack socket), closed when the test ends.
func listen(t testing.TB, network, ip string) *net.UDPConn {
	t.Helper()
	c, err := net.ListenUDP(network, net.UDPAddrFromAddrPort(netip.AddrPortFrom(netip.MustParseAddr(ip), 0)))
	require.NoError(t, err)
	t.Cleanup(func() { c.Close() })
	return c
}

func addrOf(c *net.UDPConn) netip.AddrPort { return c.LocalAddr().(*net.UDPAddr).AddrPort() }

// loopbackOf is where a peer reaches c: its own address, or the loopback
// of the family when it is bound to the unspecified address.
func loopbackOf(c *net.UDPConn, v4 bool) netip.AddrPort {
	a := addrOf(c)
	if !a.Addr().IsUnspecified() {
		return a
	}
	if v4 {
		return netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), a.Port())
	}
	return netip.AddrPortFrom(netip.IPv6Loopback(), a.Port())
}

// countingBuffers is a real Buffers that counts what is lent and what came
// back, so a test can see how many buffers a reader holds.
type countingBuffers struct {
	size       int
	gets, puts atomic.Int64
	lastUsed   atomic.Int64
}

func (c *countingBuffers) Size() int { return c.size }

func (c *countingBuffers) Get() []byte {
	c.gets.Add(1)
	return make([]byte, c.size)
}

func (c *countingBuffers) Put(_ []byte, used int) {
	c.lastUsed.Store(int64(used))
	c.puts.Add(1)
}

func (c *countingBuffers) held() int64 { return c.gets.Load() - c.puts.Load() }

// drainLog records, at each Drained call, how many buffers the reader held.
type drainLog struct {
	bufs *countingBuffers
	ch   chan int64
}

func newDrainLog(bufs *countingBuffers) *drainLog {
	return &drainLog{bufs: bufs, ch: make(chan int64, 4096)}
}

func (d *drainLog) drained() {
	select {
	case d.ch <- d.bufs.held():
	default:
	}
}

// forget drops the parks logged so far, so that a later waitHeld sees
// only the parks after this point (a park before a datagram arrived would
// otherwise answer it).
func (d *drainLog) forget() {
	for {
		select {
		case <-d.ch:
		default:
			return
		}
	}
}

// waitHeld waits until the reader parks holding want buffers.
func (d *drainLog) waitHeld(t *testing.T, want int64) {
	t.Helper()
	timeout := time.After(testTimeout)
	for {
		select {
		case held := <-d.ch:
			if held == want {
				return
			}
		case <-timeout:
			t.Fatalf("reader never parked holding %d buffers (now %d)", want, d.bufs.held())
		}
	}
}

// nextResult is what one Next returned.
type nextResult struct {
	b    []byte
	size int
	from netip.AddrPort
	err  error
}

// nextAsync runs Next on its own goroutine, which the result's channel
// reports the end of; the test ends it by sending a datagram or closing the
// socket.
func nextAsync(r Reader) <-chan nextResult {
	out := make(chan nextResult, 1)
	go func() {
		b, size, from, err := r.Next()
		out <- nextResult{append([]byte(nil), b...), size, from, err}
	}()
	return out
}

func waitNext(t *testing.T, ch <-chan nextResult) nextResult {
	t.Helper()
	select {
	case res := <-ch:
		return res
	case <-time.After(testTimeout):
		t.Fatal("Next did not return")
		return nextResult{}
	}
}

type readerKind struct {
	name string
	make func(*net.UDPConn, Policy) (Reader, error)
}

// readerKinds are the platform reader and the portable one, which Linux
// can run too.
var readerKinds = []readerKind{{"platform", NewReader}, {"portable", NewPortableReader}}

type writerKind struct {
	name string
	make func(*net.UDPConn) (Writer, error)
}

var writerKinds = []writerKind{
	{"platform", NewWriter},
	{"portable", func(c *net.UDPConn) (Writer, error) { return NewPortableWriter(c), nil }},
}

package main

import (
	"context"
	"encoding/binary"
	"io"
	"net"
	"net/netip"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"

	"fwproxy/internal/leakcheck"
)

// testTimeout bounds every read of a test.
const testTimeout = 10 * time.Second

var lo = netip.MustParseAddrPort("127.0.0.1:0")

func loopback(t *testing.T) *net.UDPConn {
	c, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(lo))
	require.NoError(t, err)
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(testTimeout))
	return c
}

func addr(c *net.UDPConn) netip.AddrPort { return c.LocalAddr().(*net.UDPAddr).AddrPort() }

// modes are the relay's two modes, for the tests that hold in both.
var modes = []struct {
	name      string
	perPlayer bool
}{{"one socket", false}, {"per player", true}}

// testRelay is a relay running in the test process.
type testRelay struct {
	r         relayer
	perPlayer bool
	in, out   netip.AddrPort // in: the one in socket (not per player)
}

func startRelay(t *testing.T, perPlayer bool, players int) *testRelay {
	r, err := listen(lo, lo, 1<<20, players, perPlayer, io.Discard)
	require.NoError(t, err)
	tr := &testRelay{r: r, perPlayer: perPlayer}
	switch r := r.(type) {
	case *relay:
		tr.in, tr.out = addr(r.in), addr(r.out)
	case *perPlayerRelay:
		tr.out = addr(r.reg)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		r.run()
	}()
	t.Cleanup(func() {
		r.close()
		select {
		case <-done:
		case <-time.After(testTimeout):
			t.Error("the relay did not stop")
		}
	})
	return tr
}

func index(i uint32) []byte { return binary.BigEndian.AppendUint32(nil, i) }

// register sends player i's registration from p and reads the answer:
// where the sender is to send p's stream, and where p receives it from.
func (tr *testRelay) register(t *testing.T, p *net.UDPConn, i uint32) (dest, from netip.AddrPort) {
	t.Helper()
	_, err := p.WriteToUDPAddrPort(index(i), tr.out)
	require.NoError(t, err)
	buf := make([]byte, 16)
	n, from, err := p.ReadFromUDPAddrPort(buf)
	require.NoError(t, err)
	if !tr.perPlayer {
		assert.Equal(t, tr.out, from, "answered from the out socket")
		assert.Equal(t, index(i), buf[:n], "the answer is the index")
		return tr.in, from
	}
	require.Equal(t, 6, n, "the index and the in socket's port")
	assert.Equal(t, index(i), buf[:4])
	assert.NotEqual(t, tr.out, from, "answered from the player's own out socket")
	return netip.AddrPortFrom(lo.Addr(), binary.BigEndian.Uint16(buf[4:])), from
}

func opened(tr *testRelay) int64 {
	if r, ok := tr.r.(*perPlayerRelay); ok {
		return r.opened.Load()
	}
	return 0
}

func TestRegistrationAnswers(t *testing.T) {
	for _, m := range modes {
		t.Run(m.name, func(t *testing.T) {
			tr := startRelay(t, m.perPlayer, 8)
			a, b := loopback(t), loopback(t)
			dest, from := tr.register(t, a, 0)
			again, fromAgain := tr.register(t, a, 0)
			assert.Equal(t, dest, again, "a repeat keeps the in socket")
			assert.Equal(t, from, fromAgain, "and the out socket")
			other, otherFrom := tr.register(t, b, 1)
			if m.perPlayer {
				assert.NotEqual(t, dest, other, "each player its own in socket")
				assert.NotEqual(t, from, otherFrom, "and its own out socket")
				assert.Equal(t, int64(2), opened(tr), "a pair per player, not per registration")
			}
			assert.Equal(t, uint64(3), tr.r.counts().registrations)
		})
	}
}

// stream sends perPlayer datagrams to each of dests, interleaved: a burst,
// so that recvmmsg returns more than one, small enough for the default
// socket buffers. Each datagram holds its player's index and its number.
func stream(t *testing.T, dests []netip.AddrPort, perPlayer int) {
	sender := loopback(t)
	for k := range perPlayer {
		for i, to := range dests {
			d := append(index(uint32(i)), byte(k), byte(k>>8))
			_, err := sender.WriteToUDPAddrPort(append(d, make([]byte, 1000)...), to)
			require.NoError(t, err)
		}
	}
}

// receive reads n datagrams at p and checks each is player i's next, from
// from.
func receive(t *testing.T, p *net.UDPConn, i uint32, from netip.AddrPort, n int) {
	t.Helper()
	buf := make([]byte, 2048)
	for k := range n {
		got, src, err := p.ReadFromUDPAddrPort(buf)
		require.NoError(t, err, "player %d datagram %d", i, k)
		assert.Equal(t, from, src, "sent from the socket that answered the registration")
		require.Equal(t, 1006, got)
		require.Equal(t, i, binary.BigEndian.Uint32(buf), "each datagram reaches its player only")
		require.Equal(t, k, int(buf[4])|int(buf[5])<<8, "complete and in order")
	}
}

func TestRelayRoutesEachStreamToItsPlayer(t *testing.T) {
	for _, m := range modes {
		t.Run(m.name, func(t *testing.T) {
			tr := startRelay(t, m.perPlayer, 8)
			players := []*net.UDPConn{loopback(t), loopback(t), loopback(t)}
			dests := make([]netip.AddrPort, len(players))
			froms := make([]netip.AddrPort, len(players))
			for i, p := range players {
				dests[i], froms[i] = tr.register(t, p, uint32(i))
			}
			const perPlayer = 20
			stream(t, dests, perPlayer)
			for i, p := range players {
				receive(t, p, uint32(i), froms[i], perPlayer)
			}
			// The relay counts a batch after sending it, so a player can
			// have read the last datagram before the count is in: wait for
			// it, bounded.
			require.Eventually(t, func() bool { return tr.r.counts().relayed == uint64(len(players)*perPlayer) },
				5*time.Second, time.Millisecond, "relayed count %d", tr.r.counts().relayed)

			// A player registering again from elsewhere gets its stream
			// there, from the same socket.
			moved := loopback(t)
			dest, from := tr.register(t, moved, 1)
			assert.Equal(t, dests[1], dest)
			assert.Equal(t, froms[1], from)
			stream(t, dests, 1)
			receive(t, moved, 1, from, 1)
			receive(t, players[0], 0, froms[0], 1)
		})
	}
}

func TestPerPlayerForwardsAWholeBatch(t *testing.T) {
	reg := loopback(t)
	r, err := newPerPlayerRelay(reg, lo.Addr(), 1)
	require.NoError(t, err)
	defer r.closeAll()
	// No loops run: the test calls forward itself, once datagrams wait.
	player := loopback(t)
	p, err := r.register(0, addr(player))
	require.NoError(t, err)
	const queued = playerBatch - 1
	stream(t, []netip.AddrPort{netip.AddrPortFrom(lo.Addr(), p.inPort)}, queued)
	m := newPlayerMsgs()
	deadline := time.Now().Add(testTimeout)
	for r.relayed.Load() < queued && time.Now().Before(deadline) {
		r.forward(p, m)
	}
	sa, err := unix.Getsockname(p.out)
	require.NoError(t, err)
	out := sa.(*unix.SockaddrInet4)
	receive(t, player, 0, netip.AddrPortFrom(netip.AddrFrom4(out.Addr), uint16(out.Port)), queued)
}

func TestPerPlayerCountsAGonePlayer(t *testing.T) {
	tr := startRelay(t, true, 1)
	gone := loopback(t)
	dest, _ := tr.register(t, gone, 0)
	gone.Close()
	// The kernel refuses the sends to a closed port once the first one's
	// ICMP error is in: they are counted, and the relay goes on.
	sender := loopback(t)
	sent := uint64(0)
	require.Eventually(t, func() bool {
		if _, err := sender.WriteToUDPAddrPort(index(0), dest); err == nil {
			sent++
		}
		c := tr.r.counts()
		// Every datagram sent is done with (relayed or refused) before
		// the player comes back, so none of them reaches it.
		return c.sendErrors > 0 && c.relayed+c.sendErrors == sent
	}, testTimeout, time.Millisecond)
	back := loopback(t)
	again, from := tr.register(t, back, 0)
	require.Equal(t, dest, again)
	stream(t, []netip.AddrPort{dest}, 3)
	receive(t, back, 0, from, 3)
}

func TestRelayCountsUnroutable(t *testing.T) {
	tests := []struct {
		name string
		data []byte
	}{
		{"no index", []byte{1, 2}},
		{"unregistered player", index(5)},
		{"index past the table", index(1 << 30)},
	}
	tr := startRelay(t, false, 8)
	p := loopback(t)
	tr.register(t, p, 0)
	sender := loopback(t)
	for i, tt := range tests {
		_, err := sender.WriteToUDPAddrPort(tt.data, tr.in)
		require.NoError(t, err)
		// A routable datagram after each shows the bad one was passed over.
		_, err = sender.WriteToUDPAddrPort(append(index(0), byte(i)), tr.in)
		require.NoError(t, err)
		buf := make([]byte, 64)
		n, _, err := p.ReadFromUDPAddrPort(buf)
		require.NoError(t, err, tt.name)
		assert.Equal(t, append(index(0), byte(i)), buf[:n], tt.name)
	}
	assert.Equal(t, uint64(len(tests)), tr.r.counts().unknown)
}

func TestRefusedRegistrations(t *testing.T) {
	tests := []struct {
		name string
		data []byte
	}{
		{"no index", []byte{1, 2}},
		{"five bytes", append(index(0), 0)},
		{"index at the cap", index(2)},
		{"index past the table", index(1 << 30)},
	}
	for _, m := range modes {
		t.Run(m.name, func(t *testing.T) {
			tr := startRelay(t, m.perPlayer, 2)
			for i, tt := range tests {
				p := loopback(t)
				_, err := p.WriteToUDPAddrPort(tt.data, tr.out)
				require.NoError(t, err)
				// A good registration after each: its answer is the first
				// datagram the player gets, so the bad one got none.
				tr.register(t, p, uint32(i%2))
			}
			c := tr.r.counts()
			assert.Equal(t, uint64(len(tests)), c.refused)
			assert.Equal(t, uint64(len(tests)), c.registrations)
			if m.perPlayer {
				assert.Equal(t, int64(2), opened(tr), "-max-players 2: two pairs at most")
			}
		})
	}
}

// openFiles is how many descriptors the test process has.
func openFiles(t *testing.T) int {
	fds, err := os.ReadDir("/proc/self/fd")
	require.NoError(t, err)
	return len(fds)
}

func TestRunClosesEverythingOnSignal(t *testing.T) {
	for _, m := range modes {
		t.Run(m.name, func(t *testing.T) {
			free := loopback(t)
			out := addr(free)
			free.Close()
			args := []string{"-out", out.String()}
			if m.perPlayer {
				args = append(args, "-per-player")
			}
			p := loopback(t)
			before := openFiles(t)

			ctx, cancel := context.WithCancel(t.Context())
			defer cancel()
			var stderr strings.Builder
			code := make(chan int, 1)
			go func() { code <- run(ctx, args, &stderr) }()
			tr := &testRelay{perPlayer: m.perPlayer, out: out}
			// The relay binds a moment after run starts: register until
			// answered, bounded.
			require.Eventually(t, func() bool {
				if _, err := p.WriteToUDPAddrPort(index(3), out); err != nil {
					return false
				}
				p.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
				_, _, err := p.ReadFromUDPAddrPort(make([]byte, 16))
				return err == nil
			}, testTimeout, time.Millisecond)
			p.SetDeadline(time.Now().Add(testTimeout))
			if m.perPlayer {
				tr.register(t, p, 3)
			}

			cancel()
			select {
			case c := <-code:
				assert.Equal(t, 0, c)
			case <-time.After(testTimeout):
				t.Fatal("run did not return after the signal")
			}
			assert.Contains(t, stderr.String(), "udprelay-min: relayed 0, unknown player 0, send errors 0, registrations ")
			leakcheck.Require(t, testTimeout, leakcheck.Filter{Frames: []string{"main.(*relay)", "main.(*perPlayerRelay)", "main.run"}})
			assert.Equal(t, before, openFiles(t), "every socket closed")
		})
	}
}

func TestRunFlags(t *testing.T) {
	for _, args := range [][]string{
		{"-in", "nope"},
		{"-max-players", "0"},
		{"-out", "127.0.0.1"},
		{"-per-player", "-in", "127.0.0.1:5000"},
	} {
		assert.Equal(t, 2, run(t.Context(), args, &strings.Builder{}), "%q", args)
	}
}

package mmsfilter

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"fwproxy/leases"
)

var loopback = netip.MustParseAddr("127.0.0.1")

// unboundPort is a loopback UDP port nobody holds right now: the port a
// player announces and has not bound.
func unboundPort(t *testing.T) uint16 {
	t.Helper()
	c, err := net.ListenUDP("udp4", net.UDPAddrFromAddrPort(netip.AddrPortFrom(loopback, 0)))
	require.NoError(t, err)
	p := c.LocalAddr().(*net.UDPAddr).AddrPort().Port()
	require.NoError(t, c.Close())
	return p
}

// announce opens an MMS control connection through the proxy and sends a
// UDP funnel for port; it returns the funnel as the server got it.
func announce(t *testing.T, env *filterEnv, port uint16) (*player, Funnel) {
	t.Helper()
	pl := &player{t: t, env: env}
	pl.conn, pl.br, _ = socksHandshake(t, env.proxyAddr, 1, env.server.addr)
	if old := env.server.conn; old != nil {
		t.Cleanup(func() { old.Close() }) // the server keeps one connection per script
	}
	env.server.accept()
	pl.send(msg(MIDConnectFunnel, funnelBody(fmt.Sprintf(`\\127.0.0.1\UDP\%d`, port), vlcTrailer)))
	f, err := ParseFunnel(env.server.expect(MIDConnectFunnel))
	require.NoError(t, err)
	return pl, f
}

// TestFilterAnnouncedLeaseNeverDeliversToItself is issue 10 case 4 through
// the real proxy with the defaults: player, media server and external IP
// all 127.0.0.1, and a player that announces a port it has not bound. Port
// preservation used to give the lease that very port, so each datagram was
// delivered to the lease itself, ~340,000 times a second. Now the lease
// takes another port, and a delivery that would still reach one of the
// proxy's own sockets (one lease announcing another's port) is dropped and
// counted, once per datagram. Counts are compared, never times: a loop
// shows as more datagrams accounted for than the server sent.
func TestFilterAnnouncedLeaseNeverDeliversToItself(t *testing.T) {
	const n = 50
	t.Run("announced port not bound", func(t *testing.T) {
		env := newFilterEnvWith(t, envOptions{external: loopback, linger: leases.DefaultConfig().Linger})
		p := unboundPort(t)
		_, f := announce(t, env, p)
		require.Equal(t, loopback, f.Addr)
		require.NotEqual(t, p, f.Port, "the lease must not take the port the client announced")

		srv := env.server
		srv.dst = netip.AddrPortFrom(loopback, f.Port)
		srv.sendData(1, n)
		h := env.held
		h.waitUntil(t, func() bool { return h.total() >= n }, func() string { return fmt.Sprintf("%d of %d datagrams accounted for", h.total(), n) })
		// A loop would go on accounting for the same datagrams; a second
		// batch is accounted for only after each of the first had its turn.
		srv.sendData(n+1, 2*n)
		h.waitUntil(t, func() bool { return h.total() >= 2*n }, func() string { return fmt.Sprintf("%d of %d datagrams accounted for", h.total(), 2*n) })
		assert.EqualValues(t, 2*n, h.total(), "each datagram from the server handled once, none came back")
		assert.EqualValues(t, 2*n, h.outcome(leases.OutcomeDelivered))
		assert.Zero(t, h.dropped(leases.ReasonOwnSocket))
	})
	t.Run("firewall client announcing a port it has not bound", func(t *testing.T) {
		// The association's lease would take the client's port, and the
		// relay's every delivery to the client would reach that lease,
		// which permits the media server's IP (the funnel joined it).
		env := newFilterEnvWith(t, envOptions{external: loopback, linger: leases.DefaultConfig().Linger})
		p := unboundPort(t)
		socksHandshake(t, env.proxyAddr, 3, netip.AddrPortFrom(netip.IPv4Unspecified(), p))
		_, f := announce(t, env, p)
		require.NotEqual(t, p, f.Port, "the association's lease must not take the port the client announced")
		in, ok := holders(env, p)
		require.True(t, ok)
		require.Equal(t, 1, in, "the funnel joined the association's lease")

		srv := env.server
		srv.dst = netip.AddrPortFrom(loopback, f.Port)
		srv.sendData(1, n)
		h := env.held
		h.waitUntil(t, func() bool { return h.total() >= n }, func() string { return fmt.Sprintf("%d of %d accounted for", h.total(), n) })
		srv.sendData(n+1, 2*n)
		h.waitUntil(t, func() bool { return h.total() >= 2*n }, func() string { return fmt.Sprintf("%d of %d accounted for", h.total(), 2*n) })
		assert.EqualValues(t, 2*n, h.total(), "each datagram from the server handled once, none came back")
	})
	t.Run("announced port is another lease's", func(t *testing.T) {
		env := newFilterEnvWith(t, envOptions{external: loopback, linger: leases.DefaultConfig().Linger})
		// A second control connection of the same client announces the
		// first lease's external port: its deliveries would go into the
		// first lease, which permits the media server's IP, the proxy's too.
		_, first := announce(t, env, unboundPort(t))
		_, second := announce(t, env, first.Port)
		require.NotEqual(t, first.Port, second.Port)

		srv := env.server
		srv.dst = netip.AddrPortFrom(loopback, second.Port)
		srv.sendData(1, n)
		h := env.held
		h.waitUntil(t, func() bool { return h.dropped(leases.ReasonOwnSocket) >= n },
			func() string {
				return fmt.Sprintf("%d own_socket drops, want %d", h.dropped(leases.ReasonOwnSocket), n)
			})
		srv.sendData(n+1, n+1) // a last one, accounted for after the rest
		h.waitUntil(t, func() bool { return h.total() >= n+1 }, func() string { return fmt.Sprintf("%d accounted for", h.total()) })
		assert.EqualValues(t, n+1, h.dropped(leases.ReasonOwnSocket), "each delivery into the other lease dropped and counted once")
		assert.EqualValues(t, n+1, h.total(), "the other lease received nothing")
		assert.Zero(t, h.outcome(leases.OutcomeDelivered))
	})
}

// TestFilterUnrewrittenFunnelsHoldNoLease is issue 10 case 9: many UDP
// funnels in one large command packet on one MMS connection, most of which
// cannot be rewritten for lack of room in MaxCommandLen. Only the rewritten
// ones may take a lease (so leases held == funnels rewritten, and no
// eviction is caused by the others), and the rest count as failed.
func TestFilterUnrewrittenFunnelsHoldNoLease(t *testing.T) {
	const funnels = 300
	tests := []struct {
		name string
		room int // bytes the packet may still grow by
	}{
		{"room for a few", 512},
		{"room for more than the per-client cap", 1600},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			mms := &funnelCounter{}
			env := newFilterEnvWith(t, envOptions{linger: leases.DefaultConfig().Linger, mms: mms})
			pl := &player{t: t, env: env}
			pl.conn, pl.br, _ = socksHandshake(t, env.proxyAddr, 1, env.server.addr)
			env.server.accept()

			// Announced ports below the lease range: each lease falls back
			// to a (distinct) port of its own.
			var msgs []Message
			for i := range funnels {
				msgs = append(msgs, msg(MIDConnectFunnel, funnelBody(fmt.Sprintf(`\\1.2.3.4\UDP\%d`, i+1), vlcTrailer)))
			}
			used := len(AppendCommand(nil, 0, msgs...))
			filler := (MaxCommandLen - used - messagePrefixLen - tt.room) / chunkSize * chunkSize
			msgs = append(msgs, msg(MIDLogging, make(body, filler)))
			pkt := AppendCommand(nil, 0, msgs...)
			require.LessOrEqual(t, len(pkt), MaxCommandLen)
			_, err := pl.conn.Write(pkt)
			require.NoError(t, err)

			rewritten, unchanged := 0, 0
			for _, m := range readPacket(t, env.server.br) {
				if m.MID != MIDConnectFunnel {
					continue
				}
				f, err := ParseFunnel(m)
				require.NoError(t, err)
				if f.Addr == external {
					rewritten++
				} else {
					require.Equal(t, netip.MustParseAddr("1.2.3.4"), f.Addr)
					unchanged++
				}
			}
			t.Logf("%d funnels: %d rewritten, %d unchanged", funnels, rewritten, unchanged)
			require.Equal(t, funnels, rewritten+unchanged)
			require.NotZero(t, rewritten)
			require.NotZero(t, unchanged)

			perClient := leases.DefaultConfig().MaxLeasesPerClient
			h := env.held
			assert.EqualValues(t, rewritten, h.events[leases.EventAcquire].Load(), "a lease per rewritten funnel, none for the others")
			assert.EqualValues(t, max(0, rewritten-perClient), h.events[leases.EventEvict].Load(), "evictions only by rewritten funnels, at the per-client cap")
			assert.Equal(t, min(rewritten, perClient), env.leases.Stats().Leases)
			assert.EqualValues(t, rewritten, mms.modes[LeaseAnnounced].Load(), "counted leased: the rewritten ones")
			assert.EqualValues(t, unchanged, mms.modes[LeaseFailed].Load(), "counted failed: the others")
			assert.Zero(t, mms.modes[LeaseJoined].Load())
		})
	}
}

// readPacket reads one whole command packet and returns its messages.
func readPacket(t *testing.T, br *bufio.Reader) []Message {
	t.Helper()
	head := make([]byte, HeaderLen)
	_, err := io.ReadFull(br, head)
	require.NoError(t, err)
	h, _, err := ParseHeader(head)
	require.NoError(t, err)
	pkt := append(head, make([]byte, h.Len()-HeaderLen)...)
	_, err = io.ReadFull(br, pkt[HeaderLen:])
	require.NoError(t, err)
	p, _, err := ParsePacket(pkt)
	require.NoError(t, err)
	var out []Message
	for rest := p.Messages; len(rest) > 0; {
		m, n, err := ParseMessage(rest)
		require.NoError(t, err)
		out = append(out, m)
		rest = rest[n:]
	}
	return out
}

// TestRewriteLen: the length fits judges by is the length of the rewrite.
func TestRewriteLen(t *testing.T) {
	names := []string{`\\1.2.3.4\UDP\7`, `\\[2001:db8::1]\udp\65535`, `\\192.168.100.200\UDP\1755`, `\\::ffff:10.0.0.1\UDP\40000`}
	tos := []string{"9.9.9.9:9", "127.0.0.1:65535", "[2001:db8:ffff:ffff:ffff:ffff:ffff:ffff]:65535", "[::ffff:198.51.100.7]:1"}
	for _, name := range names {
		for _, trailer := range [][]byte{vlcTrailer, {0, 0}, nil} {
			m := AppendMessage(nil, msg(MIDConnectFunnel, funnelBody(name, trailer)))
			fn, err := parseFunnelMessage(m)
			require.NoError(t, err, name)
			for _, to := range tos {
				ap := netip.MustParseAddrPort(to)
				assert.Equal(t, len(appendFunnelRewrite(nil, m, fn, ap)), rewriteLen(m, fn, ap), "%s -> %s", name, to)
			}
		}
	}
}

// TestStreamFitsTellsTheFunnelFunc: the FunnelFunc learns, before it takes
// anything, whether a rewrite would fit; the filter's one asks with the
// longest port and takes no lease when the answer is no.
func TestStreamFitsTellsTheFunnelFunc(t *testing.T) {
	funnel := msg(MIDConnectFunnel, funnelBody(`\\1.2.3.4\UDP\7`, []byte{0, 0}))
	fillerBody := MaxCommandLen - HeaderLen - len(AppendMessage(nil, funnel)) - messagePrefixLen
	full := AppendCommand(nil, 1, funnel, msg(MIDLogging, make(body, fillerBody)))
	require.Len(t, full, MaxCommandLen)
	roomy := AppendCommand(nil, 1, funnel)
	for _, tt := range []struct {
		name          string
		pkt           []byte
		same, longest bool
	}{
		{"full packet", full, true, false},
		{"roomy packet", roomy, true, true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			var same, longest bool
			_, _, err := run(t, c2s, bytes.NewReader(tt.pkt), func(_ context.Context, _ Funnel, fits func(netip.AddrPort) bool) (netip.AddrPort, error) {
				same = fits(netip.MustParseAddrPort("9.9.9.9:9"))
				longest = fits(netip.MustParseAddrPort("127.0.0.1:65535"))
				return netip.AddrPort{}, errors.New("took nothing")
			})
			require.NoError(t, err)
			assert.Equal(t, tt.same, same, "a same-length rewrite")
			assert.Equal(t, tt.longest, longest, "the longest port")
		})
	}
}

package expect

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"fwproxy/leases"
)

const testTimeout = 10 * time.Second

var (
	clientIP = netip.MustParseAddr("127.0.0.1")
	// external is the lease sockets' IP, apart from the client's, so that
	// a lease can keep the client's port as across two hosts.
	external = netip.MustParseAddr("127.0.0.2")
)

func newManager(t *testing.T) *leases.Manager {
	t.Helper()
	cfg := leases.DefaultConfig()
	cfg.ListenIP = external
	m, err := leases.New(cfg, leases.Deps{})
	require.NoError(t, err)
	t.Cleanup(func() { m.Close() })
	return m
}

// udpOn opens a loopback UDP socket on ip, bounded by the test timeout.
func udpOn(t *testing.T, ip netip.Addr) *net.UDPConn {
	t.Helper()
	u, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.AddrPortFrom(ip, 0)))
	require.NoError(t, err)
	t.Cleanup(func() { u.Close() })
	u.SetDeadline(time.Now().Add(testTimeout))
	return u
}

func port(u *net.UDPConn) uint16 { return u.LocalAddr().(*net.UDPAddr).AddrPort().Port() }

func recv(t *testing.T, u *net.UDPConn) string {
	t.Helper()
	b := make([]byte, 2048)
	n, _, err := u.ReadFromUDPAddrPort(b)
	require.NoError(t, err)
	return string(b[:n])
}

func TestExpectUDPAnnounced(t *testing.T) {
	m := newManager(t)
	client := udpOn(t, clientIP)
	server := udpOn(t, clientIP)
	stranger := udpOn(t, netip.MustParseAddr("127.0.0.3"))
	u, err := ExpectUDP(context.Background(), m, Want{Client: clientIP, User: "alice", Port: port(client), Peer: clientIP})
	require.NoError(t, err)
	assert.Equal(t, Announced, u.Mode())
	assert.Equal(t, port(client), u.Port(), "the external port keeps the client's")
	assert.Equal(t, leases.Key{Client: clientIP, User: "alice", Port: port(client)}, u.Key())
	to := net.UDPAddrFromAddrPort(netip.AddrPortFrom(external, u.Port()))

	send := func(from *net.UDPConn, s string) {
		_, err := from.WriteToUDP([]byte(s), to)
		require.NoError(t, err)
	}
	send(stranger, "from a stranger")
	send(server, "one")
	assert.Equal(t, "one", recv(t, client), "the peer gets through, unwrapped; the stranger does not")

	u.Hold()
	send(server, "two")
	send(server, "three")
	// Held: what arrives waits. The client sees it only after Resume, in
	// order, before anything newer.
	require.Eventually(t, func() bool {
		for _, l := range m.Snapshot() {
			if l.Key == u.Key() {
				return l.BufferedDatagrams == 2
			}
		}
		return false
	}, testTimeout, time.Millisecond, "held datagrams wait in the lease")
	u.Resume()
	send(server, "four")
	for _, want := range []string{"two", "three", "four"} {
		assert.Equal(t, want, recv(t, client))
	}

	u.Release()
	u.Release() // twice is harmless
	for _, l := range m.Snapshot() {
		if l.Key == u.Key() {
			assert.Zero(t, l.Announced, "released")
		}
	}
}

func TestExpectUDPJoinsTheAssociation(t *testing.T) {
	m := newManager(t)
	const clientPort = 40123
	key := leases.Key{Client: clientIP, User: "", Port: clientPort}
	got := make(chan string, 4)
	assoc, err := m.Acquire(context.Background(), key, leases.Request{Kind: leases.KindAssociation, WantPort: clientPort,
		Deliver: func(b []byte, from netip.AddrPort) { got <- fmt.Sprintf("%s from %v", b, from.Addr()) }})
	require.NoError(t, err)
	t.Cleanup(assoc.Release)

	server := udpOn(t, clientIP)
	u, err := ExpectUDP(context.Background(), m, Want{Client: clientIP, Port: clientPort, Peer: clientIP})
	require.NoError(t, err)
	t.Cleanup(u.Release)
	assert.Equal(t, Joined, u.Mode())
	assert.Equal(t, assoc.Port(), u.Port(), "one lease: the association's")

	u.Hold() // never pauses an association
	_, err = server.WriteToUDPAddrPort([]byte("data"), netip.AddrPortFrom(external, u.Port()))
	require.NoError(t, err)
	select {
	case s := <-got:
		assert.Equal(t, "data from 127.0.0.1", s, "the association delivers the expected peer's datagram")
	case <-time.After(testTimeout):
		t.Fatal("the association got nothing")
	}
}

func TestExpectUDPFailureHoldsNothing(t *testing.T) {
	m := newManager(t)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err := ExpectUDP(ctx, m, Want{Client: clientIP, Port: 40124, Peer: clientIP})
	require.Error(t, err)
	assert.ErrorContains(t, err, "expect UDP for")
	assert.Zero(t, m.Stats().Leases)
}

// TestExpectUDPReclaimDeliversTheLinger: what a released expectation's
// lease buffered while it lingered reaches the client when the same port
// is expected again, first and in order.
func TestExpectUDPReclaimDeliversTheLinger(t *testing.T) {
	m := newManager(t)
	client := udpOn(t, clientIP)
	server := udpOn(t, clientIP)
	want := Want{Client: clientIP, Port: port(client), Peer: clientIP}
	u, err := ExpectUDP(context.Background(), m, want)
	require.NoError(t, err)
	to := netip.AddrPortFrom(external, u.Port())
	u.Release()
	for _, s := range []string{"gap 1", "gap 2"} {
		_, err := server.WriteToUDPAddrPort([]byte(s), to)
		require.NoError(t, err)
	}
	require.Eventually(t, func() bool { return m.Stats().BufferedDatagrams == 2 }, testTimeout, time.Millisecond)
	u2, err := ExpectUDP(context.Background(), m, want)
	require.NoError(t, err)
	t.Cleanup(u2.Release)
	assert.Equal(t, to.Port(), u2.Port(), "reclaimed")
	_, err = server.WriteToUDPAddrPort([]byte("after"), to)
	require.NoError(t, err)
	for _, w := range []string{"gap 1", "gap 2", "after"} {
		assert.Equal(t, w, recv(t, client))
	}
}

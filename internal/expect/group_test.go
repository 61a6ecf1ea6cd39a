package expect

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"fwproxy/leases"
)

// pairOn binds an even port and the next one on ip.
func pairOn(t *testing.T, ip netip.Addr) (a, b *net.UDPConn) {
	t.Helper()
	for range 100 {
		a = udpOn(t, ip)
		p := port(a)
		if p%2 != 0 || p == 65535 {
			continue
		}
		bb, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.AddrPortFrom(ip, p+1)))
		if err != nil {
			continue
		}
		t.Cleanup(func() { bb.Close() })
		bb.SetDeadline(time.Now().Add(testTimeout))
		return a, bb
	}
	t.Fatal("no free even port pair")
	return nil, nil
}

func sendTo(t *testing.T, from *net.UDPConn, port uint16, s string) {
	t.Helper()
	_, err := from.WriteToUDPAddrPort([]byte(s), netip.AddrPortFrom(external, port))
	require.NoError(t, err)
}

// waitBuffered waits until the lease of key holds n datagrams.
func waitBuffered(t *testing.T, m *leases.Manager, key leases.Key, n int) {
	t.Helper()
	require.Eventually(t, func() bool {
		for _, l := range m.Snapshot() {
			if l.Key == key {
				return l.BufferedDatagrams == n
			}
		}
		return false
	}, testTimeout, time.Millisecond, "the lease of %v holds %d datagrams", key, n)
}

func TestExpectGroupAnnouncedKeepsPortsAndReclaims(t *testing.T) {
	m := newManager(t)
	rtp, rtcp := pairOn(t, clientIP)
	server := udpOn(t, clientIP)
	stranger := udpOn(t, netip.MustParseAddr("127.0.0.3"))
	want := GroupWant{Client: clientIP, User: "bob", Ports: []uint16{port(rtp), port(rtcp)}, Peers: []netip.Addr{clientIP}}

	g, err := ExpectGroup(context.Background(), m, want)
	require.NoError(t, err)
	assert.Equal(t, Announced, g.Mode())
	assert.Equal(t, want.Ports, g.Ports(), "free on the external address: the client's ports are kept")
	keys := g.Keys()
	assert.Equal(t, leases.Key{Client: clientIP, User: "bob", Port: port(rtcp)}, keys[1])

	sendTo(t, stranger, g.Ports()[0], "stranger")
	sendTo(t, server, g.Ports()[0], "rtp 1")
	sendTo(t, server, g.Ports()[1], "rtcp 1")
	assert.Equal(t, "rtp 1", recv(t, rtp), "each member delivers to its own port; the stranger is dropped")
	assert.Equal(t, "rtcp 1", recv(t, rtcp))

	g.Hold()
	sendTo(t, server, g.Ports()[0], "rtp 2")
	waitBuffered(t, m, keys[0], 1)
	g.Resume()
	assert.Equal(t, "rtp 2", recv(t, rtp), "held as a group, resumed as a group")

	// Released, the group lingers and buffers; the same ports asked again
	// within the linger reclaim it: same external ports, what waited
	// first and in order.
	ports := g.Ports()
	g.Release()
	g.Release()
	for i := range 3 {
		sendTo(t, server, ports[0], fmt.Sprintf("gap %d", i))
	}
	waitBuffered(t, m, keys[0], 3)
	g2, err := ExpectGroup(context.Background(), m, want)
	require.NoError(t, err)
	t.Cleanup(g2.Release)
	assert.Equal(t, ports, g2.Ports(), "the group is reclaimed")
	sendTo(t, server, ports[0], "after")
	for _, w := range []string{"gap 0", "gap 1", "gap 2", "after"} {
		assert.Equal(t, w, recv(t, rtp))
	}
}

func TestExpectGroupBusyPortsGetAnEvenRun(t *testing.T) {
	m := newManager(t)
	rtp, rtcp := pairOn(t, clientIP)
	// The client's numbers are taken on the external address.
	bound, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.AddrPortFrom(external, port(rtp))))
	require.NoError(t, err)
	t.Cleanup(func() { bound.Close() })

	g, err := ExpectGroup(context.Background(), m, GroupWant{Client: clientIP, Ports: []uint16{port(rtp), port(rtcp)}, Peers: []netip.Addr{clientIP}})
	require.NoError(t, err)
	t.Cleanup(g.Release)
	p := g.Ports()
	assert.NotEqual(t, port(rtp), p[0])
	assert.Zero(t, p[0]%2, "an even RTP port")
	assert.Equal(t, p[0]+1, p[1], "RTCP on the next one")

	server := udpOn(t, clientIP)
	sendTo(t, server, p[1], "rtcp")
	assert.Equal(t, "rtcp", recv(t, rtcp), "delivered to the client's own RTCP port")
}

func TestExpectGroupJoinsAssociations(t *testing.T) {
	tests := []struct {
		name string
		gap  uint16 // between the associations' external ports
	}{
		{"a run", 1},
		{"not a run: joined one by one", 7},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := newManager(t)
			const first = 41000
			got := make(chan string, 8)
			var assocPorts []uint16
			for i, p := range []uint16{first, first + 1} {
				h, err := m.Acquire(context.Background(), leases.Key{Client: clientIP, Port: p}, leases.Request{
					Kind: leases.KindAssociation, WantPort: first + uint16(i)*tt.gap, ExactPort: true,
					Deliver: func(b []byte, _ netip.AddrPort) { got <- fmt.Sprintf("%d:%s", p, b) },
				})
				require.NoError(t, err)
				t.Cleanup(h.Release)
				assocPorts = append(assocPorts, h.Port())
			}
			g, err := ExpectGroup(context.Background(), m, GroupWant{Client: clientIP, Ports: []uint16{first, first + 1}, Peers: []netip.Addr{clientIP}})
			require.NoError(t, err)
			assert.Equal(t, Joined, g.Mode())
			assert.Equal(t, assocPorts, g.Ports(), "the associations' leases")

			server := udpOn(t, clientIP)
			sendTo(t, server, g.Ports()[1], "rtcp")
			select {
			case s := <-got:
				assert.Equal(t, fmt.Sprintf("%d:rtcp", first+1), s, "through the client's association")
			case <-time.After(testTimeout):
				t.Fatal("nothing through the association")
			}
			g.Release()
			for _, l := range m.Snapshot() {
				assert.Zero(t, l.Announced, "released: %v", l.Key)
				assert.Equal(t, 1, l.Associations, "the associations stay")
			}
		})
	}
}

// droppedCounter counts datagrams the leases refused from a peer they do
// not permit.
type droppedCounter struct {
	leases.Observer
	n atomic.Int64
}

func (d *droppedCounter) Datagrams(o leases.Outcome, r leases.DropReason, n, _ int) {
	if o == leases.OutcomeDropped && r == leases.ReasonNotPermitted {
		d.n.Add(int64(n))
	}
}
func (d *droppedCounter) LeaseEvent(leases.Event)         {}
func (d *droppedCounter) AcquireFailed(leases.FailReason) {}

func TestExpectGroupLaterPeer(t *testing.T) {
	cfg := leases.DefaultConfig()
	cfg.ListenIP = external
	dropped := &droppedCounter{}
	m, err := leases.New(cfg, leases.Deps{Observer: dropped})
	require.NoError(t, err)
	t.Cleanup(func() { m.Close() })
	rtp, rtcp := pairOn(t, clientIP)
	g, err := ExpectGroup(context.Background(), m, GroupWant{Client: clientIP, Ports: []uint16{port(rtp), port(rtcp)}, Peers: []netip.Addr{clientIP}})
	require.NoError(t, err)
	t.Cleanup(g.Release)
	source := udpOn(t, netip.MustParseAddr("127.0.0.4"))
	sendTo(t, source, g.Ports()[0], "early")
	require.Eventually(t, func() bool { return dropped.n.Load() == 1 }, testTimeout, time.Millisecond, "not permitted yet: dropped")
	g.AllowPeer(netip.MustParseAddr("127.0.0.4"))
	sendTo(t, source, g.Ports()[0], "late")
	assert.Equal(t, "late", recv(t, rtp), "a source named later is permitted from then on")
}

func TestExpectGroupFailureHoldsNothing(t *testing.T) {
	m := newManager(t)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err := ExpectGroup(ctx, m, GroupWant{Client: clientIP, Ports: []uint16{41100, 41101}, Peers: []netip.Addr{clientIP}})
	require.Error(t, err)
	assert.ErrorContains(t, err, "expect UDP group for")
	_, err = ExpectGroup(context.Background(), m, GroupWant{Client: clientIP})
	require.Error(t, err, "no ports")
	assert.Zero(t, m.Stats().Leases)
}

package e2e

import (
	"bufio"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strconv"
	"testing"
	"time"
	"unicode/utf16"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"fwproxy/mmsfilter"
)

// selfLoopFunnel is a ConnectFunnel as VLC sends it, announcing name.
func selfLoopFunnel(name string) mmsfilter.Message {
	b := binary.LittleEndian.AppendUint32(nil, 0)
	b = binary.LittleEndian.AppendUint32(b, 0xFFFFFFFF)
	b = binary.LittleEndian.AppendUint32(b, 0)
	b = binary.LittleEndian.AppendUint32(b, 0x000A0000)
	b = binary.LittleEndian.AppendUint32(b, 2)
	for _, u := range utf16.Encode([]rune(name)) {
		b = binary.LittleEndian.AppendUint16(b, u)
	}
	b = append(b, 0, 0, '0', 0)
	return mmsfilter.Message{MID: mmsfilter.MIDConnectFunnel, Body: b}
}

// TestAnnouncedLeaseDoesNotLoop is issue 10 case 4 on the real binary with
// the defaults (player, media server and external_ip all 127.0.0.1): a
// player that announces \\127.0.0.1\UDP\P for a port P it has not bound
// used to get a lease on 127.0.0.1:P, and each datagram from the server
// was then delivered to the lease itself, ~340,000 times a second. Counts
// show it, not times: the lease must account for exactly the datagrams the
// server sent.
func TestAnnouncedLeaseDoesNotLoop(t *testing.T) {
	const n = 100
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer ln.Close()
	media, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	require.NoError(t, err)
	defer media.Close()
	srvAddr := ln.Addr().(*net.TCPAddr).AddrPort()
	p := startProxy(t, "-mms-ports", strconv.Itoa(int(srvAddr.Port())))

	probe, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	require.NoError(t, err)
	announced := probe.LocalAddr().(*net.UDPAddr).AddrPort().Port()
	require.NoError(t, probe.Close()) // announced, never bound

	// The player's control connection, through the proxy.
	c := socksConnect(t, p.socks, srvAddr)
	c.SetDeadline(time.Now().Add(testTimeout))
	_, err = c.Write(mmsfilter.AppendCommand(nil, 0, selfLoopFunnel(fmt.Sprintf(`\\127.0.0.1\UDP\%d`, announced))))
	require.NoError(t, err)

	sc, err := ln.Accept()
	require.NoError(t, err)
	defer sc.Close()
	sc.SetDeadline(time.Now().Add(testTimeout))
	br := bufio.NewReader(sc)
	head := make([]byte, mmsfilter.HeaderLen)
	_, err = io.ReadFull(br, head)
	require.NoError(t, err)
	h, _, err := mmsfilter.ParseHeader(head)
	require.NoError(t, err)
	pkt := append(head, make([]byte, h.Len()-mmsfilter.HeaderLen)...)
	_, err = io.ReadFull(br, pkt[mmsfilter.HeaderLen:])
	require.NoError(t, err)
	pp, _, err := mmsfilter.ParsePacket(pkt)
	require.NoError(t, err)
	m, _, err := mmsfilter.ParseMessage(pp.Messages)
	require.NoError(t, err)
	f, err := mmsfilter.ParseFunnel(m)
	require.NoError(t, err)
	require.NotEqual(t, announced, f.Port, "the lease must not take the port the player announced")

	lease := netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), f.Port)
	sendBatch := func(first int) {
		for i := first; i < first+n; i++ {
			_, err := media.WriteToUDPAddrPort([]byte(fmt.Sprintf("d%d", i)), lease)
			require.NoError(t, err)
		}
	}
	// Two batches: a loop would still be accounting for the first when the
	// second is done.
	sendBatch(0)
	p.waitMetric(t, fmt.Sprintf(`fwproxy_leases_datagrams_total{outcome="delivered",reason="none"} %d`, n))
	sendBatch(n)
	p.waitMetric(t, fmt.Sprintf(`fwproxy_leases_datagrams_total{outcome="delivered",reason="none"} %d`, 2*n))
	scrape := p.scrape(t)
	for _, want := range []string{
		fmt.Sprintf(`fwproxy_leases_datagrams_total{outcome="delivered",reason="none"} %d`, 2*n),
		`fwproxy_leases_datagrams_total{outcome="dropped",reason="own_socket"} 0`,
		`fwproxy_leases_datagrams_total{outcome="dropped",reason="not_permitted"} 0`,
		`fwproxy_mms_funnel_rewrites_total{mode="announced"} 1`,
	} {
		assert.Equal(t, want, handoverSeries(scrape, want))
	}
}

package e2e

import (
	"bufio"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// handoverAssociate opens a UDP ASSOCIATE for the client's UDP port on the
// proxy and returns the control connection and the relay address. With
// abort, it resets the connection right after the request, so that the
// association fails after its handover, when its reply cannot be sent.
func handoverAssociate(t *testing.T, socks string, port uint16, abort bool) (*net.TCPConn, netip.AddrPort) {
	t.Helper()
	c, err := net.DialTimeout("tcp", socks, testTimeout)
	require.NoError(t, err)
	tc := c.(*net.TCPConn)
	t.Cleanup(func() { tc.Close() })
	tc.SetDeadline(time.Now().Add(testTimeout))
	br := bufio.NewReader(tc)
	_, err = tc.Write([]byte{5, 1, 0})
	require.NoError(t, err)
	method := make([]byte, 2)
	_, err = io.ReadFull(br, method)
	require.NoError(t, err)
	require.Equal(t, []byte{5, 0}, method)
	_, err = tc.Write([]byte{5, 3, 0, 1, 0, 0, 0, 0, byte(port >> 8), byte(port)})
	require.NoError(t, err)
	if abort {
		tc.SetLinger(0)
		tc.Close()
		return nil, netip.AddrPort{}
	}
	reply := make([]byte, 10)
	_, err = io.ReadFull(br, reply)
	require.NoError(t, err)
	require.Equal(t, byte(0), reply[1], "UDP ASSOCIATE reply")
	return tc, netip.AddrPortFrom(netip.AddrFrom4([4]byte(reply[4:8])), binary.BigEndian.Uint16(reply[8:]))
}

// handoverRecv reads one datagram on the client's socket, requires it to
// come from relay, and returns its payload (after the SOCKS UDP header).
func handoverRecv(t *testing.T, c *net.UDPConn, relay netip.AddrPort) string {
	t.Helper()
	buf := make([]byte, 2048)
	c.SetReadDeadline(time.Now().Add(testTimeout))
	n, from, err := c.ReadFromUDPAddrPort(buf)
	require.NoError(t, err, "datagram to the live association")
	require.Equal(t, relay, netip.AddrPortFrom(from.Addr().Unmap(), from.Port()), "comes through the live association's relay")
	require.GreaterOrEqual(t, n, 10)
	return string(buf[10:n])
}

// TestHandoverBackToLiveAssociation is issue 10 case 5 on the real binary:
// a second association for the same (client IP, user, port) that opens and
// closes, or fails right after its handover, while the first still lives,
// used to strand the first: 0 of 300 datagrams delivered, 256 buffered, the
// rest dropped buffer_full, and a lease that never expired. Now delivery
// goes back to the first association.
func TestHandoverBackToLiveAssociation(t *testing.T) {
	tests := []struct {
		name  string
		abort bool
	}{
		{"second association opens and closes", false},
		{"second association fails after its handover", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := startProxy(t)
			media, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
			require.NoError(t, err)
			defer media.Close()
			client, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
			require.NoError(t, err)
			defer client.Close()
			port := client.LocalAddr().(*net.UDPAddr).AddrPort().Port()

			_, relay1 := handoverAssociate(t, p.socks, port, false)
			// The client's first datagram opens the way back from the server.
			ma := media.LocalAddr().(*net.UDPAddr).AddrPort()
			hdr := []byte{0, 0, 0, 1, 127, 0, 0, 1, byte(ma.Port() >> 8), byte(ma.Port())}
			_, err = client.WriteToUDPAddrPort(append(hdr, "hello"...), relay1)
			require.NoError(t, err)
			buf := make([]byte, 2048)
			media.SetReadDeadline(time.Now().Add(testTimeout))
			n, lease, err := media.ReadFromUDPAddrPort(buf)
			require.NoError(t, err)
			require.Equal(t, "hello", string(buf[:n]))
			send := func(payloads ...string) {
				for _, s := range payloads {
					_, err := media.WriteToUDPAddrPort([]byte(s), lease)
					require.NoError(t, err)
				}
			}
			send("a1")
			require.Equal(t, "a1", handoverRecv(t, client, relay1))

			ctl2, relay2 := handoverAssociate(t, p.socks, port, tt.abort)
			if !tt.abort {
				p.waitMetric(t, `fwproxy_leases_events_total{event="handover"} 1`)
				send("b1")
				require.Equal(t, "b1", handoverRecv(t, client, relay2))
				ctl2.CloseWrite()
				_, err := io.ReadAll(ctl2)
				require.NoError(t, err)
			}
			p.waitMetric(t, `fwproxy_leases_events_total{event="release"} 1`)

			// In rounds, so that no kernel socket buffer overflows.
			for i := 0; i < 300; i += 50 {
				var want []string
				for j := i; j < i+50; j++ {
					want = append(want, fmt.Sprintf("c%d", j))
				}
				send(want...)
				for _, w := range want {
					require.Equal(t, w, handoverRecv(t, client, relay1))
				}
			}
			m := p.scrape(t)
			for _, want := range []string{
				`fwproxy_leases_datagrams_total{outcome="dropped",reason="buffer_full"} 0`,
				`fwproxy_leases_datagrams_total{outcome="buffered",reason="none"} 0`, // delivery went straight back
				`fwproxy_leases_buffered_datagrams 0`,
				`fwproxy_leases_current{state="active"} 1`, // still held by the first association
			} {
				assert.Equal(t, want, handoverSeries(m, want))
			}
		})
	}
}

// handoverSeries returns the exposition line of want's series (its name
// and labels, everything before the value) from a scrape, "" when missing.
func handoverSeries(scrape, want string) string {
	key := want[:strings.LastIndex(want, " ")+1]
	for _, line := range strings.Split(scrape, "\n") {
		if strings.HasPrefix(line, key) {
			return line
		}
	}
	return ""
}

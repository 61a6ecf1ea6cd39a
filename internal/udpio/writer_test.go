package udpio

import (
	"bytes"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestWriterGathers: what a writer sends is head then payload, for every
// split from empty to the largest IPv4 datagram, on IPv4, IPv6 and from a
// dual-stack socket to an IPv4 destination (which it must map).
func TestWriterGathers(t *testing.T) {
	for _, wk := range writerKinds {
		for _, tt := range []struct {
			name, network, ip, peerNetwork, peerIP string
		}{
			{"udp4", "udp4", "127.0.0.1", "udp4", "127.0.0.1"},
			{"udp6", "udp6", "::1", "udp6", "::1"},
			{"dual-stack to IPv4", "udp", "::", "udp4", "127.0.0.1"},
			{"dual-stack to IPv6", "udp", "::", "udp6", "::1"},
		} {
			t.Run(wk.name+"/"+tt.name, func(t *testing.T) {
				c := listen(t, tt.network, tt.ip)
				peer := listen(t, tt.peerNetwork, tt.peerIP)
				peer.SetReadDeadline(time.Now().Add(testTimeout))
				w, err := wk.make(c)
				require.NoError(t, err)
				buf := make([]byte, 1<<16)
				// 65507 is the largest UDP payload over IPv4 (65535 less the IP and UDP headers).
				for _, sizes := range [][2]int{{0, 0}, {10, 0}, {0, 10}, {22, 1200}, {22, 65507 - 22}} {
					head := bytes.Repeat([]byte{'h'}, sizes[0])
					payload := bytes.Repeat([]byte{'p'}, sizes[1])
					require.NoError(t, w.WriteTo(head, payload, addrOf(peer)), "sizes %v", sizes)
					n, from, err := peer.ReadFromUDPAddrPort(buf)
					require.NoError(t, err)
					assert.Equal(t, c.LocalAddr().(*net.UDPAddr).Port, int(from.Port()))
					assert.True(t, bytes.Equal(append(head, payload...), buf[:n]), "sizes %v: datagram differs", sizes)
				}
			})
		}
	}
}

// TestWriterFamilies: an IPv4 socket sends to an IPv4-mapped destination's
// IPv4 address and refuses a real IPv6 destination and a missing one with
// an error, as WriteToUDPAddrPort does.
func TestWriterFamilies(t *testing.T) {
	for _, wk := range writerKinds {
		t.Run(wk.name, func(t *testing.T) {
			c := listen(t, "udp4", "127.0.0.1")
			peer := listen(t, "udp4", "127.0.0.1")
			peer.SetReadDeadline(time.Now().Add(testTimeout))
			w, err := wk.make(c)
			require.NoError(t, err)
			mapped := netip.AddrPortFrom(netip.AddrFrom16(addrOf(peer).Addr().As16()), addrOf(peer).Port())
			require.True(t, mapped.Addr().Is4In6())
			require.NoError(t, w.WriteTo([]byte("to"), []byte(" mapped"), mapped))
			buf := make([]byte, 64)
			n, _, err := peer.ReadFromUDPAddrPort(buf)
			require.NoError(t, err)
			assert.Equal(t, "to mapped", string(buf[:n]))

			assert.Error(t, w.WriteTo(nil, []byte("x"), netip.MustParseAddrPort("[2001:db8::1]:9")))
			assert.Error(t, w.WriteTo(nil, []byte("x"), netip.AddrPort{}))
		})
	}
}

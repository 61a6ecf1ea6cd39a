package rtspfilter

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"net/netip"
	"net/textproto"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pion/rtp"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"fwproxy/internal/socksclient"
)

// rtsp2Responder is the server side of RTSP 2.0 for one test. gortsplib's
// server speaks only RTSP 1.0 and no server packaged in Debian speaks 2.0,
// so this small responder stands in for one: it answers SETUP with the
// transport it was sent plus a src_addr, records what it was sent, and
// after PLAY sends RTP to the first dest_addr address from mediaIP, an
// address other than its control connection's, so that RTP gets through
// only if the proxy took src_addr from the reply.
type rtsp2Responder struct {
	t       *testing.T
	ln      net.Listener
	media   *net.UDPConn // bound on mediaIP
	addr    netip.AddrPort
	mediaIP netip.Addr

	// setups gets each SETUP's Transport as it arrived.
	setups chan string

	done chan struct{}
	wg   sync.WaitGroup
}

func newRTSP2Responder(t *testing.T) *rtsp2Responder {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	mediaIP := netip.MustParseAddr("127.0.0.3")
	media, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.AddrPortFrom(mediaIP, 0)))
	require.NoError(t, err)
	r := &rtsp2Responder{
		t: t, ln: ln, media: media, mediaIP: mediaIP,
		addr:   ln.Addr().(*net.TCPAddr).AddrPort(),
		setups: make(chan string, 4),
		done:   make(chan struct{}),
	}
	r.wg.Add(1)
	go r.accept()
	t.Cleanup(func() {
		close(r.done)
		ln.Close()
		r.wg.Wait()
		media.Close()
	})
	return r
}

func (r *rtsp2Responder) accept() {
	defer r.wg.Done()
	for {
		c, err := r.ln.Accept()
		if err != nil {
			return
		}
		r.wg.Add(1)
		go r.serve(c)
	}
}

// serve answers one control connection until it ends or the test does.
func (r *rtsp2Responder) serve(c net.Conn) {
	defer r.wg.Done()
	defer c.Close()
	c.SetDeadline(time.Now().Add(testTimeout))
	stop := make(chan struct{})
	defer close(stop)
	r.wg.Add(1)
	go r.closeOnDone(c, stop)
	tp := textproto.NewReader(bufio.NewReader(c))
	var dest netip.AddrPort
	for {
		line, err := tp.ReadLine()
		if err != nil {
			return
		}
		if line == "" {
			continue
		}
		method, _, _ := strings.Cut(line, " ")
		h, err := tp.ReadMIMEHeader()
		if err != nil {
			return
		}
		reply := "RTSP/2.0 200 OK\r\nCSeq: " + h.Get("CSeq") + "\r\n"
		switch method {
		case "SETUP":
			transport := h.Get("Transport")
			select {
			case r.setups <- transport:
			case <-r.done:
				return
			}
			dest = r.rtpDestination(transport, c.RemoteAddr().(*net.TCPAddr).AddrPort().Addr())
			reply += "Session: 2f1e0c\r\nTransport: " + transport +
				fmt.Sprintf(`;src_addr="%s:%d"/"%s:%d";ssrc=0BADCAFE`, r.mediaIP, 30000, r.mediaIP, 30001) + "\r\n"
		case "PLAY":
			reply += "Session: 2f1e0c\r\n"
			if dest.IsValid() {
				r.wg.Add(1)
				go r.sendRTP(dest, stop)
			}
		}
		if _, err := c.Write([]byte(reply + "\r\n")); err != nil {
			return
		}
	}
}

// closeOnDone ends c's reads when the test ends first.
func (r *rtsp2Responder) closeOnDone(c net.Conn, stop <-chan struct{}) {
	defer r.wg.Done()
	select {
	case <-r.done:
		c.Close()
	case <-stop:
	}
}

var quotedAddr = regexp.MustCompile(`dest_addr="([^"]*)"`)

// rtpDestination is where a 2.0 server sends RTP: the first dest_addr
// address, the control connection's peer when it names no host. It is
// parsed here independently of the filter. Only loopback is ever sent
// to: a broken rewrite fails the test, it never sends to a third party.
func (r *rtsp2Responder) rtpDestination(transport string, peer netip.Addr) netip.AddrPort {
	m := quotedAddr.FindStringSubmatch(transport)
	if m == nil {
		return netip.AddrPort{}
	}
	host, port, err := net.SplitHostPort(m[1])
	if err != nil {
		return netip.AddrPort{}
	}
	ip := peer
	if host != "" {
		if ip, err = netip.ParseAddr(host); err != nil {
			return netip.AddrPort{}
		}
	}
	p, err := strconv.ParseUint(port, 10, 16)
	if err != nil || !ip.Unmap().IsLoopback() {
		return netip.AddrPort{}
	}
	return netip.AddrPortFrom(ip.Unmap(), uint16(p))
}

// sendRTP sends RTP to dest every few milliseconds until the connection
// or the test ends: the receiver waits for what it needs, bounded by its
// deadline.
func (r *rtsp2Responder) sendRTP(dest netip.AddrPort, stop <-chan struct{}) {
	defer r.wg.Done()
	tick := time.NewTicker(2 * time.Millisecond)
	defer tick.Stop()
	for seq := uint16(1); ; seq++ {
		select {
		case <-stop:
			return
		case <-r.done:
			return
		case <-tick.C:
		}
		b, _ := (&rtp.Packet{Header: rtp.Header{Version: 2, SequenceNumber: seq, SSRC: 0x0badcafe}, Payload: []byte("tone 2.0")}).Marshal()
		r.media.WriteToUDPAddrPort(b, dest)
	}
}

var setAddr = regexp.MustCompile(`^RTP/AVP/UDP;unicast;dest_addr="([0-9.]+):(\d+)"/"([0-9.]+):(\d+)"$`)

// TestFilterRTSP2DestAddr: an RTSP 2.0 SETUP names its ports in dest_addr.
// The server must see the proxy's external address and leased ports
// whatever host the client wrote, the client must get its own dest_addr
// back, and the server's RTP, sent from the src_addr host of its reply,
// must reach the client's port (announced mode; and through its
// associations for a firewall client).
func TestFilterRTSP2DestAddr(t *testing.T) {
	tests := []struct {
		name  string
		addrs func(a, b uint16) string
		third bool // counted as a destination rewrite
		assoc bool // a firewall client holding UDP associations for its ports
	}{
		{"ports only", func(a, b uint16) string { return fmt.Sprintf(`":%d"/":%d"`, a, b) }, false, false},
		{"the client's own address", func(a, b uint16) string { return fmt.Sprintf(`"127.0.0.1:%d"/"127.0.0.1:%d"`, a, b) }, false, false},
		{"a third party", func(a, b uint16) string { return fmt.Sprintf(`"192.0.2.99:%d"/"192.0.2.99:%d"`, a, b) }, true, false},
		{"a third party's IPv6 literal", func(a, b uint16) string { return fmt.Sprintf(`"[2001:db8::1]:%d"/"[2001:db8::1]:%d"`, a, b) }, true, false},
		{"firewall-client mode", func(a, b uint16) string { return fmt.Sprintf(`":%d"/":%d"`, a, b) }, false, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := newRTSP2Responder(t)
			env := newFilterEnv(t, envOptions{linger: testTimeout, extraPorts: []uint16{srv.addr.Port()}})
			a, b := rtpPorts(t)
			pa, pb := portOf(a), portOf(b)
			holdBusy(t, pa, pb) // port preservation cannot hide a missing rewrite
			if tt.assoc {
				env.associate(t, a)
				env.associate(t, b)
			}

			d := socksclient.Dialer{Proxy: env.proxyAddr, Timeout: testTimeout}
			conn, err := d.Connect(context.Background(), socksclient.AddrFromAddrPort(srv.addr))
			require.NoError(t, err)
			t.Cleanup(func() { conn.Close() })
			conn.SetDeadline(time.Now().Add(testTimeout))
			tp := textproto.NewReader(bufio.NewReader(conn))
			request := func(method, extra string, cseq int) textproto.MIMEHeader {
				t.Helper()
				_, err := fmt.Fprintf(conn, "%s rtsp://%s/s/trackID=0 RTSP/2.0\r\nCSeq: %d\r\n%s\r\n", method, srv.addr, cseq, extra)
				require.NoError(t, err)
				status, err := tp.ReadLine()
				require.NoError(t, err)
				require.Equal(t, "RTSP/2.0 200 OK", status)
				h, err := tp.ReadMIMEHeader()
				require.NoError(t, err)
				require.Equal(t, strconv.Itoa(cseq), h.Get("CSeq"))
				return h
			}

			sent := tt.addrs(pa, pb)
			h := request("SETUP", "Transport: RTP/AVP/UDP;unicast;dest_addr="+sent+"\r\n", 1)

			var seen string
			select {
			case seen = <-srv.setups:
			default:
				t.Fatal("the server answered a SETUP it did not record")
			}
			m := setAddr.FindStringSubmatch(seen)
			require.NotNil(t, m, "the server saw %q", seen)
			assert.Equal(t, external.String(), m[1], "RTP goes to the proxy's external address")
			assert.Equal(t, external.String(), m[3], "RTCP too")
			e0, _ := strconv.Atoi(m[2])
			e1, _ := strconv.Atoi(m[4])
			assert.NotEqual(t, [2]int{int(pa), int(pb)}, [2]int{e0, e1}, "the client's numbers are busy outside: rewritten")
			assert.Zero(t, e0%2, "RTP on an even port")
			assert.Equal(t, e0+1, e1, "RTCP on the next")

			assert.Equal(t, `RTP/AVP/UDP;unicast;dest_addr=`+sent+`;src_addr="127.0.0.3:30000"/"127.0.0.3:30001";ssrc=0BADCAFE`, h.Get("Transport"),
				"the client sees its own dest_addr in the reply, the rest as the server sent it")
			assert.Equal(t, "2f1e0c", h.Get("Session"))

			request("PLAY", "Session: 2f1e0c\r\n", 2)
			pkt := readRTP(t, a, tt.assoc)
			assert.Equal(t, "tone 2.0", string(pkt.Payload), "the server's RTP, from its src_addr host, reaches the client's RTP port")

			var third int64
			if tt.third {
				third = 1
			}
			assert.Equal(t, third, env.obs.dests.Load(), "a dest_addr naming another host is counted")
			assert.Equal(t, int64(1), env.obs.transports[TransportRewritten].Load())
			mode := SetupAnnounced
			if tt.assoc {
				mode = SetupJoined
			}
			assert.Equal(t, int64(1), env.obs.setups[mode][OutcomeAccepted].Load())
			assert.Zero(t, env.obs.problems[DirServerToClient][ProblemReplyUnmatched].Load())
		})
	}
}

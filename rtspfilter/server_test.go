package rtspfilter

import (
	"bufio"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/bluenviron/gortsplib/v4"
	"github.com/bluenviron/gortsplib/v4/pkg/base"
	"github.com/bluenviron/gortsplib/v4/pkg/description"
	"github.com/bluenviron/gortsplib/v4/pkg/format"
	"github.com/bluenviron/gortsplib/v4/pkg/headers"
	"github.com/bluenviron/gortsplib/v4/pkg/sdp"
	"github.com/pion/rtp"
	"github.com/stretchr/testify/require"
)

// realServer is gortsplib's RTSP server (the library behind mediamtx): an
// RTSP implementation that is not ours, serving one G.711 stream over
// UDP unicast (and TCP interleaved when a client asks).
type realServer struct {
	t      *testing.T
	srv    *gortsplib.Server
	stream *gortsplib.ServerStream
	media  *description.Media
	addr   netip.AddrPort // RTSP
	udp    [2]int         // its RTP and RTCP ports

	mu     sync.Mutex
	setups []serverSetup
	seq    uint16
}

// serverSetup is what the server saw of one SETUP.
type serverSetup struct {
	peer      netip.AddrPort // the control connection's remote address
	transport string         // the Transport header as it arrived
}

func (s *realServer) OnDescribe(*gortsplib.ServerHandlerOnDescribeCtx) (*base.Response, *gortsplib.ServerStream, error) {
	return &base.Response{StatusCode: base.StatusOK}, s.stream, nil
}

func (s *realServer) OnSetup(ctx *gortsplib.ServerHandlerOnSetupCtx) (*base.Response, *gortsplib.ServerStream, error) {
	s.mu.Lock()
	s.setups = append(s.setups, serverSetup{
		peer:      ctx.Conn.NetConn().RemoteAddr().(*net.TCPAddr).AddrPort(),
		transport: ctx.Request.Header["Transport"][0],
	})
	s.mu.Unlock()
	return &base.Response{StatusCode: base.StatusOK}, s.stream, nil
}

func (s *realServer) OnPlay(*gortsplib.ServerHandlerOnPlayCtx) (*base.Response, error) {
	return &base.Response{StatusCode: base.StatusOK}, nil
}

// lastSetup is the latest SETUP the server saw.
func (s *realServer) lastSetup() serverSetup {
	s.mu.Lock()
	defer s.mu.Unlock()
	require.NotEmpty(s.t, s.setups, "the server saw no SETUP")
	return s.setups[len(s.setups)-1]
}

// write sends one RTP packet to every playing reader; its payload names
// its sequence number.
func (s *realServer) write() {
	s.mu.Lock()
	s.seq++
	seq := s.seq
	s.mu.Unlock()
	s.stream.WritePacketRTP(s.media, &rtp.Packet{
		Header:  rtp.Header{Version: 2, PayloadType: 0, SequenceNumber: seq, Timestamp: uint32(seq) * 160, SSRC: 0x0badcafe},
		Payload: fmt.Appendf(nil, "tone %05d", seq),
	})
}

// pump writes RTP every few milliseconds until stop: the receiving test
// waits for what it needs, bounded by its deadline, not for a duration.
func (s *realServer) pump(t *testing.T) (stop func()) {
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		tick := time.NewTicker(2 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-done:
				return
			case <-tick.C:
				s.write()
			}
		}
	}()
	var once sync.Once
	stop = func() { once.Do(func() { close(done); wg.Wait() }) }
	t.Cleanup(stop)
	return stop
}

// newRealServer starts the server on 127.0.0.1 with its UDP pair outside
// the leases' range (see testLeaseRange).
func newRealServer(t *testing.T) *realServer { return newRealServerWith(t, 1) }

// newRealServerWith serves a stream of n G.711 tracks (trackID=0…n-1).
func newRealServerWith(t *testing.T, n int) *realServer {
	t.Helper()
	s := &realServer{t: t}
	var medias []*description.Media
	for range n {
		medias = append(medias, &description.Media{Type: description.MediaTypeAudio, Formats: []format.Format{&format.G711{PayloadTyp: 0, MULaw: true, SampleRate: 8000, ChannelCount: 1}}})
	}
	s.media = medias[0]
	var err error
	for range 20 {
		rtpPort := 30000 + 2*rand.IntN(4000)
		var ln net.Listener
		s.srv = &gortsplib.Server{
			Handler:        s,
			RTSPAddress:    "127.0.0.1:0",
			UDPRTPAddress:  fmt.Sprintf("127.0.0.1:%d", rtpPort),
			UDPRTCPAddress: fmt.Sprintf("127.0.0.1:%d", rtpPort+1),
			Listen: func(network, address string) (net.Listener, error) {
				l, err := net.Listen(network, address)
				ln = l
				return l, err
			},
		}
		if err = s.srv.Start(); err == nil {
			s.addr = ln.Addr().(*net.TCPAddr).AddrPort()
			s.udp = [2]int{rtpPort, rtpPort + 1}
			break
		}
	}
	require.NoError(t, err, "start the RTSP server")
	s.stream = gortsplib.NewServerStream(s.srv, &description.Session{Medias: medias})
	t.Cleanup(func() {
		s.stream.Close()
		s.srv.Close()
	})
	return s
}

// rtspClient is the test's player: its requests and the responses are
// marshalled and parsed by gortsplib's pkg/base (not by the filter's
// code), over a SOCKS CONNECT through the proxy.
type rtspClient struct {
	t    *testing.T
	conn net.Conn
	br   *bufio.Reader
	cseq int
	base *base.URL
}

func newRTSPClient(t *testing.T, conn net.Conn, server netip.AddrPort) *rtspClient {
	t.Helper()
	u, err := base.ParseURL("rtsp://" + server.String() + "/stream")
	require.NoError(t, err)
	conn.SetDeadline(time.Now().Add(testTimeout))
	return &rtspClient{t: t, conn: conn, br: bufio.NewReader(conn), base: u}
}

func (c *rtspClient) send(method base.Method, u *base.URL, h base.Header) {
	c.t.Helper()
	c.cseq++
	if h == nil {
		h = base.Header{}
	}
	h["CSeq"] = base.HeaderValue{fmt.Sprint(c.cseq)}
	b, err := base.Request{Method: method, URL: u, Header: h}.Marshal()
	require.NoError(c.t, err)
	_, err = c.conn.Write(b)
	require.NoError(c.t, err)
}

func (c *rtspClient) recv() *base.Response {
	c.t.Helper()
	var res base.Response
	require.NoError(c.t, res.Unmarshal(c.br))
	return &res
}

func (c *rtspClient) do(method base.Method, u *base.URL, h base.Header) *base.Response {
	c.t.Helper()
	c.send(method, u, h)
	res := c.recv()
	require.Equal(c.t, fmt.Sprint(c.cseq), res.Header["CSeq"][0], "responses come in order")
	return res
}

// describe returns the URL to SETUP the stream's one media at.
func (c *rtspClient) describe() *base.URL {
	c.t.Helper()
	us := c.describeAll()
	require.Len(c.t, us, 1)
	return us[0]
}

// describeAll returns the SETUP URL of each media, in order.
func (c *rtspClient) describeAll() []*base.URL {
	c.t.Helper()
	res := c.do(base.Describe, c.base, base.Header{"Accept": base.HeaderValue{"application/sdp"}})
	require.Equal(c.t, base.StatusOK, res.StatusCode)
	var sd sdp.SessionDescription
	require.NoError(c.t, sd.Unmarshal(res.Body))
	var desc description.Session
	require.NoError(c.t, desc.Unmarshal(&sd))
	var out []*base.URL
	for _, m := range desc.Medias {
		u, err := m.URL(c.base)
		require.NoError(c.t, err)
		out = append(out, u)
	}
	return out
}

// setup asks for UDP at ports and returns the reply, its transport and
// its session id.
func (c *rtspClient) setup(u *base.URL, transport string, session string) (*base.Response, headers.Transport, string) {
	c.t.Helper()
	h := base.Header{"Transport": base.HeaderValue{transport}}
	if session != "" {
		h["Session"] = base.HeaderValue{session}
	}
	res := c.do(base.Setup, u, h)
	var th headers.Transport
	var sh headers.Session
	if res.StatusCode == base.StatusOK {
		require.NoError(c.t, th.Unmarshal(res.Header["Transport"]))
		require.NoError(c.t, sh.Unmarshal(res.Header["Session"]))
	}
	return res, th, sh.Session
}

func (c *rtspClient) play(session string) {
	c.t.Helper()
	res := c.do(base.Play, c.base, base.Header{"Session": base.HeaderValue{session}})
	require.Equal(c.t, base.StatusOK, res.StatusCode)
}

func (c *rtspClient) teardown(session string) {
	c.t.Helper()
	res := c.do(base.Teardown, c.base, base.Header{"Session": base.HeaderValue{session}})
	require.Equal(c.t, base.StatusOK, res.StatusCode)
}

// serverSaw parses the client_port the server got.
func serverSaw(t *testing.T, s serverSetup) [2]int {
	t.Helper()
	var th headers.Transport
	require.NoError(t, th.Unmarshal(base.HeaderValue{s.transport}))
	require.NotNil(t, th.ClientPorts, "client_port in %q", s.transport)
	return *th.ClientPorts
}

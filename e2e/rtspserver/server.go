package rtspserver

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/bluenviron/gortsplib/v4"
	"github.com/bluenviron/gortsplib/v4/pkg/base"
	"github.com/bluenviron/gortsplib/v4/pkg/description"
	"github.com/bluenviron/gortsplib/v4/pkg/format"
	"github.com/bluenviron/gortsplib/v4/pkg/headers"
	"github.com/pion/rtcp"
	"github.com/pion/rtp"
)

// SeqPath is the first element of the paths that play the known sequence.
const SeqPath = "seq"

// PayloadSize is the size of a sequence packet's payload: 20 ms of G.711
// at 8 kHz.
const PayloadSize = 160

// Config describes the server.
type Config struct {
	// IP is the address the RTSP listener and the RTP/RTCP sockets bind.
	IP netip.Addr
	// Packets is how many packets each PLAY of a seq path gets.
	Packets int
	// Interval is the pause between two of them: gortsplib queues what a
	// session writes (256 packets), so a sequence longer than that needs a
	// pace the writer keeps up with.
	Interval time.Duration
	// Sockets, when set, runs each call that opens one of the server's
	// sockets (a test puts the server in a network namespace with it).
	Sockets func(open func() error) error
}

// DefaultConfig is a server on 127.0.0.1 playing 50 packets 2 ms apart.
func DefaultConfig() Config {
	return Config{IP: netip.AddrFrom4([4]byte{127, 0, 0, 1}), Packets: 50, Interval: 2 * time.Millisecond}
}

// Setup is one SETUP the server accepted.
type Setup struct {
	Path string
	// Remote is the control connection's remote address.
	Remote netip.AddrPort
	// ClientPorts is client_port of the Transport it chose.
	ClientPorts [2]int
}

// Play is one PLAY of a seq path and what became of it.
type Play struct {
	Path string
	// Sent is how many packets were queued for the session, Failed how
	// many the session refused (its write queue was full or it ended).
	Sent, Failed int
	// RTCP counts the RTCP packets from the client on this session until
	// the record was taken.
	RTCP int
}

// Server is a running gortsplib server.
type Server struct {
	cfg  Config
	srv  *gortsplib.Server
	addr netip.AddrPort
	rtp  netip.AddrPort

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup // the sequence writers

	// mu guards the fields below.
	mu        sync.Mutex
	setups    []Setup
	plays     []*playState
	published map[string]*gortsplib.ServerStream
	// publishers maps each recording session to its path.
	publishers map[*gortsplib.ServerSession]string
	// seq holds each seq session's own stream.
	seq map[*gortsplib.ServerSession]*seqSession
	// pendingPlay is the PLAY a connection is answering: the sequence
	// starts once the reply is on its way (the session is active then).
	pendingPlay map[*gortsplib.ServerConn]*seqSession
	publishedCh chan struct{} // closed and replaced at each ANNOUNCE
}

type seqSession struct {
	stream *gortsplib.ServerStream
	play   *playState
}

type playState struct {
	path         string
	sent, failed int
	rtcp         atomic.Int64
	// done is closed when the sequence's writer has returned (or never
	// started: the PLAY was not answered 200).
	done chan struct{}
}

// Listen starts the server on cfg.IP: the RTSP port is picked by the
// system, the RTP/RTCP pair (even, odd) at random.
func Listen(cfg Config) (*Server, error) {
	if !cfg.IP.IsValid() {
		return nil, errors.New("rtspserver: no IP")
	}
	if cfg.Packets <= 0 {
		return nil, fmt.Errorf("rtspserver: Packets %d must be > 0", cfg.Packets)
	}
	open := cfg.Sockets
	if open == nil {
		open = func(f func() error) error { return f() }
	}
	rtpConn, rtcpConn, err := listenPair(cfg.IP, open)
	if err != nil {
		return nil, err
	}
	s := &Server{
		cfg:         cfg,
		published:   map[string]*gortsplib.ServerStream{},
		publishers:  map[*gortsplib.ServerSession]string{},
		seq:         map[*gortsplib.ServerSession]*seqSession{},
		pendingPlay: map[*gortsplib.ServerConn]*seqSession{},
		publishedCh: make(chan struct{}),
		rtp:         rtpConn.LocalAddr().(*net.UDPAddr).AddrPort(),
	}
	s.ctx, s.cancel = context.WithCancel(context.Background())
	prebound := map[string]net.PacketConn{
		rtpConn.LocalAddr().String():  rtpConn,
		rtcpConn.LocalAddr().String(): rtcpConn,
	}
	var ln net.Listener
	s.srv = &gortsplib.Server{
		Handler:        s,
		RTSPAddress:    netip.AddrPortFrom(cfg.IP, 0).String(),
		UDPRTPAddress:  rtpConn.LocalAddr().String(),
		UDPRTCPAddress: rtcpConn.LocalAddr().String(),
		Listen: func(network, address string) (l net.Listener, err error) {
			err = open(func() (err error) {
				l, err = net.Listen(network, address)
				return err
			})
			ln = l
			return l, err
		},
		// The pair is bound already (the ports must be even and odd, and
		// free): hand gortsplib the sockets it asks for by address.
		ListenPacket: func(_, address string) (net.PacketConn, error) {
			if c, ok := prebound[address]; ok {
				delete(prebound, address)
				return c, nil
			}
			return nil, fmt.Errorf("rtspserver: unexpected UDP listener %s", address)
		},
	}
	if err := s.srv.Start(); err != nil {
		rtpConn.Close()
		rtcpConn.Close()
		return nil, fmt.Errorf("rtspserver: start: %w", err)
	}
	s.addr = ln.Addr().(*net.TCPAddr).AddrPort()
	return s, nil
}

// listenPair binds an even UDP port and the odd one after it on ip.
func listenPair(ip netip.Addr, open func(func() error) error) (*net.UDPConn, *net.UDPConn, error) {
	var lastErr error
	for range 100 {
		port := uint16(20000 + 2*rand.IntN(20000))
		var a, b *net.UDPConn
		err := open(func() (err error) {
			if a, err = net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.AddrPortFrom(ip, port))); err != nil {
				return err
			}
			if b, err = net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.AddrPortFrom(ip, port+1))); err != nil {
				a.Close()
			}
			return err
		})
		if err == nil {
			return a, b, nil
		}
		lastErr = err
	}
	return nil, nil, fmt.Errorf("rtspserver: bind an RTP/RTCP pair on %v: %w", ip, lastErr)
}

// Addr is the RTSP listener's address.
func (s *Server) Addr() netip.AddrPort { return s.addr }

// RTPAddr is the server's RTP socket (server_port's first port).
func (s *Server) RTPAddr() netip.AddrPort { return s.rtp }

// URL is the rtsp:// URL of path on this server.
func (s *Server) URL(path string) string {
	return "rtsp://" + s.addr.String() + "/" + path
}

// Close stops the server and waits for its sequence writers.
func (s *Server) Close() {
	s.cancel()
	s.srv.Close()
	s.wg.Wait()
}

// Setups returns every SETUP accepted so far, in order.
func (s *Server) Setups() []Setup {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Setup(nil), s.setups...)
}

// Plays returns every PLAY of a seq path so far, in order; a sequence
// still being written shows what was sent until now.
func (s *Server) Plays() []Play {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]Play, len(s.plays))
	for i, p := range s.plays {
		out[i] = Play{Path: p.path, Sent: p.sent, Failed: p.failed, RTCP: int(p.rtcp.Load())}
	}
	return out
}

// WaitSequences waits until every sequence started so far has been
// written out: a player may have read a packet before its writer counted
// it as sent.
func (s *Server) WaitSequences(ctx context.Context) error {
	s.mu.Lock()
	var done []chan struct{}
	for _, p := range s.plays {
		done = append(done, p.done)
	}
	s.mu.Unlock()
	for _, d := range done {
		select {
		case <-d:
		case <-ctx.Done():
			return fmt.Errorf("rtspserver: wait for the sequences: %w", ctx.Err())
		}
	}
	return nil
}

// WaitPublished waits until a publisher has announced path.
func (s *Server) WaitPublished(ctx context.Context, path string) error {
	for {
		s.mu.Lock()
		_, ok := s.published[path]
		ch := s.publishedCh
		s.mu.Unlock()
		if ok {
			return nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return fmt.Errorf("rtspserver: wait for a publisher on %q: %w", path, ctx.Err())
		}
	}
}

// splitPath takes gortsplib's path ("/seq/tag") apart.
func splitPath(p string) (first, rest string) {
	first, rest, _ = strings.Cut(strings.TrimPrefix(p, "/"), "/")
	return first, rest
}

// seqDescription is the seq paths' stream: one G.711 µ-law track.
func seqDescription() *description.Session {
	return &description.Session{Medias: []*description.Media{{
		Type:    description.MediaTypeAudio,
		Formats: []format.Format{&format.G711{PayloadTyp: 0, MULaw: true, SampleRate: 8000, ChannelCount: 1}},
	}}}
}

// OnDescribe serves a seq path's description, or a published stream's.
func (s *Server) OnDescribe(ctx *gortsplib.ServerHandlerOnDescribeCtx) (*base.Response, *gortsplib.ServerStream, error) {
	if first, _ := splitPath(ctx.Path); first == SeqPath {
		// A stream of its own for the description; each session gets
		// another at SETUP.
		st := gortsplib.NewServerStream(s.srv, seqDescription())
		context.AfterFunc(s.ctx, st.Close)
		return &base.Response{StatusCode: base.StatusOK}, st, nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	st, ok := s.published[strings.TrimPrefix(ctx.Path, "/")]
	if !ok {
		return &base.Response{StatusCode: base.StatusNotFound}, nil, nil
	}
	return &base.Response{StatusCode: base.StatusOK}, st, nil
}

// OnAnnounce makes the publisher's stream the path's.
func (s *Server) OnAnnounce(ctx *gortsplib.ServerHandlerOnAnnounceCtx) (*base.Response, error) {
	path := strings.TrimPrefix(ctx.Path, "/")
	if first, _ := splitPath(path); first == SeqPath {
		return &base.Response{StatusCode: base.StatusBadRequest}, nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if old, ok := s.published[path]; ok {
		old.Close()
	}
	s.published[path] = gortsplib.NewServerStream(s.srv, ctx.Description)
	s.publishers[ctx.Session] = path
	close(s.publishedCh)
	s.publishedCh = make(chan struct{})
	return &base.Response{StatusCode: base.StatusOK}, nil
}

// OnSetup records the transport and hands out the stream.
func (s *Server) OnSetup(ctx *gortsplib.ServerHandlerOnSetupCtx) (*base.Response, *gortsplib.ServerStream, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.publishers[ctx.Session]; ok {
		return &base.Response{StatusCode: base.StatusOK}, nil, nil
	}
	rec := Setup{Path: strings.TrimPrefix(ctx.Path, "/")}
	if ta, ok := ctx.Conn.NetConn().RemoteAddr().(*net.TCPAddr); ok {
		ap := ta.AddrPort()
		rec.Remote = netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
	}
	if ctx.Transport == gortsplib.TransportUDP {
		if tr, err := requestTransport(ctx.Request); err == nil && tr.ClientPorts != nil {
			rec.ClientPorts = *tr.ClientPorts
		}
	}
	s.setups = append(s.setups, rec)

	if first, _ := splitPath(ctx.Path); first == SeqPath {
		ss, ok := s.seq[ctx.Session]
		if !ok {
			ss = &seqSession{stream: gortsplib.NewServerStream(s.srv, seqDescription())}
			s.seq[ctx.Session] = ss
		}
		return &base.Response{StatusCode: base.StatusOK}, ss.stream, nil
	}
	st, ok := s.published[rec.Path]
	if !ok {
		return &base.Response{StatusCode: base.StatusNotFound}, nil, nil
	}
	return &base.Response{StatusCode: base.StatusOK}, st, nil
}

// OnPlay counts the client's RTCP and, on a seq path, arms the sequence.
func (s *Server) OnPlay(ctx *gortsplib.ServerHandlerOnPlayCtx) (*base.Response, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	ss, ok := s.seq[ctx.Session]
	if !ok {
		return &base.Response{StatusCode: base.StatusOK}, nil
	}
	if ss.play != nil {
		return &base.Response{StatusCode: base.StatusOK}, nil // a second PLAY: playing already
	}
	ss.play = &playState{path: strings.TrimPrefix(ctx.Path, "/"), done: make(chan struct{})}
	s.plays = append(s.plays, ss.play)
	play := ss.play
	ctx.Session.OnPacketRTCPAny(func(*description.Media, rtcp.Packet) { play.rtcp.Add(1) })
	s.pendingPlay[ctx.Conn] = ss
	return &base.Response{StatusCode: base.StatusOK}, nil
}

// OnResponse starts a PLAY's sequence as its reply goes out: gortsplib
// makes the session active before that, so nothing written is lost to a
// session not yet playing.
func (s *Server) OnResponse(sc *gortsplib.ServerConn, res *base.Response) {
	s.mu.Lock()
	ss, ok := s.pendingPlay[sc]
	delete(s.pendingPlay, sc)
	s.mu.Unlock()
	if !ok {
		return
	}
	if res.StatusCode != base.StatusOK {
		close(ss.play.done)
		return
	}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		defer close(ss.play.done)
		s.writeSequence(ss)
	}()
}

// writeSequence sends the session's packets 0..Packets-1, paced.
func (s *Server) writeSequence(ss *seqSession) {
	medi := ss.stream.Description().Medias[0]
	ssrc := rand.Uint32()
	tick := time.NewTicker(max(s.cfg.Interval, time.Microsecond))
	defer tick.Stop()
	for i := range s.cfg.Packets {
		pkt := &rtp.Packet{
			Header:  rtp.Header{Version: 2, PayloadType: 0, SequenceNumber: uint16(i), Timestamp: uint32(i * PayloadSize), SSRC: ssrc, Marker: i == 0},
			Payload: SeqPayload(i),
		}
		err := ss.stream.WritePacketRTP(medi, pkt)
		s.mu.Lock()
		if err != nil {
			ss.play.failed++
		} else {
			ss.play.sent++
		}
		s.mu.Unlock()
		if i+1 < s.cfg.Packets {
			select {
			case <-tick.C:
			case <-s.ctx.Done():
				return
			}
		}
	}
}

// OnStreamWriteError counts a packet a session could not take.
func (s *Server) OnStreamWriteError(ctx *gortsplib.ServerHandlerOnStreamWriteErrorCtx) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if ss, ok := s.seq[ctx.Session]; ok && ss.play != nil {
		ss.play.failed++
	}
}

// OnRecord relays what the publisher sends to the path's readers.
func (s *Server) OnRecord(ctx *gortsplib.ServerHandlerOnRecordCtx) (*base.Response, error) {
	s.mu.Lock()
	st := s.published[s.publishers[ctx.Session]]
	s.mu.Unlock()
	if st == nil {
		return &base.Response{StatusCode: base.StatusBadRequest}, nil
	}
	ctx.Session.OnPacketRTPAny(func(medi *description.Media, _ format.Format, pkt *rtp.Packet) {
		st.WritePacketRTP(medi, pkt) //nolint:errcheck // a reader that cannot keep up misses packets, as with any relay
	})
	return &base.Response{StatusCode: base.StatusOK}, nil
}

// OnSessionClose ends what belonged to the session.
func (s *Server) OnSessionClose(ctx *gortsplib.ServerHandlerOnSessionCloseCtx) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if path, ok := s.publishers[ctx.Session]; ok {
		delete(s.publishers, ctx.Session)
		if st := s.published[path]; st != nil {
			st.Close()
			delete(s.published, path)
		}
	}
	if ss, ok := s.seq[ctx.Session]; ok {
		delete(s.seq, ctx.Session)
		// The writer may still be sending: it sees the closed stream as
		// failed writes, which is what happened.
		ss.stream.Close()
	}
}

// OnConnClose forgets a PLAY the connection never answered.
func (s *Server) OnConnClose(ctx *gortsplib.ServerHandlerOnConnCloseCtx) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if ss, ok := s.pendingPlay[ctx.Conn]; ok {
		delete(s.pendingPlay, ctx.Conn)
		close(ss.play.done)
	}
}

// SeqPayload is packet i's payload: i as 4 bytes, then bytes that follow
// from i, so that a corrupted or misplaced packet shows.
func SeqPayload(i int) []byte {
	b := make([]byte, PayloadSize)
	binary.BigEndian.PutUint32(b, uint32(i))
	for j := 4; j < len(b); j++ {
		b[j] = byte(i*7 + j)
	}
	return b
}

var (
	_ gortsplib.ServerHandlerOnDescribe         = (*Server)(nil)
	_ gortsplib.ServerHandlerOnAnnounce         = (*Server)(nil)
	_ gortsplib.ServerHandlerOnSetup            = (*Server)(nil)
	_ gortsplib.ServerHandlerOnPlay             = (*Server)(nil)
	_ gortsplib.ServerHandlerOnRecord           = (*Server)(nil)
	_ gortsplib.ServerHandlerOnResponse         = (*Server)(nil)
	_ gortsplib.ServerHandlerOnSessionClose     = (*Server)(nil)
	_ gortsplib.ServerHandlerOnConnClose        = (*Server)(nil)
	_ gortsplib.ServerHandlerOnStreamWriteError = (*Server)(nil)
)

// requestTransport is the unicast UDP spec of a SETUP's Transport header
// (the one gortsplib chose: the first it supports).
func requestTransport(req *base.Request) (headers.Transport, error) {
	var ts headers.Transports
	if err := ts.Unmarshal(req.Header["Transport"]); err != nil {
		return headers.Transport{}, err
	}
	for _, t := range ts {
		if t.Protocol == headers.TransportProtocolUDP && (t.Delivery == nil || *t.Delivery == headers.TransportDeliveryUnicast) {
			return t, nil
		}
	}
	return headers.Transport{}, errors.New("no unicast UDP transport")
}

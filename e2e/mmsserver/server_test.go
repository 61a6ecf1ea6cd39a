package mmsserver

import (
	"bufio"
	"encoding/binary"
	"io"
	"math"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"fwproxy/e2e/asf"
	"fwproxy/mmsfilter"
)

// stepTimeout bounds every read of the scripted client.
const stepTimeout = 10 * time.Second

func loadAsset(t testing.TB) *asf.File {
	t.Helper()
	f, err := asf.ReadFile("../testdata/sine440.asf")
	require.NoError(t, err)
	return f
}

func shortEntry(t testing.TB, n int) *asf.File {
	t.Helper()
	f, err := loadAsset(t).Truncate(n)
	require.NoError(t, err)
	return f
}

func testConfig(pl Playlist) Config {
	cfg := DefaultConfig()
	cfg.PacketInterval = time.Millisecond
	cfg.PingInterval = 0
	cfg.Playlists = map[string]Playlist{"pl": pl}
	return cfg
}

func startServer(t *testing.T, cfg Config) *Server {
	t.Helper()
	s, err := Listen("127.0.0.1:0", cfg, nil)
	require.NoError(t, err)
	t.Cleanup(func() { s.Close() })
	return s
}

// rawClient is a scripted MMS client: it sends exactly the messages a test
// names and reads exactly what the server sends, TCP and UDP.
type rawClient struct {
	t   *testing.T
	tcp *net.TCPConn
	br  *bufio.Reader
	udp *net.UDPConn
	seq uint16
}

func dial(t *testing.T, s *Server) *rawClient {
	t.Helper()
	c, err := net.DialTCP("tcp", nil, net.TCPAddrFromAddrPort(s.Addr()))
	require.NoError(t, err)
	t.Cleanup(func() { c.Close() })
	u, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	require.NoError(t, err)
	t.Cleanup(func() { u.Close() })
	return &rawClient{t: t, tcp: c, br: bufio.NewReader(c), udp: u}
}

func (c *rawClient) udpPort() uint16 { return uint16(c.udp.LocalAddr().(*net.UDPAddr).Port) }

func (c *rawClient) send(mid mmsfilter.MID, body Fields) {
	c.t.Helper()
	_, err := c.tcp.Write(mmsfilter.AppendCommand(nil, c.seq, mmsfilter.Message{MID: mid, Body: body}))
	require.NoError(c.t, err)
	c.seq++
}

// unit is one thing the server sent on TCP: a message or a Data packet.
type unit struct {
	msg  mmsfilter.Message
	seq  uint16
	data *mmsfilter.DataHeader
	pay  []byte
}

func (c *rawClient) next() unit {
	c.t.Helper()
	c.tcp.SetReadDeadline(time.Now().Add(stepTimeout))
	head, err := c.br.Peek(8)
	require.NoError(c.t, err)
	if binary.LittleEndian.Uint32(head[4:]) != mmsfilter.SessionID {
		h, _, err := mmsfilter.ParseDataHeader(head)
		require.NoError(c.t, err)
		b := make([]byte, h.PacketSize)
		_, err = io.ReadFull(c.br, b)
		require.NoError(c.t, err)
		return unit{data: &h, pay: b[8:]}
	}
	head, err = c.br.Peek(16)
	require.NoError(c.t, err)
	b := make([]byte, binary.LittleEndian.Uint32(head[8:])+16)
	_, err = io.ReadFull(c.br, b)
	require.NoError(c.t, err)
	p, _, err := mmsfilter.ParsePacket(b)
	require.NoError(c.t, err)
	m, n, err := mmsfilter.ParseMessage(p.Messages)
	require.NoError(c.t, err)
	require.Equal(c.t, len(p.Messages), n, "one message per packet")
	return unit{msg: m, seq: p.Header.Seq}
}

// expect reads the next TCP unit and requires it to be mid.
func (c *rawClient) expect(mid mmsfilter.MID) mmsfilter.Message {
	c.t.Helper()
	u := c.next()
	require.Nil(c.t, u.data, "want %v, got a Data packet", mid)
	require.Equal(c.t, mid, u.msg.MID)
	return u.msg
}

func (c *rawClient) datagram() (mmsfilter.DataHeader, []byte) {
	c.t.Helper()
	c.udp.SetReadDeadline(time.Now().Add(stepTimeout))
	b := make([]byte, 64<<10)
	n, _, err := c.udp.ReadFromUDPAddrPort(b)
	require.NoError(c.t, err)
	h, _, err := mmsfilter.ParseDataHeader(b[:n])
	require.NoError(c.t, err)
	require.Equal(c.t, n, int(h.PacketSize), "one Data packet per datagram")
	return h, b[8:n]
}

func u32(m mmsfilter.Message, off int) uint32 {
	v, ok := m.BodyU32(off)
	if !ok {
		return math.MaxUint32
	}
	return v
}

// Client message bodies (mmsfilter/PROTOCOL.md §2.2, VLC's values).

func funnelBody(f mmsfilter.Funnel) Fields {
	return append(mmsfilter.AppendFunnelName(Fields{}.U32(0, 0xFFFFFFFF, 0, 0x000A0000, 2), f), 0, 0)
}

func openBody(name string) Fields { return Fields{}.U32(1, 0xFFFFFFFF, 0, 0).UTF16Z(name) }

func readBlockBody(inc uint32) Fields {
	return Fields{}.U32(1, 0, 0, 0x8000, 0xFFFFFFFF, 0).F64(0).F64(3600).U32(inc, 0)
}

func startBody(inc uint32) Fields {
	return Fields{}.U32(1, 0x0001FFFF).F64(0).U32(0xFFFFFFFF, 0xFFFFFFFF, 0x00FFFFFF, inc)
}

// open runs the session up to an open file: Connect, ConnectFunnel, OpenFile.
func (c *rawClient) open(f mmsfilter.Funnel, name string) mmsfilter.Message {
	c.t.Helper()
	c.send(mmsfilter.MIDConnect, Fields{}.U32(0, 0x0004000B, 0x0003001C).UTF16Z("NSPlayer/7.0.0.1956; {00000000-0000-0000-0000-000000000000}; Host: test"))
	c.expect(mmsfilter.MIDReportConnectedEX)
	c.send(mmsfilter.MIDConnectFunnel, funnelBody(f))
	c.expect(mmsfilter.MIDReportConnectedFunnel)
	c.send(mmsfilter.MIDOpenFile, openBody(name))
	return c.expect(mmsfilter.MIDReportOpenFile)
}

// TestMMSUPlaylist follows a two-entry MMSU playlist message by message
// (mmsfilter/PROTOCOL.md §4.a, §4.b), with the entry's tail held back until the
// client speaks after StreamChange.
func TestMMSUPlaylist(t *testing.T) {
	e1, e2 := shortEntry(t, 6), shortEntry(t, 4)
	cfg := testConfig(Playlist{{Name: "one", File: e1}, {Name: "two", File: e2}})
	cfg.TailPackets = 2
	cfg.HeaderPieceSize = 100 // the 444-byte header in 5 pieces
	s := startServer(t, cfg)
	c := dial(t, s)

	c.send(mmsfilter.MIDConnect, Fields{}.U32(0, 0x0004000B, 0x0003001C).UTF16Z("NSPlayer/7.0.0.1956; {0}; Host: test"))
	ex := c.expect(mmsfilter.MIDReportConnectedEX)
	// VLC needs at least 96 bytes and string counts that fit (PROTOCOL.md §5.1).
	assert.GreaterOrEqual(t, 8+len(ex.Body), 96-32)
	assert.EqualValues(t, 13, u32(ex, 40), "ServerVersionInfo length, NUL included")

	c.send(mmsfilter.MIDFunnelInfo, Fields{}.U32(0xF0F0F0EF))
	fi := c.expect(mmsfilter.MIDReportFunnelInfo)
	assert.NotZero(t, u32(fi, 20), "nCubs: a client ID")

	c.send(mmsfilter.MIDConnectFunnel, funnelBody(mmsfilter.Funnel{
		// The server ignores the IP ([MS-MMSP] §3.2.5.5): it sends to the TCP peer.
		Addr: netip.MustParseAddr("192.0.2.1"), Transport: mmsfilter.TransportUDP, Port: c.udpPort()}))
	c.expect(mmsfilter.MIDReportConnectedFunnel)

	c.send(mmsfilter.MIDOpenFile, openBody("pl"))
	of := c.expect(mmsfilter.MIDReportOpenFile)
	assert.Zero(t, u32(of, 0), "hr")
	assert.EqualValues(t, 1, u32(of, 8), "openFileId: VLC wants 1")
	assert.EqualValues(t, attrPlaylist|attrBroadcast, u32(of, 20))
	assert.EqualValues(t, 800, u32(of, 52), "packet size")
	assert.EqualValues(t, 6, u32(of, 56), "packet count")
	assert.EqualValues(t, len(e1.Header), u32(of, 68), "header size")

	// Entry 1: header over UDP with the ReadBlock's incarnation, in
	// pieces 0x04 … 0x0C.
	c.send(mmsfilter.MIDReadBlock, readBlockBody(2))
	rb := c.expect(mmsfilter.MIDReportReadBlock)
	assert.EqualValues(t, 2, u32(rb, 4))
	assert.Equal(t, e1.Header, c.header(2, 5))

	c.send(mmsfilter.MIDStreamSwitch, Fields{}.U32(1).U16(0xFFFF, 1, 0))
	c.expect(mmsfilter.MIDReportStreamSwitch)
	c.send(mmsfilter.MIDStartPlaying, startBody(9))
	sp := c.expect(mmsfilter.MIDReportStartedPlaying)
	assert.EqualValues(t, 9, u32(sp, 4))
	afSeq := uint8(0)
	for i := range 4 { // 6 packets, the last 2 held back
		h, p := c.datagram()
		assert.Equal(t, mmsfilter.DataHeader{LocationID: uint32(i), PlayIncarnation: 9, AFFlags: afSeq, PacketSize: 808}, h)
		assert.Equal(t, e1.Packets[i], p)
		afSeq++
	}
	eos := c.expect(mmsfilter.MIDReportEndOfStream)
	assert.EqualValues(t, 1, u32(eos, 0), "hr 1: entry end")
	assert.EqualValues(t, 9, u32(eos, 4))
	sc := c.expect(mmsfilter.MIDReportStreamChange)
	assert.EqualValues(t, 0xFF, u32(sc, 4))
	assert.EqualValues(t, 800, u32(sc, 8))
	assert.EqualValues(t, len(e2.Header), u32(sc, 12))
	assert.EqualValues(t, e2.Info.MaxBitrate, u32(sc, 16))

	// The tail is held: the session loop sent StreamChange and has nothing
	// to do until the client speaks (TailDelay is 0).
	assert.Zero(t, s.Stats().TailPackets)
	c.send(mmsfilter.MIDLogging, Fields{}.U32(1490).Zeros(1486))
	for i := 4; i < 6; i++ {
		h, p := c.datagram()
		assert.Equal(t, mmsfilter.DataHeader{LocationID: uint32(i), PlayIncarnation: 9, AFFlags: afSeq, PacketSize: 808}, h, "tail of entry 1")
		assert.Equal(t, e1.Packets[i], p)
		afSeq++
	}

	// Entry 2: ReadBlock again, the new header, StartPlaying.
	c.send(mmsfilter.MIDReadBlock, readBlockBody(3))
	c.expect(mmsfilter.MIDReportReadBlock)
	assert.Equal(t, e2.Header, c.header(3, 5))
	c.send(mmsfilter.MIDStartPlaying, startBody(10))
	c.expect(mmsfilter.MIDReportStartedPlaying)
	for i := range 4 { // the last entry keeps its tail
		h, p := c.datagram()
		assert.Equal(t, mmsfilter.DataHeader{LocationID: uint32(i), PlayIncarnation: 10, AFFlags: afSeq, PacketSize: 808}, h)
		assert.Equal(t, e2.Packets[i], p)
		afSeq++
	}
	eos = c.expect(mmsfilter.MIDReportEndOfStream)
	assert.Zero(t, u32(eos, 0), "hr 0: playlist end")

	c.send(mmsfilter.MIDCloseFile, Fields{}.U32(1, 1))
	c.tcp.SetReadDeadline(time.Now().Add(stepTimeout))
	_, err := c.br.ReadByte()
	assert.ErrorIs(t, err, io.EOF, "the server closes after CloseFile")

	s.Close()
	st := s.Stats()
	assert.Equal(t, Stats{Sessions: 1, DataPackets: 10, TailPackets: 2, HeaderPackets: 10, StreamChanges: 1, PlaylistEnds: 1, Loggings: 1}, st)
}

// header collects n header pieces for inc from UDP.
func (c *rawClient) header(inc uint8, n int) []byte {
	c.t.Helper()
	var out []byte
	for i := range n {
		h, p := c.datagram()
		require.Equal(c.t, inc, h.PlayIncarnation)
		require.EqualValues(c.t, i, h.LocationID)
		want := uint8(headerFlagMore)
		if i == n-1 {
			want = headerFlagLast
		}
		require.Equal(c.t, want, h.AFFlags, "piece %d", i)
		out = append(out, p...)
	}
	return out
}

// TestMMSTPlaylist: data on the control connection; after StreamChange the
// next header follows at once with incarnation 0xFF ([MS-MMSP] §3.2.4), and no
// tail is held (TCP keeps order).
func TestMMSTPlaylist(t *testing.T) {
	e := shortEntry(t, 3)
	cfg := testConfig(Repeat("e", e, 2))
	cfg.TailPackets = 2
	s := startServer(t, cfg)
	c := dial(t, s)
	c.open(mmsfilter.Funnel{Addr: netip.MustParseAddr("192.168.0.129"), Transport: mmsfilter.TransportTCP, Port: 1037}, "pl")

	c.send(mmsfilter.MIDReadBlock, readBlockBody(2))
	c.expect(mmsfilter.MIDReportReadBlock)
	u := c.next()
	require.NotNil(t, u.data)
	assert.Equal(t, mmsfilter.DataHeader{LocationID: 0, PlayIncarnation: 2, AFFlags: headerFlagLast, PacketSize: uint16(8 + len(e.Header))}, *u.data)
	assert.Equal(t, e.Header, u.pay)

	for entry, inc := range []uint32{9, 10} {
		c.send(mmsfilter.MIDStartPlaying, startBody(inc))
		c.expect(mmsfilter.MIDReportStartedPlaying)
		for i := range 3 {
			u := c.next()
			require.NotNil(t, u.data, "entry %d packet %d", entry, i)
			assert.EqualValues(t, i, u.data.LocationID)
			assert.EqualValues(t, inc, u.data.PlayIncarnation)
			assert.Equal(t, e.Packets[i], u.pay)
		}
		eos := c.expect(mmsfilter.MIDReportEndOfStream)
		if entry == 1 {
			assert.Zero(t, u32(eos, 0))
			break
		}
		assert.EqualValues(t, 1, u32(eos, 0))
		c.expect(mmsfilter.MIDReportStreamChange)
		u := c.next()
		require.NotNil(t, u.data, "the next header, at once")
		assert.EqualValues(t, 0xFF, u.data.PlayIncarnation)
		assert.Equal(t, e.Header, u.pay)
	}
	s.Close()
	assert.Zero(t, s.Stats().TailPackets)
	assert.EqualValues(t, 6, s.Stats().DataPackets)
}

// TestTailDelay: the tail goes out after TailDelay when the client stays
// silent.
func TestTailDelay(t *testing.T) {
	e := shortEntry(t, 4)
	cfg := testConfig(Repeat("e", e, 2))
	cfg.TailPackets = 3
	cfg.TailDelay = 20 * time.Millisecond
	s := startServer(t, cfg)
	c := dial(t, s)
	c.open(mmsfilter.Funnel{Addr: netip.MustParseAddr("127.0.0.1"), Transport: mmsfilter.TransportUDP, Port: c.udpPort()}, "pl")
	c.send(mmsfilter.MIDReadBlock, readBlockBody(1))
	c.expect(mmsfilter.MIDReportReadBlock)
	c.header(1, 1)
	c.send(mmsfilter.MIDStartPlaying, startBody(9))
	c.expect(mmsfilter.MIDReportStartedPlaying)
	h, _ := c.datagram()
	assert.EqualValues(t, 0, h.LocationID)
	c.expect(mmsfilter.MIDReportEndOfStream)
	c.expect(mmsfilter.MIDReportStreamChange)
	for i := 1; i < 4; i++ {
		h, _ := c.datagram()
		assert.EqualValues(t, i, h.LocationID, "the tail, with no word from the client")
	}
	s.Close()
	assert.EqualValues(t, 3, s.Stats().TailPackets)
}

// TestTailWaitsForTheClient: a held tail goes out on the client's next
// message, but a Pong (an answer to the server's own Ping) is not the
// client speaking.
func TestTailWaitsForTheClient(t *testing.T) {
	e := shortEntry(t, 4)
	s := startServer(t, testConfig(Repeat("e", e, 2)))
	ln, err := net.ListenTCP("tcp", &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)})
	require.NoError(t, err)
	defer ln.Close()
	client, err := net.DialTCP("tcp", nil, ln.Addr().(*net.TCPAddr))
	require.NoError(t, err)
	defer client.Close()
	go io.Copy(io.Discard, client)
	conn, err := ln.AcceptTCP()
	require.NoError(t, err)
	defer conn.Close()
	udp, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	require.NoError(t, err)
	defer udp.Close()

	ss := newSession(s, conn)
	ss.playlist = Repeat("e", e, 2)
	ss.dataTo = udp.LocalAddr().(*net.UDPAddr).AddrPort()
	ss.held = &tail{entry: 0, from: 2, to: 4, inc: 9}

	done, err := ss.handle(mmsfilter.Message{MID: mmsfilter.MIDPong, Body: Fields{}.U32(0, 0)})
	require.NoError(t, err)
	assert.False(t, done)
	assert.NotNil(t, ss.held, "a Pong does not release the tail")
	assert.Zero(t, s.Stats().TailPackets)

	done, err = ss.handle(mmsfilter.Message{MID: mmsfilter.MIDLogging, Body: Fields{}.U32(1490).Zeros(1486)})
	require.NoError(t, err)
	assert.False(t, done)
	assert.Nil(t, ss.held, "the client spoke: the tail went out")
	assert.EqualValues(t, 2, s.Stats().TailPackets)
	buf := make([]byte, 2048)
	for i := 2; i < 4; i++ {
		udp.SetReadDeadline(time.Now().Add(stepTimeout))
		n, _, err := udp.ReadFromUDPAddrPort(buf)
		require.NoError(t, err)
		h, _, err := mmsfilter.ParseDataHeader(buf[:n])
		require.NoError(t, err)
		assert.EqualValues(t, i, h.LocationID)
		assert.EqualValues(t, 9, h.PlayIncarnation)
	}
}

// TestRefusals: what a server answers to requests it cannot serve.
func TestRefusals(t *testing.T) {
	s := startServer(t, testConfig(Repeat("e", shortEntry(t, 2), 1)))
	tests := []struct {
		name   string
		script func(c *rawClient) mmsfilter.Message
		mid    mmsfilter.MID
		hr     uint32
	}{
		{"unknown file", func(c *rawClient) mmsfilter.Message {
			return c.open(mmsfilter.Funnel{Addr: netip.MustParseAddr("127.0.0.1"), Transport: mmsfilter.TransportUDP, Port: 7000}, "nope")
		}, mmsfilter.MIDReportOpenFile, hrFileNotFound},
		{"open before any funnel", func(c *rawClient) mmsfilter.Message {
			c.send(mmsfilter.MIDOpenFile, openBody("pl"))
			return c.expect(mmsfilter.MIDReportOpenFile)
		}, mmsfilter.MIDReportOpenFile, hrFileNotFound},
		{"malformed funnel", func(c *rawClient) mmsfilter.Message {
			c.send(mmsfilter.MIDConnectFunnel, append(Fields{}.U32(0, 0xFFFFFFFF, 0, 0, 2), 'x', 0, 0, 0))
			return c.expect(mmsfilter.MIDReportDisconnectedFunnel)
		}, mmsfilter.MIDReportDisconnectedFunnel, hrInvalidArg},
		{"ReadBlock before OpenFile", func(c *rawClient) mmsfilter.Message {
			c.send(mmsfilter.MIDReadBlock, readBlockBody(1))
			return c.expect(mmsfilter.MIDReportReadBlock)
		}, mmsfilter.MIDReportReadBlock, hrInvalidArg},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := tt.script(dial(t, s))
			assert.Equal(t, tt.mid, m.MID)
			assert.Equal(t, tt.hr, u32(m, 0))
		})
	}
}

// TestPing: the server pings on its interval and counts the answers.
func TestPing(t *testing.T) {
	cfg := testConfig(Repeat("e", shortEntry(t, 2), 1))
	cfg.PingInterval = 5 * time.Millisecond
	s := startServer(t, cfg)
	c := dial(t, s)
	for range 2 {
		c.expect(mmsfilter.MIDPing)
		c.send(mmsfilter.MIDPong, Fields{}.U32(0, 0))
	}
	// CloseFile comes after the Pongs, so once the server has closed the
	// connection it has counted them.
	c.send(mmsfilter.MIDCloseFile, Fields{}.U32(1, 1))
	c.tcp.SetReadDeadline(time.Now().Add(stepTimeout))
	for {
		if _, err := c.br.ReadByte(); err != nil {
			require.ErrorIs(t, err, io.EOF)
			break
		}
	}
	s.Close()
	st := s.Stats()
	assert.GreaterOrEqual(t, st.Pings, int64(2))
	assert.Equal(t, int64(2), st.Pongs)
}

// TestCloseEndsSessions: Close returns with clients still connected, and
// their connections end.
func TestCloseEndsSessions(t *testing.T) {
	s, err := Listen("127.0.0.1:0", testConfig(Repeat("e", shortEntry(t, 2), 1)), nil)
	require.NoError(t, err)
	c := dial(t, s)
	c.send(mmsfilter.MIDConnect, Fields{}.U32(0, 0x0004000B, 0x0003001C).UTF16Z("x"))
	c.expect(mmsfilter.MIDReportConnectedEX)
	done := make(chan struct{})
	go func() {
		s.Close()
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(stepTimeout):
		t.Fatal("Close did not return")
	}
	c.tcp.SetReadDeadline(time.Now().Add(stepTimeout))
	_, err = c.br.ReadByte()
	assert.Error(t, err)
	assert.Zero(t, s.Stats().Active)
	assert.NoError(t, s.Close(), "a second Close is fine")
}

// TestListenSamePort: TCP and UDP share the port, as a spec server's do.
func TestListenSamePort(t *testing.T) {
	s := startServer(t, testConfig(Repeat("e", shortEntry(t, 2), 1)))
	assert.Equal(t, s.Addr(), s.udp.LocalAddr().(*net.UDPAddr).AddrPort())
}

func TestConfigValidate(t *testing.T) {
	e := shortEntry(t, 2)
	tests := []struct {
		name   string
		edit   func(*Config)
		wantOK bool
	}{
		{"default", func(*Config) {}, true},
		{"empty playlist", func(c *Config) { c.Playlists = map[string]Playlist{"x": nil} }, false},
		{"entry without file", func(c *Config) { c.Playlists = map[string]Playlist{"x": {{Name: "x"}}} }, false},
		{"negative interval", func(c *Config) { c.PacketInterval = -1 }, false},
		{"negative tail", func(c *Config) { c.TailPackets = -1 }, false},
		{"negative tail delay", func(c *Config) { c.TailDelay = -1 }, false},
		{"header piece too large", func(c *Config) { c.HeaderPieceSize = 70000 }, false},
		{"no write timeout", func(c *Config) { c.WriteTimeout = 0 }, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := testConfig(Repeat("e", e, 1))
			tt.edit(&c)
			if tt.wantOK {
				assert.NoError(t, c.Validate())
			} else {
				assert.Error(t, c.Validate())
			}
		})
	}
}

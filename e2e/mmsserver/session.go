package mmsserver

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"time"

	"fwproxy/e2e/asf"
	"fwproxy/mmsfilter"
)

// Offsets of the client fields the server reads, relative to the message
// body (absolute offset − 40; mmsfilter/PROTOCOL.md §2.2).
const (
	openFileNameOff   = 16 // OpenFile fileName (UTF-16LE, NUL-terminated)
	readBlockIncOff   = 40 // ReadBlock playIncarnation
	startLocationOff  = 20 // StartPlaying locationId
	startIncOff       = 28 // StartPlaying playIncarnation
	stopIncOff        = 4  // StopPlaying playIncarnation
	maxFileNameUnits  = 1024
	noLocation        = 0xFFFFFFFF
	headerFlagMore    = 0x04 // AFFlags of a header piece with more to come
	headerFlagLast    = 0x0C // AFFlags of the last (or only) header piece
	inboundQueueDepth = 16
	lengthBias        = 16 // a command is messageLength+16 bytes long
)

// inbound is one client message; the reader goroutine owns nothing it
// sends, the body is a copy.
type inbound struct {
	m mmsfilter.Message
}

// tail is an entry's last packets, held back after its StreamChange.
type tail struct {
	entry    int
	from, to int
	inc      uint8
}

// session is one control connection. Everything below conn is owned by
// run's goroutine; the reader goroutine only reads conn and sends on in.
type session struct {
	srv  *Server
	cfg  *Config
	conn *net.TCPConn
	peer netip.AddrPort
	log  *slog.Logger

	in         chan inbound
	readErr    error         // set by readLoop before it closes in
	quit       chan struct{} // closed when run returns, so readLoop never blocks on in
	readerDone chan struct{} // closed by readLoop when it returns

	seq  uint16 // server-to-client packet counter
	wbuf []byte

	playlist Playlist
	entry    int            // current entry
	dataTo   netip.AddrPort // MMSU: the TCP peer's IP at the funnel port
	tcpData  bool           // MMST: data on the control connection
	funnel   bool

	playing bool
	playInc uint8
	next    int // next packet of the current entry
	stopAt  int // where sending stops before EndOfStream (the tail follows)
	afSeq   uint8

	held      *tail
	tailTimer *time.Timer
	ticker    *time.Ticker
}

func newSession(s *Server, c *net.TCPConn) *session {
	ap := c.RemoteAddr().(*net.TCPAddr).AddrPort()
	peer := netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
	return &session{
		srv: s, cfg: &s.cfg, conn: c, peer: peer,
		log:        s.log.With("peer", peer),
		in:         make(chan inbound, inboundQueueDepth),
		quit:       make(chan struct{}),
		readerDone: make(chan struct{}),
	}
}

// run serves the connection until the client closes it, an error, or the
// server's Close. It closes conn and waits for its reader.
func (ss *session) run() error {
	go ss.readLoop()
	defer func() {
		close(ss.quit)
		ss.conn.Close()
		<-ss.readerDone
		ss.stopTicker()
		if ss.tailTimer != nil {
			ss.tailTimer.Stop()
		}
		if ss.held != nil {
			ss.srv.stats.tailDropped.Add(int64(ss.held.to - ss.held.from))
		}
	}()

	var pingC <-chan time.Time
	if ss.cfg.PingInterval > 0 {
		t := time.NewTicker(ss.cfg.PingInterval)
		defer t.Stop()
		pingC = t.C
	}
	var idleC <-chan time.Time
	var idle *time.Timer
	if ss.cfg.IdleTimeout > 0 {
		idle = time.NewTimer(ss.cfg.IdleTimeout)
		defer idle.Stop()
		idleC = idle.C
	}

	for {
		var dataC, tailC <-chan time.Time
		if ss.ticker != nil {
			dataC = ss.ticker.C
		}
		if ss.tailTimer != nil {
			tailC = ss.tailTimer.C
		}
		var err error
		select {
		case msg, ok := <-ss.in:
			if !ok {
				if errors.Is(ss.readErr, io.EOF) {
					return nil
				}
				return ss.readErr
			}
			if idle != nil {
				idle.Reset(ss.cfg.IdleTimeout)
			}
			var done bool
			done, err = ss.handle(msg.m)
			if done {
				return err
			}
		case <-dataC:
			err = ss.pump()
		case <-tailC:
			ss.tailTimer = nil
			err = ss.flushTail()
		case <-pingC:
			ss.srv.stats.pings.Add(1)
			err = ss.send(ping())
		case <-idleC:
			return errors.New("idle timeout")
		}
		if err != nil {
			return err
		}
	}
}

// readLoop frames the client's commands and passes their messages to run.
func (ss *session) readLoop() {
	defer close(ss.readerDone)
	defer close(ss.in)
	br := bufio.NewReader(ss.conn)
	var prefix [lengthBias]byte
	for {
		if _, err := io.ReadFull(br, prefix[:]); err != nil {
			ss.readErr = err
			return
		}
		if binary.LittleEndian.Uint32(prefix[4:]) != mmsfilter.SessionID {
			ss.readErr = fmt.Errorf("not an MMS command: sessionId %#x", binary.LittleEndian.Uint32(prefix[4:]))
			return
		}
		n := int(binary.LittleEndian.Uint32(prefix[8:])) + lengthBias
		if n < mmsfilter.HeaderLen+8 || n > mmsfilter.MaxCommandLen {
			ss.readErr = fmt.Errorf("command length %d", n)
			return
		}
		pkt := make([]byte, n)
		copy(pkt, prefix[:])
		if _, err := io.ReadFull(br, pkt[lengthBias:]); err != nil {
			ss.readErr = fmt.Errorf("read command: %w", err)
			return
		}
		p, _, err := mmsfilter.ParsePacket(pkt)
		if err != nil {
			ss.readErr = fmt.Errorf("parse command: %w", err)
			return
		}
		for rest := p.Messages; len(rest) > 0; {
			m, k, err := mmsfilter.ParseMessage(rest)
			if err != nil {
				ss.readErr = fmt.Errorf("parse message: %w", err)
				return
			}
			rest = rest[k:]
			select {
			case ss.in <- inbound{m}: // m aliases pkt, which is not reused
			case <-ss.quit:
				ss.readErr = net.ErrClosed
				return
			}
		}
	}
}

// handle acts on one client message; done ends the session.
func (ss *session) handle(m mmsfilter.Message) (done bool, err error) {
	if m.MID != mmsfilter.MIDPong {
		// The client spoke: what was still in flight arrives now.
		if err := ss.flushTail(); err != nil {
			return true, err
		}
	}
	ss.log.Debug("mmsserver: message", "mid", m.MID)
	switch m.MID {
	case mmsfilter.MIDConnect:
		return false, ss.send(connectedEX())
	case mmsfilter.MIDFunnelInfo:
		return false, ss.send(funnelInfo(ss.srv.ids.Add(1)))
	case mmsfilter.MIDConnectFunnel:
		return false, ss.connectFunnel(m)
	case mmsfilter.MIDOpenFile:
		return false, ss.openFile(m)
	case mmsfilter.MIDReadBlock:
		return false, ss.readBlock(m)
	case mmsfilter.MIDStreamSwitch:
		return false, ss.send(reportStreamSwitch())
	case mmsfilter.MIDStartPlaying:
		return false, ss.startPlaying(m)
	case mmsfilter.MIDStopPlaying:
		inc, _ := m.BodyU32(stopIncOff)
		ss.stopTicker()
		ss.playing = false
		return false, ss.send(endOfStream(hrOK, inc))
	case mmsfilter.MIDPong:
		ss.srv.stats.pongs.Add(1)
	case mmsfilter.MIDLogging:
		ss.srv.stats.loggings.Add(1)
	case mmsfilter.MIDCloseFile:
		// The server deletes the session and closes TCP ([MS-MMSP] §3.2.5.17).
		return true, nil
	}
	// CancelReadBlock, StartStriding and the rest need no answer here: the
	// header goes out at once, and the emulator does not stride.
	return false, nil
}

// connectFunnel records where data goes. A spec server ignores the
// funnel's IP and sends to the TCP peer's IP at the funnel's port ([MS-MMSP]
// §3.2.5.5): behind a proxy, to the proxy.
func (ss *session) connectFunnel(m mmsfilter.Message) error {
	f, err := mmsfilter.ParseFunnel(m)
	if err != nil {
		ss.log.Debug("mmsserver: funnel refused", "err", err)
		return ss.send(disconnectedFunnel(hrInvalidArg))
	}
	switch f.Transport {
	case mmsfilter.TransportUDP:
		ss.dataTo = netip.AddrPortFrom(ss.peer.Addr(), f.Port)
		ss.tcpData = false
	default:
		ss.dataTo = netip.AddrPort{}
		ss.tcpData = true
	}
	ss.funnel = true
	ss.log.Debug("mmsserver: funnel", "funnel", f, "data_to", ss.dataTo, "tcp", ss.tcpData)
	return ss.send(connectedFunnel())
}

func (ss *session) openFile(m mmsfilter.Message) error {
	inc, _ := m.BodyU32(0)
	name := fileName(m.Body)
	pl, ok := ss.cfg.Playlists[name]
	if !ok || !ss.funnel {
		ss.log.Debug("mmsserver: open refused", "name", name, "funnel", ss.funnel)
		return ss.send(reportOpenFile(openFileReport{hr: hrFileNotFound, playIncarnation: inc}))
	}
	ss.playlist, ss.entry, ss.playing = pl, 0, false
	f := pl[0].File
	attrs := uint32(attrCanSeek | attrCanStride)
	if len(pl) > 1 {
		attrs = attrPlaylist | attrBroadcast
	}
	return ss.send(reportOpenFile(openFileReport{
		playIncarnation: inc,
		attributes:      attrs,
		duration:        f.Info.Duration.Seconds(),
		packetSize:      f.Info.PacketSize,
		packetCount:     uint64(len(f.Packets)),
		bitRate:         f.Info.MaxBitrate,
		headerSize:      uint32(len(f.Header)),
	}))
}

// fileName decodes OpenFile's UTF-16LE name (ASCII is all a test needs).
func fileName(body []byte) string {
	if len(body) < openFileNameOff {
		return ""
	}
	b := body[openFileNameOff:]
	var out []byte
	for i := 0; i+1 < len(b) && i/2 < maxFileNameUnits; i += 2 {
		u := binary.LittleEndian.Uint16(b[i:])
		if u == 0 {
			break
		}
		if u >= 0x80 {
			u = '?'
		}
		out = append(out, byte(u))
	}
	return string(out)
}

// readBlock answers ReadBlock with ReportReadBlock and then the current
// entry's header (UDP or TCP), marked with the ReadBlock's incarnation.
func (ss *session) readBlock(m mmsfilter.Message) error {
	if ss.playlist == nil {
		return ss.send(message(mmsfilter.MIDReportReadBlock, Fields{}.U32(hrInvalidArg, 0, 0)))
	}
	inc, _ := m.BodyU32(readBlockIncOff)
	if err := ss.send(reportReadBlock(inc)); err != nil {
		return err
	}
	return ss.sendHeader(uint8(inc))
}

func (ss *session) sendHeader(inc uint8) error {
	f := ss.playlist[ss.entry].File
	piece := ss.cfg.HeaderPieceSize
	if piece == 0 {
		piece = int(f.Info.PacketSize)
	}
	h := f.Header
	for i := 0; len(h) > 0; i++ {
		n := min(piece, len(h))
		flags := uint8(headerFlagMore)
		if n == len(h) {
			flags = headerFlagLast
		}
		if err := ss.sendData(mmsfilter.DataHeader{LocationID: uint32(i), PlayIncarnation: inc, AFFlags: flags}, h[:n]); err != nil {
			return err
		}
		ss.srv.stats.header.Add(1)
		h = h[n:]
	}
	return nil
}

// startPlaying starts (or restarts, for a seek) the current entry.
func (ss *session) startPlaying(m mmsfilter.Message) error {
	if ss.playlist == nil {
		return ss.send(message(mmsfilter.MIDReportStartedPlaying, Fields{}.U32(hrInvalidArg, 0, 0, 0).Zeros(12)))
	}
	inc, _ := m.BodyU32(startIncOff)
	loc, _ := m.BodyU32(startLocationOff)
	if err := ss.send(startedPlaying(inc)); err != nil {
		return err
	}
	f := ss.playlist[ss.entry].File
	ss.playInc = uint8(inc)
	ss.next = 0
	if loc != noLocation && loc != 0 && int(loc) < len(f.Packets) {
		ss.next = int(loc)
	}
	ss.stopAt = len(f.Packets)
	if !ss.tcpData && ss.entry+1 < len(ss.playlist) {
		ss.stopAt -= min(ss.cfg.TailPackets, len(f.Packets)-1)
	}
	ss.stopAt = max(ss.stopAt, ss.next+1)
	ss.playing = true
	ss.log.Debug("mmsserver: playing", "entry", ss.entry, "inc", inc, "from", ss.next, "packets", len(f.Packets))
	if ss.cfg.PacketInterval == 0 {
		for ss.playing {
			if err := ss.pump(); err != nil {
				return err
			}
		}
		return nil
	}
	ss.stopTicker()
	ss.ticker = time.NewTicker(ss.cfg.PacketInterval)
	return ss.pump()
}

// pump sends the current entry's next packet, and ends the entry after
// its last regular one.
func (ss *session) pump() error {
	if !ss.playing {
		return nil
	}
	f := ss.playlist[ss.entry].File
	if ss.next < ss.stopAt {
		if err := ss.sendPacket(f, ss.next, ss.playInc); err != nil {
			return err
		}
		ss.next++
	}
	if ss.next < ss.stopAt {
		return nil
	}
	return ss.endEntry()
}

// sendPacket sends data packet i of f. LocationId is the packet's number
// in the entry, so that a player can name every packet it did not get;
// AFFlags is the session's 8-bit packet sequence ([MS-MMSP] §2.2.2).
func (ss *session) sendPacket(f *asf.File, i int, inc uint8) error {
	h := mmsfilter.DataHeader{LocationID: uint32(i), PlayIncarnation: inc, AFFlags: ss.afSeq}
	ss.afSeq++
	if err := ss.sendData(h, f.Packets[i]); err != nil {
		return err
	}
	ss.srv.stats.data.Add(1)
	return nil
}

// endEntry ends the current entry: EndOfStream hr 1 and StreamChange
// (holding back the tail), or EndOfStream hr 0 after the last entry.
func (ss *session) endEntry() error {
	ss.playing = false
	ss.stopTicker()
	f := ss.playlist[ss.entry].File
	if ss.entry+1 == len(ss.playlist) {
		ss.srv.stats.ends.Add(1)
		ss.log.Debug("mmsserver: playlist end")
		return ss.send(endOfStream(hrOK, uint32(ss.playInc)))
	}
	if ss.stopAt < len(f.Packets) {
		ss.held = &tail{entry: ss.entry, from: ss.stopAt, to: len(f.Packets), inc: ss.playInc}
		if ss.cfg.TailDelay > 0 {
			ss.tailTimer = time.NewTimer(ss.cfg.TailDelay)
		}
	}
	if err := ss.send(endOfStream(hrEntryEnd, uint32(ss.playInc))); err != nil {
		return err
	}
	next := ss.playlist[ss.entry+1].File
	if err := ss.send(streamChange(next.Info.PacketSize, uint32(len(next.Header)), next.Info.MaxBitrate)); err != nil {
		return err
	}
	ss.srv.stats.changes.Add(1)
	ss.entry++
	ss.log.Debug("mmsserver: stream change", "entry", ss.entry, "tail_held", ss.held != nil)
	if ss.tcpData {
		// MMST: the next header follows at once ([MS-MMSP] §3.2.4).
		return ss.sendHeader(headerIncarnation)
	}
	return nil
}

// flushTail sends the held-back tail, if any.
func (ss *session) flushTail() error {
	t := ss.held
	if t == nil {
		return nil
	}
	ss.held = nil
	if ss.tailTimer != nil {
		ss.tailTimer.Stop()
		ss.tailTimer = nil
	}
	f := ss.playlist[t.entry].File
	for i := t.from; i < t.to; i++ {
		if err := ss.sendPacket(f, i, t.inc); err != nil {
			return err
		}
		ss.srv.stats.tail.Add(1)
	}
	return nil
}

func (ss *session) stopTicker() {
	if ss.ticker != nil {
		ss.ticker.Stop()
		ss.ticker = nil
	}
}

// send writes one command packet carrying msgs.
func (ss *session) send(msgs ...mmsfilter.Message) error {
	ss.wbuf = mmsfilter.AppendCommand(ss.wbuf[:0], ss.seq, msgs...)
	ss.seq++
	return ss.write(ss.wbuf)
}

func (ss *session) write(b []byte) error {
	ss.conn.SetWriteDeadline(time.Now().Add(ss.cfg.WriteTimeout))
	if _, err := ss.conn.Write(b); err != nil {
		return fmt.Errorf("write: %w", err)
	}
	return nil
}

// sendData sends one Data packet: over UDP to the funnel's port at the TCP
// peer's IP, or on the control connection for MMST. A UDP send error (the
// player's port is closed while it binds again) is counted, not fatal:
// that datagram is lost, as on a real network.
func (ss *session) sendData(h mmsfilter.DataHeader, payload []byte) error {
	pkt, err := mmsfilter.AppendDataPacket(ss.wbuf[:0], h, payload)
	if err != nil {
		return err
	}
	ss.wbuf = pkt[:0]
	if ss.tcpData {
		return ss.write(pkt)
	}
	if _, err := ss.srv.udp.WriteToUDPAddrPort(pkt, ss.dataTo); err != nil {
		ss.srv.stats.sendErrors.Add(1)
	}
	return nil
}

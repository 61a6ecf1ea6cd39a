package mmsplayer

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"sync"
	"time"

	"fwproxy/e2e/asf"
	"fwproxy/internal/socksclient"
	"fwproxy/mmsfilter"
)

// Offsets of the server fields the player reads, relative to the message
// body (absolute offset − 40; mmsfilter/PROTOCOL.md §2.2).
const (
	ofPacketSizeOff  = 52 // ReportOpenFile filePacketSize
	ofBitRateOff     = 64 // ReportOpenFile fileBitRate
	ofHeaderSizeOff  = 68 // ReportOpenFile fileHeaderSize
	scHeaderSizeOff  = 12 // ReportStreamChange cbHeaderSize
	scBitRateOff     = 16 // ReportStreamChange dwBitRate
	hrEntryEnd       = 1  // ReportEndOfStream: a StreamChange follows
	maxHeaderTimeout = time.Minute
)

// errTimeout is what a bounded wait returns; it is a net.Error timeout.
var errTimeout = timeoutError{}

type timeoutError struct{}

func (timeoutError) Error() string   { return "timed out" }
func (timeoutError) Timeout() bool   { return true }
func (timeoutError) Temporary() bool { return true }

// failure is an error with its kind, for the report.
type failure struct {
	kind FailureKind
	err  error
}

func (f *failure) Error() string { return f.kind.String() + ": " + f.err.Error() }
func (f *failure) Unwrap() error { return f.err }

func fail(kind FailureKind, err error) error {
	var f *failure
	if errors.As(err, &f) {
		return err
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() || errors.Is(err, os.ErrDeadlineExceeded) {
		kind = FailTimeout
	}
	return &failure{kind: kind, err: err}
}

// binding is the player's UDP port as it holds it now: the socket, and in
// firewall-client mode the association that mirrors its bind.
type binding struct {
	sock   *net.UDPConn
	reader *sockReader
	assoc  net.Conn       // firewall-client mode: the association's TCP
	relay  netip.AddrPort // where the association's datagrams come from
}

// player is one session; all its fields belong to Play's goroutine.
type player struct {
	cfg   Config
	log   *slog.Logger
	socks *socksclient.Dialer
	t     *tally
	ctl   *control
	cur   *binding
	port  uint16
	owned bool // port taken from cfg.Ports

	headerInc, playInc uint8
	entry              int
	step               Step
	retries            int
	failures           []Failure
	pongs              int
}

// Play runs one player session to the end of the playlist or its first
// failure and reports what it received, entry by entry. Every wait is
// bounded by cfg's timers and by ctx; every socket and connection it
// opened is closed when it returns.
func Play(ctx context.Context, cfg Config) *Report {
	start := time.Now()
	r := &Report{Mode: cfg.Mode}
	if err := cfg.Validate(); err != nil {
		r.Err = err
		return r
	}
	p := &player{
		cfg:       cfg,
		log:       cfg.Logger,
		socks:     socksDialer(cfg),
		t:         newTally(cfg.Verify),
		port:      cfg.Port,
		headerInc: lastHeaderInc,
		playInc:   lastPlayInc,
	}
	if p.log == nil {
		p.log = slog.New(slog.DiscardHandler)
	}
	err := p.run(ctx)
	p.shutdown(ctx)
	if err != nil {
		// Errors not classified where they happened (a failed write on
		// the control connection) are protocol failures, or timeouts.
		var f *failure
		errors.As(fail(FailProtocol, err), &f)
		p.failures = append(p.failures, Failure{Entry: p.entry, Kind: f.kind, Err: f.err})
		r.Err = err
	}
	r.Port = p.port
	if cfg.Mode == ModeTCP {
		r.Port = 0
	}
	r.Failures = p.failures
	r.Pongs = p.pongs
	p.t.fill(r)
	r.Duration = time.Since(start)
	return r
}

// run is the session: connect, open the file, play entry after entry to
// the end of the playlist, and close.
func (p *player) run(ctx context.Context) error {
	if err := p.connect(ctx); err != nil {
		return err
	}
	headerSize, bitRate, err := p.openFile(ctx)
	if err != nil {
		return err
	}
	readBlock := true
	for {
		change, err := p.playEntry(ctx, headerSize, bitRate, readBlock)
		if err != nil {
			return err
		}
		if change == nil {
			break // EndOfStream hr 0: the playlist is over
		}
		headerSize, _ = change.BodyU32(scHeaderSizeOff)
		bitRate, _ = change.BodyU32(scBitRateOff)
		if err := p.transition(ctx); err != nil {
			return err
		}
		// MMSU asks for the next header; an MMST server sends it at once
		// ([MS-MMSP] §3.2.4).
		readBlock = p.cfg.Mode != ModeTCP
	}

	if err := p.ctl.send(loggingMsg(p.transportName())); err != nil {
		return err
	}
	p.awaitMissing(ctx)
	return p.ctl.send(closeFileMsg())
}

// connect binds the data port (UDP modes), opens the control connection
// and sets up the data funnel with the server.
func (p *player) connect(ctx context.Context) error {
	if p.cfg.Mode != ModeTCP {
		b, err := p.openBinding(ctx, true)
		if err != nil {
			return err
		}
		p.cur = b
	}
	if err := p.dialControl(ctx); err != nil {
		return err
	}

	if err := p.ctl.send(connectMsg(p.cfg.Server)); err != nil {
		return err
	}
	if _, err := p.expect(ctx, mmsfilter.MIDReportConnectedEX); err != nil {
		return err
	}
	if p.cfg.Mode != ModeTCP {
		if err := p.ctl.send(funnelInfoMsg()); err != nil {
			return err
		}
		if _, err := p.expect(ctx, mmsfilter.MIDReportFunnelInfo); err != nil {
			return err
		}
	}
	funnel := mmsfilter.Funnel{Addr: p.cfg.LocalIP, Transport: mmsfilter.TransportUDP, Port: p.port}
	if p.cfg.Mode == ModeTCP {
		funnel = mmsfilter.Funnel{Addr: p.cfg.LocalIP, Transport: mmsfilter.TransportTCP, Port: fakeTCPFunnelPort}
	}
	if err := p.ctl.send(connectFunnelMsg(funnel)); err != nil {
		return err
	}
	m, err := p.expect(ctx, mmsfilter.MIDReportConnectedFunnel, mmsfilter.MIDReportDisconnectedFunnel)
	if err != nil {
		return err
	}
	if m.MID == mmsfilter.MIDReportDisconnectedFunnel {
		hr, _ := m.HR()
		return fail(FailProtocol, fmt.Errorf("server refused the funnel (hr %#x)", hr))
	}
	return nil
}

// openFile opens the playlist and returns its first entry's header size
// and bit rate.
func (p *player) openFile(ctx context.Context) (headerSize, bitRate uint32, err error) {
	if err := p.ctl.send(openFileMsg(p.cfg.Path, p.nextPlayInc())); err != nil {
		return 0, 0, err
	}
	m, err := p.expect(ctx, mmsfilter.MIDReportOpenFile)
	if err != nil {
		return 0, 0, err
	}
	if hr, ok := m.HR(); !ok || hr != 0 {
		return 0, 0, fail(FailProtocol, fmt.Errorf("open %q: hr %#x", p.cfg.Path, hr))
	}
	headerSize, _ = m.BodyU32(ofHeaderSizeOff)
	bitRate, _ = m.BodyU32(ofBitRateOff)
	if _, ok := m.BodyU32(ofPacketSizeOff); !ok {
		return 0, 0, fail(FailProtocol, errors.New("ReportOpenFile too short"))
	}
	return headerSize, bitRate, nil
}

// playEntry reads the current entry's header, starts it and plays it to
// its end. It returns the server's StreamChange message, or nil at the end
// of the playlist.
func (p *player) playEntry(ctx context.Context, headerSize, bitRate uint32, readBlock bool) (*mmsfilter.Message, error) {
	info, err := p.header(ctx, int(headerSize), bitRate, readBlock)
	if err != nil {
		return nil, err
	}
	if info.PacketCount == 0 || info.PacketCount > maxEntryPackets {
		return nil, fail(FailProtocol, fmt.Errorf("entry %d: header announces %d packets", p.entry, info.PacketCount))
	}
	if err := p.ctl.send(streamSwitchMsg(info.StreamIDs)); err != nil {
		return nil, err
	}
	if _, err := p.expect(ctx, mmsfilter.MIDReportStreamSwitch); err != nil {
		return nil, err
	}
	inc := p.nextPlayInc()
	p.t.startEntry(p.entry, inc, int(info.PacketCount), p.step, p.retries)
	if err := p.ctl.send(startPlayingMsg(inc)); err != nil {
		return nil, err
	}
	if m, err := p.expect(ctx, mmsfilter.MIDReportStartedPlaying); err != nil {
		return nil, err
	} else if hr, _ := m.HR(); hr != 0 {
		return nil, fail(FailProtocol, fmt.Errorf("StartPlaying refused (hr %#x)", hr))
	}
	p.log.Debug("mmsplayer: playing", "entry", p.entry, "inc", inc, "packets", info.PacketCount)
	return p.play(ctx, info.Duration)
}

func (p *player) transportName() string {
	if p.cfg.Mode == ModeTCP {
		return "TCP"
	}
	return "UDP"
}

func (p *player) nextPlayInc() uint8 {
	if p.playInc >= lastPlayInc {
		p.playInc = firstPlayInc
	} else {
		p.playInc++
	}
	return p.playInc
}

func (p *player) nextHeaderInc() uint8 {
	if p.headerInc >= lastHeaderInc {
		p.headerInc = firstHeaderInc
	} else {
		p.headerInc++
	}
	p.t.forgetHeader(p.headerInc)
	return p.headerInc
}

// dialControl opens the control connection, through SOCKS CONNECT when a
// proxy is set.
func (p *player) dialControl(ctx context.Context) error {
	var (
		c   net.Conn
		err error
	)
	if p.cfg.Proxy != "" {
		c, err = p.socks.Connect(ctx, socksclient.AddrFromAddrPort(p.cfg.Server))
	} else {
		dctx, cancel := context.WithTimeout(ctx, p.cfg.StepTimeout)
		d := net.Dialer{LocalAddr: net.TCPAddrFromAddrPort(netip.AddrPortFrom(p.cfg.LocalIP, 0))}
		err = p.cfg.open(func() (err error) {
			c, err = d.DialContext(dctx, "tcp", p.cfg.Server.String())
			return err
		})
		cancel()
	}
	if err != nil {
		return fail(FailConnect, err)
	}
	p.ctl = startControl(c, p.t, p.cfg.StepTimeout)
	return nil
}

// wait returns the server's next message, or changed when the tally moved
// (a header piece or an entry's last packet arrived). It answers pings on
// the way and gives up after d.
func (p *player) wait(ctx context.Context, d time.Duration) (m mmsfilter.Message, changed bool, err error) {
	timer := time.NewTimer(d)
	defer timer.Stop()
	for {
		select {
		case m, ok := <-p.ctl.msgs:
			if !ok {
				return m, false, fail(FailProtocol, p.ctl.readErr())
			}
			if m.MID == mmsfilter.MIDPing {
				p.pongs++
				if err := p.ctl.send(pongMsg()); err != nil {
					return m, false, err
				}
				continue
			}
			return m, false, nil
		case <-p.t.changed:
			return m, true, nil
		case <-timer.C:
			return m, false, fail(FailTimeout, errTimeout)
		case <-ctx.Done():
			return m, false, fail(FailTimeout, ctx.Err())
		}
	}
}

// expect waits for one of mids; other messages are ignored (a late
// ReportReadBlock, for one), except an EndOfStream with an error.
func (p *player) expect(ctx context.Context, mids ...mmsfilter.MID) (mmsfilter.Message, error) {
	deadline := time.Now().Add(p.cfg.StepTimeout)
	for {
		m, changed, err := p.wait(ctx, time.Until(deadline))
		if err != nil {
			return m, fmt.Errorf("waiting for %v: %w", mids, err)
		}
		if changed {
			continue
		}
		for _, want := range mids {
			if m.MID == want {
				return m, nil
			}
		}
		if m.MID == mmsfilter.MIDReportEndOfStream {
			hr, _ := m.HR()
			return m, fail(FailProtocol, fmt.Errorf("EndOfStream (hr %#x) while waiting for %v", hr, mids))
		}
		p.log.Debug("mmsplayer: ignored", "mid", m.MID, "waiting_for", mids)
	}
}

// header gets the current entry's header: with ReadBlock (MMSU, and the
// first MMST entry) or as the server sends it after StreamChange (MMST).
// The Header timer is HeaderTimeout plus the header's time at the bit
// rate; when it fires the player cancels and asks again ([MS-MMSP] §3.1.6).
func (p *player) header(ctx context.Context, want int, bitRate uint32, readBlock bool) (asf.Info, error) {
	p.retries = 0
	timeout := p.cfg.HeaderTimeout
	if bitRate > 0 {
		timeout += time.Duration(float64(want) * 8 / float64(bitRate) * float64(time.Second))
	}
	timeout = min(timeout, maxHeaderTimeout)
	inc := uint8(tcpHeaderInc)
	if readBlock {
		inc = p.nextHeaderInc()
		if err := p.ctl.send(readBlockMsg(inc)); err != nil {
			return asf.Info{}, err
		}
	}
	deadline := time.Now().Add(timeout)
	for {
		if h, ok := p.t.header(inc, want); ok {
			info, err := asf.ParseHeader(h)
			if err != nil {
				return asf.Info{}, fail(FailProtocol, fmt.Errorf("entry %d header: %w", p.entry, err))
			}
			return info, nil
		}
		m, _, err := p.wait(ctx, time.Until(deadline))
		var f *failure
		if errors.As(err, &f) && f.kind == FailTimeout && ctx.Err() == nil {
			if p.retries == p.cfg.HeaderRetries {
				return asf.Info{}, fail(FailHeader, fmt.Errorf("entry %d: no header after %d retries", p.entry, p.retries))
			}
			p.retries++
			p.log.Debug("mmsplayer: header timer", "entry", p.entry, "retry", p.retries)
			if err := p.ctl.send(cancelReadBlockMsg(inc)); err != nil {
				return asf.Info{}, err
			}
			inc = p.nextHeaderInc()
			if err := p.ctl.send(readBlockMsg(inc)); err != nil {
				return asf.Info{}, err
			}
			deadline = time.Now().Add(timeout)
			continue
		}
		if err != nil {
			return asf.Info{}, err
		}
		if m.MID == mmsfilter.MIDReportReadBlock {
			if hr, _ := m.HR(); hr != 0 {
				return asf.Info{}, fail(FailProtocol, fmt.Errorf("ReadBlock refused (hr %#x)", hr))
			}
		}
	}
}

// play follows the entry until the server ends it: it returns the
// StreamChange message at a playlist transition, nil at the playlist's
// end. A quiet control connection is normal while data flows, so the wait
// is bounded by the entry's duration plus StepTimeout.
func (p *player) play(ctx context.Context, d time.Duration) (*mmsfilter.Message, error) {
	limit := p.cfg.StepTimeout + 2*d
	for {
		m, changed, err := p.wait(ctx, limit)
		if err != nil {
			return nil, fmt.Errorf("entry %d: %w", p.entry, err)
		}
		if changed {
			continue
		}
		switch m.MID {
		case mmsfilter.MIDReportEndOfStream:
			hr, _ := m.HR()
			switch hr {
			case hrEntryEnd:
				p.log.Debug("mmsplayer: entry end", "entry", p.entry)
			case 0:
				return nil, nil
			default:
				return nil, fail(FailProtocol, fmt.Errorf("entry %d: EndOfStream hr %#x", p.entry, hr))
			}
		case mmsfilter.MIDReportStreamChange:
			return &m, nil
		}
	}
}

// transition is the player's side of a server-side playlist change: it
// closes its UDP binding and binds the same port again as the plan says,
// and sends Logging ([MS-MMSP] §3.1.5.18). The next entry's report records the
// step.
func (p *player) transition(ctx context.Context) error {
	step := Step{Order: OrderKeep}
	if p.cfg.Plan != nil && p.cfg.Mode != ModeTCP {
		step = p.cfg.Plan(p.entry)
	}
	if p.cfg.Mode == ModeAnnounced && step.Order > OrderCloseFirst {
		// No association to race: the racing orders are a plain rebind.
		step.Order = OrderCloseFirst
	}
	if step.Order > OrderCloseFirst && !overlapSupported {
		return fail(FailBind, fmt.Errorf("order %v: %w", step.Order, errors.ErrUnsupported))
	}
	p.entry++
	p.step = step
	p.log.Debug("mmsplayer: transition", "entry", p.entry, "order", step.Order, "gap", step.Gap)
	logging := func() error { return p.ctl.send(loggingMsg(p.transportName())) }

	switch step.Order {
	case OrderKeep:
		return logging()

	case OrderCloseFirst:
		old := p.cur
		p.cur = nil
		if err := p.closeBinding(ctx, old); err != nil {
			return err
		}
		if err := logging(); err != nil {
			return err
		}
		if err := pause(ctx, step.Gap); err != nil {
			return err
		}
		b, err := p.openBinding(ctx, false)
		if err != nil {
			return err
		}
		p.cur = b
		return nil

	default: // OrderNewFirst, OrderConcurrent
		old := p.cur
		b, err := p.bindSocket(ctx)
		if err != nil {
			return err
		}
		p.cur = b
		if err := pause(ctx, step.Gap); err != nil {
			return err
		}
		if step.Order == OrderNewFirst {
			if err := p.associate(ctx, b); err != nil {
				p.closeBinding(ctx, old)
				return err
			}
			if err := p.closeBinding(ctx, old); err != nil {
				return err
			}
		} else {
			var (
				wg         sync.WaitGroup
				aErr, cErr error
			)
			wg.Add(2)
			go func() { defer wg.Done(); aErr = p.associate(ctx, b) }()
			go func() { defer wg.Done(); cErr = p.closeAssociation(old) }()
			wg.Wait()
			old.reader.stop()
			if aErr != nil {
				return aErr
			}
			if cErr != nil {
				return cErr
			}
		}
		return logging()
	}
}

// pause waits d: the gap a plan asks for, a model of the player's own
// timing, not a synchronisation.
func pause(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return fail(FailTimeout, ctx.Err())
	}
}

// openBinding binds the UDP port and, in firewall-client mode, mirrors the
// bind with a UDP ASSOCIATE. first picks the port.
func (p *player) openBinding(ctx context.Context, first bool) (*binding, error) {
	var b *binding
	if first {
		sock, err := p.bindFirst(ctx)
		if err != nil {
			return nil, fail(FailBind, err)
		}
		b = &binding{sock: sock, reader: startReader(sock, p.cfg.Mode == ModeFirewall, p.t)}
	} else {
		var err error
		if b, err = p.bindSocket(ctx); err != nil {
			return nil, err
		}
	}
	if p.cfg.Mode != ModeFirewall {
		return b, nil
	}
	if err := p.associate(ctx, b); err != nil {
		b.reader.stop()
		return nil, err
	}
	return b, nil
}

// bindFirst binds the player's port for the first time: cfg.Port, one
// from cfg.Ports, or one the system picks. It binds without SO_REUSEADDR
// (so that it never shares a port someone else holds) and sets the option
// afterwards, so that a racing rebind may overlap with this socket.
func (p *player) bindFirst(ctx context.Context) (*net.UDPConn, error) {
	var sock *net.UDPConn
	bind := func(port uint16) error {
		return p.cfg.open(func() (err error) {
			sock, err = listenUDP(ctx, netip.AddrPortFrom(p.cfg.LocalIP, port), false)
			return err
		})
	}
	switch {
	case p.port != 0:
		if err := bind(p.port); err != nil {
			return nil, err
		}
	case p.cfg.Ports != nil:
		port, err := p.cfg.Ports.take(bind)
		if err != nil {
			return nil, err
		}
		p.port, p.owned = port, true
	default:
		if err := bind(0); err != nil {
			return nil, err
		}
		p.port = sock.LocalAddr().(*net.UDPAddr).AddrPort().Port()
	}
	if p.cfg.Mode == ModeFirewall && overlapSupported {
		if err := allowReuse(sock); err != nil {
			sock.Close()
			return nil, err
		}
	}
	return sock, nil
}

// bindSocket binds the player's port again and starts reading it.
func (p *player) bindSocket(ctx context.Context) (*binding, error) {
	reuse := p.cfg.Mode == ModeFirewall && overlapSupported
	var sock *net.UDPConn
	err := p.cfg.open(func() (err error) {
		sock, err = listenUDP(ctx, netip.AddrPortFrom(p.cfg.LocalIP, p.port), reuse)
		return err
	})
	if err != nil {
		return nil, fail(FailBind, fmt.Errorf("bind %v:%d again: %w", p.cfg.LocalIP, p.port, err))
	}
	return &binding{sock: sock, reader: startReader(sock, p.cfg.Mode == ModeFirewall, p.t)}, nil
}

// associate mirrors b's bind on the proxy: UDP ASSOCIATE with DST.PORT the
// bound port. The socket is then tied to its relay, so that while an old
// and a new socket share the port each gets its own association's data.
func (p *player) associate(ctx context.Context, b *binding) error {
	c, bnd, err := p.socks.Request(ctx, socksclient.CmdUDPAssociate, socksclient.AddrFromAddrPort(netip.AddrPortFrom(p.cfg.LocalIP, p.port)))
	if err != nil {
		return fail(FailAssociate, err)
	}
	// BND.ADDR 0.0.0.0: the relay is on the proxy's own address.
	relay, ok := socksclient.RelayAddr(bnd, c.RemoteAddr().String())
	if !ok {
		c.Close()
		return fail(FailAssociate, fmt.Errorf("no relay address in the reply %v", bnd))
	}
	b.assoc, b.relay = c, relay
	if overlapSupported {
		if err := connectUDP(b.sock, relay); err != nil {
			return fail(FailAssociate, err)
		}
	}
	p.log.Debug("mmsplayer: associated", "port", p.port, "relay", relay)
	return nil
}

// closeAssociation is the careful firewall client's closesocket():
// half-close the association's TCP and wait for the proxy to close its
// side, which it does only after it released the lease. From then on the
// proxy buffers (or, handed over, sends elsewhere): nothing more comes to
// the old socket.
func (p *player) closeAssociation(b *binding) error {
	if b.assoc == nil {
		return nil
	}
	defer b.assoc.Close()
	if cw, ok := b.assoc.(interface{ CloseWrite() error }); ok {
		if err := cw.CloseWrite(); err != nil {
			return fail(FailAssociate, fmt.Errorf("close association: %w", err))
		}
	}
	b.assoc.SetReadDeadline(time.Now().Add(p.cfg.StepTimeout))
	if _, err := io.Copy(io.Discard, b.assoc); err != nil {
		return fail(FailAssociate, fmt.Errorf("wait for the proxy to close the association: %w", err))
	}
	return nil
}

// closeBinding closes the association (if any), then reads what the
// socket holds and closes it.
func (p *player) closeBinding(_ context.Context, b *binding) error {
	if b == nil {
		return nil
	}
	err := p.closeAssociation(b)
	b.reader.stop()
	return err
}

// awaitMissing waits, up to LossWait, for the packets not yet received.
func (p *player) awaitMissing(ctx context.Context) {
	deadline := time.Now().Add(p.cfg.LossWait)
	for !p.t.complete() {
		left := time.Until(deadline)
		if left <= 0 {
			return
		}
		if _, _, err := p.wait(ctx, left); err != nil {
			return
		}
	}
}

// shutdown closes whatever the session still holds: the control
// connection, then the binding (carefully, so the proxy's last datagrams
// are read), and gives the port back.
func (p *player) shutdown(ctx context.Context) {
	if p.ctl != nil {
		p.ctl.close()
	}
	if p.cur != nil {
		if err := p.closeBinding(ctx, p.cur); err != nil {
			p.log.Debug("mmsplayer: close", "err", err)
		}
		p.cur = nil
	}
	if p.owned {
		p.cfg.Ports.put(p.port)
	}
}

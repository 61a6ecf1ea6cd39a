// Package rtspplayer is the RTSP playlist player of fwproxy's end-to-end
// tests and demo: it plays a list of items from e2e/rtspserver's seq
// paths, one RTSP session per item, always on the same pair of UDP
// ports, and reports per item what it received and every failure.
//
// Per item it binds its RTP port P and RTCP port P+1, opens the RTSP
// connection through the proxy (SOCKS CONNECT), and sends DESCRIBE,
// SETUP (client_port=P-P+1), PLAY; it reads the item's known sequence,
// then sends TEARDOWN, closes the connection and both sockets, and binds
// them again for the next item. Two modes, as the proxy has them:
//   - firewall client: each UDP bind mirrored as a UDP ASSOCIATE with
//     DST.PORT P (P+1), data through the associations, and a receiver
//     report to the server's RTCP port through the RTCP one;
//   - announced: a plain SOCKS client that tunnels only TCP; the server's
//     data reaches its sockets unwrapped.
//
// The requests are built and read with gortsplib's pkg/base and
// pkg/headers (its Client cannot be a firewall client: it needs its own
// *net.UDPConn per port and drops RTP whose source is not the RTSP peer).
// It loses nothing by its own doing: an item's data all comes after its
// PLAY, and it closes its sockets only once the whole sequence is in (or
// the wait for it has ended).
package rtspplayer

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/bluenviron/gortsplib/v4/pkg/base"
	"github.com/bluenviron/gortsplib/v4/pkg/headers"
	"github.com/pion/rtcp"
	"github.com/pion/rtp"

	"fwproxy/e2e/rtspserver"
	"fwproxy/internal/socksclient"
)

// Mode is how the player gets its data.
type Mode uint8

const (
	// ModeFirewall holds a UDP association for each of its ports.
	ModeFirewall Mode = iota
	// ModeAnnounced tunnels only TCP and announces its own ports.
	ModeAnnounced
)

func (m Mode) String() string {
	if m == ModeFirewall {
		return "firewall-client"
	}
	return "announced"
}

// Config describes one player.
type Config struct {
	// Server is the RTSP server's address as the proxy connects to it.
	Server netip.AddrPort
	// Tag names the player in the server's seq paths: item i plays
	// seq/<Tag>-<i>.
	Tag string
	// Proxy is the SOCKS5 server (host:port); "" plays directly (announced
	// mode only).
	Proxy string
	Mode  Mode
	// LocalIP is where the sockets bind and the connections come from.
	LocalIP netip.Addr
	// Port is the RTP port, even; RTCP is Port+1.
	Port uint16
	// Items is the playlist's length, Packets each item's sequence
	// length (rtspserver.Config.Packets).
	Items, Packets int
	// StepTimeout bounds each exchange. Must be > 0.
	StepTimeout time.Duration
	// LossWait bounds each item's wait for its whole sequence after PLAY;
	// what has not come by then is lost. 0 is StepTimeout.
	LossWait time.Duration
	// Sockets, when set, runs each call that opens a socket (a network
	// namespace's Do).
	Sockets func(open func() error) error
	// KeepConnection plays every odd item on the previous item's control
	// connection (after its TEARDOWN) instead of a new one; the UDP
	// sockets and associations are closed and bound again all the same.
	KeepConnection bool
}

// FailKind is what failed.
type FailKind string

// The failures a report counts.
const (
	FailBind      FailKind = "bind"
	FailAssociate FailKind = "associate"
	FailConnect   FailKind = "connect"
	FailSetup     FailKind = "setup"
	FailRequest   FailKind = "request"
	FailRead      FailKind = "read"
)

// Failure is one failed step.
type Failure struct {
	Item int
	Kind FailKind
	Err  error
}

func (f Failure) String() string { return fmt.Sprintf("item %d: %s: %v", f.Item, f.Kind, f.Err) }

// Item is what one playlist item brought.
type Item struct {
	Index int
	// Received counts distinct sequence packets; Lost lists the missing
	// ones; Duplicates, Corrupt (payload not the server's) and Stray (not
	// RTP of this sequence, or from another host than the server) count
	// the rest.
	Received, Duplicates, Corrupt, Stray int
	Lost                                 []int
	// ReplyPorts is client_port in the SETUP reply; ServerPorts is
	// server_port.
	ReplyPorts, ServerPorts [2]int
	// SameConnection: the item was played on the previous item's control
	// connection.
	SameConnection bool
}

// Report is a player's whole run.
type Report struct {
	Mode     Mode
	Port     uint16
	Items    []Item
	Failures []Failure
	// Err is the failure that ended the run early, if one did.
	Err error
}

// Count is how many failures of kind the run had.
func (r *Report) Count(kind FailKind) int {
	n := 0
	for _, f := range r.Failures {
		if f.Kind == kind {
			n++
		}
	}
	return n
}

// Lost is how many packets the run missed in all.
func (r *Report) Lost() int {
	n := 0
	for _, it := range r.Items {
		n += len(it.Lost)
	}
	return n
}

// Received is how many packets the run got in all.
func (r *Report) Received() int {
	n := 0
	for _, it := range r.Items {
		n += it.Received
	}
	return n
}

// Play runs the playlist; it stops at the first failure (recorded) or
// when ctx ends.
func Play(ctx context.Context, cfg Config) *Report {
	r := &Report{Mode: cfg.Mode, Port: cfg.Port}
	if err := cfg.validate(); err != nil {
		r.Err = err
		return r
	}
	var ctl *control
	defer func() {
		if ctl != nil {
			ctl.conn.Close()
		}
	}()
	for i := range cfg.Items {
		if ctl != nil && !(cfg.KeepConnection && i%2 == 1) {
			ctl.conn.Close()
			ctl = nil
		}
		it, f := playItem(ctx, cfg, i, &ctl)
		r.Items = append(r.Items, it)
		if f != nil {
			r.Failures = append(r.Failures, *f)
			r.Err = f.Err
			return r
		}
	}
	return r
}

func (c Config) validate() error {
	var errs []error
	if !c.Server.IsValid() || !c.LocalIP.IsValid() {
		errs = append(errs, errors.New("Server and LocalIP must be set"))
	}
	if c.Port == 0 || c.Port%2 != 0 || c.Port == 65535 {
		errs = append(errs, fmt.Errorf("Port %d must be even and not 0", c.Port))
	}
	if c.Mode == ModeFirewall && c.Proxy == "" {
		errs = append(errs, errors.New("firewall-client mode needs Proxy"))
	}
	if c.Items <= 0 || c.Packets <= 0 || c.StepTimeout <= 0 {
		errs = append(errs, fmt.Errorf("Items %d, Packets %d and StepTimeout %v must be > 0", c.Items, c.Packets, c.StepTimeout))
	}
	if len(errs) > 0 {
		return fmt.Errorf("rtspplayer: invalid config: %w", errors.Join(errs...))
	}
	return nil
}

func (c Config) open(f func() error) error {
	if c.Sockets == nil {
		return f()
	}
	return c.Sockets(f)
}

// dialer is the player's SOCKS client, its connections from LocalIP.
func (c Config) dialer() *socksclient.Dialer {
	nd := net.Dialer{LocalAddr: net.TCPAddrFromAddrPort(netip.AddrPortFrom(c.LocalIP, 0))}
	return &socksclient.Dialer{
		Proxy:   c.Proxy,
		Timeout: c.StepTimeout,
		Dial: func(ctx context.Context, network, address string) (conn net.Conn, err error) {
			err = c.open(func() (err error) {
				conn, err = nd.DialContext(ctx, network, address)
				return err
			})
			return conn, err
		},
	}
}

// packetReader is one of the item's two receiving sockets: a plain UDP
// socket, or an association.
type packetReader interface {
	// read returns one datagram and the host that sent it.
	read(b []byte) (int, netip.Addr, error)
	SetReadDeadline(time.Time) error
	Close() error
}

type plainSocket struct{ *net.UDPConn }

func (p plainSocket) read(b []byte) (int, netip.Addr, error) {
	n, from, err := p.ReadFromUDPAddrPort(b)
	return n, from.Addr().Unmap(), err
}

type association struct{ *socksclient.PacketConn }

func (a association) read(b []byte) (int, netip.Addr, error) {
	n, from, err := a.ReadFromAddr(b)
	return n, from.IP.Unmap(), err
}

// control is an RTSP control connection; Play owns it and closes it.
type control struct {
	conn net.Conn
	br   *bufio.Reader
	cseq int
}

// item is the state of one item while it plays.
type item struct {
	cfg       Config
	rtp, rtcp packetReader
	rtcpAssoc *socksclient.PacketConn // firewall mode: where the receiver report goes
	*control
	session    string
	url        string
	serverHost netip.Addr
}

// close closes the item's sockets (the control connection is Play's).
func (it *item) close() {
	if it.rtp != nil {
		it.rtp.Close()
	}
	if it.rtcp != nil {
		it.rtcp.Close()
	}
}

// playItem plays item index on *ctl, or on a new control connection it
// stores there when *ctl is nil.
func playItem(ctx context.Context, cfg Config, index int, ctl **control) (Item, *Failure) {
	res := Item{Index: index}
	fail := func(kind FailKind, err error) (Item, *Failure) {
		return res, &Failure{Item: index, Kind: kind, Err: err}
	}
	it := &item{cfg: cfg, serverHost: cfg.Server.Addr(),
		url: fmt.Sprintf("rtsp://%s/%s/%s-%d", cfg.Server, rtspserver.SeqPath, cfg.Tag, index)}
	defer it.close()

	var rtpConn, rtcpConn *net.UDPConn
	err := cfg.open(func() (err error) {
		if rtpConn, err = net.ListenUDP(udpNetwork(cfg.LocalIP), net.UDPAddrFromAddrPort(netip.AddrPortFrom(cfg.LocalIP, cfg.Port))); err != nil {
			return err
		}
		if rtcpConn, err = net.ListenUDP(udpNetwork(cfg.LocalIP), net.UDPAddrFromAddrPort(netip.AddrPortFrom(cfg.LocalIP, cfg.Port+1))); err != nil {
			rtpConn.Close()
		}
		return err
	})
	if err != nil {
		return fail(FailBind, err)
	}
	switch cfg.Mode {
	case ModeFirewall:
		d := cfg.dialer()
		a, err := d.Associate(ctx, rtpConn, netip.AddrPort{})
		if err != nil {
			rtpConn.Close()
			rtcpConn.Close()
			return fail(FailAssociate, fmt.Errorf("RTP port %d: %w", cfg.Port, err))
		}
		it.rtp = association{a}
		b, err := d.Associate(ctx, rtcpConn, netip.AddrPort{})
		if err != nil {
			rtcpConn.Close()
			return fail(FailAssociate, fmt.Errorf("RTCP port %d: %w", cfg.Port+1, err))
		}
		it.rtcp, it.rtcpAssoc = association{b}, b
	default:
		it.rtp, it.rtcp = plainSocket{rtpConn}, plainSocket{rtcpConn}
	}

	res.SameConnection = *ctl != nil
	if *ctl == nil {
		var conn net.Conn
		if cfg.Proxy == "" {
			nd := net.Dialer{LocalAddr: net.TCPAddrFromAddrPort(netip.AddrPortFrom(cfg.LocalIP, 0))}
			err = cfg.open(func() (err error) {
				conn, err = nd.DialContext(ctx, "tcp", cfg.Server.String())
				return err
			})
		} else {
			conn, err = cfg.dialer().Connect(ctx, socksclient.AddrFromAddrPort(cfg.Server))
		}
		if err != nil {
			return fail(FailConnect, err)
		}
		*ctl = &control{conn: conn, br: bufio.NewReader(conn)}
	}
	it.control = *ctl
	stop := context.AfterFunc(ctx, func() { it.conn.SetDeadline(time.Unix(1, 0)) })
	defer stop()

	desc, err := it.request(base.Describe, it.url, base.Header{"Accept": base.HeaderValue{"application/sdp"}})
	if err != nil {
		return fail(FailRequest, err)
	}
	control := sdpControl(desc.Body)
	setupURL := it.url + "/" + control
	if strings.HasPrefix(control, "rtsp://") {
		setupURL = control
	}
	want := [2]int{int(cfg.Port), int(cfg.Port) + 1}
	tr := headers.Transport{Protocol: headers.TransportProtocolUDP, Delivery: ptr(headers.TransportDeliveryUnicast),
		ClientPorts: &want, Mode: ptr(headers.TransportModePlay)}
	setup, err := it.request(base.Setup, setupURL, base.Header{"Transport": tr.Marshal()})
	if err != nil {
		return fail(FailSetup, err)
	}
	var got headers.Transport
	if err := got.Unmarshal(setup.Header["Transport"]); err != nil {
		return fail(FailSetup, fmt.Errorf("reply Transport %q: %w", setup.Header["Transport"], err))
	}
	if got.ClientPorts != nil {
		res.ReplyPorts = *got.ClientPorts
	}
	if got.ServerPorts != nil {
		res.ServerPorts = *got.ServerPorts
	}
	if res.ReplyPorts != want {
		return fail(FailSetup, fmt.Errorf("reply client_port=%d-%d, asked for %d-%d", res.ReplyPorts[0], res.ReplyPorts[1], want[0], want[1]))
	}
	var sh headers.Session
	if err := sh.Unmarshal(setup.Header["Session"]); err != nil {
		return fail(FailSetup, fmt.Errorf("reply Session: %w", err))
	}
	it.session = sh.Session

	// The reader starts before PLAY: the sequence may arrive before the
	// reply does.
	seen := make([]int, cfg.Packets)
	var mu sync.Mutex
	var stray, corrupt int
	done := make(chan struct{})
	all := make(chan struct{})
	go func() {
		defer close(done)
		it.readSequence(seen, &mu, &stray, &corrupt, all)
	}()
	wait := cfg.LossWait
	if wait <= 0 {
		wait = cfg.StepTimeout
	}
	rctx, cancel := context.WithTimeout(ctx, wait)
	_, err = it.request(base.Play, it.url, base.Header{"Session": base.HeaderValue{it.session}, "Range": base.HeaderValue{"npt=0-"}})
	if err == nil && res.ServerPorts[1] != 0 && it.rtcpAssoc != nil {
		// A receiver report through the RTCP association: the filter must
		// let it reach the server from the proxy's RTCP lease.
		rr, _ := (&rtcp.ReceiverReport{SSRC: 1}).Marshal()
		if _, werr := it.rtcpAssoc.WriteToAddr(rr, socksclient.AddrFromAddrPort(netip.AddrPortFrom(it.serverHost, uint16(res.ServerPorts[1])))); werr != nil {
			err = fmt.Errorf("send receiver report: %w", werr)
		}
	}
	if err == nil {
		select {
		case <-all:
		case <-rctx.Done():
		}
	}
	cancel()
	it.rtp.SetReadDeadline(time.Unix(1, 0))
	<-done
	mu.Lock()
	for seq, n := range seen {
		switch {
		case n == 0:
			res.Lost = append(res.Lost, seq)
		default:
			res.Received++
			res.Duplicates += n - 1
		}
	}
	res.Stray, res.Corrupt = stray, corrupt
	mu.Unlock()
	if err != nil {
		return fail(FailRequest, err)
	}
	if _, err := it.request(base.Teardown, it.url, base.Header{"Session": base.HeaderValue{it.session}}); err != nil {
		return fail(FailRequest, err)
	}
	return res, nil
}

// readSequence reads RTP until every packet is in (then closes all) or
// the socket's deadline ends it.
func (it *item) readSequence(seen []int, mu *sync.Mutex, stray, corrupt *int, all chan struct{}) {
	buf := make([]byte, 2048)
	missing := len(seen)
	for {
		n, from, err := it.rtp.read(buf)
		if err != nil {
			return
		}
		var pkt rtp.Packet
		mu.Lock()
		switch {
		case it.cfg.Mode == ModeFirewall && from != it.serverHost,
			pkt.Unmarshal(buf[:n]) != nil, int(pkt.SequenceNumber) >= len(seen):
			*stray++
		case string(pkt.Payload) != string(rtspserver.SeqPayload(int(pkt.SequenceNumber))):
			*corrupt++
		default:
			seen[pkt.SequenceNumber]++
			if seen[pkt.SequenceNumber] == 1 {
				missing--
				if missing == 0 {
					close(all)
				}
			}
		}
		mu.Unlock()
	}
}

// request sends one request and reads its reply, which must be 200.
func (it *item) request(m base.Method, rawURL string, h base.Header) (*base.Response, error) {
	u, err := base.ParseURL(rawURL)
	if err != nil {
		return nil, fmt.Errorf("%s %s: %w", m, rawURL, err)
	}
	it.cseq++
	h["CSeq"] = base.HeaderValue{strconv.Itoa(it.cseq)}
	h["User-Agent"] = base.HeaderValue{"fwproxy-rtspplayer"}
	req := base.Request{Method: m, URL: u, Header: h}
	b, err := req.Marshal()
	if err != nil {
		return nil, fmt.Errorf("%s: %w", m, err)
	}
	it.conn.SetDeadline(time.Now().Add(it.cfg.StepTimeout))
	if _, err := it.conn.Write(b); err != nil {
		return nil, fmt.Errorf("%s: send: %w", m, err)
	}
	var res base.Response
	if err := res.Unmarshal(it.br); err != nil {
		return nil, fmt.Errorf("%s: reply: %w", m, err)
	}
	if res.StatusCode != base.StatusOK {
		return &res, fmt.Errorf("%s: %d %s", m, res.StatusCode, res.StatusMessage)
	}
	if cs := res.Header["CSeq"]; len(cs) != 1 || cs[0] != strconv.Itoa(it.cseq) {
		return &res, fmt.Errorf("%s: reply CSeq %v, sent %d", m, cs, it.cseq)
	}
	return &res, nil
}

// sdpControl is the first media's a=control in an SDP body ("trackID=0"
// for gortsplib).
func sdpControl(body []byte) string {
	inMedia := false
	for _, line := range strings.Split(string(body), "\n") {
		line = strings.TrimRight(line, "\r")
		if strings.HasPrefix(line, "m=") {
			inMedia = true
		}
		if c, ok := strings.CutPrefix(line, "a=control:"); ok && inMedia {
			return c
		}
	}
	return ""
}

func udpNetwork(a netip.Addr) string {
	if a.Is4() {
		return "udp4"
	}
	return "udp6"
}

func ptr[T any](v T) *T { return &v }

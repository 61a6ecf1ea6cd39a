package socksclient

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"time"
)

// Reply is a reply's REP octet (RFC 1928 §6).
type Reply byte

// The replies of RFC 1928 §6.
const (
	ReplySucceeded           Reply = 0x00
	ReplyGeneralFailure      Reply = 0x01
	ReplyNotAllowed          Reply = 0x02
	ReplyNetworkUnreachable  Reply = 0x03
	ReplyHostUnreachable     Reply = 0x04
	ReplyConnectionRefused   Reply = 0x05
	ReplyTTLExpired          Reply = 0x06
	ReplyCommandNotSupported Reply = 0x07
	ReplyAddressNotSupported Reply = 0x08
)

var replyNames = [...]string{
	"succeeded", "general SOCKS server failure", "connection not allowed by ruleset",
	"network unreachable", "host unreachable", "connection refused", "TTL expired",
	"command not supported", "address type not supported",
}

func (r Reply) String() string {
	if int(r) < len(replyNames) {
		return replyNames[r]
	}
	return fmt.Sprintf("unassigned reply %#02x", byte(r))
}

// ReplyError is a request the proxy refused: its reply code was not
// success. Callers branch on Code with errors.As.
type ReplyError struct {
	Command Command
	Code    Reply
}

func (e *ReplyError) Error() string {
	return fmt.Sprintf("socks: %v refused: %v (%#02x)", e.Command, e.Code, byte(e.Code))
}

var (
	// ErrNoAcceptableMethod: the proxy accepted none of the methods
	// offered (RFC 1928 §3, method 0xff), or chose one not offered.
	ErrNoAcceptableMethod = errors.New("socks: no acceptable authentication method")
	// ErrLoginRefused: the proxy refused the username and password
	// (RFC 1929 §2, a status other than 0).
	ErrLoginRefused = errors.New("socks: username/password refused")
)

// Dialer opens SOCKS5 sessions to one proxy. Its zero value but for Proxy
// is usable: no authentication, the system's dialer, no time limit other
// than the context's.
type Dialer struct {
	// Proxy is the proxy's host:port.
	Proxy string
	// Username and Password, when Username is set, log in with RFC 1929;
	// the greeting then offers only that method.
	Username, Password string
	// Dial opens the TCP connection to the proxy; nil uses a net.Dialer.
	// Set it to choose the local address or socket options.
	Dial func(ctx context.Context, network, address string) (net.Conn, error)
	// Timeout bounds dialing and the handshake of each request; 0 leaves
	// only the context's deadline.
	Timeout time.Duration
}

// Request dials the proxy, authenticates and sends one request for cmd
// and dst. It returns the control connection, established, and the reply's
// BND address; the caller owns and closes the connection. On error nothing
// stays open; a refusal is a *ReplyError.
func (d *Dialer) Request(ctx context.Context, cmd Command, dst Addr) (net.Conn, Addr, error) {
	if d.Timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, d.Timeout)
		defer cancel()
	}
	dial := d.Dial
	if dial == nil {
		var nd net.Dialer
		dial = nd.DialContext
	}
	c, err := dial(ctx, "tcp", d.Proxy)
	if err != nil {
		return nil, Addr{}, fmt.Errorf("socks: dial %s: %w", d.Proxy, err)
	}
	bnd, err := d.handshake(ctx, c, cmd, dst)
	if err != nil {
		c.Close()
		return nil, bnd, err
	}
	return c, bnd, nil
}

// Connect opens a CONNECT session to dst through the proxy. The returned
// connection is the TCP connection to the proxy (a *net.TCPConn with the
// default Dial), carrying the stream to dst.
func (d *Dialer) Connect(ctx context.Context, dst Addr) (net.Conn, error) {
	c, _, err := d.Request(ctx, CmdConnect, dst)
	return c, err
}

// handshake runs greeting, login and request on c. The context bounds the
// exchange through c's deadline, and cancelling it interrupts a read in
// progress.
func (d *Dialer) handshake(ctx context.Context, c net.Conn, cmd Command, dst Addr) (Addr, error) {
	if dl, ok := ctx.Deadline(); ok {
		c.SetDeadline(dl)
	}
	stop := context.AfterFunc(ctx, func() { c.SetDeadline(time.Unix(1, 0)) })
	bnd, err := d.exchange(c, cmd, dst)
	if !stop() {
		// The context ended during the exchange: report that, not the
		// deadline error it caused.
		return Addr{}, fmt.Errorf("socks: %v %v: %w", cmd, dst, ctx.Err())
	}
	if err != nil {
		return bnd, err
	}
	if err := c.SetDeadline(time.Time{}); err != nil {
		return Addr{}, fmt.Errorf("socks: clear deadline: %w", err)
	}
	return bnd, nil
}

func (d *Dialer) exchange(c net.Conn, cmd Command, dst Addr) (Addr, error) {
	req, err := AppendAddr([]byte{socksVersion, byte(cmd), 0}, dst)
	if err != nil {
		return Addr{}, fmt.Errorf("socks: %v %v: %w", cmd, dst, err)
	}
	method := byte(methodNone)
	if d.Username != "" {
		method = methodLogin
	}
	if _, err := c.Write([]byte{socksVersion, 1, method}); err != nil {
		return Addr{}, fmt.Errorf("socks: greeting: %w", err)
	}
	var sel [2]byte
	if _, err := io.ReadFull(c, sel[:]); err != nil {
		return Addr{}, fmt.Errorf("socks: method selection: %w", err)
	}
	if sel[0] != socksVersion {
		return Addr{}, fmt.Errorf("socks: method selection version %d", sel[0])
	}
	if sel[1] != method {
		return Addr{}, fmt.Errorf("%w (offered %#02x, proxy chose %#02x)", ErrNoAcceptableMethod, method, sel[1])
	}
	if method == methodLogin {
		if err := d.login(c); err != nil {
			return Addr{}, err
		}
	}
	if _, err := c.Write(req); err != nil {
		return Addr{}, fmt.Errorf("socks: request: %w", err)
	}
	return ReadReply(c, cmd)
}

// login runs the RFC 1929 sub-negotiation.
func (d *Dialer) login(c net.Conn) error {
	if len(d.Username) > maxCredentialLen || len(d.Password) > maxCredentialLen {
		return fmt.Errorf("socks: username or password longer than %d bytes", maxCredentialLen)
	}
	b := append([]byte{loginVersion, byte(len(d.Username))}, d.Username...)
	b = append(append(b, byte(len(d.Password))), d.Password...)
	if _, err := c.Write(b); err != nil {
		return fmt.Errorf("socks: login: %w", err)
	}
	var st [2]byte
	if _, err := io.ReadFull(c, st[:]); err != nil {
		return fmt.Errorf("socks: login status: %w", err)
	}
	if st[1] != 0 {
		return fmt.Errorf("%w (status %#02x)", ErrLoginRefused, st[1])
	}
	return nil
}

// RelayAddr is where to send an association's datagrams: BND as the proxy
// sent it, with the proxy's own IP when BND.ADDR is unspecified (RFC 1928
// lets a server answer 0.0.0.0) or a name. ok is false when neither gives
// an address.
func RelayAddr(bnd Addr, proxy string) (netip.AddrPort, bool) {
	if ip := bnd.IP; bnd.Name == "" && ip.IsValid() && !ip.IsUnspecified() {
		return netip.AddrPortFrom(ip, bnd.Port), true
	}
	p, err := netip.ParseAddrPort(proxy)
	if err != nil {
		return netip.AddrPort{}, false
	}
	return netip.AddrPortFrom(p.Addr().Unmap(), bnd.Port), true
}

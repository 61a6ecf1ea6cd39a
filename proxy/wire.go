package proxy

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"syscall"

	socks5 "github.com/armon/go-socks5"
)

// Wire constants of RFC 1928 and RFC 1929 that go-socks5 does not export.
const (
	socksVersion = 5

	methodNoAuth       = socks5.NoAuth
	methodUserPass     = socks5.UserPassAuth
	methodNoAcceptable = 0xFF

	atypIPv4   = 1
	atypDomain = 3
	atypIPv6   = 4

	// maxDomainLen is the longest name DNS can carry (RFC 1035 §2.3.4); the
	// SOCKS length byte allows 255, so longer names are refused, not looked up.
	maxDomainLen = 253
)

// Reply is a SOCKS5 reply code (RFC 1928 §6).
type Reply uint8

// Reply codes of RFC 1928 §6.
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
	replyNone                Reply = 0xFF // no reply was sent (the session ended before one)
)

// String returns a stable name, usable as a metric label.
func (r Reply) String() string {
	switch r {
	case ReplySucceeded:
		return "succeeded"
	case ReplyGeneralFailure:
		return "general_failure"
	case ReplyNotAllowed:
		return "not_allowed"
	case ReplyNetworkUnreachable:
		return "network_unreachable"
	case ReplyHostUnreachable:
		return "host_unreachable"
	case ReplyConnectionRefused:
		return "connection_refused"
	case ReplyTTLExpired:
		return "ttl_expired"
	case ReplyCommandNotSupported:
		return "command_not_supported"
	case ReplyAddressNotSupported:
		return "address_type_not_supported"
	case replyNone:
		return "none"
	}
	return "unknown"
}

// Command is a SOCKS5 request command.
type Command uint8

// Commands of RFC 1928 §4.
const (
	CommandConnect   Command = Command(socks5.ConnectCommand)
	CommandBind      Command = Command(socks5.BindCommand)
	CommandAssociate Command = Command(socks5.AssociateCommand)
)

// String returns a stable name, usable as a metric label.
func (c Command) String() string {
	switch c {
	case CommandConnect:
		return "connect"
	case CommandBind:
		return "bind"
	case CommandAssociate:
		return "udp_associate"
	}
	return "unknown"
}

// appendReply appends a reply (RFC 1928 §6):
//
//	+----+-----+-------+------+----------+----------+
//	|VER | REP |  RSV  | ATYP | BND.ADDR | BND.PORT |
//	+----+-----+-------+------+----------+----------+
//	| 1  |  1  | X'00' |  1   | Variable |    2     |
//	+----+-----+-------+------+----------+----------+
//
// An invalid bound address is sent as 0.0.0.0:0, as failure replies carry.
func appendReply(dst []byte, rep Reply, bound netip.AddrPort) []byte {
	addr := bound.Addr().Unmap()
	dst = append(dst, socksVersion, byte(rep), 0)
	switch {
	case addr.Is6():
		a := addr.As16()
		dst = append(dst, atypIPv6)
		dst = append(dst, a[:]...)
	case addr.Is4():
		a := addr.As4()
		dst = append(dst, atypIPv4)
		dst = append(dst, a[:]...)
	default:
		dst = append(dst, atypIPv4, 0, 0, 0, 0)
	}
	return append(dst, byte(bound.Port()>>8), byte(bound.Port()))
}

// requestError carries the reply a malformed request earns; a nil-reply
// error (reply == replyNone) means the session is closed without a reply.
type requestError struct {
	reply  Reply
	reason string // bounded, used as a metric label
	err    error
	// cmd is the request's command when it was read before the failure, so
	// that the refusal is counted under it.
	cmd Command
}

func (e *requestError) Error() string { return fmt.Sprintf("read request: %s: %v", e.reason, e.err) }
func (e *requestError) Unwrap() error { return e.err }

// readRequest reads one request (RFC 1928 §4) from r:
//
//	+----+-----+-------+------+----------+----------+
//	|VER | CMD |  RSV  | ATYP | DST.ADDR | DST.PORT |
//	+----+-----+-------+------+----------+----------+
//	| 1  |  1  | X'00' |  1   | Variable |    2     |
//	+----+-----+-------+------+----------+----------+
//
// It peeks at the fixed part first, because go-socks5's NewRequest does not
// tell an unknown address type apart from other errors and we owe the client
// reply 0x08 for it. Bytes after the request stay in r.
func readRequest(r *bufio.Reader) (*socks5.Request, error) {
	head, err := r.Peek(4)
	if err != nil {
		return nil, &requestError{replyNone, "truncated", err, 0}
	}
	if head[0] != socksVersion {
		return nil, &requestError{replyNone, "bad_version", fmt.Errorf("%w: request version %d", ErrBadVersion, head[0]), 0}
	}
	switch head[3] {
	case atypIPv4, atypIPv6, atypDomain:
	default:
		return nil, &requestError{ReplyAddressNotSupported, "bad_address_type", fmt.Errorf("address type %d", head[3]), Command(head[1])}
	}
	cmd := Command(head[1])
	req, err := socks5.NewRequest(r)
	if err != nil {
		return nil, &requestError{replyNone, "truncated", err, cmd}
	}
	if req.DestAddr.IP == nil {
		if err := checkDomain(req.DestAddr.FQDN); err != nil {
			return nil, &requestError{ReplyHostUnreachable, "bad_domain", err, cmd}
		}
		// Players (VLC among them) send IP literals as domain names; use
		// them as addresses rather than asking a resolver.
		if ip, err := netip.ParseAddr(req.DestAddr.FQDN); err == nil {
			req.DestAddr.IP = ip.AsSlice()
		}
	}
	return req, nil
}

func checkDomain(name string) error {
	if name == "" {
		return errors.New("empty domain name")
	}
	if len(name) > maxDomainLen {
		return fmt.Errorf("domain name of %d bytes is longer than %d", len(name), maxDomainLen)
	}
	for i := 0; i < len(name); i++ {
		if c := name[i]; c <= ' ' || c >= 0x7F {
			return fmt.Errorf("domain name has byte 0x%02x", c)
		}
	}
	return nil
}

// replyForDialError maps a dial or resolve failure to the reply code a client
// can act on.
func replyForDialError(err error) Reply {
	var dnsErr *net.DNSError
	switch {
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, os.ErrDeadlineExceeded):
		return ReplyTTLExpired
	case errors.As(err, &dnsErr):
		if dnsErr.IsTimeout {
			return ReplyTTLExpired
		}
		return ReplyHostUnreachable
	case errors.Is(err, syscall.ECONNREFUSED):
		return ReplyConnectionRefused
	case errors.Is(err, syscall.ENETUNREACH):
		return ReplyNetworkUnreachable
	case errors.Is(err, syscall.EHOSTUNREACH), errors.Is(err, syscall.EHOSTDOWN):
		return ReplyHostUnreachable
	case errors.Is(err, syscall.ETIMEDOUT):
		return ReplyTTLExpired
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return ReplyTTLExpired
	}
	return ReplyGeneralFailure
}

// readGreeting reads the method-selection message (RFC 1928 §3):
//
//	+----+----------+----------+
//	|VER | NMETHODS | METHODS  |
//	+----+----------+----------+
//	| 1  |    1     | 1 to 255 |
//	+----+----------+----------+
//
// NMETHODS 0 is read as an empty list, which no method satisfies. The
// result is a fresh slice.
func readGreeting(r io.Reader) ([]byte, error) {
	var head [2]byte
	if _, err := io.ReadFull(r, head[:]); err != nil {
		return nil, fmt.Errorf("read greeting: %w", err)
	}
	if head[0] != socksVersion {
		return nil, fmt.Errorf("%w: greeting version %d", ErrBadVersion, head[0])
	}
	methods := make([]byte, head[1])
	if _, err := io.ReadFull(r, methods); err != nil {
		return nil, fmt.Errorf("read greeting methods: %w", err)
	}
	return methods, nil
}

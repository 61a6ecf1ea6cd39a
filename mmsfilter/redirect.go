package mmsfilter

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
	utf16enc "unicode/utf16"
)

// DefaultPort is the MMS TCP port a URL without one means ([MS-MMSP] §2.1).
const DefaultPort = 1755

// Redirect types of ReportRedirect ([MS-MMSP] §2.2.4.9).
const (
	RedirectURL   = 1 // reconnect to wszLocation
	RedirectProxy = 2 // use another proxy; not followed by the filter
)

// maxRedirectLocation bounds the URL the filter decodes; a longer one is
// refused (a redirect is a host and a path).
const maxRedirectLocation = 2048

// ErrRedirect means a ReportRedirect that is not a well-formed redirect to
// an mms, mmst or mmsu URL.
var ErrRedirect = errors.New("mmsfilter: malformed redirect")

// Redirect is a parsed ReportRedirect.
type Redirect struct {
	HR   uint32
	Type uint16
	// Location is wszLocation without its NUL.
	Location string
}

// ParseRedirect reads a ReportRedirect message. Body layout (offsets from
// the body, [MS-MMSP] §2.2.4.9):
//
//	0  hr            u32
//	4  RedirectType  u16
//	6  cbLocation    u16   bytes of wszLocation, its NUL included
//	8  wszLocation   UTF-16LE, NUL-terminated
//
// The result does not alias m.
func ParseRedirect(m Message) (Redirect, error) {
	b := m.Body
	if m.MID != MIDReportRedirect {
		return Redirect{}, fmt.Errorf("%w: message %v", ErrRedirect, m.MID)
	}
	if len(b) < 8 {
		return Redirect{}, fmt.Errorf("%w: %d bytes", ErrRedirect, len(b))
	}
	r := Redirect{HR: binary.LittleEndian.Uint32(b), Type: binary.LittleEndian.Uint16(b[4:])}
	n := int(binary.LittleEndian.Uint16(b[6:]))
	loc := b[8:]
	if n < 2 || n%2 != 0 || n > len(loc) || n > 2*maxRedirectLocation {
		return Redirect{}, fmt.Errorf("%w: cbLocation %d with %d bytes left", ErrRedirect, n, len(loc))
	}
	loc = loc[:n]
	units := make([]uint16, 0, n/2)
	for i := 0; i+1 < len(loc); i += 2 {
		u := binary.LittleEndian.Uint16(loc[i:])
		if u == 0 {
			break
		}
		units = append(units, u)
	}
	if len(units) == len(loc)/2 {
		return Redirect{}, fmt.Errorf("%w: location not NUL-terminated", ErrRedirect)
	}
	r.Location = string(utf16enc.Decode(units))
	return r, nil
}

// Target is where a redirect to a URL sends the client, as far as the
// proxy can tell without resolving: the host as written and the TCP port.
// Only MMS URLs count (mms, mmst, mmsu: all start on TCP); an http one is
// not the MMS filter's.
func (r Redirect) Target() (host string, port uint16, err error) {
	if r.Type != RedirectURL {
		return "", 0, fmt.Errorf("%w: type %d is not a URL", ErrRedirect, r.Type)
	}
	u, err := url.Parse(r.Location)
	if err != nil {
		return "", 0, fmt.Errorf("%w: %v", ErrRedirect, err)
	}
	switch strings.ToLower(u.Scheme) {
	case "mms", "mmst", "mmsu":
	default:
		return "", 0, fmt.Errorf("%w: scheme %q is not MMS", ErrRedirect, u.Scheme)
	}
	host = u.Hostname()
	if host == "" {
		return "", 0, fmt.Errorf("%w: no host in %q", ErrRedirect, r.Location)
	}
	port = DefaultPort
	if p := u.Port(); p != "" {
		n, err := strconv.ParseUint(p, 10, 16)
		if err != nil || n == 0 {
			return "", 0, fmt.Errorf("%w: port %q", ErrRedirect, p)
		}
		port = uint16(n)
	}
	return host, port, nil
}

// redirectDestination is the CONNECT the filter expects after r, coming
// from the server at server: the same server's IP at the URL's port. A URL
// naming another IP is another server and is not followed (the filter
// only keeps itself on the same server); a name is taken as the server's,
// since the CONNECT that follows is matched by IP and so only counts if
// it resolves there.
func redirectDestination(r Redirect, server netip.Addr) (netip.AddrPort, error) {
	host, port, err := r.Target()
	if err != nil {
		return netip.AddrPort{}, err
	}
	if ip, err := netip.ParseAddr(host); err == nil && ip.Unmap() != server.Unmap() {
		return netip.AddrPort{}, fmt.Errorf("redirect to another server %v", ip)
	}
	return netip.AddrPortFrom(server.Unmap(), port), nil
}

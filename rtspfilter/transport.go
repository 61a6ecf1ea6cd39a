package rtspfilter

import (
	"fmt"
	"net/netip"
	"strconv"
	"strings"
)

// The Transport header (RFC 2326 §12.39, RFC 7826 §18.54):
//
//	Transport     = "Transport" ":" transport-spec *("," transport-spec)
//	transport-spec = transport-protocol "/" profile ["/" lower-transport]
//	                 *(";" parameter)
//	parameter     = name ["=" value]      (value may be a quoted string)
//
// e.g. "RTP/AVP;unicast;client_port=4588-4589,RTP/AVP/TCP;interleaved=0-1".

// MaxTransportSpecs bounds the specs of one Transport header: a client
// offers a few alternatives (UDP, TCP, multicast); each UDP one costs a
// lease group, so a thousand would be an attack on the port range.
const MaxTransportSpecs = 8

// spec is one transport-spec. raw is its text as sent; an unchanged spec
// is written back as raw, byte for byte.
type spec struct {
	raw      string
	protocol string // "RTP/AVP/UDP", as sent
	params   []param
	changed  bool
}

type param struct {
	name, value string
	hasValue    bool
}

// specKind is what the filter does with a spec.
type specKind uint8

const (
	// kindUDP: unicast UDP of a known RTP profile: rewritten.
	kindUDP specKind = iota
	// kindTCP: interleaved on the control connection: passed.
	kindTCP
	// kindMulticast: the server sends to a group, not through the
	// proxy: passed.
	kindMulticast
	// kindUnsupported: UDP the filter cannot rewrite: dropped.
	kindUnsupported
)

// parseTransport splits a Transport value into its specs. Commas and
// semicolons inside quoted strings do not split.
func parseTransport(v string) ([]spec, error) {
	parts, err := splitQuoted(v, ',', MaxTransportSpecs)
	if err != nil {
		return nil, err
	}
	specs := make([]spec, 0, len(parts))
	for _, p := range parts {
		s, err := parseSpec(strings.TrimSpace(p))
		if err != nil {
			return nil, err
		}
		specs = append(specs, s)
	}
	return specs, nil
}

// maxParams bounds one spec's parameters; RFC 2326 defines about a dozen.
const maxParams = 32

func parseSpec(raw string) (spec, error) {
	fields, err := splitQuoted(raw, ';', maxParams+1)
	if err != nil {
		return spec{}, err
	}
	s := spec{raw: raw, protocol: strings.TrimSpace(fields[0])}
	if n := strings.Count(s.protocol, "/"); n < 1 || n > 2 || !isToken([]byte(strings.ReplaceAll(s.protocol, "/", ""))) {
		return spec{}, fmt.Errorf("%w: transport protocol %q", ErrTransportSyntax, clip([]byte(s.protocol)))
	}
	for _, f := range fields[1:] {
		f = strings.TrimSpace(f)
		if f == "" {
			continue // "RTP/AVP;;unicast", tolerated
		}
		name, value, has := strings.Cut(f, "=")
		name = strings.TrimSpace(name)
		if !isToken([]byte(name)) {
			return spec{}, fmt.Errorf("%w: parameter %q", ErrTransportSyntax, clip([]byte(f)))
		}
		s.params = append(s.params, param{name: name, value: strings.TrimSpace(value), hasValue: has})
	}
	return s, nil
}

// splitQuoted splits s at sep outside double quotes, into at most max
// parts (more is ErrTooManyTransports for specs, a syntax error for
// parameters).
func splitQuoted(s string, sep byte, max int) ([]string, error) {
	var out []string
	quoted, start := false, 0
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c == '"':
			quoted = !quoted
		case c == '\\' && quoted:
			i++
		case c == sep && !quoted:
			out = append(out, s[start:i])
			start = i + 1
			if len(out) >= max {
				if sep == ',' {
					return nil, fmt.Errorf("%w: more than %d", ErrTooManyTransports, max)
				}
				return nil, fmt.Errorf("%w: more than %d parameters", ErrTransportSyntax, max-1)
			}
		}
	}
	if quoted {
		return nil, fmt.Errorf("%w: unterminated quoted string", ErrTransportSyntax)
	}
	return append(out, s[start:]), nil
}

// get is the first parameter called name (case-insensitive).
func (s *spec) get(name string) (param, bool) {
	for _, p := range s.params {
		if equalFold(p.name, name) {
			return p, true
		}
	}
	return param{}, false
}

func (s *spec) has(name string) bool {
	_, ok := s.get(name)
	return ok
}

// count is how many parameters are called name.
func (s *spec) count(name string) int {
	n := 0
	for _, p := range s.params {
		if equalFold(p.name, name) {
			n++
		}
	}
	return n
}

// set replaces the value of the first parameter called name.
func (s *spec) set(name, value string) {
	for i := range s.params {
		if equalFold(s.params[i].name, name) {
			s.params[i].value, s.params[i].hasValue = value, true
			s.changed = true
			return
		}
	}
}

// remove drops every parameter called name.
func (s *spec) remove(name string) {
	out := s.params[:0]
	for _, p := range s.params {
		if equalFold(p.name, name) {
			s.changed = true
			continue
		}
		out = append(out, p)
	}
	s.params = out
}

// rtpProfiles are the RTP profiles whose UDP the filter leases for:
// AVP (RFC 3551), AVPF (RFC 4585), SAVP (RFC 3711), SAVPF (RFC 5124).
var rtpProfiles = []string{"AVP", "AVPF", "SAVP", "SAVPF"}

// kind classifies the spec. Unicast is the default in practice: RFC 2326
// §12.39 names multicast the default, but no client sends client_port for
// multicast, and a spec that would make the server send UDP to the client's
// port is treated as unicast, the case that needs the proxy.
func (s *spec) kind() specKind {
	parts := strings.Split(s.protocol, "/")
	lower := "UDP"
	if len(parts) == 3 {
		lower = strings.ToUpper(parts[2])
	}
	switch {
	case s.has("interleaved"):
		// Interleaved over a UDP lower transport is how some 1.0
		// clients write it; with an address to send UDP to, a server
		// could take it either way.
		if lower != "TCP" && s.has("dest_addr") {
			return kindUnsupported
		}
		return kindTCP
	case lower == "TCP":
		// RTSP 2.0 also has RTP over a TCP connection of its own
		// (RFC 4571), opened to or from dest_addr: not interleaved,
		// and not something the proxy carries.
		if s.has("dest_addr") {
			return kindUnsupported
		}
		return kindTCP
	case s.has("multicast") && !s.has("unicast"):
		return kindMulticast
	}
	if lower != "UDP" || !equalFold(parts[0], "RTP") {
		return kindUnsupported
	}
	for _, p := range rtpProfiles {
		if equalFold(parts[1], p) {
			return kindUDP
		}
	}
	return kindUnsupported
}

// parsePortRange parses "A" or "A-B" (1 ≤ A < B ≤ 65535); single is true
// for "A".
func parsePortRange(v string) (a, b uint16, single bool, err error) {
	lo, hi, isRange := strings.Cut(v, "-")
	pa, err := parsePort(lo)
	if err != nil {
		return 0, 0, false, err
	}
	if !isRange {
		return pa, 0, true, nil
	}
	pb, err := parsePort(hi)
	if err != nil || pb <= pa {
		return 0, 0, false, fmt.Errorf("%w: %q", ErrClientPort, clip([]byte(v)))
	}
	return pa, pb, false, nil
}

func parsePort(s string) (uint16, error) {
	s = strings.TrimSpace(s)
	if !isDigits(s) || len(s) > 5 {
		return 0, fmt.Errorf("%w: %q", ErrClientPort, clip([]byte(s)))
	}
	n, _ := strconv.Atoi(s)
	if n < 1 || n > 65535 {
		return 0, fmt.Errorf("%w: %d is not a port", ErrClientPort, n)
	}
	return uint16(n), nil
}

// formatPorts is "X" or "X-Y".
func formatPorts(ports []uint16) string {
	if len(ports) == 1 {
		return strconv.Itoa(int(ports[0]))
	}
	return strconv.Itoa(int(ports[0])) + "-" + strconv.Itoa(int(ports[len(ports)-1]))
}

// appendSpec writes s: raw when unchanged, rebuilt from its parameters
// otherwise.
func appendSpec(dst []byte, s spec) []byte {
	if !s.changed {
		return append(dst, s.raw...)
	}
	dst = append(dst, s.protocol...)
	for _, p := range s.params {
		dst = append(dst, ';')
		dst = append(dst, p.name...)
		if p.hasValue {
			dst = append(dst, '=')
			dst = append(dst, p.value...)
		}
	}
	return dst
}

// appendTransport writes specs as a Transport value.
func appendTransport(dst []byte, specs []spec) []byte {
	for i, s := range specs {
		if i > 0 {
			dst = append(dst, ',')
		}
		dst = appendSpec(dst, s)
	}
	return dst
}

// The RTSP 2.0 address parameters (RFC 7826 §18.54):
//
//	dest_addr   = "dest_addr" "=" addr-list
//	src_addr    = "src_addr" "=" addr-list
//	addr-list   = quoted-addr *("/" quoted-addr)
//	quoted-addr = DQUOTE (host [":" port] / ":" port) DQUOTE
//
// host is an IPv4 literal, a bracketed IPv6 literal or a name; an empty
// host is the address the RTSP request came from. For RTP over UDP the
// first address is RTP's, the second RTCP's.

// maxAddrs bounds an address list; RTP over UDP uses two.
const maxAddrs = 4

// hostPort is one address of a dest_addr or src_addr list.
type hostPort struct {
	// host is "" for ":port", an IPv6 literal without its brackets.
	host string
	// port is 0 when the address has none.
	port uint16
}

// ip is the host as an address; false for a name or an empty host.
func (h hostPort) ip() (netip.Addr, bool) {
	ip, err := netip.ParseAddr(h.host)
	if err != nil || ip.Zone() != "" {
		return netip.Addr{}, false
	}
	return ip.Unmap(), true
}

// parseAddrList parses a dest_addr or src_addr value.
func parseAddrList(v string) ([]hostPort, error) {
	var out []hostPort
	rest := strings.TrimSpace(v)
	for {
		if len(out) == maxAddrs {
			return nil, fmt.Errorf("%w: more than %d addresses in %q", ErrAddrList, maxAddrs, clip([]byte(v)))
		}
		if !strings.HasPrefix(rest, `"`) {
			return nil, fmt.Errorf("%w: %q: an address is a quoted string", ErrAddrList, clip([]byte(v)))
		}
		end := strings.IndexByte(rest[1:], '"')
		if end < 0 {
			return nil, fmt.Errorf("%w: %q: unterminated quoted address", ErrAddrList, clip([]byte(v)))
		}
		hp, err := parseHostPort(rest[1 : 1+end])
		if err != nil {
			return nil, fmt.Errorf("%w: %q: %v", ErrAddrList, clip([]byte(v)), err)
		}
		out = append(out, hp)
		rest = rest[end+2:]
		if rest == "" {
			return out, nil
		}
		if rest[0] != '/' {
			return nil, fmt.Errorf("%w: %q: addresses are separated by '/'", ErrAddrList, clip([]byte(v)))
		}
		rest = rest[1:]
	}
}

// parseHostPort parses host [":" port] / ":" port.
func parseHostPort(s string) (hostPort, error) {
	var hp hostPort
	var portText string
	hasPort := false
	switch {
	case strings.HasPrefix(s, "["):
		end := strings.IndexByte(s, ']')
		if end < 0 {
			return hp, fmt.Errorf("unterminated IPv6 literal %q", s)
		}
		ip, err := netip.ParseAddr(s[1:end])
		if err != nil || !ip.Is6() || ip.Zone() != "" {
			return hp, fmt.Errorf("bad IPv6 literal %q", s[:end+1])
		}
		hp.host = s[1:end]
		after := s[end+1:]
		if after != "" {
			if after[0] != ':' {
				return hp, fmt.Errorf("junk after IPv6 literal %q", s)
			}
			portText, hasPort = after[1:], true
		}
	default:
		host, port, ok := strings.Cut(s, ":")
		if strings.Contains(port, ":") {
			return hp, fmt.Errorf("%q: an IPv6 literal needs brackets", s)
		}
		if host != "" && !isHostName(host) {
			return hp, fmt.Errorf("bad host %q", host)
		}
		if host == "" && !ok {
			return hp, fmt.Errorf("empty address")
		}
		hp.host, portText, hasPort = host, port, ok
	}
	if hasPort {
		p, err := parsePort(portText)
		if err != nil {
			return hp, err
		}
		hp.port = p
	}
	return hp, nil
}

// isHostName is an IPv4 literal or a registered name: letters, digits,
// '-', '.', '_' and '~' (RFC 3986 §3.2.2, without percent-encoding).
func isHostName(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c == '.' || c == '_' || c == '~') {
			return false
		}
	}
	return s != ""
}

// formatAddrList writes ip and each port as a dest_addr value.
func formatAddrList(ip netip.Addr, ports []uint16) string {
	var b strings.Builder
	for i, p := range ports {
		if i > 0 {
			b.WriteByte('/')
		}
		b.WriteByte('"')
		b.WriteString(netip.AddrPortFrom(ip, p).String())
		b.WriteByte('"')
	}
	return b.String()
}

// addrPorts are the ports of an address list, in order; false when one
// has none.
func addrPorts(addrs []hostPort) ([]uint16, bool) {
	out := make([]uint16, len(addrs))
	for i, a := range addrs {
		if a.port == 0 {
			return nil, false
		}
		out[i] = a.port
	}
	return out, true
}

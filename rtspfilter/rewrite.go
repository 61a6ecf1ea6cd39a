package rtspfilter

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
)

// A rewrite changes header values only: the head is copied byte for byte
// but for the lines of the headers that change, so its length is all that
// changes; the body, its Content-Length and the frames around it are not
// touched.

// replacement is a new value for h.fields[index].
type replacement struct {
	index int
	value string
}

// appendHeadWith writes h.raw with each replaced field's line(s) written
// again as "Name: value\r\n" (the name as sent).
func appendHeadWith(dst []byte, h *head, repl []replacement) []byte {
	slices.SortFunc(repl, func(a, b replacement) int { return a.index - b.index })
	off := 0
	for _, r := range repl {
		f := h.fields[r.index]
		dst = append(dst, h.raw[off:f.start]...)
		dst = append(dst, f.name...)
		dst = append(dst, ": "...)
		dst = append(dst, r.value...)
		dst = append(dst, "\r\n"...)
		off = f.end
	}
	return append(dst, h.raw[off:]...)
}

// leaseFunc leases UDP for a spec's announced ports and returns the
// external ports, in the same order. Its error is a *SpecError.
type leaseFunc func(announced []uint16) (external []uint16, err error)

// SpecError is a transport spec the filter dropped.
type SpecError struct {
	Problem Problem
	Err     error
}

func (e *SpecError) Error() string { return e.Err.Error() }

// Unwrap returns the cause.
func (e *SpecError) Unwrap() error { return e.Err }

// leasedSpec is a rewritten spec of a SETUP request, remembered to undo
// the rewrite in the reply.
type leasedSpec struct {
	announced []uint16 // the client's ports, as keyed
	external  []uint16
	// portText is client_port as the client sent it; dest its
	// destination, when it sent one.
	portText string
	dest     string
	hasDest  bool
	// destAddr is the RTSP 2.0 dest_addr as the client sent it; the
	// spec was leased for it rather than for a client_port.
	destAddr string
	v2       bool
}

// transportRewrite is what rewriteTransport did.
type transportRewrite struct {
	value   string
	leased  []leasedSpec
	actions [NumTransportActions]int
	// destinations counts the specs whose destination (or dest_addr
	// naming a host other than the client) was rewritten.
	destinations int
	// dropped says why each dropped spec was.
	dropped []*SpecError
	// kept counts the specs left in value.
	kept int
}

// rewriteTransport rewrites a SETUP request's Transport value. Each
// unicast UDP spec gets its client_port (RTSP 2.0: the ports of its
// dest_addr) leased (lease) and rewritten to the external ports, and its
// destination, if any, to ext; a dest_addr is written again as ext and the
// external ports. The server must never be told to send to anyone but the
// proxy, so the host a dest_addr names is never used: the leases are the
// control connection's client's. TCP and multicast specs pass unchanged
// (a multicast one only when it names multicast groups). A spec that
// cannot be leased or is not understood is dropped; kept == 0 means
// nothing can be offered to the server. client is the control
// connection's client, for counting a dest_addr that names another host.
// Unchanged specs keep their bytes.
func rewriteTransport(value string, ext, client netip.Addr, lease leaseFunc) (transportRewrite, error) {
	var r transportRewrite
	specs, err := parseTransport(value)
	if err != nil {
		return r, err
	}
	out := specs[:0:0]
	for _, s := range specs {
		switch s.kind() {
		case kindMulticast:
			if err := multicastOnly(&s); err != nil {
				r.drop(&SpecError{Problem: ProblemUnsupportedTransport, Err: err})
				continue
			}
			r.actions[TransportPassed]++
			out = append(out, s)
			continue
		case kindTCP:
			r.actions[TransportPassed]++
			out = append(out, s)
			continue
		case kindUnsupported:
			if s.has("client_port") || s.has("dest_addr") || s.has("destination") {
				r.drop(&SpecError{Problem: ProblemUnsupportedTransport, Err: fmt.Errorf("rtspfilter: transport %q: UDP the proxy cannot rewrite", clip([]byte(s.protocol)))})
				continue
			}
			// No address at all: nothing to send anywhere, the
			// server will refuse or pick another spec.
			r.actions[TransportPassed]++
			out = append(out, s)
			continue
		}
		if name, twice := addressedTwice(&s); twice {
			// Only the first would be rewritten; a server reading
			// the other could be sent to anyone.
			r.drop(&SpecError{Problem: ProblemUnsupportedTransport, Err: fmt.Errorf("rtspfilter: transport %q names %s twice", clip([]byte(s.protocol)), name)})
			continue
		}
		if s.has("dest_addr") {
			ls, otherHost, err := leaseDestAddr(&s, ext, client, lease)
			if err != nil {
				r.drop(err)
				continue
			}
			if otherHost {
				r.destinations++
			}
			r.leased = append(r.leased, ls)
			r.actions[TransportRewritten]++
			out = append(out, s)
			continue
		}
		cp, ok := s.get("client_port")
		if !ok || !cp.hasValue {
			r.drop(&SpecError{Problem: ProblemUnsupportedTransport, Err: fmt.Errorf("%w: unicast UDP without client_port", ErrClientPort)})
			continue
		}
		a, b, single, err := parsePortRange(cp.value)
		if err != nil {
			r.drop(&SpecError{Problem: ProblemUnsupportedTransport, Err: err})
			continue
		}
		announced := []uint16{a, b}
		if single {
			// RTCP is on the next port (RFC 3550 §11): lease it too,
			// so whatever the server sends there is the client's.
			announced = []uint16{a}
			if a < 65535 {
				announced = append(announced, a+1)
			}
		}
		extPorts, se := leaseFor(lease, announced)
		if se != nil {
			r.drop(se)
			continue
		}
		ls := leasedSpec{announced: announced, external: extPorts, portText: cp.value}
		s.set("client_port", formatPorts(extPorts))
		if d, ok := s.get("destination"); ok {
			ls.dest, ls.hasDest = d.value, true
			if d.hasValue {
				s.set("destination", ext.String())
			} else {
				s.remove("destination")
			}
			r.destinations++
		}
		r.leased = append(r.leased, ls)
		r.actions[TransportRewritten]++
		out = append(out, s)
	}
	r.kept = len(out)
	r.value = string(appendTransport(nil, out))
	return r, nil
}

// leaseFor calls lease, its error counted lease_failed unless it says
// otherwise.
func leaseFor(lease leaseFunc, announced []uint16) ([]uint16, *SpecError) {
	ext, err := lease(announced)
	if err != nil {
		var se *SpecError
		if !errors.As(err, &se) {
			se = &SpecError{Problem: ProblemLeaseFailed, Err: err}
		}
		return nil, se
	}
	return ext, nil
}

// addressedTwice names a parameter that says where to send and appears
// more than once in s.
func addressedTwice(s *spec) (string, bool) {
	for _, name := range []string{"client_port", "destination", "dest_addr"} {
		if s.count(name) > 1 {
			return name, true
		}
	}
	return "", false
}

// leaseDestAddr leases and rewrites an RTSP 2.0 unicast UDP spec: one
// address (RTP; RTCP on the next port unless RTCP-mux) or two (RTP, then
// RTCP). otherHost says it named a host other than client.
func leaseDestAddr(s *spec, ext, client netip.Addr, lease leaseFunc) (_ leasedSpec, otherHost bool, _ *SpecError) {
	unsupported := func(err error) (leasedSpec, bool, *SpecError) {
		return leasedSpec{}, false, &SpecError{Problem: ProblemUnsupportedTransport, Err: err}
	}
	// Both addressings at once leave it to the server which one wins:
	// whichever is not rewritten could name a third party.
	if s.has("client_port") || s.has("destination") {
		return unsupported(fmt.Errorf("%w: dest_addr with client_port or destination", ErrAddrList))
	}
	d, _ := s.get("dest_addr")
	addrs, err := parseAddrList(d.value)
	if err != nil {
		return unsupported(err)
	}
	announced, ok := addrPorts(addrs)
	switch {
	case !ok:
		return unsupported(fmt.Errorf("%w: dest_addr %q: an address without a port", ErrAddrList, clip([]byte(d.value))))
	case len(announced) > 2:
		return unsupported(fmt.Errorf("%w: dest_addr %q: more than RTP and RTCP", ErrAddrList, clip([]byte(d.value))))
	case len(announced) == 2 && announced[0] == announced[1]:
		return unsupported(fmt.Errorf("%w: dest_addr %q: RTP and RTCP on one port", ErrAddrList, clip([]byte(d.value))))
	case len(announced) == 1 && !s.has("RTCP-mux") && announced[0] < 65535:
		// RTCP on the next port, as for a single client_port.
		announced = append(announced, announced[0]+1)
	}
	for _, a := range addrs {
		if ip, ok := a.ip(); a.host != "" && (!ok || ip != client) {
			otherHost = true
		}
	}
	extPorts, se := leaseFor(lease, announced)
	if se != nil {
		return leasedSpec{}, false, se
	}
	s.set("dest_addr", formatAddrList(ext, extPorts))
	return leasedSpec{announced: announced, external: extPorts, destAddr: d.value, v2: true}, otherHost, nil
}

// multicastOnly refuses a multicast spec that names an address other than
// a multicast group: "multicast" with a unicast destination would send the
// server's data to that host.
func multicastOnly(s *spec) error {
	for _, p := range s.params {
		switch {
		case equalFold(p.name, "destination") && p.hasValue:
			if ip, err := netip.ParseAddr(trimQuotes(p.value)); err != nil || !ip.IsMulticast() {
				return fmt.Errorf("rtspfilter: multicast transport with destination %q", clip([]byte(p.value)))
			}
		case equalFold(p.name, "dest_addr"):
			addrs, err := parseAddrList(p.value)
			if err != nil {
				return err
			}
			for _, a := range addrs {
				if ip, ok := a.ip(); !ok || !ip.IsMulticast() {
					return fmt.Errorf("%w: multicast transport with dest_addr %q", ErrAddrList, clip([]byte(p.value)))
				}
			}
		}
	}
	return nil
}

func (r *transportRewrite) drop(e *SpecError) {
	r.actions[TransportDropped]++
	r.dropped = append(r.dropped, e)
}

// replyTransport is what restoreTransport found in a SETUP reply.
type replyTransport struct {
	value string
	// chosen indexes the leased spec the server took; -1: none (TCP,
	// multicast, or ports the filter did not lease).
	chosen int
	// sources are the server's source (RTSP 2.0: the src_addr hosts)
	// when they are addresses, to permit beside the server's own.
	sources []netip.Addr
	// unmatched: a UDP spec with a client_port (or dest_addr) the
	// filter did not lease for this SETUP.
	unmatched bool
}

// restoreTransport rewrites a SETUP reply's Transport value back to what
// the client asked: the client_port of the spec the server chose becomes
// the client's own (clients check it), its destination the client's.
func restoreTransport(value string, leased []leasedSpec) (replyTransport, error) {
	rt := replyTransport{chosen: -1}
	specs, err := parseTransport(value)
	if err != nil {
		return rt, err
	}
	for i := range specs {
		s := &specs[i]
		if s.kind() == kindTCP {
			continue
		}
		if s.has("dest_addr") {
			if s.kind() != kindUDP {
				continue // a multicast group, passed as it came
			}
			j, ok := restoreDestAddr(s, leased)
			if !ok {
				rt.unmatched = true
				continue
			}
			rt.sources = append(rt.sources, srcAddrs(s)...)
			if rt.chosen < 0 {
				rt.chosen = j
			}
			continue
		}
		cp, ok := s.get("client_port")
		if !ok {
			continue
		}
		// The server echoes what it was sent, which is not always an
		// ascending range: a firewall client's associations may sit on
		// ports that are not a pair (see ExpectGroup). Match it as the
		// ports the filter wrote, not as a range.
		got, err := parsePortList(cp.value)
		if err != nil {
			rt.unmatched = true
			continue
		}
		j := slices.IndexFunc(leased, func(l leasedSpec) bool { return !l.v2 && sentAs(l.external, got) })
		if j < 0 {
			rt.unmatched = true
			continue
		}
		s.set("client_port", leased[j].portText)
		if _, ok := s.get("destination"); ok && leased[j].hasDest {
			s.set("destination", leased[j].dest)
		}
		if src, ok := s.get("source"); ok {
			if ip, err := netip.ParseAddr(trimQuotes(src.value)); err == nil {
				rt.sources = append(rt.sources, ip.Unmap())
			}
		}
		if rt.chosen < 0 {
			rt.chosen = j
		}
	}
	rt.value = string(appendTransport(nil, specs))
	return rt, nil
}

// restoreDestAddr gives a reply spec's dest_addr back the client's text
// when its ports are the external ones of a leased RTSP 2.0 spec (the
// server may write them with or without the host), and returns which.
func restoreDestAddr(s *spec, leased []leasedSpec) (int, bool) {
	d, _ := s.get("dest_addr")
	addrs, err := parseAddrList(d.value)
	if err != nil {
		return -1, false
	}
	got, ok := addrPorts(addrs)
	if !ok || len(got) > 2 {
		return -1, false
	}
	j := slices.IndexFunc(leased, func(l leasedSpec) bool { return l.v2 && sentAs(l.external, got) })
	if j < 0 {
		return -1, false
	}
	s.set("dest_addr", leased[j].destAddr)
	return j, true
}

// srcAddrs are the hosts of a reply spec's src_addr that are addresses:
// the server's RTP and RTCP may come from other hosts than its own (RFC
// 7826 §18.54). A bad src_addr names nothing: the server's own address
// is permitted anyway.
func srcAddrs(s *spec) []netip.Addr {
	src, ok := s.get("src_addr")
	if !ok {
		return nil
	}
	addrs, err := parseAddrList(src.value)
	if err != nil {
		return nil
	}
	var out []netip.Addr
	for _, a := range addrs {
		if ip, ok := a.ip(); ok && !slices.Contains(out, ip) {
			out = append(out, ip)
		}
	}
	return out
}

// parsePortList parses "A" or "A-B" as one or two ports, in any order.
func parsePortList(v string) ([]uint16, error) {
	lo, hi, two := strings.Cut(v, "-")
	a, err := parsePort(lo)
	if err != nil {
		return nil, err
	}
	if !two {
		return []uint16{a}, nil
	}
	b, err := parsePort(hi)
	if err != nil {
		return nil, err
	}
	return []uint16{a, b}, nil
}

// sentAs says whether got is how formatPorts wrote external (a server may
// echo only the first port of a range).
func sentAs(external, got []uint16) bool {
	if len(external) == 0 || got[0] != external[0] {
		return false
	}
	return len(got) == 1 || got[1] == external[len(external)-1]
}

func trimQuotes(s string) string {
	if len(s) >= 2 && s[0] == '"' && s[len(s)-1] == '"' {
		return s[1 : len(s)-1]
	}
	return s
}

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
}

// transportRewrite is what rewriteTransport did.
type transportRewrite struct {
	value   string
	leased  []leasedSpec
	actions [NumTransportActions]int
	// destinations is the count of destination parameters rewritten.
	destinations int
	// dropped says why each dropped spec was.
	dropped []*SpecError
	// kept counts the specs left in value.
	kept int
}

// rewriteTransport rewrites a SETUP request's Transport value. Each
// unicast UDP spec gets its client_port leased (lease) and rewritten to the
// external ports, and its destination, if any, to ext: the server must
// never be told to send to anyone but the proxy. TCP and multicast specs
// pass unchanged. A spec that cannot be leased or is not understood is
// dropped; kept == 0 means nothing can be offered to the server.
// Unchanged specs keep their bytes.
func rewriteTransport(value string, ext netip.Addr, lease leaseFunc) (transportRewrite, error) {
	var r transportRewrite
	specs, err := parseTransport(value)
	if err != nil {
		return r, err
	}
	out := specs[:0:0]
	for _, s := range specs {
		switch s.kind() {
		case kindTCP, kindMulticast:
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
		extPorts, err := lease(announced)
		if err != nil {
			var se *SpecError
			if !errors.As(err, &se) {
				se = &SpecError{Problem: ProblemLeaseFailed, Err: err}
			}
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
	// source is the server's source parameter when it is an address.
	source netip.Addr
	// unmatched: a UDP spec with a client_port the filter did not
	// lease for this SETUP.
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
		cp, ok := s.get("client_port")
		if !ok || s.kind() == kindTCP {
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
		j := slices.IndexFunc(leased, func(l leasedSpec) bool { return sentAs(l.external, got) })
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
				rt.source = ip.Unmap()
			}
		}
		if rt.chosen < 0 {
			rt.chosen = j
		}
	}
	rt.value = string(appendTransport(nil, specs))
	return rt, nil
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

package proxy

import (
	"net/netip"

	"fwproxy/internal/selfaddr"
)

// refusal is why a destination is refused; refusedNone lets it through.
// The names are metric labels (Observer.DestinationRefused).
type refusal uint8

const (
	refusedNone refusal = iota
	// refusedUnspecified: 0.0.0.0, :: or ::ffff:0.0.0.0, which Linux
	// connects to the local host. Never a destination, whatever the rules.
	refusedUnspecified
	// refusedMulticast: a multicast group (224.0.0.0/4, ff00::/8).
	refusedMulticast
	// refusedBroadcast: 255.255.255.255 or the directed broadcast of one of
	// the host's IPv4 networks.
	refusedBroadcast
	// refusedProxyHost: loopback or an address of the proxy's host, where
	// services that trust local connections live.
	refusedProxyHost
	// refusedOwnSocket: one of the proxy's own listeners or sockets; a
	// CONNECT there nests the proxy inside itself.
	refusedOwnSocket
	// refusedRules: a deny rule matches, or an allow list does not.
	refusedRules
	// refusedClientNetwork: inside one of rules.clients, the networks the
	// proxy serves: a client must not pivot through the proxy back into
	// the inside. Judged after refusedProxyHost, so that the proxy's own
	// addresses (and loopback, when loopback clients are admitted) keep
	// that more specific reason and each refusal is counted once.
	refusedClientNetwork
	numRefusals
)

var refusalNames = [numRefusals]string{"none", "unspecified", "multicast", "broadcast", "proxy_host", "own_socket", "rules", "client_network"}

func (r refusal) String() string { return refusalNames[r] }

// RefusalReasons lists the reasons Observer.DestinationRefused reports, so
// that an implementation can create every series at 0.
func RefusalReasons() []string { return append([]string(nil), refusalNames[1:]...) }

// normalise gives every destination one spelling before any rule sees it:
// an IPv4-mapped IPv6 address is its IPv4 address, and the zone is dropped
// (rules name networks, not links).
func normalise(ap netip.AddrPort) netip.AddrPort {
	return netip.AddrPortFrom(ap.Addr().Unmap().WithZone(""), ap.Port())
}

// judge is the one place that decides whether the proxy may send to dst:
// every CONNECT destination, every address a name resolves to, every UDP
// datagram a client relays and every BIND peer comes through here.
//
// In order: the unspecified address is refused always; then the rules'
// deny list; then the proxy's own sockets unless an allow rule names them
// explicitly with their port; then multicast, broadcast, the proxy host
// and the client networks (rules.clients), in that order, unless an allow
// rule names them explicitly. A rule is explicit when it is narrower than
// its whole family (not 0.0.0.0/0 or ::/0): "allow everything" is not a
// decision to expose the proxy's host or the inside network. Each
// destination gets one reason, the first that applies.
//
// proto is the traffic's transport (a CONNECT is TCP, a relayed datagram
// UDP): only the proxy's sockets of that transport are its own to it.
// anyPort judges dst.Addr() alone, for a BIND peer: its source port is
// whatever its kernel picked, so port ranges of rules do not apply and it
// cannot be one of the proxy's listening sockets.
//
// It does not allocate: the UDP relay calls it for every datagram.
func (s *Server) judge(dst netip.AddrPort, proto selfaddr.Proto, anyPort bool) refusal {
	dst = normalise(dst)
	ip := dst.Addr()
	if !ip.IsValid() || ip.IsUnspecified() {
		return refusedUnspecified
	}
	// One load, so that a reload cannot mix two rule sets in one verdict.
	rules := &s.cfg().Rules
	v := rules.verdict(dst, anyPort)
	if v.denied {
		return refusedRules
	}
	if !anyPort && s.self.Contains(proto, dst) && !v.explicitPort {
		return refusedOwnSocket
	}
	if v.explicit {
		return refusedNone
	}
	switch {
	case ip.IsMulticast():
		return refusedMulticast
	case s.self.IsBroadcast(ip):
		return refusedBroadcast
	case s.self.IsHost(ip):
		return refusedProxyHost
	case rules.inClientNetwork(ip):
		return refusedClientNetwork
	}
	return refusedNone
}

// inClientNetwork reports whether ip (normalised) is inside one of the
// client networks. A network of a whole family (0.0.0.0/0, ::/0) admits
// every source rather than naming an inside, so it makes nothing a client
// network: with it, every destination would be refused.
func (r Rules) inClientNetwork(ip netip.Addr) bool {
	for _, p := range r.Clients {
		if p.Bits() > 0 && p.Contains(ip) {
			return true
		}
	}
	return false
}

// ruleVerdict is what the configured rules say of one destination.
type ruleVerdict struct {
	// denied: a deny rule matches, or the allow list is not empty and no
	// rule of it matches.
	denied bool
	// explicit: an allow rule narrower than /0 matches.
	explicit bool
	// explicitPort: an explicit allow rule that also names the port (a port
	// range narrower than 1-65535) matches.
	explicitPort bool
}

// verdict applies the deny and allow lists to dst (normalised).
func (r Rules) verdict(dst netip.AddrPort, anyPort bool) ruleVerdict {
	var v ruleVerdict
	for _, d := range r.DenyDestinations {
		if d.matches(dst, anyPort) {
			v.denied = true
			return v
		}
	}
	allowed := len(r.AllowDestinations) == 0
	for _, d := range r.AllowDestinations {
		if !d.matches(dst, anyPort) {
			continue
		}
		allowed = true
		if d.Network.Bits() > 0 {
			v.explicit = true
			if d.namesPorts() {
				v.explicitPort = true
			}
		}
	}
	v.denied = !allowed
	return v
}

// namesPorts reports whether the rule names particular ports rather than
// every port.
func (d DestRule) namesPorts() bool {
	return (d.FirstPort != 0 || d.LastPort != 0) && !(d.FirstPort <= 1 && d.LastPort == 65535)
}

// matches is Matches, or only the network when anyPort is set.
func (d DestRule) matches(dst netip.AddrPort, anyPort bool) bool {
	if anyPort {
		return d.Network.Contains(dst.Addr().Unmap())
	}
	return d.Matches(dst)
}

// normalisePrefix makes an IPv4-mapped network (::ffff:10.0.0.0/104) the
// IPv4 network it means, so that it matches the normalised destinations.
func normalisePrefix(p netip.Prefix) netip.Prefix {
	if a := p.Addr(); a.Is4In6() && p.Bits() >= 96 {
		return netip.PrefixFrom(a.Unmap(), p.Bits()-96).Masked()
	}
	return netip.PrefixFrom(p.Addr().WithZone(""), p.Bits())
}

// normalised returns r with every network normalised; r is not changed.
func (r Rules) normalised() Rules {
	out := r
	out.Clients = make([]netip.Prefix, len(r.Clients))
	for i, p := range r.Clients {
		out.Clients[i] = normalisePrefix(p)
	}
	norm := func(in []DestRule) []DestRule {
		if in == nil {
			return nil
		}
		o := make([]DestRule, len(in))
		for i, d := range in {
			d.Network = normalisePrefix(d.Network)
			o[i] = d
		}
		return o
	}
	out.DenyDestinations = norm(r.DenyDestinations)
	out.AllowDestinations = norm(r.AllowDestinations)
	return out
}

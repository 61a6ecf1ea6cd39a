package netns

import (
	"net/netip"
	"testing"
)

// The firewall topology's networks: documentation prefixes only
// (RFC 5737, RFC 3849).
var (
	InsideV4  = netip.MustParsePrefix("198.51.100.0/24")
	InsideV6  = netip.MustParsePrefix("2001:db8:1::/64")
	OutsideV4 = netip.MustParsePrefix("203.0.113.0/24")
	OutsideV6 = netip.MustParsePrefix("2001:db8:2::/64")
)

// Host numbers within each prefix: proxy i is proxyHost+i on both sides.
const (
	proxyHost    = 1
	balancerHost = 50
	endHost      = 100
)

// FirewallSpec says how many proxy hosts the topology has (at least one)
// and whether a balancer host sits on the inside.
type FirewallSpec struct {
	Proxies  int
	Balancer bool
}

// Firewall is an inside network and an outside network joined only by
// proxy hosts that do not forward:
//
//	inside host ──┐                      ┌── outside host
//	(balancer) ───┼─ Inside ─ proxy i ─ Outside
//	              └── …  (one leg per proxy on each side)
//
// The inside and outside hosts route everything off their segment to
// proxy 0, as they would to a router; since it does not forward, what does
// not go through a proxy process does not pass.
type Firewall struct {
	Net             *Network
	InsideNet       *Segment
	OutsideNet      *Segment
	Inside, Outside *Host
	Proxies         []*Host
	Balancer        *Host // nil unless FirewallSpec.Balancer
}

// NewFirewall builds the topology for t (see New for when it skips).
func NewFirewall(t testing.TB, spec FirewallSpec) *Firewall {
	t.Helper()
	n := New(t)
	f := &Firewall{Net: n}
	f.InsideNet = n.Segment("inside", InsideV4, InsideV6)
	f.OutsideNet = n.Segment("outside", OutsideV4, OutsideV6)
	f.Inside = n.Host("inside")
	f.Inside.Attach(f.InsideNet, nth(InsideV4, endHost), nth(InsideV6, endHost))
	f.Outside = n.Host("outside")
	f.Outside.Attach(f.OutsideNet, nth(OutsideV4, endHost), nth(OutsideV6, endHost))
	for i := range max(1, spec.Proxies) {
		p := n.Host("proxy" + string(rune('0'+i)))
		p.Attach(f.InsideNet, nth(InsideV4, proxyHost+i), nth(InsideV6, proxyHost+i))
		p.Attach(f.OutsideNet, nth(OutsideV4, proxyHost+i), nth(OutsideV6, proxyHost+i))
		f.Proxies = append(f.Proxies, p)
	}
	if spec.Balancer {
		f.Balancer = n.Host("balancer")
		f.Balancer.Attach(f.InsideNet, nth(InsideV4, balancerHost), nth(InsideV6, balancerHost))
	}
	for _, v6 := range []bool{false, true} {
		f.Inside.DefaultRoute(f.Proxies[0].IP(f.InsideNet, v6))
		f.Outside.DefaultRoute(f.Proxies[0].IP(f.OutsideNet, v6))
	}
	return f
}

// Proxy is proxy host 0, the only one of a FirewallSpec{Proxies: 1}.
func (f *Firewall) Proxy() *Host { return f.Proxies[0] }

// Nth is address number i of p (i below 256): the topology's hosts use 1
// to 100, so a test may add addresses above that.
func Nth(p netip.Prefix, i int) netip.Addr { return nth(p, i) }

// nth is address number i of p.
func nth(p netip.Prefix, i int) netip.Addr {
	b := p.Addr().AsSlice()
	b[len(b)-1] += byte(i)
	a, _ := netip.AddrFromSlice(b)
	return a
}
